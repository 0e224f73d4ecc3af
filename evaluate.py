"""Evaluate a CAGE checkpoint: FVD, PSNR, SSIM, LPIPS and (on synthetic data) control accuracy, from one command.

    python evaluate.py --config configs/bair.yaml --ckpt model.pth --data data/bair_h5 --split test \
        --num-videos 256 --cond-frames 1 --gen-frames 15 --steps 20 --i3d weights/i3d_torchscript.pt \
        --out results/bair.json

For each selected test clip the model is conditioned on its first K real frames and generates F more, optionally with
controls taken from the real future frames (their DINOv2 features, each cell revealed with probability
--controls-prob, as in CAGE's controlled setting).

Two stages, as in DiT's sample_ddp.py: sampling writes the generated clips to <out>.parts/ batch by batch, so an
interrupted run resumes where it stopped, and under torchrun every process generates its share of the batches
(evaluation/sampling.py); the metrics then read them on one process (evaluation/metrics.py). By default both run;
--stage sample only generates, --stage metrics only scores samples already generated.

Writes <out> (every metric, the protocol, checkpoint and code versions), <out stem>_per_frame.png (PSNR/SSIM/LPIPS per
generated frame) and <out stem>_samples.png (real rows above generated rows). Weights are never downloaded: FVD needs
--i3d (or --no-fvd), LPIPS runs only with --lpips-weights. See docs/evaluation.md for the protocol.

Exit status: 0 on success, 1 when the evaluation fails (bad data, checkpoint, weights file or partial results; the
message is printed without traceback), 2 for a bad command line.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from evaluation.errors import EXPECTED_ERRORS, EvaluationError
from evaluation.metrics import METRICS
from lutils.configuration import Configuration
from lutils.errors import report
from lutils.io import json_safe

__all__ = ["EvaluationError", "build_parser", "check_arguments", "json_safe", "main", "make_protocol", "open_clips",
           "run", "split_folder"]  # json_safe: the one in lutils.io, still importable from here

log = logging.getLogger("evaluate")
STAGES = ("all", "sample", "metrics")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--ckpt", required=True, help="CAGE checkpoint (original or ours)")
    parser.add_argument("--data", help="dataset root with split folders, or a split folder (default: data.data_root)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", required=True, help="results file (.json)")
    parser.add_argument("--stage", choices=STAGES, default="all",
                        help="sample: generate into <out>.parts only; metrics: score the samples there only; "
                             "all (default): both")
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
    for name, metric in METRICS.items():  # each metric's weights file, and --no-<name> where the file is required
        if metric.weights is not None:
            parser.add_argument(metric.weights.option, dest=metric.weights.dest, help=metric.weights.help)
            if metric.weights.required:
                parser.add_argument(f"--no-{name}", action="store_true",
                                    help=f"skip {name.upper()} (then {metric.weights.option} is not needed)")
    parser.add_argument("--fvd-frames", choices=("all", "generated"), default="all",
                        help="compare the K conditioning + F generated frames (all) or the F generated ones")
    parser.add_argument("--fvd-real-videos", type=int, default=0,
                        help="real clips for the real FVD statistics, evenly spaced over the split (0: the evaluated clips)")
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


def check_arguments(parser: argparse.ArgumentParser, args) -> None:
    """Reject a bad command line through parser.error (exit status 2): what is wrong whatever the files hold."""
    if Path(args.out).suffix.lower() != ".json":
        parser.error(f"--out must be a .json file, got {args.out}")
    at_least = {"num_videos": 1, "cond_frames": 0, "gen_frames": 1, "steps": 1, "batch_size": 1,
                "fvd_real_videos": 0, "control_clips": 0}
    for name, low in at_least.items():
        value = getattr(args, name)
        if value is not None and value < low:
            parser.error(f"--{name.replace('_', '-')} must be at least {low}, got {value}")
    if not 0.0 <= args.controls_prob <= 1.0:
        parser.error(f"--controls-prob must lie in [0, 1], got {args.controls_prob}")
    if args.stage == "metrics" and args.restart:
        parser.error("--restart discards the samples that --stage metrics scores")
    if args.stage != "sample":
        for name, metric in METRICS.items():
            weights = metric.weights
            if weights is not None and weights.required and not getattr(args, f"no_{name}") \
                    and not getattr(args, weights.dest):
                parser.error(f"{name.upper()} needs {weights.option} (or --no-{name}): {weights.missing}")


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
    from dataset.clips import clips_from_config

    return clips_from_config(config["data"], folder.name, "evaluation", path=folder, frames_per_sample=clip_frames,
                             skip_short_videos=skip_short)


def make_protocol(args, config: Configuration, num_available: int, frame_size: int):
    from evaluation.protocol import Protocol
    from lutils.precision import resolve_precision

    for option, count in (("--num-videos", args.num_videos), ("--fvd-real-videos", args.fvd_real_videos)):
        if count and count > num_available:
            raise EvaluationError(f"{option}: asked for {count} videos, but the split has {num_available}")
    precision = args.precision if args.bf16 is None else ("bf16" if args.bf16 else "fp32")
    return Protocol(
        split=args.split, num_videos=args.num_videos or num_available, cond_frames=args.cond_frames,
        gen_frames=args.gen_frames, skip_frames=int(config["data"]["skip_frames"]), frame_size=frame_size,
        steps=args.steps, gamma=args.gamma, seed=args.seed, batch_size=args.batch_size,
        controls_prob=args.controls_prob, method=args.method, solver=args.solver, fvd_frames=args.fvd_frames,
        fvd_real_videos=args.fvd_real_videos, precision=resolve_precision(precision, args.device),
    )


def load_model(config: Configuration, args, device):
    from model.model import Model

    model = Model.from_config(config, args.ckpt, trust=args.trust_checkpoint, use_ema=args.ema)
    return model.to(device).eval()


# Both stages -----------------------------------------------------------------------------------------------------
def run(args) -> int:
    from evaluation import metrics as scoring
    from evaluation.control import control_report
    from dataset.clips import evenly_spaced
    from evaluation.report import checkpoint_info, code_versions, format_summary, plot_per_frame, save_sample_grid
    from evaluation.sampling import SampleStore, generate_all, sampling_identity
    from lutils.io import write_json
    from lutils.precision import tf32_settings
    from training.distributed import barrier, cleanup, init_distributed

    out, ckpt = Path(args.out), Path(args.ckpt)
    if not ckpt.is_file():
        raise EvaluationError(f"--ckpt {args.ckpt}: no such file")
    config = Configuration(args.config, args.overrides)
    info = init_distributed(args.device)
    args.device = str(info.device)
    try:
        scored = args.stage != "sample"
        if scored:  # weights are checked (and loaded on rank 0) before any generation
            plan = scoring.plan({name: getattr(args, metric.weights.dest) for name, metric in METRICS.items()
                                 if metric.weights is not None},
                                [name for name in METRICS if getattr(args, f"no_{name}", False)])
            networks = scoring.load_networks(plan, info.device, info.is_main)
        folder = split_folder(Path(args.data or config["data"]["data_root"]), args.split)
        dataset = open_clips(config, folder, args.cond_frames + args.gen_frames, args.skip_short_videos)
        protocol = make_protocol(args, config, len(dataset), int(config["data"]["crop_size"]))
        indices = evenly_spaced(len(dataset), protocol.num_videos)
        real_indices = evenly_spaced(len(dataset), protocol.fvd_real_videos) if protocol.fvd_real_videos else []
        store = SampleStore(out.with_suffix(".parts"), protocol.num_batches)
        identity = sampling_identity(protocol, folder, ckpt, args.ema, config.to_dict()["model"])
        started = time.perf_counter()

        model = None
        if args.stage != "metrics":
            if info.is_main:
                store.prepare(identity, args.restart)
            barrier(info)
            model = load_model(config, args, info.device)
            generate_all(model, dataset, indices, protocol, store, info)
            barrier(info)
        cleanup()  # together, before rank 0's metrics: no process waits on (or tears down) a group still in use
        if not info.is_main:
            return 0
        if not scored:
            print(f"wrote the samples of {protocol.num_videos} clips to {store.folder}; score them with --stage metrics")
            return 0

        store.check(identity)
        context = scoring.MetricContext(protocol, info.device, lambda: scoring.real_clip_batches(
            dataset, real_indices, protocol.batch_size))
        scores = scoring.score(store, context, plan, networks, indices)
        metrics = scores.metrics
        if model is None and args.control_clips > 0:
            model = load_model(config, args, info.device)
        metrics["control_accuracy"] = control_report(model, folder, dataset, args.control_clips, protocol, info.device)
        stem = out.with_suffix("")
        plot = plot_per_frame(f"{stem}_per_frame.png", scores.per_frame_curves(), protocol.cond_frames)
        grid = save_sample_grid(f"{stem}_samples.png", scores.samples["real"], scores.samples["generated"],
                                scoring.SAMPLE_VIDEOS)
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
            "numerics": tf32_settings(),  # as the run's autocast set them (CUDA only; lutils/precision.py)
            "seconds": {"generation": scores.generation_seconds, "total_this_run": time.perf_counter() - started},
            "files": {"per_frame_plot": str(plot), "samples": str(grid), "parts": str(store.folder)},
        }
        write_json(out, results)
        print(format_summary(metrics, out))
        return 0
    finally:
        cleanup()


def main(argv=None) -> int:
    """Exit status 0, 1 when the evaluation fails (its message printed, no traceback), 2 for a bad command line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        check_arguments(parser, args)
    except SystemExit as exit:  # argparse printed the usage and the error (status 2), or the help (0)
        return exit.code
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return run(args)
    except EXPECTED_ERRORS as error:
        return report(error)  # one line on stderr, exit status 1


if __name__ == "__main__":
    sys.exit(main())
