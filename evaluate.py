"""Evaluate a CAGE checkpoint: FVD, PSNR, SSIM, LPIPS and (on synthetic data) control accuracy, from one command.

    python evaluate.py --config configs/bair.yaml --ckpt model.pth --data data/bair_h5 --split test \
        --num-videos 256 --cond-frames 1 --gen-frames 15 --steps 20 --i3d weights/i3d_torchscript.pt \
        --out results/bair.json

For each selected test clip the model is conditioned on its first K real frames and generates F more, optionally with
controls taken from the real future frames (their DINOv2 features, each cell revealed with probability
--controls-prob, as in CAGE's controlled setting). Batches are written to <out>.parts/ as they finish, so an
interrupted run resumes where it stopped; under torchrun every process generates its share of the batches.

Writes <out> (every metric, the protocol, checkpoint and code versions), <out stem>_per_frame.png (PSNR/SSIM/LPIPS per
generated frame) and <out stem>_samples.png (real rows above generated rows). Weights are never downloaded: FVD needs
--i3d (or --no-fvd), LPIPS runs only with --lpips-weights. See docs/evaluation.md for the protocol.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lutils.configuration import Configuration, ConfigurationError

log = logging.getLogger("evaluate")
PARTS_VERSION = 1
SAMPLE_VIDEOS = 8  # clips shown in <out stem>_samples.png


class EvaluationError(ValueError):
    """A problem with the evaluation's inputs or its partial results."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--ckpt", required=True, help="CAGE checkpoint (original or ours)")
    parser.add_argument("--data", help="dataset root with split folders, or a split folder (default: data.data_root)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", required=True, help="results file (.json)")
    parser.add_argument("--num-videos", type=int, help="clips to generate, evenly spaced over the split (default: all)")
    parser.add_argument("--cond-frames", type=int, default=1, help="K real frames the model is conditioned on")
    parser.add_argument("--gen-frames", type=int, default=15, help="F frames generated after them")
    parser.add_argument("--steps", type=int, default=20, help="ODE steps per window")
    parser.add_argument("--gamma", type=float, default=0.0, help="guidance strength")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--controls-prob", type=float, default=0.0,
                        help="reveal each cell of the real future frames' DINOv2 features with this probability")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per generate() call")
    parser.add_argument("--method", choices=("joint", "rollout"), default="joint")
    parser.add_argument("--solver", default="euler")
    parser.add_argument("--i3d", help="FVD detector: i3d_torchscript.pt (TorchScript) or an I3D state dict")
    parser.add_argument("--no-fvd", action="store_true", help="skip FVD (then --i3d is not needed)")
    parser.add_argument("--fvd-frames", choices=("all", "generated"), default="all",
                        help="compare the K conditioning + F generated frames (all) or the F generated ones")
    parser.add_argument("--fvd-real-videos", type=int, default=0,
                        help="real clips for the real FVD statistics, evenly spaced over the split (0: the evaluated clips)")
    parser.add_argument("--lpips-weights", help="local AlexNet weights for LPIPS (alexnet-owt-7be5be79.pth)")
    parser.add_argument("--control-clips", type=int, default=32,
                        help="clips for control accuracy when the data has synthetic ground truth (0: skip)")
    parser.add_argument("--skip-short-videos", action="store_true", help="leave out videos shorter than K+F frames")
    parser.add_argument("--restart", action="store_true", help="discard partial results in <out>.parts first")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="generation in bf16 autocast or fp32 (default auto: bf16 on CUDA and on CPUs with native "
                             "bf16 instructions, lutils/precision.py)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="the older spelling: --bf16 is --precision bf16, --no-bf16 is --precision fp32")
    parser.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True,
                        help="use the checkpoint's EMA weights when it has them (default: yes)")
    parser.add_argument("--trust-checkpoint", action="store_true", help="allow checkpoints that need full unpickling")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value")
    return parser


