"""Clips/s of VideoDataset on the original HDF5 layout vs ours (chunked), measured in one run.

    python benchmarks/data_loading.py [--size 256 --frames 16 --videos 24 --length 40 --seconds 8]

Both layouts hold the same synthetic videos (moving shapes on a textured background, so lzf has something to
compress). Rows:
  original, reopen  - original layout, file opened per sample as the original reader does (spec §6, defect 6)
  original          - original layout through our reader (handles cached per worker)
  chunked           - our layout, uncompressed (the converter's default)
  chunked lzf       - our layout with lzf chunks (smaller files)
  chunked, uint8    - our layout, VideoDataset(output_dtype="uint8") (convert to float on the device)
Columns: plain dataset[i] calls ("items"), and DataLoader with 0 and W workers. Ratios are against "original"
in the same column. Loader columns include collating float32 batches (12.6 MB a clip at 256^2 x 16), which
costs the same for every layout.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from torch.utils.data import DataLoader

from dataset.h5 import write_videos
from dataset.synthetic import render_video
from dataset.video_dataset import VideoDataset


class ReopeningVideoDataset(VideoDataset):
    """The original reader's I/O pattern: open the shard for every sample, close it afterwards."""

    def __getitem__(self, index):
        try:
            return super().__getitem__(index)
        finally:
            self.close()


def make_videos(num_videos: int, length: int, size: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    texture = rng.integers(-12, 13, size=(size, size, 3))
    videos = []
    for i in range(num_videos):
        video = render_video(length, size, num_objects=4, seed=seed + i).astype(np.int16)
        videos.append(np.clip(video + texture, 0, 255).astype(np.uint8))
    return videos


def measure_items(dataset: VideoDataset, seconds: float) -> float:
    """Clips per second of plain `dataset[i]` calls in this process (no DataLoader)."""
    generator = torch.Generator().manual_seed(0)
    dataset[0]  # open the shard
    clips, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        dataset[int(torch.randint(len(dataset), (1,), generator=generator))]
        clips += 1
    return clips / (time.perf_counter() - start)


def measure_loader(dataset: VideoDataset, workers: int, seconds: float, batch_size: int) -> float:
    """Clips per second through a DataLoader over about `seconds` (after one warm-up batch)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))
    clips, start, iterator = 0, None, None
    while start is None or time.perf_counter() - start < seconds:
        if iterator is None:
            iterator = iter(loader)
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = None
            continue
        if start is None:  # the first batch pays for worker start-up
            start = time.perf_counter()
            continue
        clips += batch.shape[0]
    return clips / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=16, help="frames_per_sample")
    parser.add_argument("--skip", type=int, default=0, help="skip_frames")
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--length", type=int, default=40, help="frames per stored video")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        videos = make_videos(args.videos, args.length, args.size)
        paths = {
            "original": write_videos(Path(tmp, "original"), videos, layout="original"),
            "chunked": write_videos(Path(tmp, "chunked"), videos, layout="chunked"),
            "chunked lzf": write_videos(Path(tmp, "chunked_lzf"), videos, layout="chunked", compression="lzf"),
        }
        sizes = {name: sum(f.stat().st_size for f in p.glob("*.hdf5")) / 2**20 for name, p in paths.items()}
        common = dict(input_size=args.size, crop_size=args.size, frames_per_sample=args.frames,
                      skip_frames=args.skip, random_horizontal_flip=False)
        rows = [
            ("original, reopen per sample", ReopeningVideoDataset(paths["original"], **common), "original"),
            ("original", VideoDataset(paths["original"], **common), "original"),
            ("chunked", VideoDataset(paths["chunked"], **common), "chunked"),
            ("chunked lzf", VideoDataset(paths["chunked lzf"], **common), "chunked lzf"),
            ("chunked, uint8 output", VideoDataset(paths["chunked"], output_dtype="uint8", **common), "chunked"),
        ]
        columns = ["items"] + [f"{w} workers" for w in (0, args.workers)]
        results = {}
        for name, dataset, _ in rows:
            results[(name, "items")] = measure_items(dataset, args.seconds)
            for w in (0, args.workers):
                results[(name, f"{w} workers")] = measure_loader(dataset, w, args.seconds, args.batch_size)

    print(f"# VideoDataset clips/s: {args.videos} videos x {args.length} frames at {args.size}^2, clips of "
          f"{args.frames} frames (skip {args.skip}); loaders with batch {args.batch_size}; ~{args.seconds:.0f} s a cell")
    print(f"# machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"python {platform.python_version()}; ratio = clips/s / 'original' clips/s in the same column")
    print("| layout / reader | MB on disk | " + " | ".join(f"{c}: clips/s (ratio)" for c in columns) + " |")
    print("|" + "---|" * (2 + len(columns)))
    for name, _, layout in rows:
        cells = [f"{results[(name, c)]:.1f} ({results[(name, c)] / results[('original', c)]:.1f}x)" for c in columns]
        print(f"| {name} | {sizes[layout]:.0f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
