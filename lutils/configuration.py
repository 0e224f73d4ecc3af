"""YAML configuration with dotted command-line overrides (OmegaConf underneath), checked against the schema of
lutils/schema.py: unknown, missing and mistyped keys are errors that name the file and the dotted key."""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lutils import schema
from lutils.schema import ConfigurationError

__all__ = ["Configuration", "ConfigurationError", "apply_overrides", "to_plain"]


def _all_keys(node: Any, prefix: str = "") -> list:
    """Every dotted key path of a config tree, for error suggestions."""
    keys = []
    if isinstance(node, DictConfig):
        for key in node.keys():
            path = f"{prefix}{key}"
            keys.append(path)
            keys.extend(_all_keys(node._get_node(key), path + "."))
    return keys


def _key_exists(cfg: DictConfig, dotted: str) -> bool:
    node: Any = cfg
    for part in dotted.split("."):
        if isinstance(node, DictConfig) and part in node:
            node = node._get_node(part)
        elif isinstance(node, ListConfig) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node._get_node(int(part))
        else:
            return False
    return True


def _unknown_key_error(raw: str, key: str, value_text: str, source: str, close: list,
                       kind: Optional[str] = None) -> ConfigurationError:
    """The error of an override of a key that the file lacks: with a `kind`, the schema lacks it too (so `+` does
    not help); without, `+key=value` would add it."""
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    if kind is None:
        return ConfigurationError(f"override {raw!r}: key '{key}' does not exist in {source}. "
                                  f"Write '+{key}={value_text}' to add a new key.{hint}")
    return ConfigurationError(f"override {raw!r}: '{key}' is not a key of a {kind} config ({source}).{hint}")


def apply_overrides(cfg: DictConfig, overrides: Iterable[str], source: str = "<config>",
                    kind: Optional[str] = None) -> DictConfig:
    """Merge `key=value` overrides into `cfg`.

    Without a `kind`, a key must exist in `cfg` unless written `+key=value`. With a `kind` ("cage" or "autoencoder",
    see lutils/schema.py), any key of that schema may be set, present in `cfg` or not; `+` is only needed inside
    free-form mappings (such as a taming `model.autoencoder.config`), and a key the schema lacks is an error.
    Values are parsed as YAML (so `8`, `0.5`, `1e-7`, `true`, `[16,16]` get their natural types).
    """
    for raw in overrides:
        text = raw.strip()
        if "=" not in text:
            raise ConfigurationError(f"override {raw!r}: expected KEY=VALUE (or +KEY=VALUE to add a new key)")
        key, value_text = text.split("=", 1)
        adding = key.startswith("+")
        key = key.lstrip("+").strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigurationError(f"override {raw!r}: empty key")
        add = adding
        if not _key_exists(cfg, key):
            place = schema.locate(kind, key) if kind else "free"
            if place == "key":
                add = True
            elif place is None:
                raise _unknown_key_error(raw, key, value_text, source, schema.suggest(kind, key), kind)
            elif not adding:
                raise _unknown_key_error(raw, key, value_text, source,
                                         difflib.get_close_matches(key, _all_keys(cfg), n=3))
        try:
            value = OmegaConf.from_dotlist([f"_={value_text}"])["_"]  # YAML typing of the value
            OmegaConf.update(cfg, key, value, merge=True, force_add=add)
        except (OmegaConfBaseException, TypeError, ValueError) as error:
            raise ConfigurationError(f"override {raw!r}: {error}") from error
    return cfg


