"""The evaluation's report: results.json (through lutils.io.write_json: standard JSON, NaN and inf as null), what it
records besides the metrics (code and checkpoint identity), the per-frame plot, the sample grid and the printed
summary. It computes nothing: the metrics come from evaluation/metrics.py, the samples from evaluation/sampling.py."""
from __future__ import annotations

import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from einops import rearrange

from lutils.io import atomic_path
from lutils.media import save_contact_sheet

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cage", "torch", "torchvision", "timm", "numpy", "scipy", "lpips", "torchdiffeq")


def _git(*args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def code_versions() -> dict:
    """The commit of this code (and whether the tree had changes), Python and the packages that shape the numbers."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": _git("rev-parse", "HEAD"), "git_dirty": None if status is None else bool(status),
            "python": platform.python_version(), "packages": versions}


def file_digest(path: str | Path, chunk: int = 1 << 24) -> str:
    """sha256 of a file, read in chunks (checkpoints can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_info(path: str | Path) -> dict:
    path = Path(path)
    return {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": file_digest(path)}


def format_summary(metrics: dict, out: str | Path) -> str:
    """The lines evaluate.py prints: each registry metric's value (or why it was skipped), then control accuracy."""
    from evaluation.metrics import METRICS

    lines = [f"wrote {out}"]
    for name in METRICS:
        value = metrics.get(name)
        if value is None:
            continue
        number = value.get("value", value.get("mean"))
        lines.append(f"  {name}: " + (f"skipped ({value['skipped']})" if "skipped" in value else
                                       f"{number:.4f}" if number is not None else "undefined"))
    control = metrics.get("control_accuracy")
    if control is not None:
        if "skipped" in control:
            lines.append(f"  control accuracy: skipped ({control['skipped']})")
        else:
            from evaluation.control import format_result

            lines.append(format_result(control))
    return "\n".join(lines)


def plot_per_frame(path: str | Path, curves: dict, first_frame: int) -> Path:
    """PNG with one panel per metric: its mean over videos for each generated frame (frame numbers of the clip)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = [name for name, values in curves.items() if values]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        values = curves[name]
        frames = np.arange(first_frame, first_frame + len(values))
        ax.plot(frames, values, marker="o")
        ax.set_xlabel("frame (0 = first real frame)")
        ax.set_title(f"{name} per generated frame")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)


def save_sample_grid(path: str | Path, real: np.ndarray, generated: np.ndarray, max_videos: int = 8) -> Path:
    """PNG: for each of the first videos a real row above its generated row (uint8 [b t 3 H W] each)."""
    count = min(max_videos, len(real))
    pairs = torch.from_numpy(np.stack([real[:count], generated[:count]], axis=1))  # [b 2 t 3 H W]
    rows = rearrange(pairs, "b pair t c h w -> (b pair) t h w c").numpy()
    return save_contact_sheet(path, rows)
