"""Convert frame folders or video files into CAGE HDF5 shards, one folder per split.

Frame folders (the original input layout):
    python dataset/convert_to_h5.py --data-dir FRAMES --out-dir OUT --image-size 128 --extension png
    FRAMES/{train,val,test}/<video>/<frame>.png, frames sorted by file name.

Video files (mp4, avi, mov, mkv, webm), decoded with PyAV:
    python dataset/convert_to_h5.py --data-dir VIDEOS --out-dir OUT --fps 10 --target-size 128 128
    VIDEOS/{train,val,test}/**/<video>.mp4, or a flat VIDEOS/**/<video>.mp4 split by --split-ratios.

The original's spelling of the flags (--data_dir, --out_dir, --image_size, ...) works as well.
Every split is written to OUT/<split>/shard_0001.hdf5 ... with a manifest.json. See docs/data-format.md.
Exit status: 0 done, 1 bad input or output (one `error:` line), 2 bad command line, 130 interrupted.
"""
import os
import sys

if __name__ == "__main__" and not __package__:
    # Run as a file (`python dataset/convert_to_h5.py`, the original's command): Python puts this folder first on
    # sys.path, where dataset/inspect.py would hide the standard library's inspect. Take it off; the project itself
    # is installed (pip install -e .), so `dataset` imports as usual.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

import argparse
import random
import re
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

from tqdm import tqdm

from dataset.h5 import COMPRESSIONS, LAYOUTS, SplitWriter, commit_splits
from dataset.staging import remove_stale
from dataset.video_io import RESIZE_MODES, VIDEO_EXTENSIONS, DecodeError, read_frame_folder, read_video
from lutils.errors import EXIT_INTERRUPTED, CageError, report

SPLITS = ("train", "val", "test")


class ConversionError(CageError, RuntimeError):
    """Input that cannot be converted; the message names the path and what was expected."""