# Inputs ----------------------------------------------------------------------------------------------------------
def split_folder(data: Path, split: str) -> Path:
    """`data/split` when it exists, else `data` itself when it holds shards."""
    from dataset.h5 import list_shards

    if (data / split).is_dir():
        return data / split
    try:
        list_shards(data)
    except FileNotFoundError as error:
        raise EvaluationError(f"--data {data}: no '{split}' split folder in it, and not a split folder itself "
                              f"({error})") from None
    return data


def open_clips(config: Configuration, folder: Path, clip_frames: int, skip_short: bool):
    """The split as deterministic clips: frames 0.. of each video, resized and centre-cropped as in training, uint8."""
    from dataset.video_dataset import VideoDataset

    data = config["data"]
    return VideoDataset(folder, int(data["input_size"]), int(data["crop_size"]), frames_per_sample=clip_frames,
                        skip_frames=int(data.get("skip_frames", 0)), random_time=False, random_horizontal_flip=False,
                        frames_key=data.get("frames_key"), skip_short_videos=skip_short, output_dtype="uint8")


def make_protocol(args, config: Configuration, num_available: int, frame_size: int):
    from evaluation.protocol import Protocol

    from lutils.precision import resolve_precision

    precision = args.precision if args.bf16 is None else ("bf16" if args.bf16 else "fp32")
    return Protocol(
        split=args.split, num_videos=args.num_videos or num_available, cond_frames=args.cond_frames,
        gen_frames=args.gen_frames, skip_frames=int(config["data"].get("skip_frames", 0)), frame_size=frame_size,
        clip_start=0, steps=args.steps, gamma=args.gamma, seed=args.seed, batch_size=args.batch_size,
        controls_prob=args.controls_prob, method=args.method, solver=args.solver, fvd_frames=args.fvd_frames,
        fvd_real_videos=args.fvd_real_videos, precision=resolve_precision(precision, args.device),
    )


# Partial results -------------------------------------------------------------------------------------------------
def prepare_parts(parts: Path, identity: dict, restart: bool) -> None:
    """Create <out>.parts with identity.json, or check that existing parts were made by the same evaluation."""
    if restart and parts.exists():
        shutil.rmtree(parts)
    saved = parts / "identity.json"
    if saved.is_file():
        previous = json.loads(saved.read_text())
        changed = [f"{key}: {previous.get(key)!r} -> {value!r}" for key, value in identity.items()
                   if previous.get(key) != value]
        if changed:
            raise EvaluationError(f"{parts} holds batches of another evaluation ({'; '.join(changed)}); "
                                  f"use another --out or --restart")
    else:
        from lutils.io import atomic_write_text

        atomic_write_text(saved, json.dumps(identity, indent=2, sort_keys=True))


def batch_path(parts: Path, index: int) -> Path:
    return parts / f"batch_{index:05d}.npz"


def save_batch(path: Path, **arrays) -> None:
    from lutils.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def load_batches(parts: Path, count: int):
    """Yield the saved batches in order (each a dict of arrays); a missing one is an error."""
    for index in range(count):
        path = batch_path(parts, index)
        if not path.is_file():
            raise EvaluationError(f"{path} is missing: a process stopped early; run the same command again to finish")
        with np.load(path) as batch:
            yield {key: batch[key] for key in batch.files}


# Generation ------------------------------------------------------------------------------------------------------
@torch.no_grad()
def generate_batch(model, clips: torch.Tensor, protocol, batch_index: int, device) -> np.ndarray:
    """Generated clips uint8 [b K+F 3 H W] for real clips uint8 [b K+F 3 H W]; the first K frames are the real ones."""
    from dataset.transforms import to_float
    from lutils.logging import to_video
    from lutils.precision import autocast
    from model.generation import generate

    k, f = protocol.cond_frames, protocol.gen_frames
    generator = torch.Generator().manual_seed(protocol.seed * 1_000_003 + batch_index)
    frames = to_float(clips).to(device)
    feats = masks = None
    if protocol.controls_prob > 0:
        feats = model.get_features(frames[:, k:])  # [b F C h w]
        allowed = torch.ones(*feats.shape[:2], 1, *feats.shape[3:], device=device)
        masks = model.sparsify(allowed, protocol.controls_prob, generator)
    with autocast(device, protocol.precision):
        video = generate(model, f, device, initial_frames=frames[:, :k] if k else None, feats=feats,
                         feats_masks=masks, batch_size=len(clips), method=protocol.method,
                         odesolver=protocol.solver, num_steps=protocol.steps, gamma=protocol.gamma, generator=generator)
    generated = to_video(video[:, -f:])
    return np.concatenate([clips[:, :k].numpy(), generated], axis=1)


