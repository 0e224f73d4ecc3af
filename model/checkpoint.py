"""Checkpoint files: safe loading, key surgery (DDP prefixes, the original's legacy names and dead weights, the EMA
swap, the export back to the original's CAGE and autoencoder layouts), strict loading with a readable diff, atomic
saving.

Every rule about which keys a CAGE checkpoint may hold and how they map onto our modules lives here. The frozen parts'
own third-party formats (taming's Lightning files, timm's DINOv2 names) are read by their modules."""
from __future__ import annotations

import pickle
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Iterable, Optional

import torch
from torch import nn

from lutils.errors import CageError
from lutils.io import atomic_path


class CheckpointError(CageError, RuntimeError):
    """A checkpoint that cannot be read or does not fit the model; the message names the file."""


def load_file(path: str | Path, trust: bool = False) -> object:
    """`torch.load` on CPU with `weights_only=True`.

    Files that need arbitrary code to unpickle (e.g. Lightning checkpoints with custom objects) are refused unless
    `trust=True`, which loads them with full pickle: only do that for files from a source you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not trust:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CheckpointError(
                f"{path}: refusing to unpickle it with full pickle, which could run arbitrary code "
                f"({first_line}). If you trust this file, load it with trust=True "
                f"(config: model.trust_checkpoints: true)."
            ) from error
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, struct.error) as error:  # what junk files raise
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({error})") from error


def extract_state_dict(obj: object, path: str | Path, keys: Iterable[str] = ("model", "state_dict")) -> dict:
    """The state dict inside a loaded file: `obj[key]` for the first key present, else `obj` itself if it holds tensors."""
    if isinstance(obj, Mapping):
        for key in keys:
            if key in obj and isinstance(obj[key], Mapping):
                return dict(obj[key])
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        raise CheckpointError(
            f"{path}: no state dict found (expected one of the keys {list(keys)} or a plain dict of tensors; "
            f"top-level keys: {list(obj)[:10]})"
        )
    raise CheckpointError(f"{path}: expected a dict, got {type(obj).__name__}")


def strip_prefix(state_dict: Mapping, prefix: str = "module.") -> dict:
    """Remove a leading `prefix` (DDP's "module.") from every key that has it."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def select_prefix(state_dict: Mapping, prefix: str) -> dict:
    """The entries under `prefix`, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


# Key surgery ------------------------------------------------------------------------------------------------------
DDP_PREFIX = "module."
LEGACY_RENAMES = {"dino_project_in": "feats_project_in"}  # the original's older name of the control projection
LEGACY_UNUSED_PREFIXES = ("time_projection.",)  # regressor-relative: the original's dead time_projection weights
TIME_PROJECTION_HIDDEN = 256  # the original's time_projection: Linear(1, 256) - ReLU - Linear(256, inner_dim)


def legacy_unused_keys(state_dict: Mapping, prefix: str = "vector_field_regressor.") -> list:
    """Keys of the original's dead regressor weights under `prefix` (dropped on load)."""
    return [key for key in state_dict if key.startswith(tuple(prefix + p for p in LEGACY_UNUSED_PREFIXES))]


def ema_weights(content: object) -> Optional[dict]:
    """The EMA weights (`{"ema": {"shadow": {name: tensor}}}`) of a file of our trainers, or None without them."""
    ema = content.get("ema") if isinstance(content, Mapping) else None
    return dict(ema["shadow"]) if isinstance(ema, Mapping) and isinstance(ema.get("shadow"), Mapping) else None


def with_ema(state: Mapping, ema: Optional[Mapping]) -> dict:
    """A copy of `state` with the EMA weights in place of the raw ones (the same keys), when there are any."""
    return {**state, **(ema or {})}


def autoencoder_file(state: Mapping, ema: Optional[Mapping] = None, **extra) -> dict:
    """Our VQVAE's weights in the original's autoencoder file layout `{"model": {"module.<key>": tensor}}`."""
    return {"model": {DDP_PREFIX + key: value for key, value in with_ema(state, ema).items()}, **extra}


def cage_state_dict(content: object, path: str | Path, use_ema: bool = True) -> tuple:
    """(state dict in our key layout, EMA updates used or None) of a loaded CAGE checkpoint.

    Accepts `{"model": state_dict}` or a bare state dict, with or without DDP's prefix and with the original's legacy
    names and dead weights; files of our trainer also hold EMA weights (`{"ema": {"shadow": ...}}`), which replace
    the raw ones unless `use_ema=False`.
    """
    ema = ema_weights(content) if use_ema else None
    state = with_ema(extract_state_dict(content, path, keys=("model",)), ema)
    if any(key.startswith(DDP_PREFIX) for key in state):
        state = strip_prefix(state, DDP_PREFIX)
    for old, new in LEGACY_RENAMES.items():
        state = {key.replace(old, new): value for key, value in state.items()}
    for key in legacy_unused_keys(state):
        del state[key]
    return state, (int(content["ema"]["num_updates"]) if ema is not None else None)


def export_for_original(model_state: Mapping, inner_dim: int, ema: Optional[Mapping] = None) -> dict:
    """`{"model": state_dict}` that the original code's strict Model.load_from_ckpt accepts: EMA weights optionally
    swapped in, and the original's unused `time_projection` weights re-added as zeros."""
    state = with_ema(model_state, ema)
    prefix = "vector_field_regressor." + LEGACY_UNUSED_PREFIXES[0]
    state[prefix + "0.weight"] = torch.zeros(TIME_PROJECTION_HIDDEN, 1)
    state[prefix + "0.bias"] = torch.zeros(TIME_PROJECTION_HIDDEN)
    state[prefix + "2.weight"] = torch.zeros(inner_dim, TIME_PROJECTION_HIDDEN)
    state[prefix + "2.bias"] = torch.zeros(inner_dim)
    return {"model": state}


def key_diff(expected: Mapping, given: Mapping, limit: int = 20) -> Optional[str]:
    """A readable description of missing, unexpected and mis-shaped keys, or None if the two match."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = sorted(
        f"{k}: model {tuple(expected[k].shape)} vs file {tuple(given[k].shape)}"
        for k in set(expected) & set(given)
        if hasattr(given[k], "shape") and tuple(expected[k].shape) != tuple(given[k].shape)
    )
    if not (missing or unexpected or shapes):
        return None
    parts = []
    for title, items in (("missing in file", missing), ("unexpected in file", unexpected), ("shape mismatch", shapes)):
        if items:
            shown = "\n    ".join(items[:limit]) + (f"\n    ... and {len(items) - limit} more" if len(items) > limit else "")
            parts.append(f"  {title} ({len(items)}):\n    {shown}")
    return "\n".join(parts)


def load_strict(module: nn.Module, state_dict: Mapping, source: str) -> None:
    """`module.load_state_dict(state_dict, strict=True)`, with a readable diff in the error on mismatch."""
    diff = key_diff(module.state_dict(), state_dict)
    if diff is not None:
        raise CheckpointError(f"{source}: keys do not match {type(module).__name__}:\n{diff}")
    module.load_state_dict(state_dict, strict=True)


def save_file(obj: object, path: str | Path) -> Path:
    """torch.save to a temporary file, then rename: a crash never leaves a half-written checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


class WeightsStatus:
    """Tracks whether a frozen module got real weights; `require()` explains how to provide them if not."""

    def __init__(self, what: str, how_to_provide: str, allow_random: bool = False):
        self.what, self.how_to_provide = what, how_to_provide
        self.loaded = False
        self.allow_random = allow_random
        self.source: Optional[str] = None

    def mark_loaded(self, source: str) -> None:
        self.loaded, self.source = True, source

    def require(self) -> None:
        if not self.loaded and not self.allow_random:
            raise CheckpointError(f"{self.what} has no weights yet. {self.how_to_provide}")


class FrozenPretrained:
    """Mixin for frozen nn.Modules whose weights come from files (autoencoders, feature backbones).

    Always in eval mode (also after `model.train()`), no gradients, and `self.weights` (a WeightsStatus) is marked
    loaded whenever a state dict that holds all of the module's keys is loaded into it, from any parent.
    """

    weights: WeightsStatus

    def freeze(self) -> None:
        self.requires_grad_(False)
        nn.Module.train(self, False)

    def train(self, mode: bool = True):
        return nn.Module.train(self, False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        own = [prefix + key for key in nn.Module.state_dict(self).keys()]
        if own and all(key in state_dict for key in own):
            self.weights.mark_loaded("state dict")
