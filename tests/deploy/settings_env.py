"""The LOOKALIKE_* environment variable names that `Settings` accepts, built from its model fields."""

from __future__ import annotations

from collections.abc import Iterable

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