def generate_all(model, dataset, indices: list, protocol, parts: Path, info) -> None:
    """Generate this process's batches that are not on disk yet (batch i belongs to rank i mod world size)."""
    from tqdm import tqdm

    mine = [b for b in range(protocol.num_batches) if b % info.world_size == info.rank]
    todo = [b for b in mine if not batch_path(parts, b).is_file()]
    if info.is_main:
        done = sum(batch_path(parts, b).is_file() for b in range(protocol.num_batches))
        log.info("generating %d clips in %d batches of %d (%d done before, %d processes)", protocol.num_videos,
                 protocol.num_batches, protocol.batch_size, done, info.world_size)
    for b in tqdm(todo, desc="generate", disable=not info.is_main, dynamic_ncols=True):
        chosen = indices[b * protocol.batch_size:(b + 1) * protocol.batch_size]
        clips = torch.stack([dataset[i] for i in chosen])
        start = time.perf_counter()
        generated = generate_batch(model, clips, protocol, b, info.device)
        seconds = time.perf_counter() - start
        save_batch(batch_path(parts, b), indices=np.asarray(chosen), real=clips.numpy(), generated=generated,
                   seconds=np.asarray(seconds))


# Metrics ---------------------------------------------------------------------------------------------------------
def fvd_slice(protocol) -> slice:
    return slice(0, None) if protocol.fvd_frames == "all" else slice(protocol.cond_frames, None)


def compute_metrics(dataset, protocol, parts: Path, detector, lpips_model, device, real_indices: list) -> tuple:
    """Per-frame PSNR/SSIM/LPIPS over the generated frames, FVD, the first clips for the sample grid, and the
    generation time the batches recorded. `real_indices`: the clips of the real FVD statistics when
    protocol.fvd_real_videos is set (otherwise the evaluated clips serve)."""
    from evaluation import fvd
    from evaluation.frame_metrics import lpips_per_frame, psnr_per_frame, ssim_per_frame, to_unit
    from tqdm import tqdm

    k = protocol.cond_frames
    per_frame = {"psnr": [], "ssim": [], "lpips": []}
    real_stats, fake_stats = fvd.FeatureStats(), fvd.FeatureStats()
    samples, seconds = {"real": [], "generated": []}, 0.0
    for batch in tqdm(load_batches(parts, protocol.num_batches), total=protocol.num_batches, desc="metrics",
                      dynamic_ncols=True):
        for key in samples:
            samples[key].extend(batch[key][:SAMPLE_VIDEOS - len(samples[key])])
        seconds += float(batch["seconds"])
        real = to_unit(torch.from_numpy(batch["real"][:, k:]), "uint8")
        fake = to_unit(torch.from_numpy(batch["generated"][:, k:]), "uint8")
        per_frame["psnr"].append(psnr_per_frame(real, fake))
        per_frame["ssim"].append(ssim_per_frame(real, fake))
        if lpips_model is not None:
            per_frame["lpips"].append(lpips_per_frame(lpips_model, real.to(device), fake.to(device)).cpu())
        if detector is not None:
            compared = fvd_slice(protocol)
            fake_stats.update(fvd.extract_features(detector, torch.from_numpy(batch["generated"][:, compared]),
                                                   protocol.batch_size, device))
            if not protocol.fvd_real_videos:
                real_stats.update(fvd.extract_features(detector, torch.from_numpy(batch["real"][:, compared]),
                                                       protocol.batch_size, device))
    fvd_result = None
    if detector is not None:
        if protocol.fvd_real_videos:
            for start in tqdm(range(0, len(real_indices), protocol.batch_size), desc="real statistics",
                              dynamic_ncols=True):
                clips = torch.stack([dataset[i] for i in real_indices[start:start + protocol.batch_size]])
                real_stats.update(fvd.extract_features(detector, clips[:, fvd_slice(protocol)], protocol.batch_size,
                                                       device))
        fvd_result = {"value": fvd.fvd_from_stats(real_stats, fake_stats), "real_videos": real_stats.count,
                      "generated_videos": fake_stats.count}
        if min(real_stats.count, fake_stats.count) < 256:
            fvd_result["note"] = "fewer than 256 videos per set: FVD is strongly biased upward at this size"
    per_frame = {name: torch.cat(values) for name, values in per_frame.items() if values}
    return per_frame, fvd_result, {key: np.stack(clips) for key, clips in samples.items()}, seconds


