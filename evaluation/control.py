"""Control accuracy on synthetic clips: does a generated object go where its features were moved?

For each test clip: take an object that is fully visible in frame 0 and has a colour no other object in the clip has,
move its features linearly by `shift` cells (toward the image centre) over the generated frames, generate from
frame 0, find the object in every generated frame by its colour (as the autoencoder renders it), and measure the
distance of its centroid to the target position. The baseline is the same generation (same seed) without controls,
measured against the same targets.

    python -m evaluation.control --config configs/toy.yaml --ckpt runs/toy_run-toy/snapshots/latest.pth \
        --data data/toy_h5/test --num-clips 32 --out control.json

Owns the control-accuracy measurement, its summaries and its command line; evaluate.py includes it in its report
(`control_report`). Undefined values (the interval of one clip, the median distance of an object never found) are
None, so that the result is standard JSON as it is.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from dataset.clips import clips_from_config
from dataset.synthetic import read_ground_truth
from evaluation.errors import EvaluationError
from lutils.logging import to_video
from model.controls import Controls
from model.generation import generate

COLOUR_TOLERANCE = 70.0  # RGB distance within which a pixel counts as the object's colour
MIN_PIXELS_FRACTION = 0.2  # of the object's area: fewer matching pixels means the object is lost


def object_cells(center: np.ndarray, radius: float, cell: float, grid: tuple) -> list:
    """Latent cells whose centres lie within the object's radius (at least the cell holding its centre)."""
    h, w = grid
    cells = [(r, c) for r in range(h) for c in range(w)
             if math.hypot((c + 0.5) * cell - center[0], (r + 0.5) * cell - center[1]) <= radius]
    own = (min(h - 1, int(center[1] // cell)), min(w - 1, int(center[0] // cell)))
    return sorted(set(cells) | {own})


def locate(frame: np.ndarray, palette: np.ndarray, index: int, area: float) -> Optional[np.ndarray]:
    """Centroid (x, y) of the pixels whose nearest palette colour is palette[index] (within the tolerance), or None
    when fewer than MIN_PIXELS_FRACTION * area pixels match. The palette holds the colours the scene can show
    (every object's colour and the background)."""
    pixels = frame.reshape(-1, 3).astype(np.float32)
    distances = np.linalg.norm(pixels[:, None, :] - palette[None].astype(np.float32), axis=-1)  # [n colours]
    mask = (distances.argmin(axis=1) == index) & (distances[:, index] <= COLOUR_TOLERANCE)
    if mask.sum() < MIN_PIXELS_FRACTION * area:
        return None
    ys, xs = np.divmod(np.flatnonzero(mask), frame.shape[1])
    return np.array([xs.mean() + 0.5, ys.mean() + 0.5])


def scene_palette(reconstruction: np.ndarray, gt: dict) -> np.ndarray:
    """Colours as the autoencoder renders them: each object's mean colour inside its disc in the reconstruction of
    frame 0, then the background's median colour. Generated frames are decoded by the same autoencoder, so these
    (not the ideal palette colours) are the colours to look for."""
    size = reconstruction.shape[0]
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    colours, covered = [], np.zeros((size, size), dtype=bool)
    for k in range(len(gt["colour"])):
        cx, cy = gt["centers"][0, k]
        distance = np.hypot(xs - cx, ys - cy)
        inner = distance <= max(1.0, 0.6 * gt["radius"][k])
        covered |= distance <= gt["radius"][k] + 2
        colours.append(reconstruction[inner].mean(axis=0) if inner.any() else gt["colour_rgb"][gt["colour"][k]])
    background = np.median(reconstruction[~covered], axis=0) if (~covered).any() else np.full(3, 235.0)
    return np.array(colours + [background], dtype=np.float32)


def choose_object(gt: dict) -> Optional[int]:
    """The largest object that is unoccluded in frame 0 and whose colour is unique in the clip."""
    colours = list(gt["colour"])
    best = None
    for k in range(len(colours)):
        fully_visible = gt["visible_pixels"][0, k] >= 0.9 * gt["visible_pixels"][:, k].max()
        if colours.count(colours[k]) > 1 or not fully_visible:
            continue
        if best is None or gt["radius"][k] > gt["radius"][best]:
            best = k
    return best


def choose_shift(cells: list, center: np.ndarray, size: int, grid: tuple, shift: int) -> Optional[tuple]:
    """A horizontal (else vertical) shift of `shift` cells toward the image centre that keeps the cells on the grid."""
    h, w = grid
    candidates = [(0, shift if center[0] < size / 2 else -shift), (shift if center[1] < size / 2 else -shift, 0)]
    for dr, dc in candidates:
        if all(0 <= r + dr < h and 0 <= c + dc < w for r, c in cells):
            return dr, dc
    return None


def mean_ci95(values: np.ndarray) -> tuple:
    """Mean and its normal-approximation 95 % interval over independent values ([None, None] for one value: no
    interval can be estimated, and JSON has no NaN)."""
    n = len(values)
    mean = float(values.mean())
    if n < 2:
        return mean, [None, None]
    half_width = 1.96 * values.std(ddof=1) / math.sqrt(n)
    return mean, [mean - half_width, mean + half_width]


def summarise(per_clip: list, cell: float, size: int) -> dict:
    """Mean distances with 95 % intervals over clips (a lost object counts as the image diagonal), and the
    fraction of frames within one cell. The median over the frames where the object was found is None when it was
    never found."""
    distances = np.array([d for clip in per_clip for d in clip])  # px; lost objects are inf
    mean, interval = mean_ci95(clip_mean_distances(per_clip, size))
    finite = distances[np.isfinite(distances)]
    return {
        "clips": len(per_clip),
        "frames": int(len(distances)),
        "mean_distance_px": mean,
        "mean_distance_px_ci95": interval,
        "mean_distance_cells": mean / cell,
        "median_distance_px_found": float(np.median(finite)) if len(finite) else None,
        "within_one_cell": float(np.mean(distances <= cell)),
        "lost": float(np.mean(~np.isfinite(distances))),
    }


def clip_mean_distances(per_clip: list, size: int) -> np.ndarray:
    """Mean distance of each clip, a lost object counting as the image diagonal."""
    return np.array([np.mean(np.minimum(clip, size * math.sqrt(2))) for clip in per_clip])


def paired_difference(controlled: list, baseline: list, size: int) -> dict:
    """Controlled minus baseline mean distance, clip by clip (same clips, same seeds), with a 95 % interval: the
    comparison that removes the spread between clips."""
    difference = clip_mean_distances(controlled, size) - clip_mean_distances(baseline, size)
    mean, interval = mean_ci95(difference)
    return {"mean_px": mean, "ci95_px": interval,
            "clips_closer_with_control": float(np.mean(difference < 0))}


def usable_clips(data_path: str | Path):
    """(index, frame 0 as [1 3 H W] in [-1, 1] at the stored size, ground truth, chosen object) for every clip of a
    synthetic split that has an object choose_object accepts. A split without ground truth is an EvaluationError."""
    dataset = clips_from_config(None, Path(data_path).name, "stored", path=data_path, frames_per_sample=1)
    for index in range(dataset.num_videos):
        shard_index, video = (int(v) for v in dataset.entries[index])
        try:
            gt = read_ground_truth(dataset.shard_paths[shard_index], video)
        except KeyError as error:  # read_ground_truth's way of saying the shard has none
            raise EvaluationError(f"{data_path}: control accuracy needs synthetic ground truth "
                                  f"(dataset.make_synthetic writes it): {error.args[0]}") from None
        k = choose_object(gt)
        if k is not None:
            yield index, dataset.read_clip(index, 0).float().div(127.5).sub(1), gt, k


@torch.no_grad()
def control_accuracy(model, data_path: str | Path, num_clips: int = 32, num_frames: int = 6, shift: int = 2,
                     steps: int = 20, gamma: float = 0.0, seed: int = 0, device="cpu", progress: bool = True,
                     precision: str = "fp32", batch_size: int = 1) -> dict:
    """Controlled vs uncontrolled distance of the moved object to its targets over `num_clips` test clips; the
    generation runs at `precision` (lutils/precision.py: "auto" is bf16 where the hardware runs it fast), `batch_size`
    clips at a time (the batch's noise comes from `seed` + the index of its first clip)."""
    from lutils.precision import autocast, resolve_precision

    precision = resolve_precision(precision, device)
    grid = tuple(model.state_res)
    jobs = []  # one per usable clip: what generation needs and what the measurement needs
    for index, frame0, gt, k in usable_clips(data_path):
        size = frame0.shape[-1]
        cell = size / grid[1]
        center = gt["centers"][0, k]
        cells = object_cells(center, float(gt["radius"][k]), cell, grid)
        move = choose_shift(cells, center, size, grid, shift)
        if move is None:
            continue
        path = [(round(move[0] * (f + 1) / num_frames), round(move[1] * (f + 1) / num_frames)) for f in range(num_frames)]
        controls = Controls(grid, num_frames).move(0, cells, list(range(num_frames)), path=path)
        initial = frame0[None].to(device)  # [1 1 3 H W]
        feats, masks = controls.build(model.get_features(initial[0]))
        reconstruction = to_video(model.decode(model.encode(initial))[0, 0].clamp(-1, 1)).transpose(1, 2, 0)
        jobs.append({"initial": initial, "feats": feats, "masks": masks,
                     "targets": [center + np.array([dc, dr]) * cell for dr, dc in path],
                     "area": float(gt["visible_pixels"][0, k]), "palette": scene_palette(reconstruction, gt),
                     "clip": {"index": index, "object": int(k), "colour": gt["colour_names"][gt["colour"][k]],
                              "shift_cells": list(move)}})
        if len(jobs) >= num_clips:
            break
    if not jobs:
        raise EvaluationError(f"{data_path}: no clip has a uniquely coloured, visible object that can be moved by {shift} cells")
    size = jobs[0]["initial"].shape[-1]
    cell = size / grid[1]
    results = {"controlled": [], "baseline": []}
    for first in range(0, len(jobs), batch_size):
        batch = jobs[first:first + batch_size]
        initial = torch.cat([job["initial"] for job in batch])
        controlled = (torch.cat([job["feats"] for job in batch]), torch.cat([job["masks"] for job in batch]))
        # The baseline has no controls, so guidance would mix two equal predictions ((1+γ)v − γv = v): it runs at γ 0,
        # the same generation at half the cost.
        for name, (f, m), g in (("controlled", controlled, gamma), ("baseline", (None, None), 0.0)):
            with autocast(device, precision):
                video = generate(model, num_frames, device, initial_frames=initial, feats=f, feats_masks=m,
                                 num_steps=steps, gamma=g, seed=seed + batch[0]["clip"]["index"])
            for job, clip in zip(batch, video):
                frames = to_video(clip[1:].clamp(-1, 1)).transpose(0, 2, 3, 1)  # [n H W 3]
                found = [locate(frame, job["palette"], job["clip"]["object"], job["area"]) for frame in frames]
                results[name].append([float(np.linalg.norm(p - t)) if p is not None else float("inf")
                                      for p, t in zip(found, job["targets"])])
        if progress:
            for offset, job in enumerate(batch):
                found = {name: [d for d in results[name][first + offset] if np.isfinite(d)] for name in results}
                print(f"clip {job['clip']['index']}: {job['clip']['colour']} object moved by {job['clip']['shift_cells']} "
                      f"cells; " + "; ".join(
                          f"{name} {np.mean(found[name]) if found[name] else float('nan'):.1f} px where found, lost "
                          f"in {num_frames - len(found[name])}/{num_frames} frames" for name in results), file=sys.stderr)
    used = [job["clip"] for job in jobs]
    return {
        "controlled": summarise(results["controlled"], cell, size),
        "baseline": summarise(results["baseline"], cell, size),
        "controlled_minus_baseline": paired_difference(results["controlled"], results["baseline"], size),
        "settings": {"num_clips": len(used), "num_frames": num_frames, "shift_cells": shift, "steps": steps,
                     "gamma": gamma, "seed": seed, "precision": precision, "batch_size": batch_size, "cell_px": cell,
                     "grid": list(grid), "data": str(data_path)},
        "clips": used,
    }


def control_report(model, folder: Path, dataset, num_clips: int, protocol, device) -> dict:
    """evaluate.py's control accuracy: `num_clips` clips of the split at the protocol's frames, steps, guidance,
    seed and precision when the split has synthetic ground truth, else the reason it was skipped."""
    if num_clips <= 0:
        return {"skipped": "--control-clips 0"}
    try:
        read_ground_truth(dataset.shard_paths[0], 0)
    except KeyError:
        return {"skipped": "the data has no synthetic ground truth (dataset.make_synthetic writes it)"}
    return control_accuracy(model, folder, num_clips, protocol.gen_frames, steps=protocol.steps, gamma=protocol.gamma,
                            seed=protocol.seed, device=device, progress=False, precision=protocol.precision)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--data", required=True, help="a synthetic split folder with ground truth, e.g. data/toy_h5/test")
    parser.add_argument("--num-clips", type=int, default=32)
    parser.add_argument("--num-frames", type=int, default=6)
    parser.add_argument("--shift", type=int, default=2, help="cells the object is moved by (at the last frame)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--gamma", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=1, help="clips generated at once (1: each clip with its own seed, seed + clip index)")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="generation precision (default auto: bf16 on CUDA and on CPUs with bf16 instructions)")
    parser.add_argument("--out", help="write the results as JSON")
    parser.add_argument("overrides", nargs="*")
    return parser


def main(argv=None) -> int:
    """Exit status 0, 1 when the evaluation fails (its message printed, no traceback), 2 for a bad command line."""
    from evaluation.errors import EXPECTED_ERRORS
    from lutils.configuration import Configuration
    from lutils.errors import report
    from lutils.io import write_json
    from model.model import Model

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        for name in ("num_clips", "num_frames", "shift", "steps", "batch_size"):
            if getattr(args, name) < 1:
                parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    except SystemExit as exit:  # argparse printed the usage and the error (status 2), or the help (0)
        return exit.code
    try:
        config = Configuration(args.config, args.overrides)
        model = Model.from_config(config, args.ckpt).to(args.device).eval()
        result = control_accuracy(model, args.data, args.num_clips, args.num_frames, args.shift, args.steps,
                                  args.gamma, args.seed, args.device, precision=args.precision,
                                  batch_size=args.batch_size)
        print(format_result(result))
        if args.out:
            write_json(args.out, result)
    except EXPECTED_ERRORS as error:
        return report(error)  # one line on stderr, exit status 1
    return 0


def format_result(result: dict) -> str:
    s = result["settings"]
    lines = [f"control accuracy over {s['num_clips']} clips, {s['num_frames']} frames, object moved {s['shift_cells']} "
             f"cells ({s['cell_px']:.0f} px a cell), {s['steps']} steps, gamma {s['gamma']}:",
             "| generation | mean distance px [95% CI] | mean distance cells | frames within one cell | object lost |",
             "|---|---|---|---|---|"]
    for name in ("controlled", "baseline"):
        r = result[name]
        lo, hi = (_number(v, ".1f") for v in r["mean_distance_px_ci95"])
        lines.append(f"| {name} | {r['mean_distance_px']:.1f} [{lo}, {hi}] | {r['mean_distance_cells']:.2f} | "
                     f"{100 * r['within_one_cell']:.0f} % | {100 * r['lost']:.0f} % |")
    paired = result.get("controlled_minus_baseline")
    if paired:
        lo, hi = (_number(v, "+.1f") for v in paired["ci95_px"])
        lines.append(f"controlled - baseline, clip by clip: {paired['mean_px']:+.1f} px [95% CI {lo}, {hi}]; "
                     f"the object ends closer to its target with control in "
                     f"{100 * paired['clips_closer_with_control']:.0f} % of clips")
    return "\n".join(lines)


def _number(value, spec: str) -> str:
    """`value` formatted with `spec`, or "n/a" for None (an interval from one clip)."""
    return "n/a" if value is None else format(value, spec)


if __name__ == "__main__":
    sys.exit(main())
