"""Synthetic videos of coloured shapes: a small bouncing-shapes generator and a CLEVRER-like world with ground truth.

`render_video` (the small generator): shapes move with constant velocity and bounce off the walls, overlapping
freely. Used by the pipeline demo, benchmarks and tests.

`generate_world` (the CLEVRER-like world, written by `python -m dataset.make_synthetic`): shapes of a few sizes
bounce off the walls and collide elastically with each other, optionally on two depth layers that pass over each
other (occlusion), on a plain or softly textured background, with per-frame ground truth for every object
(`write_ground_truth` / `read_ground_truth`, format in docs/data-format.md, "Ground truth").

Everything is deterministic from a seed (same seed -> identical frames and ground truth).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 210, 40),
    "purple": (150, 60, 200),
    "cyan": (40, 200, 210),
}


@dataclass
class ShapeState:
    """One object: shape, colour, radius (pixels), centre and velocity (pixels per frame)."""

    shape: str
    colour: str
    radius: float
    x: float
    y: float
    vx: float
    vy: float


def shape_mask(shape: str, radius: float, x: float, y: float, grid_y: np.ndarray, grid_x: np.ndarray) -> np.ndarray:
    """Boolean [H W] mask of a shape centred at (x, y) in pixel-centre coordinates."""
    dx, dy = grid_x - x, grid_y - y
    if shape == "circle":
        return dx * dx + dy * dy <= radius * radius
    if shape == "square":
        return (np.abs(dx) <= radius) & (np.abs(dy) <= radius)
    if shape == "triangle":  # upward triangle inscribed in the square of side 2r
        return (dy <= radius) & (dy >= -radius) & (np.abs(dx) <= (dy + radius) / 2)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def random_objects(rng: np.random.Generator, size: int, num_objects: int, max_speed: float) -> list:
    objects = []
    for _ in range(num_objects):
        radius = float(rng.uniform(0.06, 0.12) * size)
        speed = rng.uniform(0.3, 1.0) * max_speed
        angle = rng.uniform(0, 2 * np.pi)
        objects.append(ShapeState(
            shape=str(rng.choice(SHAPES)),
            colour=str(rng.choice(list(COLOURS))),
            radius=radius,
            x=float(rng.uniform(radius, size - radius)),
            y=float(rng.uniform(radius, size - radius)),
            vx=float(speed * np.cos(angle)),
            vy=float(speed * np.sin(angle)),
        ))
    return objects


def step(obj: ShapeState, size: int) -> None:
    """Advance one frame, reflecting off the walls."""
    obj.x += obj.vx
    obj.y += obj.vy
    for pos, vel in (("x", "vx"), ("y", "vy")):
        value = getattr(obj, pos)
        if value < obj.radius:
            setattr(obj, pos, 2 * obj.radius - value)
            setattr(obj, vel, abs(getattr(obj, vel)))
        elif value > size - obj.radius:
            setattr(obj, pos, 2 * (size - obj.radius) - value)
            setattr(obj, vel, -abs(getattr(obj, vel)))


def render_video(
    num_frames: int,
    size: int = 64,
    num_objects: int = 3,
    seed: int = 0,
    max_speed: float = 0.04,
    background: tuple = (235, 235, 235),
) -> np.ndarray:
    """uint8 [num_frames size size 3]; max_speed is in image sizes per frame."""
    rng = np.random.default_rng(seed)
    objects = random_objects(rng, size, num_objects, max_speed * size)
    grid_y, grid_x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for t in range(num_frames):
        frame = np.empty((size, size, 3), dtype=np.uint8)
        frame[:] = background
        for obj in objects:
            frame[shape_mask(obj.shape, obj.radius, obj.x, obj.y, grid_y, grid_x)] = COLOURS[obj.colour]
        frames[t] = frame
        for obj in objects:
            step(obj, size)
    return frames


def write_frame_dataset(root, counts: dict, num_frames: int = 24, size: int = 64, seed: int = 0) -> None:
    """Write {split: number of videos} as PNG frame folders root/<split>/video_<i>/<t>.png (the converter's input)."""
    from pathlib import Path

    from PIL import Image

    for split_index, (split, count) in enumerate(counts.items()):
        for i in range(count):
            folder = Path(root) / split / f"video_{i:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            video = render_video(num_frames, size, num_objects=int(1 + (i % 3)), seed=seed + 1000 * split_index + i)
            for t, frame in enumerate(video):
                Image.fromarray(frame).save(folder / f"{t:04d}.png")