def to_plain(value: Any) -> Any:
    """A config value (OmegaConf node, Configuration, nested mappings/sequences) as plain dicts and lists, copied."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Configuration):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    return value


class Configuration(Mapping):
    """A YAML config: `cfg["model"]["sigma"]`, `cfg.model.sigma` and `cfg.get(key, default)` work at every level.

    The file is read with OmegaConf's YAML loader, which (unlike PyYAML's YAML 1.1 resolver used by the original
    code) reads `1e-7` as a number. It is checked against the schema of its kind (`self.kind`: "cage", or
    "autoencoder" for a file with a top-level `autoencoder` and no `model`; see lutils/schema.py): an unknown key,
    a value of the wrong type and, once the overrides are applied, a missing required key are ConfigurationErrors
    that name the file and the dotted key. Overrides are dotted `key=value` strings merged on top of the file; any
    key of the schema may be set, and `+key=value` adds keys inside free-form mappings. `validate=False` skips the
    schema: then any tree loads, and an override of a key the file lacks needs `+`. The tree holds what the file
    and the overrides say, nothing more (`completed()` adds the defaults); nothing derived is ever written back.
    """

    def __init__(self, path: str | Path, overrides: Optional[Sequence[str]] = None, validate: bool = True):
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigurationError(f"config file not found: {self.path}")
        try:
            cfg = OmegaConf.load(self.path)
            # OmegaConf turns a bare string into {string: None}; PyYAML tells what the file really holds.
            top = yaml.safe_load(self.path.read_text())
        except Exception as error:  # yaml.YAMLError and friends: report the file
            raise ConfigurationError(f"{self.path}: cannot parse YAML: {error}") from error
        if not isinstance(cfg, DictConfig) or not isinstance(top, dict):
            raise ConfigurationError(f"{self.path}: expected a mapping at the top level, got {type(top).__name__}")
        self._load(cfg, overrides, validate)

    @classmethod
    def from_dict(cls, data: Mapping, overrides: Optional[Sequence[str]] = None,
                  validate: bool = True) -> "Configuration":
        """Build a Configuration from an in-memory mapping (tests, notebooks), checked as a file is."""
        self = cls.__new__(cls)
        self.path = Path("<dict>")
        self._load(OmegaConf.create(to_plain(data)), overrides, validate)
        return self

    def _load(self, cfg: DictConfig, overrides: Optional[Sequence[str]], validate: bool) -> None:
        """Apply the overrides, then (if `validate`) check the result, reporting every problem at once."""
        self.overrides = list(overrides or [])
        self.kind = schema.kind_of(cfg)
        self._cfg = apply_overrides(cfg, self.overrides, source=str(self.path), kind=self.kind if validate else None)
        if validate:
            # Overrides cannot add unknown keys, so those come from the file; a wrong value may come from either.
            source = f"{self.path} with overrides {' '.join(self.overrides)}" if self.overrides else str(self.path)
            try:
                tree = OmegaConf.to_container(self._cfg, resolve=True)
            except OmegaConfBaseException as error:  # e.g. a broken ${...} interpolation
                raise ConfigurationError(f"{source}: {error}") from error
            schema.validate(tree, self.kind, source=source)

    def completed(self) -> dict:
        """The whole config as plain dicts with every absent optional key at its schema default."""
        return schema.complete("", self.to_dict(), kind=self.kind, source=str(self.path))

    # Mapping interface -------------------------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        try:
            return self._cfg[key]
        except OmegaConfBaseException as error:
            raise KeyError(f"{self.path}: missing key '{key}'") from error

    def __iter__(self) -> Iterator[str]:
        return iter(self._cfg)

    def __len__(self) -> int:
        return len(self._cfg)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_") or key in ("path", "overrides", "kind"):
            raise AttributeError(key)
        try:
            return self._cfg[key]
        except OmegaConfBaseException as error:
            raise AttributeError(f"{self.path}: missing key '{key}'") from error

    def get(self, key: str, default: Any = None) -> Any:
        return self._cfg.get(key, default)

    def select(self, dotted_key: str, default: Any = None) -> Any:
        """Value at a dotted path such as 'model.vector_field_regressor.depth'."""
        return OmegaConf.select(self._cfg, dotted_key, default=default)

    # Export ------------------------------------------------------------------------------------------------------
    @property
    def node(self) -> DictConfig:
        """The underlying OmegaConf tree."""
        return self._cfg

    def to_dict(self) -> dict:
        """A plain, resolved nested dict (for wandb, JSON and checkpoints)."""
        return OmegaConf.to_container(self._cfg, resolve=True)

    def to_yaml(self) -> str:
        return OmegaConf.to_yaml(self._cfg, resolve=True)

    def save(self, path: str | Path) -> Path:
        """Write the resolved config (overrides included) atomically."""
        from lutils.io import atomic_write_text

        return atomic_write_text(path, self.to_yaml())

    def __repr__(self) -> str:
        return f"Configuration({str(self.path)!r}, overrides={self.overrides!r})"
