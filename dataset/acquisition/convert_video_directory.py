"""Turn a folder of videos into frame folders, as PlayableVideoGeneration's convert_video_directory does.

    python -m dataset.acquisition.convert_video_directory --video-directory VIDEOS --output-directory FRAMES \\
        --target-size W H [--fps 10] [--processes 8] [--video-extension mp4] [--output-extension png]

PVG's spelling of the flags (--video_directory, --output_directory, --target_size, ...) works as well.
Videos are the *.mp4 files (--video-extension, case-sensitive as PVG's glob) directly in VIDEOS and in its immediate
subfolders; deeper folders, hidden files and hidden folders are not searched. Sorted by full path, the i-th video becomes
FRAMES/<i:05d>/00000.png, 00001.png, ...: sampled at --fps as ffmpeg's fps filter samples, then resized to exactly
W x H with bicubic filtering (the aspect ratio is not kept). FRAMES/videos.csv (sequence,source,frames) tells which
video each sequence folder came from. Videos are decoded with PyAV; no ffmpeg program is needed. Unlike PVG, no
actions/rewards/dones/metadata .pkl files are written.

FRAMES appears only once every video converted: the frames are written to a hidden folder beside it first, so a
failed or interrupted run leaves no partial FRAMES and an existing one as it was (the hidden folder of a killed run
is removed by the next run, with a note). With --skip-bad, videos that cannot be decoded are reported and left out,
and the sequence folders are numbered without gaps over the others.

Next step: python -m dataset.acquisition.train_val_test_split --input-directory FRAMES --output-directory SPLITS ...
"""
import csv
import os
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Optional

from PIL import Image
from tqdm import tqdm

from dataset.acquisition.common import AcquisitionError, Parser, StagedFolder, check_output_folder, run_tool, warn
from dataset.convert_to_h5 import ordered_map
from dataset.video_io import iter_video

VIDEOS_CSV = "videos.csv"


