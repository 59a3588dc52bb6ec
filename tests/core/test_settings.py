"""Settings: defaults rooted in the data dir, environment with prefix and nesting."""

from __future__ import annotations

from pathlib import Path

import pytest

from lookalike.core.settings import Settings


def test_data_dir_roots_every_embedded_default(tmp_path: Path) -> None:
    """Milvus Lite, blobs and caches live under the data dir unless configured."""
    settings = Settings(data_dir=tmp_path)
    assert settings.milvus_uri == str(tmp_path / "milvus" / "lookalike.db")
    assert settings.blob_url == str(tmp_path / "blobs")
    assert settings.cache_dir == tmp_path / "cache"


def test_environment_uses_prefix_and_double_underscore(monkeypatch: pytest.MonkeyPatch) -> None:
    """LOOKALIKE_MILVUS__URI and friends reach the nested settings."""
    monkeypatch.setenv("LOOKALIKE_MILVUS__URI", "http://milvus:19530")
    monkeypatch.setenv("LOOKALIKE_BLOBS__URL", "s3://images")
    monkeypatch.setenv("LOOKALIKE_MODEL__BACKBONE", "efficientnet_lite0")
    settings = Settings()
    assert settings.milvus_uri == "http://milvus:19530"
    assert settings.blob_url == "s3://images"
    assert settings.model.backbone == "efficientnet_lite0"


def test_unknown_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A misspelt nested setting is an error, not silently ignored."""
    monkeypatch.setenv("LOOKALIKE_MILVUS__URL", "http://milvus:19530")
    with pytest.raises(ValueError, match=r"uri|url|extra"):
        Settings()
