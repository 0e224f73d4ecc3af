"""Inspect CAGE HDF5 video data: `python -m dataset.inspect PATH [--deep] [--frames-key KEY]`.

PATH is a dataset root (with train/val/test folders), a split folder of shards, or one shard file. Prints splits,
videos, lengths, frame shapes, layout and compression, and flags problems; exits 1 when it finds any (or when PATH
does not exist), 2 for a bad command line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from dataset.h5 import CHUNKED, SHARD_SUFFIXES, DataNotFoundError, H5FormatError, VideoShard, list_shards
from lutils.errors import EXIT_FAILURE, CageError, report

SPLIT_NAMES = ("train", "val", "test")


def inspect_shard(path: Path, frames_key: Optional[str] = None, deep: bool = False) -> dict:
    """Summary of one shard, with a list of problems found."""
    report: dict = {"path": str(path), "size_mb": round(path.stat().st_size / 2**20, 2), "problems": []}
    try:
        shard = VideoShard(path, frames_key)
    except (H5FormatError, OSError, KeyError, ValueError) as error:
        report["problems"].append(str(error))
        return report
    with shard:
        report.update(layout=shard.layout, frames_key=shard.frames_key, num_videos=shard.num_videos)
        lengths = shard.lengths
        if shard.num_videos == 0:
            report["problems"].append(f"{path}: contains no videos")
            return report
        report["frames"] = {"total": int(lengths.sum()), "min": int(lengths.min()),
                            "mean": round(float(lengths.mean()), 1), "max": int(lengths.max())}
        for v in np.flatnonzero(lengths == 0)[:10]:
            report["problems"].append(f"{path}: video {v} has 0 frames")
        shapes, dtypes, compressions = {}, set(), set()
        for v in range(shard.num_videos):
            try:
                if shard.layout == CHUNKED:
                    dataset = shard.file["videos"][str(v)]
                    if dataset.shape[0] != lengths[v]:
                        report["problems"].append(f"{path}: video {v} stores {dataset.shape[0]} frames, /lengths says {lengths[v]}")
                    datasets = [dataset]
                else:
                    group = shard.frames_root[str(v)]
                    if len(group) != lengths[v]:
                        report["problems"].append(f"{path}: video {v} has {len(group)} frame datasets, /len says {lengths[v]}")
                    datasets = [group[str(t)] for t in range(lengths[v]) if str(t) in group]
                for dataset in datasets:
                    shape = dataset.shape[1:] if shard.layout == CHUNKED else dataset.shape
                    shapes[tuple(shape)] = shapes.get(tuple(shape), 0) + 1
                    dtypes.add(str(dataset.dtype))
                    compressions.add(str(dataset.compression))
                if deep:
                    for dataset in datasets:
                        dataset[()]  # decompress every frame
            except Exception as error:  # report and go on with the next video
                report["problems"].append(f"{path}: video {v}: {type(error).__name__}: {error}")
        report["frame_shapes"] = {"x".join(map(str, s)): n for s, n in shapes.items()}
        report["dtypes"] = sorted(dtypes)
        report["compression"] = sorted(compressions)
        if dtypes - {"uint8"}:
            report["problems"].append(f"{path}: frames must be uint8, found {sorted(dtypes)}")
        if any(len(s) != 3 or s[-1] != 3 for s in shapes):
            report["problems"].append(f"{path}: frames must be [H W 3], found {sorted(shapes)}")
    return report


def inspect_path(path: Path, frames_key: Optional[str] = None, deep: bool = False) -> dict:
    """{split name: [shard reports]} for a root, a split folder or a single shard."""
    if not path.exists():
        raise DataNotFoundError(f"no such file or folder: {path}")
    if path.is_file():
        return {path.parent.name: [inspect_shard(path, frames_key, deep)]}
    splits = [path / s for s in SPLIT_NAMES if (path / s).is_dir()]
    has_shards = any(p.suffix in SHARD_SUFFIXES for p in path.iterdir())
    if not splits or has_shards:
        splits = [path]
    result = {}
    for split in splits:
        try:
            shards = list_shards(split)
        except FileNotFoundError as error:
            result[split.name] = [{"path": str(split), "problems": [str(error)]}]
            continue
        result[split.name] = [inspect_shard(shard, frames_key, deep) for shard in shards]
    for name in SPLIT_NAMES:
        if splits != [path] and name not in result:
            result[name] = [{"path": str(path / name), "problems": [f"missing split folder {path / name}"]}]
    return result


def format_report(result: dict) -> str:
    lines = []
    for split, shards in result.items():
        videos = sum(s.get("num_videos", 0) for s in shards)
        lines.append(f"[{split}] {len(shards)} shard(s), {videos} videos")
        for s in shards:
            if "layout" in s:
                fr = s.get("frames", {})
                lines.append(
                    f"  {Path(s['path']).name}: {s['layout']} layout"
                    + (f" (frames under /{s['frames_key']})" if s.get("frames_key") else "")
                    + f", {s['num_videos']} videos, {s['size_mb']} MB"
                )
                if fr:
                    lines.append(f"    lengths min/mean/max {fr['min']}/{fr['mean']}/{fr['max']}, {fr['total']} frames")
                if s.get("frame_shapes"):
                    lines.append(f"    frame shapes {s['frame_shapes']}, dtype {','.join(s['dtypes'])}, "
                                 f"compression {','.join(s['compression'])}")
            for problem in s["problems"]:
                lines.append(f"  PROBLEM: {problem}")
    return "\n".join(lines)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="dataset root, split folder or shard file")
    parser.add_argument("--frames-key", "--frames_key",
                        help="frames group of original-layout files (EPIC: videos); auto-detected")
    parser.add_argument("--deep", action="store_true", help="decompress every frame to find corrupt data")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        result = inspect_path(Path(args.path), args.frames_key, args.deep)
    except CageError as error:
        return report(error)
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    problems = sum(len(s["problems"]) for shards in result.values() for s in shards)
    if problems:
        print(f"{problems} problem(s) found", file=sys.stderr)
        return EXIT_FAILURE
    print("no problems found", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