def build_parser() -> Parser:
    parser = Parser.for_module("dataset.acquisition.convert_video_directory", __doc__)
    # PVG's flags, types and defaults; PVG's underscore spelling is the second name of each.
    parser.add_argument("--video-directory", "--video_directory", type=str, required=True, help="folder of the videos")
    parser.add_argument("--output-directory", "--output_directory", type=str, required=True,
                        help="folder to create with the frame folders")
    parser.add_argument("--target-size", "--target_size", type=int, nargs=2, required=True,
                        metavar=("WIDTH", "HEIGHT"), help="size of the frames written, <width> <height>")
    parser.add_argument("--fps", type=int, default=10, help="frames per second sampled from each video (default 10)")
    parser.add_argument("--processes", type=int, default=8, help="videos decoded in parallel (default 8)")
    parser.add_argument("--video-extension", "--video_extension", type=str, default="mp4",
                        help="extension of the videos, without dot")
    parser.add_argument("--output-extension", "--output_extension", type=str, default="png",
                        help="extension of the frames, without dot")
    # Ours.
    parser.add_argument("--skip-bad", "--skip_bad", action="store_true",
                        help="leave out (and report) videos that cannot be decoded")
    parser.add_argument("--force", action="store_true", help="replace an existing non-empty output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


# Discovery -----------------------------------------------------------------------------------------------------------
def find_videos(video_directory: str, extension: str) -> tuple:
    """([(path, path relative to video_directory)], [relative paths with the extension in another case]).

    Matches "*.<extension>" case-sensitively, as PVG's glob does on Linux, so that the sequence numbers (and a PVG
    splits.csv written for them) are PVG's; files whose extension differs only in case are returned apart, for a
    warning. Hidden entries are skipped (as PVG's glob skips them). Sorted by the full path string, as PVG sorts.
    """
    suffix = f".{extension}"
    folders = [("", video_directory)] + [
        (entry.name, entry.path) for entry in _entries(video_directory) if entry.is_dir()
    ]
    videos, other_case = [], []
    for relative, folder in folders:
        for entry in _entries(folder):
            if len(entry.name) <= len(suffix) or not entry.name.lower().endswith(suffix.lower()) or not entry.is_file():
                continue
            name = f"{relative}/{entry.name}" if relative else entry.name
            if entry.name.endswith(suffix):
                videos.append((entry.path, name))
            else:
                other_case.append(name)
    videos.sort(key=lambda video: video[0])
    return videos, sorted(other_case)


def _entries(folder: str) -> list:
    with os.scandir(folder) as entries:
        return [entry for entry in entries if not entry.name.startswith(".")]


def describe_contents(video_directory: str, extension: str) -> str:
    """What the search did find, for the error when no video matched."""
    counts: Counter = Counter()
    for top in [video_directory] + [e.path for e in _entries(video_directory) if e.is_dir()]:
        for entry in _entries(top):
            if entry.is_file():
                counts[os.path.splitext(entry.name)[1].lower() or "(no extension)"] += 1
    found = ", ".join(f"{n} {ext}" for ext, n in counts.most_common(6)) or "no files"
    deeper = sum(
        1 for p in Path(video_directory).glob("*/*/**/*")
        if p.name.lower().endswith(f".{extension.lower()}") and p.is_file()
    )
    hint = (f"; {deeper} .{extension} file(s) lie deeper, but only the folder and its immediate subfolders are searched"
            if deeper else "")
    return f"found {found}{hint}"


# Conversion ----------------------------------------------------------------------------------------------------------
def acquire_video(video: str, folder: str, fps: int, size: tuple, extension: str) -> int:
    """Write the frames of one video as folder/00000.<ext>, ...; returns their number. Runs in a worker process.

    Frames are written as they are decoded (a long video is never held in memory). On any error the folder is removed.
    """
    folder_path = Path(folder)
    folder_path.mkdir()  # not parents: if the staging folder was removed, nothing is recreated
    try:
        count = 0
        for count, frame in enumerate(iter_video(video, fps, size, "squash"), start=1):
            Image.fromarray(frame).save(folder_path / f"{count - 1:05d}.{extension}")
        return count
    except BaseException:
        shutil.rmtree(folder_path, ignore_errors=True)
        raise


def check_flag_values(args) -> tuple:
    """(video extension, output extension) after checking the values of the flags; raises AcquisitionError.

    Wrong values here are a bad command line (exit status 2); see check_arguments for the input folder.
    """
    width, height = args.target_size
    if width < 1 or height < 1:
        raise AcquisitionError(f"--target-size needs a positive <width> <height>, got {width} {height}")
    if args.fps < 1:
        raise AcquisitionError(f"--fps must be a positive number of frames per second, got {args.fps}")
    if args.processes < 1:
        raise AcquisitionError(f"--processes must be at least 1, got {args.processes}")
    video_extension = args.video_extension.strip().lstrip(".")
    if not video_extension or "/" in video_extension or os.sep in video_extension:
        raise AcquisitionError(f"--video-extension must be a file extension such as mp4, got '{args.video_extension}'")
    output_extension = args.output_extension.strip().lstrip(".")
    image_format = Image.registered_extensions().get(f".{output_extension.lower()}")
    if image_format is None or image_format not in Image.SAVE:
        writable = sorted(ext.lstrip(".") for ext, fmt in Image.registered_extensions().items()
                          if fmt in Image.SAVE and fmt in ("PNG", "JPEG", "BMP", "WEBP", "TIFF"))
        raise AcquisitionError(
            f"--output-extension '{args.output_extension}' is not an image format that can be written "
            f"(e.g. {', '.join(writable)})"
        )
    return video_extension, output_extension


def check_arguments(args) -> tuple:
    """(video extension, output extension) after checking every argument; raises AcquisitionError."""
    directory = Path(args.video_directory)
    if not directory.exists():
        raise AcquisitionError(f"--video-directory does not exist: {directory}")
    if not directory.is_dir():
        raise AcquisitionError(f"--video-directory is not a folder: {directory}")
    return check_flag_values(args)


def convert(args, videos: list, staging: Path, output_extension: str) -> tuple:
    """Convert every video into staging/<seq>/; returns ([(sequence, source, frames)], [(source, error)])."""
    size = tuple(args.target_size)
    jobs = [(path, str(staging / f".video_{i:05d}"), args.fps, size, output_extension) for i, (path, _) in
            enumerate(videos)]
    rows: list = []
    skipped: list = []
    results = ordered_map(acquire_video, jobs, args.processes)
    progress = tqdm(total=len(videos), desc="videos", unit="video", disable=args.quiet)
    try:
        for (path, relative), job, (count, error) in zip(videos, jobs, results):
            progress.update()
            if error is not None:
                if not args.skip_bad:
                    raise AcquisitionError(f"{error} (--skip-bad leaves out videos that cannot be decoded)")
                tqdm.write(f"warning: skipping a video that cannot be decoded: {error}", file=sys.stderr)
                skipped.append((relative, error))
                continue
            sequence = f"{len(rows):05d}"  # numbered without gaps over the videos that converted
            os.replace(job[1], staging / sequence)
            rows.append((sequence, relative, count))
    finally:
        results.close()  # cancels queued videos and waits for running ones before the staging folder goes
        progress.close()
    return rows, skipped


def acquire(args) -> None:
    """The whole conversion; raises AcquisitionError / DecodeError (CageErrors) / OSError on bad input."""
    video_extension, output_extension = check_arguments(args)
    videos, other_case = find_videos(args.video_directory, video_extension)
    if other_case:
        warn(f"{len(other_case)} file(s) whose extension is .{video_extension} in another case are left out, as PVG "
             f"leaves them out: {', '.join(other_case[:5])}{' ...' if len(other_case) > 5 else ''} "
             f"(run again with --video-extension for them)")
    if not videos:
        raise AcquisitionError(
            f"no .{video_extension} videos in --video-directory {args.video_directory} or its immediate "
            f"subfolders ({describe_contents(args.video_directory, video_extension)}); "
            f"--video-extension chooses the extension"
        )
    output = Path(args.output_directory)
    check_output_folder(output, args.force, {"--video-directory": Path(args.video_directory)},
                        "--output-directory", allow_inside_input=True)
    print(f"converting {len(videos)} videos from {args.video_directory} -> {output} "
          f"[{args.fps} fps, {args.target_size[0]}x{args.target_size[1]}, {args.processes} processes]",
          file=sys.stderr)
    with StagedFolder(output) as staged:
        rows, skipped = convert(args, videos, staged.path, output_extension)
        if not rows:
            raise AcquisitionError(f"none of the {len(videos)} videos could be decoded; nothing written")
        with open(staged.path / VIDEOS_CSV, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["sequence", "source", "frames"])
            writer.writerows(rows)
        staged.commit()
    summary = f"{len(rows)} sequences -> {output} (sources in {output / VIDEOS_CSV})"
    if skipped:
        summary += f"; {len(skipped)} video(s) skipped: " + ", ".join(source for source, _ in skipped)
    print(summary, file=sys.stderr)


def main(argv: Optional[list] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_flag_values(args)
    except AcquisitionError as error:
        parser.error(str(error))
    return run_tool(lambda: acquire(args), args.output_directory)


if __name__ == "__main__":
    sys.exit(main())
