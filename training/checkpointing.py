"""Training checkpoints: the resume state (atomic writes, RNG states, which file a --resume-step means)."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from model.checkpoint import CheckpointError, load_file, save_file

FORMAT_VERSION = 1


def rng_state(generator: Optional[torch.Generator] = None) -> dict:
    """Every random state a training step reads from, as tensors and plain numbers (loadable with weights_only)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: dict, generator: Optional[torch.Generator] = None) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss_next"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


def checkpoint_path(run_dir: Path, resume_step: int) -> Path:
    """checkpoints/latest.pth for -1, else checkpoints/step_<N>.pth (or final_step_<N>.pth)."""
    folder = Path(run_dir) / "checkpoints"
    if resume_step == -1:
        return folder / "latest.pth"
    for name in (f"step_{resume_step}.pth", f"final_step_{resume_step}.pth"):
        if (folder / name).is_file():
            return folder / name
    available = sorted(p.name for p in folder.glob("*.pth")) if folder.is_dir() else []
    raise CheckpointError(f"no checkpoint for step {resume_step} in {folder} (available: {', '.join(available) or 'none'})")


def save_training_checkpoint(path: Path, state: dict) -> Path:
    return save_file({"format_version": FORMAT_VERSION, **state}, path)


def load_training_checkpoint(path: Path) -> dict:
    """A checkpoint written by the trainer (loaded with weights_only=True)."""
    state = load_file(path)
    if not isinstance(state, dict) or "model" not in state or "global_step" not in state:
        raise CheckpointError(f"{path}: not a training checkpoint (needs 'model' and 'global_step')")
    return state
