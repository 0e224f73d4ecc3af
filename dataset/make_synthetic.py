"""Write the synthetic CLEVRER-like world as CAGE HDF5 splits, with per-frame ground truth in the same shards.

    python -m dataset.make_synthetic --out-dir data/synthetic --train 512 --val 64 --test 64 --frames 32 --size 64
    python -m dataset.make_synthetic --out-dir OUT --background textured --occlusion --seed 3 --force

Every split goes to OUT/<split>/shard_0001.hdf5 ... (chunked layout) with a manifest.json; each shard also holds
/ground_truth/<v> for its videos (docs/data-format.md, "Ground truth"; read with dataset.synthetic.read_ground_truth).
Video i of split s (train=0, val=1, test=2) is generated from the seed entropy (--seed, s, i): the output is
deterministic, and the splits differ. A split folder appears only once all splits are complete (the hidden split
folders of a run that was killed are removed by the next run, with a note). The underscore spelling of the flags
(--out_dir, --min_objects, ...) works as well. Exit status: 1 bad output folder, 2 bad command line, 130 interrupted.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import h5py

from dataset.h5 import CHUNKED, COMPRESSIONS, OutputExistsError, SplitWriter, commit_splits
from dataset.staging import remove_stale
from dataset.synthetic import BACKGROUNDS, MASS_MODELS, WorldConfig, WorldError, generate_world, write_ground_truth
from lutils.errors import EXIT_INTERRUPTED, CageError, report

SPLITS = ("train", "val", "test")
TOOL = "dataset/make_synthetic.py"


def write_split(
    out_dir: str | Path,
    split: str,
    count: int,
    config: WorldConfig,
    seed: int = 0,
    compression: Optional[str] = None,
    num_per_shard: int = 100000,
    overwrite: bool = False,
    quiet: bool = True,
) -> tuple:
    """Generate `count` videos of `split` into a SplitWriter for out_dir/<split>, ground truth included.

    Returns (writer, manifest): complete but not yet moved into place; `writer.commit({"manifest.json": ...})`
    publishes it, `writer.abort()` discards it (as dataset/convert_to_h5.py's convert_split).
    """
    config.validate()
    split_index = SPLITS.index(split)
    start = time.time()
    writer = SplitWriter(Path(out_dir) / split, CHUNKED, compression, num_per_shard, overwrite=overwrite)
    try:
        truths = []
        for i in range(count):
            frames, truth = generate_world(config, (seed, split_index, i))
            writer.add_video(frames, f"synthetic_{split}_{i:06d}")
            truths.append(truth)
            if not quiet and (i + 1) % 100 == 0:
                print(f"{split}: {i + 1}/{count} videos", file=sys.stderr)
        shards = writer.finish_shards()
        # The shards are complete files in the writer's hidden staging folder until commit(); attach the ground truth
        # there, so the split still appears atomically. Video n went to shard n // num_per_shard, entry n % num_per_shard.
        staging = writer.staging_dir
        for s, name in enumerate(shards):
            part = truths[s * num_per_shard:(s + 1) * num_per_shard]
            with h5py.File(staging / name, "a") as f:
                if len(f["lengths"]) != len(part):
                    raise RuntimeError(f"{name}: holds {len(f['lengths'])} videos, expected {len(part)}")
                for v, truth in enumerate(part):
                    write_ground_truth(f, v, truth)
        manifest = {
            "tool": TOOL,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "layout": CHUNKED,
            "compression": compression or "none",
            "split": split,
            "num_videos": writer.num_videos,
            "shards": shards,
            "skipped": [],
            "settings": {
                **asdict(config),
                "seed": seed,
                "video_seed": f"SeedSequence entropy [seed, {split_index}, video index]",
                "num_per_shard": num_per_shard,
                "ground_truth": "/ground_truth/<v> in each shard (docs/data-format.md)",
            },
            "seconds": round(time.time() - start, 2),
        }
    except BaseException:
        writer.abort()
        raise
    return writer, manifest


def build_parser() -> argparse.ArgumentParser:
    defaults = WorldConfig()
    parser = argparse.ArgumentParser(
        prog="python -m dataset.make_synthetic", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__,
    )
    parser.add_argument("--out-dir", "--out_dir", required=True, help="output folder; each split goes to OUT/<split>/")
    parser.add_argument("--train", type=int, default=64, help="number of training videos (0: no split folder)")
    parser.add_argument("--val", type=int, default=8, help="number of validation videos")
    parser.add_argument("--test", type=int, default=8, help="number of test videos")
    parser.add_argument("--frames", type=int, default=defaults.num_frames, help="frames per video")
    parser.add_argument("--size", type=int, default=defaults.size, help="image size in pixels (square)")
    parser.add_argument("--min-objects", "--min_objects", type=int, default=defaults.min_objects)
    parser.add_argument("--max-objects", "--max_objects", type=int, default=defaults.max_objects)
    parser.add_argument("--min-speed", "--min_speed", type=float, default=defaults.min_speed,
                        help="initial speed, image sizes/frame")
    parser.add_argument("--max-speed", "--max_speed", type=float, default=defaults.max_speed,
                        help="initial speed, image sizes/frame")
    parser.add_argument("--background", choices=BACKGROUNDS, default=defaults.background)
    parser.add_argument("--occlusion", action=argparse.BooleanOptionalAction, default=defaults.occlusion,
                        help="put a fraction of the objects on an upper layer that passes over the others")
    parser.add_argument("--occluder-fraction", "--occluder_fraction", type=float, default=defaults.occluder_fraction,
                        help="with --occlusion: fraction of the objects on the upper layer")
    parser.add_argument("--mass", choices=MASS_MODELS, default=defaults.mass,
                        help="collision masses: shape area or all equal")
    parser.add_argument("--seed", type=int, default=0, help="base seed (non-negative)")
    parser.add_argument("--compression", choices=COMPRESSIONS, default="none", help="compression of the frame chunks")
    parser.add_argument("--num-per-shard", "--num_per_shard", type=int, default=100000, help="videos per shard file")
    parser.add_argument("--force", action="store_true", help="replace existing output split folders")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    return parser


def main(argv: Optional[list] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    counts = {"train": args.train, "val": args.val, "test": args.test}
    config = WorldConfig(
        num_frames=args.frames, size=args.size, min_objects=args.min_objects, max_objects=args.max_objects,
        min_speed=args.min_speed, max_speed=args.max_speed, background=args.background, occlusion=args.occlusion,
        occluder_fraction=args.occluder_fraction, mass=args.mass,
    )
    try:
        config.validate()
    except WorldError as error:
        parser.error(str(error))
    if min(counts.values()) < 0 or not sum(counts.values()):
        parser.error(f"video counts must be >= 0 with at least one > 0, got {counts}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    if args.num_per_shard < 1:
        parser.error(f"--num-per-shard must be >= 1, got {args.num_per_shard}")
    out_dir = Path(args.out_dir)
    splits = [split for split in SPLITS if counts[split] > 0]
    try:
        if out_dir.exists() and not out_dir.is_dir():
            raise OutputExistsError(f"--out-dir is a file: {out_dir}")
        for split in SPLITS:  # hidden split folders of earlier runs that were killed midway
            remove_stale(out_dir / split, lambda line: print(f"note: {line}", file=sys.stderr))
        if not args.force:
            for split in splits:
                if (out_dir / split).exists() and any((out_dir / split).iterdir()):
                    raise OutputExistsError(f"output split folder is not empty: {out_dir / split} "
                                            f"(use --force to replace it)")
        # Splits are moved into place only once every one of them is complete.
        written = commit_splits(write_split(out_dir, split, counts[split], config, args.seed, args.compression,
                                            args.num_per_shard, args.force, args.quiet) for split in splits)
        if not args.quiet:
            for writer, manifest in written:
                print(f"{manifest['split']}: {manifest['num_videos']} videos -> {writer.out_dir} "
                      f"({manifest['seconds']} s)", file=sys.stderr)
    except CageError as error:  # WorldError, OutputExistsError, ...
        return report(error)
    except KeyboardInterrupt:
        print("interrupted: no partial split was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
