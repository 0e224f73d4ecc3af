"""Shared fixtures: the golden parity folder, tiny synthetic frame folders and videos."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_ENV = "CAGE_GOLDEN_DIR"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """The golden parity data: $CAGE_GOLDEN_DIR, else ../shared/golden beside the project root."""
    path = Path(os.environ.get(GOLDEN_ENV, ROOT.parent / "shared" / "golden"))
    if not path.is_dir():
        pytest.skip(f"golden parity data not found at {path} (set {GOLDEN_ENV} to its folder)")
    return path


def tiny_paths(golden_dir: Path) -> dict:
    """The tiny golden CAGE model: its config and checkpoint, and the override naming its autoencoder file."""
    folder = golden_dir / "tiny_ldm"
    return {"config": folder / "config.yaml", "ckpt": folder / "model.pth",
            "overrides": [f"model.autoencoder.ckpt_path={folder / 'ae.pth'}"]}


def random_video(rng: np.random.Generator, num_frames: int, height: int, width: int) -> np.ndarray:
    """uint8 [T H W 3] noise frames (worst case for compression, exact for round trips)."""
    return rng.integers(0, 256, size=(num_frames, height, width, 3), dtype=np.uint8)


def write_frame_folders(root: Path, videos: dict, extension: str = "png") -> Path:
    """Write {split: [uint8 [T H W 3] video, ...]} as root/<split>/video_<i>/<t:04d>.<ext>."""
    from PIL import Image

    for split, split_videos in videos.items():
        for i, frames in enumerate(split_videos):
            folder = root / split / f"video_{i:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            for t, frame in enumerate(frames):
                Image.fromarray(frame).save(folder / f"{t:04d}.{extension}")
    return root


def write_original_layout(path: Path, videos: list, frames_key: str | None = None) -> Path:
    """An original-CAGE shard written directly with h5py as the spec (section 6) describes it."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_group("len")
        f.create_group("videos")
        frames_root = f[frames_key] if frames_key else f
        for v, frames in enumerate(videos):
            f["len"].create_dataset(str(v), data=len(frames))
            group = frames_root.create_group(str(v))
            for t, frame in enumerate(frames):
                group.create_dataset(str(t), data=frame, compression="lzf")
    return path


def write_rendered_splits(root: Path, counts: dict, num_frames: int, size: int = 32, val_seed_offset: int = 50) -> Path:
    """Our HDF5 splits of rendered 2-object videos ({split: count}); val seeds are offset so splits differ."""
    from dataset.h5 import write_videos
    from dataset.synthetic import render_video

    for split, count in counts.items():
        offset = val_seed_offset if split == "val" else 0
        write_videos(root / split, [render_video(num_frames, size, num_objects=2, seed=i + offset) for i in range(count)])
    return root


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
