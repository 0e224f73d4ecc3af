"""Train CAGE: `python train.py --config configs/X.yaml --run-name R [--wandb] [--num-gpus N] [--resume-step S|-1]
[--random-seed K] [key=value ...]`.

Multi-GPU: `torchrun --nproc-per-node G train.py ...` (add `--nnodes N --rdzv-backend c10d --rdzv-endpoint HOST:PORT`
for several nodes), or `--num-gpus G` to spawn G processes on this node. The run lives in
runs/<name>_run-<run-name>/. `--dry-run` checks a config and its data without training: it builds the train (and
val, when present) datasets, draws one batch through a DataLoader and prints what it got.

Exit status: 0 done, 1 bad config, data, checkpoint or run folder (one `error:` line: a CageError), 2 bad command
line. Any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from lutils.configuration import Configuration
from lutils.errors import CageError, report
from training import DEFAULT_SEED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/clevrer.yaml")
    parser.add_argument("--run-name", required=True, help="run directory is runs/<name>_run-<run-name>/")
    parser.add_argument("--wandb", action="store_true", help="log to wandb (mode from $WANDB_MODE, default online)")
    parser.add_argument("--num-gpus", "--num-processes", dest="num_gpus", type=int, default=None,
                        help="processes on this node without torchrun: one per GPU, or with --device cpu CPU processes "
                             "that share the cores (each gets cores/N threads unless OMP_NUM_THREADS is set)")
    parser.add_argument("--resume-step", type=int, default=None, help="resume from step_N.pth, or -1 for latest.pth")
    parser.add_argument("--random-seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--dry-run", action="store_true", help="check config and data, draw one batch, exit")
    parser.add_argument("--max-steps", type=int, default=None, help="stop (and save latest.pth) at this global step")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default=None,
                        help="bf16 autocast or fp32 (default: training.precision, else auto: bf16 on CUDA and on CPUs "
                             "with native bf16 instructions)")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value (+key=value adds a key)")
    return parser


def dry_run(config: Configuration) -> None:
    import torch
    from torch.utils.data import DataLoader

    from dataset.clips import clips_from_config
    from dataset.h5 import DataNotFoundError

    data = config["data"]
    batch_size = int(config["training"]["batching"]["batch_size"])
    for split in ("train", "val"):
        try:
            dataset = clips_from_config(data, split, "train" if split == "train" else "validation", output_dtype="float32")
        except DataNotFoundError as error:
            if split == "val":
                print(f"[val] not found ({error}); validation will be unavailable", file=sys.stderr)
                continue
            raise
        start = time.time()
        loader = DataLoader(dataset, batch_size=min(batch_size, len(dataset)), shuffle=True, num_workers=0)
        batch = next(iter(loader))
        print(
            f"[{split}] {dataset.num_videos} videos in {len(dataset.shard_paths)} shard(s) "
            f"({', '.join(sorted(set(dataset.layouts)))} layout); batch {tuple(batch.shape)} {batch.dtype} "
            f"range [{batch.min().item():.3f}, {batch.max().item():.3f}] in {time.time() - start:.2f} s"
        )
        assert torch.isfinite(batch).all()


def trainer_class(kind: str):
    """The trainer for `kind`: "cage" (train.py) or "autoencoder" (train_autoencoder.py)."""
    if kind == "autoencoder":
        from training.autoencoder_trainer import AutoencoderTrainer

        return AutoencoderTrainer
    from training.trainer import Trainer

    return Trainer


def run(args: argparse.Namespace, config: Configuration, kind: str = "cage") -> int:
    """Train in this process (one of possibly several: torchrun or --num-gpus sets the environment)."""
    from training.distributed import cleanup, init_distributed

    info = init_distributed(args.device)
    try:
        trainer = trainer_class(kind)(config, args.run_name, info, seed=args.random_seed, use_wandb=args.wandb,
                                      resume_step=args.resume_step, precision=args.precision)
        return trainer.train(max_steps=args.max_steps)
    except CageError as error:
        return report(error)
    finally:
        cleanup()


def _spawned(local_rank: int, world_size: int, port: int, args: argparse.Namespace, config: Configuration,
             kind: str) -> None:
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world_size),
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    code = run(args, config, kind)
    if code != 0:
        sys.exit(code)


def main(argv=None, kind: str = "cage") -> int:
    args = build_parser().parse_args(argv)
    try:
        config = Configuration(args.config, args.overrides)
        if args.dry_run:
            dry_run(config)
            return 0
    except CageError as error:
        return report(error)
    from training.distributed import free_port, launched_by_torchrun

    if launched_by_torchrun() or not args.num_gpus or args.num_gpus <= 1:
        return run(args, config, kind)
    import torch.multiprocessing as mp

    mp.spawn(_spawned, args=(args.num_gpus, free_port(), args, config, kind), nprocs=args.num_gpus, join=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
