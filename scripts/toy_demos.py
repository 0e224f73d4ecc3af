"""The embedded default's two demos on synthetic test clips: an animation (one object moved by control) and a
composition (objects from two clips pasted onto an empty canvas). Each writes .mp4, .gif and a .png strip with the
control cells outlined."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from evaluation.control import choose_shift, object_cells, usable_clips
from lutils.media import save_contact_sheet, write_video
from model.controls import Controls, pixel_boxes
from model.generation import generate


def _write(out: Path, name: str, video: torch.Tensor, rows: torch.Tensor, boxes: list) -> list:
    """The video as .gif (Pillow) and .png strip, and as .mp4 where PyAV is installed (machines without it, such as
    a bare GPU node, still run every stage)."""
    out.mkdir(parents=True, exist_ok=True)
    frames = video[0].clamp(-1, 1)
    written = [write_video(out / f"{name}.gif", frames, fps=4), save_contact_sheet(out / f"{name}.png", rows, boxes=boxes)]
    if importlib.util.find_spec("av") is not None:
        written.insert(0, write_video(out / f"{name}.mp4", frames, fps=4))
    else:
        print(f"{name}.mp4 not written: PyAV is not installed (pip install av)")
    return written


@torch.no_grad()
def animation(model, data_path: Path, out: Path, num_frames: int, steps: int, shift: int = 3,
              gamma: float = 0.0, device="cpu") -> list:
    """Move one object of a test clip by `shift` cells over the generated frames."""
    grid = tuple(model.state_res)
    for _, frame0, gt, k in usable_clips(data_path):
        size = frame0.shape[-1]
        cells = object_cells(gt["centers"][0, k], float(gt["radius"][k]), size / grid[1], grid)
        move = choose_shift(cells, gt["centers"][0, k], size, grid, shift)
        if move is not None:
            break
    else:
        raise ValueError(f"{data_path}: no clip with an object that can be moved by {shift} cells")
    controls = Controls(grid, num_frames).move(0, cells, list(range(num_frames)), to=move)
    feats, masks = controls.build(model.get_features(frame0.to(device)))
    video = generate(model, num_frames, device, initial_frames=frame0[None].to(device), feats=feats, feats_masks=masks,
                     num_steps=steps, gamma=gamma, seed=0)
    boxes = [pixel_boxes(controls, video.shape[-2:], leading_frames=1)]
    return _write(out, "animation", video, video[:1], boxes)


@torch.no_grad()
def composition(model, data_path: Path, out: Path, num_frames: int, steps: int, gamma: float = 0.0,
                device="cpu") -> list:
    """One object from each of two test clips on an empty canvas: the first stays, the second slides right."""
    grid = tuple(model.state_res)
    picks = []
    for _, frame0, gt, k in usable_clips(data_path):
        cells = object_cells(gt["centers"][0, k], float(gt["radius"][k]), frame0.shape[-1] / grid[1], grid)
        picks.append((frame0, cells))
        if len(picks) == 2:
            break
    if len(picks) < 2:
        raise ValueError(f"{data_path}: fewer than two clips with a usable object")
    frames = list(range(num_frames))
    controls = Controls(grid, num_frames).paste(0, picks[0][1], at=(1, 1), frames=frames)
    span = max(c for _, c in picks[1][1]) - min(c for _, c in picks[1][1])
    start = grid[1] - 3 - span
    path = [(0, round(2 * f / max(1, num_frames - 1))) for f in frames]
    top = min(r for r, _ in picks[1][1]), min(c for _, c in picks[1][1])
    offsets = [(grid[0] - 3 - top[0] + dr, start - top[1] + dc - 2) for dr, dc in path]
    controls.move(1, picks[1][1], frames, path=offsets)
    sources = torch.cat([picks[0][0], picks[1][0]])  # [2 3 H W]
    feats, masks = controls.build(model.get_features(sources.to(device)))
    video = generate(model, num_frames, device, feats=feats, feats_masks=masks, num_steps=steps, gamma=gamma, seed=0)
    rows = torch.cat([torch.cat([sources, torch.full((num_frames - 2, *sources.shape[1:]), 1.0)])[None],
                      video.clamp(-1, 1)]) if num_frames >= 2 else video
    boxes = [[], pixel_boxes(controls, video.shape[-2:])]
    return _write(out, "composition", video, rows, boxes)