def control_report(model, folder: Path, dataset, args, protocol, device) -> dict:
    """Control accuracy when the split has synthetic ground truth, else the reason it was skipped."""
    from dataset.synthetic import read_ground_truth
    from evaluation.control import control_accuracy

    if args.control_clips <= 0:
        return {"skipped": "--control-clips 0"}
    try:
        read_ground_truth(dataset.shard_paths[0], 0)
    except KeyError:
        return {"skipped": "the data has no synthetic ground truth (dataset.make_synthetic writes it)"}
    return control_accuracy(model, folder, args.control_clips, protocol.gen_frames, steps=protocol.steps,
                            gamma=protocol.gamma, seed=protocol.seed, device=device, progress=False,
                            precision=protocol.precision)


def load_optional_weights(args, device, is_main: bool) -> tuple:
    """The FVD detector and LPIPS network (rank 0 only; on the others, just the path checks)."""
    from evaluation import fvd
    from evaluation.frame_metrics import load_lpips

    detector = lpips_model = None
    if not args.no_fvd:
        if not is_main:
            if not args.i3d or not Path(args.i3d).is_file():
                fvd.load_detector(args.i3d, "cpu")  # raises the error that names the file to obtain
        else:
            detector = fvd.load_detector(args.i3d, device)
    if args.lpips_weights:
        lpips_model = load_lpips(args.lpips_weights, device) if is_main else None
    return detector, lpips_model


def summarise_metrics(per_frame: dict, fvd_result, args) -> dict:
    from evaluation.frame_metrics import summarise

    metrics = {name: summarise(values) for name, values in per_frame.items()}
    if "lpips" not in metrics:
        metrics["lpips"] = {"skipped": "no --lpips-weights given: LPIPS needs a local AlexNet file "
                                       "(alexnet-owt-7be5be79.pth); nothing is downloaded"}
    metrics["fvd"] = fvd_result if fvd_result is not None else {"skipped": "--no-fvd"}
    return metrics