def natural_key(name: str) -> list:
    """Sort key that orders frame_2 before frame_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


# Discovery -----------------------------------------------------------------------------------------------------------
def _describe_extensions(folder: Path) -> str:
    counts = Counter(p.suffix.lstrip(".").lower() or "<none>" for p in folder.iterdir() if p.is_file())
    return ", ".join(f"{n} .{ext}" for ext, n in counts.most_common(5)) or "no files"


def discover_frame_videos(split_dir: Path, extension: str, sort: str = "name") -> list:
    """[(name, [frame paths])] for the video folders of one split."""
    if not split_dir.is_dir():
        raise ConversionError(f"missing split folder: {split_dir} (expected <data_dir>/<split>/<video>/<frame>.<ext>)")
    video_dirs = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not video_dirs:
        loose = sum(1 for p in split_dir.iterdir() if p.is_file())
        hint = f" ({loose} loose files found: frames must sit in one folder per video)" if loose else ""
        raise ConversionError(f"no video folders in split folder {split_dir}{hint}")
    videos = []
    for video_dir in video_dirs:
        frames = [p for p in video_dir.iterdir() if p.is_file() and p.suffix.lower() == f".{extension.lower()}"]
        frames.sort(key=(lambda p: natural_key(p.name)) if sort == "natural" else (lambda p: p.name))
        videos.append((video_dir.name, frames))
    return videos


def find_video_files(folder: Path, extensions: Iterable[str]) -> list:
    suffixes = {f".{e.lower().lstrip('.')}" for e in extensions}
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def check_ratios(ratios: list, flag: str = "--split-ratios") -> None:
    """Refuse split ratios that cannot split anything (`flag` words the error for the calling tool)."""
    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ConversionError(f"{flag} needs three non-negative numbers (train val test), got {ratios}")


def split_by_ratios(files: list, ratios: list, seed: int, flag: str = "--split-ratios", what: str = "video") -> dict:
    """Deterministic random split of a sorted file list into train/val/test by ratios.

    `flag` and `what` only word the errors for the calling tool (its option name, what the items are).
    """
    check_ratios(ratios, flag)
    shuffled = list(files)
    random.Random(seed).shuffle(shuffled)
    total = sum(ratios)
    n_val = round(len(files) * ratios[1] / total)
    n_test = round(len(files) * ratios[2] / total)
    n_train = len(files) - n_val - n_test
    parts = {"train": shuffled[:n_train], "val": shuffled[n_train:n_train + n_val], "test": shuffled[n_train + n_val:]}
    for (split, items), ratio in zip(parts.items(), ratios):
        if ratio > 0 and not items:
            raise ConversionError(
                f"split '{split}' gets no {what} of {len(files)} {what}s with {flag} {ratios}; "
                f"give it ratio 0 or add {what}s"
            )
    return {split: sorted(items) for split, items in parts.items() if items}


# Parallel, ordered, bounded map ----------------------------------------------------------------------------------------
def ordered_map(fn: Callable, jobs: list, processes: int) -> Iterator:
    """Yield (result, error) for each job in order; at most 2*processes results wait in memory."""
    if processes <= 1:
        for job in jobs:
            yield _run_job(fn, job)
        return
    with ProcessPoolExecutor(max_workers=processes) as pool:
        pending: list = []
        next_job = 0
        try:
            while next_job < len(jobs) or pending:
                while next_job < len(jobs) and len(pending) < 2 * processes:
                    pending.append(pool.submit(_run_job, fn, jobs[next_job]))
                    next_job += 1
                yield pending.pop(0).result()
        finally:
            for future in pending:
                future.cancel()


def _run_job(fn: Callable, job) -> tuple:
    try:
        return fn(*job), None
    except DecodeError as error:
        return None, str(error)


# Conversion ----------------------------------------------------------------------------------------------------------
def convert_split(
    split: str,
    items: list,
    reader: Callable,
    out_dir: Path,
    args: argparse.Namespace,
    manifest_settings: dict,
    skipped: Optional[list] = None,
) -> tuple:
    """Decode `items` [(name, reader args...)] in parallel and write them for out_dir/<split>/.

    Returns (writer, manifest): the split is complete but not yet moved into place; the caller commits every
    split once all of them converted, so a failure in any split leaves no split folder behind.
    """
    skipped = list(skipped or [])
    start = time.time()
    writer = SplitWriter(
        out_dir / split, args.layout, args.compression, args.num_per_shard, overwrite=args.force
    )
    try:
        jobs = [job for _, job in items]
        progress = tqdm(total=len(items), desc=f"{split}", unit="video", disable=args.quiet)
        for (name, _), (frames, error) in zip(items, ordered_map(reader, jobs, args.processes)):
            progress.update()
            if error is not None:
                if not args.skip_bad:
                    raise ConversionError(f"{error} (video '{name}' of split '{split}'; --skip-bad skips such videos)")
                tqdm.write(f"warning: skipping video '{name}': {error}", file=sys.stderr)
                skipped.append({"name": name, "error": error})
                continue
            writer.add_video(frames, name)
        progress.close()
        if writer.num_videos == 0:
            raise ConversionError(f"split '{split}': every video failed to decode, nothing written")
        manifest = {
            "tool": "dataset/convert_to_h5.py",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "layout": args.layout,
            "compression": args.compression if args.layout == "chunked" else "lzf",
            "split": split,
            "num_videos": writer.num_videos,
            "shards": writer.finish_shards(),
            "skipped": skipped,
            "settings": manifest_settings,
            "seconds": round(time.time() - start, 2),
        }
    except BaseException:
        writer.abort()
        raise
    return writer, manifest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    # Each flag's second name is its underscore spelling (the original's --data_dir, --out_dir, --image_size).
    parser.add_argument("--data-dir", "--data_dir", required=True, help="input folder (frame folders or video files)")
    parser.add_argument("--out-dir", "--out_dir", required=True, help="output folder; each split goes to OUT/<split>/")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--image-size", "--image_size", type=int, help="resize every frame to N x N (the original's flag)")
    size.add_argument("--target-size", "--target_size", type=int, nargs=2, metavar=("W", "H"),
                      help="resize every frame to W x H")
    parser.add_argument("--resize-mode", "--resize_mode", choices=RESIZE_MODES, default="squash",
                        help="squash (ignore aspect, like the original) or center_crop to the target aspect first")
    parser.add_argument("--extension", help="frame file extension, e.g. png (frame-folder input)")
    parser.add_argument("--mode", choices=("auto", "frames", "videos"), default="auto",
                        help="input kind; auto picks videos when video files are found")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS,
                        help="splits to convert when the input has split folders (default: all three)")
    parser.add_argument("--split-ratios", "--split_ratios", type=float, nargs=3, default=[0.8, 0.1, 0.1],
                        metavar=("TRAIN", "VAL", "TEST"), help="split of a flat folder of video files (default 0.8 0.1 0.1)")
    parser.add_argument("--split-seed", "--split_seed", type=int, default=0, help="seed of the random split of a flat folder")
    parser.add_argument("--fps", type=float, help="video input: resample to this frame rate (default: every frame)")
    parser.add_argument("--max-frames", "--max_frames", type=int,
                        help="video input: keep at most this many frames per video")
    parser.add_argument("--video-extensions", "--video_extensions", nargs="+", default=list(VIDEO_EXTENSIONS))
    parser.add_argument("--sort", choices=("name", "natural"), default="name",
                        help="frame order: by file name (the original) or natural (frame_2 before frame_10)")
    parser.add_argument("--layout", choices=LAYOUTS, default="chunked",
                        help="chunked (ours, fast reads) or original (readable by the original CAGE code)")
    parser.add_argument("--compression", choices=COMPRESSIONS, default="none",
                        help="chunked layout: compression of the frame chunks (original layout is always lzf)")
    parser.add_argument("--num-per-shard", "--num_per_shard", type=int, default=100000, help="videos per shard file")
    parser.add_argument("--processes", type=int, default=min(4, os.cpu_count() or 1), help="decoding processes")
    parser.add_argument("--skip-bad", "--skip_bad", action="store_true",
                        help="skip unreadable videos (listed in manifest.json)")
    parser.add_argument("--force", action="store_true", help="replace existing output split folders")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def check_flag_values(args: argparse.Namespace) -> None:
    """Refuse flag values that cannot work whatever the input; raises ConversionError (a bad command line)."""
    sizes = [args.image_size] if args.image_size is not None else list(args.target_size or [])
    if any(n < 1 for n in sizes):
        raise ConversionError(f"image size must be positive, got {' '.join(map(str, sizes))}")
    if args.fps is not None and not args.fps > 0:
        raise ConversionError(f"--fps must be a positive frame rate, got {args.fps}")
    if args.max_frames is not None and args.max_frames < 1:
        raise ConversionError(f"--max-frames must be at least 1, got {args.max_frames}")
    if args.num_per_shard < 1:
        raise ConversionError(f"--num-per-shard must be at least 1, got {args.num_per_shard}")
    if args.processes < 1:
        raise ConversionError(f"--processes must be at least 1, got {args.processes}")
    check_ratios(args.split_ratios)


def plan(args: argparse.Namespace) -> tuple:
    """Check the input and list the work: ({split: [(name, reader args)]}, reader, mode, {split: [skipped]}).

    Writes nothing. With --skip-bad, video folders without frames are left out and listed as skipped.
    """
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        raise ConversionError(f"--data-dir is not a folder: {data_dir}")
    if not any(data_dir.iterdir()):
        raise ConversionError(f"--data-dir is empty: {data_dir}")
    size = (args.image_size, args.image_size) if args.image_size else (tuple(args.target_size) if args.target_size else None)
    mode = args.mode
    video_files = find_video_files(data_dir, args.video_extensions) if mode != "frames" else []
    if mode == "auto":
        mode = "videos" if video_files else "frames"
    plan_items: dict = {}
    skipped: dict = {}
    if mode == "frames":
        if not args.extension:
            raise ConversionError(
                f"frame folders in {data_dir} need --extension (e.g. --extension png); "
                f"no video files ({', '.join(args.video_extensions)}) were found either"
            )
        extension = args.extension.lstrip(".")
        for split in args.splits:
            items = []
            for name, frames in discover_frame_videos(data_dir / split, extension, args.sort):
                if not frames:
                    message = (f"{data_dir / split / name}: no '*.{extension}' frames "
                               f"(found {_describe_extensions(data_dir / split / name)}); wrong --extension?")
                    if not args.skip_bad:
                        raise ConversionError(message)
                    print(f"warning: skipping: {message}", file=sys.stderr)
                    skipped.setdefault(split, []).append({"name": name, "error": message})
                    continue
                if args.sort == "name" and [p.name for p in frames] != sorted((p.name for p in frames), key=natural_key):
                    print(f"warning: {data_dir / split / name}: frame names sort differently by number "
                          f"(e.g. {frames[0].name}, {frames[1].name}); pass --sort natural if they are numbered "
                          f"without zero padding", file=sys.stderr)
                items.append((name, ([str(p) for p in frames], size, args.resize_mode)))
            if not items:
                raise ConversionError(f"split folder {data_dir / split} has no usable videos")
            plan_items[split] = items
        return plan_items, read_frame_folder, mode, skipped
    # Video files.
    if not video_files:
        raise ConversionError(f"no video files ({', '.join(args.video_extensions)}) under {data_dir}")
    split_dirs = [s for s in SPLITS if (data_dir / s).is_dir()]
    if split_dirs:
        groups = {}
        for split in args.splits:
            if not (data_dir / split).is_dir():
                raise ConversionError(f"missing split folder: {data_dir / split} (found {', '.join(split_dirs)})")
            files = find_video_files(data_dir / split, args.video_extensions)
            if not files:
                raise ConversionError(f"split folder {data_dir / split} has no video files")
            groups[split] = files
        roots = {split: data_dir / split for split in groups}
    else:
        groups = split_by_ratios(video_files, args.split_ratios, args.split_seed)
        roots = {split: data_dir for split in groups}
    for split, files in groups.items():
        plan_items[split] = [
            (str(f.relative_to(roots[split])), (str(f), args.fps, size, args.resize_mode, args.max_frames))
            for f in files
        ]
    return plan_items, read_video, mode, skipped


def main(argv: Optional[list] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_flag_values(args)
    except ConversionError as error:
        parser.error(str(error))
    try:
        work, reader, mode, skipped = plan(args)
        out_dir = Path(args.out_dir)
        for split in SPLITS:  # hidden split folders of earlier runs that were killed midway
            remove_stale(out_dir / split, lambda line: print(f"note: {line}", file=sys.stderr))
        if not args.force:
            for split in work:
                if (out_dir / split).exists() and any((out_dir / split).iterdir()):
                    raise ConversionError(f"output split folder is not empty: {out_dir / split} (use --force to replace it)")
        settings = {
            "data_dir": str(Path(args.data_dir).resolve()),
            "mode": mode,
            "image_size": args.image_size,
            "target_size": args.target_size,
            "resize_mode": args.resize_mode,
            "extension": args.extension,
            "fps": args.fps,
            "max_frames": args.max_frames,
            "sort": args.sort,
        }
        print(f"converting {sum(map(len, work.values()))} videos ({mode}) from {args.data_dir} -> {out_dir} "
              f"[{args.layout} layout, {args.processes} processes]", file=sys.stderr)
        # Splits are moved into place only once all of them converted.
        converted = commit_splits(convert_split(split, items, reader, out_dir, args, settings, skipped.get(split))
                                  for split, items in work.items())
        for writer, manifest in converted:
            print(f"{manifest['split']}: {manifest['num_videos']} videos -> {writer.out_dir} "
                  f"({len(manifest['skipped'])} skipped, {manifest['seconds']} s)", file=sys.stderr)
    except CageError as error:  # ConversionError, DecodeError, H5FormatError, OutputExistsError, ...
        return report(error)
    except KeyboardInterrupt:
        print("interrupted: no partial split was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
