"""The LOOKALIKE_* environment variable names that `Settings` accepts, built from its model fields,
and the Settings a deployment's environment produces."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

import pytest
from pydantic import BaseModel

from lookalike.core.settings import Settings

PREFIX = "LOOKALIKE_"


def setting_env_names() -> frozenset[str]:
    """Every variable name: LOOKALIKE_<FIELD> for plain fields, LOOKALIKE_<SECTION>__<FIELD> nested."""
    names: set[str] = set()
    for field_name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names.update(
                f"{PREFIX}{field_name}__{sub}".upper() for sub in annotation.model_fields
            )
        else:
            names.add(f"{PREFIX}{field_name}".upper())
    return frozenset(names)


def unknown_settings(names: Iterable[str]) -> list[str]:
    """The LOOKALIKE_* names among `names` that no setting reads (settings are case-insensitive)."""
    known = setting_env_names()
    return sorted(name for name in names if name.upper().startswith(PREFIX) and name.upper() not in known)


COMPOSE_VARIABLE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?:(:\?|:-)([^}]*))?\}")


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """`value` with compose's ${NAME}, ${NAME:-default} and ${NAME:?message} filled from
    `variables`; an unset required one raises KeyError, as compose refuses to start."""

    def fill(match: re.Match[str]) -> str:
        name, form, rest = match.groups()
        if variables.get(name):
            return variables[name]
        if form == ":-":
            return rest
        raise KeyError(f"{name} is unset: {rest}")

    return COMPOSE_VARIABLE.sub(fill, value)


def settings_from(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings a process sees with exactly the LOOKALIKE_* variables of `env`."""
    for name in list(os.environ):
        if name.upper().startswith(PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.upper().startswith(PREFIX):
            monkeypatch.setenv(name, value)
    return Settings()