def run(args) -> int:
    from evaluation.protocol import evenly_spaced
    from evaluation.report import checkpoint_info, code_versions, plot_per_frame, save_sample_grid
    from lutils.io import atomic_write_text
    from model.model import Model
    from training.distributed import barrier, cleanup, init_distributed

    out = Path(args.out)
    if out.suffix.lower() != ".json":
        raise EvaluationError(f"--out must be a .json file, got {out}")
    if not Path(args.ckpt).is_file():
        raise EvaluationError(f"--ckpt {args.ckpt}: no such file")
    config = Configuration(args.config, args.overrides)
    info = init_distributed(args.device)
    args.device = str(info.device)
    try:
        detector, lpips_model = load_optional_weights(args, info.device, info.is_main)
        folder = split_folder(Path(args.data or config["data"]["data_root"]), args.split)
        dataset = open_clips(config, folder, args.cond_frames + args.gen_frames, args.skip_short_videos)
        protocol = make_protocol(args, config, len(dataset), int(config["data"]["crop_size"]))
        indices = evenly_spaced(len(dataset), protocol.num_videos)
        # chosen (and the count checked) before any work
        real_indices = evenly_spaced(len(dataset), protocol.fvd_real_videos) if protocol.fvd_real_videos else []
        ckpt = Path(args.ckpt)
        parts = out.with_suffix(".parts")
        identity = {"parts_version": PARTS_VERSION, "protocol": protocol.to_dict(), "data": str(folder.resolve()),
                    "checkpoint": str(ckpt.resolve()), "checkpoint_bytes": ckpt.stat().st_size,
                    "checkpoint_mtime": ckpt.stat().st_mtime, "ema": args.ema, "model_config": config.to_dict()["model"]}
        if info.is_main:
            prepare_parts(parts, identity, args.restart)
        barrier(info)

        model = Model(config["model"]).load_from_ckpt(args.ckpt, trust=args.trust_checkpoint, use_ema=args.ema)
        model = model.to(info.device).eval()
        started = time.perf_counter()
        generate_all(model, dataset, indices, protocol, parts, info)
        barrier(info)
        cleanup()  # together, before rank 0's metrics: no process waits on (or tears down) a group still in use
        if not info.is_main:
            return 0

        per_frame, fvd_result, samples, generation_seconds = compute_metrics(dataset, protocol, parts, detector,
                                                                            lpips_model, info.device, real_indices)
        metrics = summarise_metrics(per_frame, fvd_result, args)
        metrics["control_accuracy"] = control_report(model, folder, dataset, args, protocol, info.device)
        stem = out.with_suffix("")
        plot = plot_per_frame(f"{stem}_per_frame.png", {name: metrics[name].get("per_frame_mean")
                                                       for name in ("psnr", "ssim", "lpips")}, protocol.cond_frames)
        grid = save_sample_grid(f"{stem}_samples.png", samples["real"], samples["generated"], SAMPLE_VIDEOS)
        results = {
            "metrics": metrics,
            "protocol": protocol.to_dict(),
            "data": {"folder": str(folder.resolve()), "videos_in_split": len(dataset), "indices": indices},
            "checkpoint": {**checkpoint_info(args.ckpt), "ema": args.ema},
            "config": config.to_dict(),
            "code": code_versions(),
            "device": str(info.device) + (f" ({torch.cuda.get_device_name(info.device)})"
                                          if info.device.type == "cuda" else ""),
            "processes": info.world_size,
            "seconds": {"generation": generation_seconds, "total_this_run": time.perf_counter() - started},
            "files": {"per_frame_plot": str(plot), "samples": str(grid), "parts": str(parts)},
        }
        atomic_write_text(out, json.dumps(json_safe(results), indent=2, allow_nan=False) + "\n")
        print(format_summary(metrics, out))
        return 0
    finally:
        cleanup()


def json_safe(value):
    """Plain JSON: numpy/torch scalars as numbers, and NaN or infinite values (e.g. a median over no found
    objects) as null, since JSON has no such numbers."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, (np.generic, torch.Tensor)):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def format_summary(metrics: dict, out: Path) -> str:
    lines = [f"wrote {out}"]
    for name in ("fvd", "psnr", "ssim", "lpips"):
        value = metrics[name]
        number = value.get("value", value.get("mean"))
        lines.append(f"  {name}: " + (f"skipped ({value['skipped']})" if "skipped" in value else
                                       f"{number:.4f}" if number is not None else "undefined"))
    control = metrics["control_accuracy"]
    if "skipped" in control:
        lines.append(f"  control accuracy: skipped ({control['skipped']})")
    else:
        from evaluation.control import format_result

        lines.append(format_result(control))
    return "\n".join(lines)


def main(argv=None) -> int:
    from evaluation.fvd import DetectorError
    from evaluation.frame_metrics import LPIPSWeightsError
    from model.checkpoint import CheckpointError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return run(args)
    except (ValueError, FileNotFoundError, ConfigurationError, CheckpointError, DetectorError, LPIPSWeightsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
