"""Search profiles: one setting fills the levers it names, explicit settings win, and `lookalike
eval --config` knows the same names."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lookalike.core.profiles import PROFILES
from lookalike.core.settings import ModelSettings, RetrievalSettings, SearchSettings, Settings
from lookalike.evaluation.configs import BASELINE, preset


def test_the_default_profile_is_the_plain_configuration() -> None:
    """Without a profile the settings are the fast profile, which is every default as it was."""
    settings = Settings()
    assert settings.search.profile == "fast"
    assert settings.model.backbone == ModelSettings().backbone
    assert settings.retrieval == RetrievalSettings()
    assert preset("fast").levers() == BASELINE.levers()


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_a_profile_sets_its_levers(name: str) -> None:
    """Each profile's model and retrieval levers reach the settings."""
    profile = PROFILES[name]
    settings = Settings(search=SearchSettings(profile=name))
    for key, value in profile.model_levers().items():
        assert getattr(settings.model, key) == value
    for key, value in profile.retrieval_levers().items():
        assert getattr(settings.retrieval, key) == value
    config = preset(name)
    assert (config.verify, config.dba_k, config.qe_n, config.semantic_weight) == (
        profile.verify, profile.dba_k, profile.qe_n, profile.semantic_weight)


def test_explicit_settings_win_over_the_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lever named in the environment keeps its value under any profile."""
    monkeypatch.setenv("LOOKALIKE_SEARCH__PROFILE", "instance")
    monkeypatch.setenv("LOOKALIKE_RETRIEVAL__VERIFY", "false")
    monkeypatch.setenv("LOOKALIKE_RETRIEVAL__QE_N", "5")
    settings = Settings()
    assert settings.search.profile == "instance"
    assert settings.retrieval.verify is False
    assert settings.retrieval.qe_n == 5


def test_an_unknown_profile_is_refused_with_the_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """A misspelt profile is a validation error that lists the profiles."""
    monkeypatch.setenv("LOOKALIKE_SEARCH__PROFILE", "quick")
    with pytest.raises(ValidationError, match="'fast', 'balanced', 'quality' or 'instance'"):
        Settings()


def test_every_profile_states_its_use_and_measured_cost() -> None:
    """The Admin page shows what each profile is for and what it costs: all are filled in."""
    for profile in PROFILES.values():
        assert profile.use
        assert profile.ingest_images_per_s > 0
        assert profile.query_ms > 0
    assert BASELINE.backbone == PROFILES["fast"].backbone
