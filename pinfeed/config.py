"""The config base every part shares: frozen pydantic models that refuse unknown keys, and one
loader for YAML files that names the bad field (`training.epochs: Input should be greater than 0`).

Configs are loaded once at the edge (CLI, Ray job, Serve config) and passed down as these models,
never as dicts.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict
from pydantic import ValidationError as PydanticValidationError

from pinfeed.errors import ConfigError, DataNotFoundError


class FrozenModel(BaseModel):
    """Immutable, and a typo in a key fails loudly (`extra="forbid"`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Model = TypeVar("Model", bound=BaseModel)


def problems(error: PydanticValidationError, prefix: str = "") -> str:
    """pydantic's errors as `field.path: message; ...`, each path prefixed with `prefix.`."""
    lead = f"{prefix}." if prefix else ""
    return "; ".join(
        f"{lead}{'.'.join(str(part) for part in item['loc']) or '(root)'}: {item['msg']}"
        for item in error.errors()
    )


def validate_model(model: type[Model], raw: Any, where: str, prefix: str = "") -> Model:
    """`model` from `raw`; a ConfigError naming `where` and each bad field otherwise."""
    try:
        return model.model_validate(raw)
    except PydanticValidationError as error:
        raise ConfigError(f"{where}: {problems(error, prefix)}") from None


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping at the top of a YAML file ({} for an empty file)."""
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no such config file (see configs/ for examples)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return raw


def load_yaml_model(path: Path, model: type[Model]) -> Model:
    """A whole YAML file validated as `model`."""
    return validate_model(model, read_yaml(path), str(path))


def load_yaml_section(
    path: Path, section: str, model: type[Model], sections: Collection[str]
) -> Model:
    """Section `section` of a YAML file whose top-level keys must be among `sections`; a
    missing section gives the model's defaults."""
    raw = read_yaml(path)
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {unknown}; use {sorted(sections)}")
    return validate_model(model, raw.get(section) or {}, str(path), prefix=section)
