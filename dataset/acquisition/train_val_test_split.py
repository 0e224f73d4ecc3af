"""Split the sequence folders of a frame-folder dataset into train, val and test folders, as PVG's script does.

    python -m dataset.acquisition.train_val_test_split --input-directory FRAMES --output-directory SPLITS \\
        (--splits-csv splits.csv | --ratios TRAIN VAL TEST [--seed 0]) [--link {copy,symlink,hardlink}]

PVG's spelling of the flags (--input_directory, --output_directory, --splits_csv) works as well.

Each sequence folder FRAMES/<seq> (as convert_video_directory writes them) is copied, or linked file by file, to
SPLITS/<split>/<k:05d>, numbered from 00000 in every split.

--splits-csv: PVG's split file, a header "sequence,split" then one row per sequence: the sequence's number (the folder
  FRAMES/<number:05d>) and train, val, validation (= val) or test. Each split keeps the order of the rows. Sequence
  folders the file does not list are reported and left out.
--ratios: a random split with these proportions, the same for the same --seed; sequences keep their sorted order
  within each split.

Only folders of FRAMES are sequences (videos.csv and other files beside them are ignored); every file of a sequence
folder goes along (PVG's .pkl metadata files are copied as bytes, never opened). SPLITS/sequences.csv records where
each sequence came from. SPLITS appears only when complete (written beside it first), so a failed or interrupted run
leaves no partial SPLITS and an existing one as it was (the hidden folder of a killed run is removed by the next run,
with a note).

Next step: python dataset/convert_to_h5.py --data-dir SPLITS --out-dir H5 --extension png
"""
import csv
import errno
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from dataset.acquisition.common import AcquisitionError, Parser, StagedFolder, check_output_folder, run_tool, warn
from dataset.acquisition.convert_video_directory import VIDEOS_CSV
from dataset.convert_to_h5 import ConversionError, check_ratios, split_by_ratios

SPLITS = ("train", "val", "test")
SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "test": "test"}
LINKS = ("copy", "symlink", "hardlink")
SEQUENCES_CSV = "sequences.csv"


def build_parser() -> Parser:
    parser = Parser.for_module("dataset.acquisition.train_val_test_split", __doc__)
    parser.add_argument("--input-directory", "--input_directory", required=True,
                        help="folder of sequence folders 00000/, 00001/, ...")
    parser.add_argument("--output-directory", "--output_directory", required=True,
                        help="folder to create with train/, val/, test/")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--splits-csv", "--splits_csv", help="PVG's split file: header sequence,split; one row per sequence")
    how.add_argument("--ratios", type=float, nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                     help="random split with these proportions, e.g. 0.8 0.1 0.1")
    parser.add_argument("--seed", type=int, help="seed of the --ratios split (default 0)")
    parser.add_argument("--link", choices=LINKS, default="copy",
                        help="copy the files (default), or make symbolic or hard links to them")
    parser.add_argument("--force", action="store_true", help="replace an existing non-empty output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


# Planning ------------------------------------------------------------------------------------------------------------
def list_sequences(input_directory: Path) -> list:
    """Names of the sequence folders (every non-hidden folder), sorted."""
    if not input_directory.exists():
        raise AcquisitionError(f"--input-directory does not exist: {input_directory}")
    if not input_directory.is_dir():
        raise AcquisitionError(f"--input-directory is not a folder: {input_directory}")
    names = sorted(p.name for p in input_directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise AcquisitionError(
            f"no sequence folders in --input-directory {input_directory} "
            f"(expected 00000/, 00001/, ... as convert_video_directory writes them)"
        )
    return names


def plan_from_csv(csv_path: Path, input_directory: Path, sequences: list) -> dict:
    """{split: [sequence folder names]} in the order of the rows of PVG's split file."""
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise AcquisitionError(f"--splits-csv does not exist: {csv_path}") from None
    except IsADirectoryError:
        raise AcquisitionError(f"--splits-csv is a folder, not a file: {csv_path}") from None
    except UnicodeDecodeError:
        raise AcquisitionError(f"--splits-csv is not a UTF-8 text file: {csv_path}") from None
    reader = csv.reader(text.splitlines())
    columns: Optional[tuple] = None
    plan: dict = {split: [] for split in SPLITS}
    first_line: dict = {}
    for row in reader:
        line = reader.line_num
        where = f"{csv_path} line {line}"
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        if columns is None:
            if "sequence" not in cells or "split" not in cells:
                raise AcquisitionError(
                    f"{where}: expected the header 'sequence,split', got '{','.join(row)}'"
                )
            columns = (cells.index("sequence"), cells.index("split"))
            continue
        if len(cells) <= max(columns):
            raise AcquisitionError(f"{where}: expected a sequence and a split, got '{','.join(row)}'")
        value, split_name = cells[columns[0]], cells[columns[1]]
        if not re.fullmatch(r"[0-9]+", value):
            raise AcquisitionError(f"{where}: sequence '{value}' is not a non-negative integer")
        number = int(value)
        split = SPLIT_NAMES.get(split_name)
        if split is None:
            raise AcquisitionError(
                f"{where}: unknown split '{split_name}' for sequence {number} "
                f"(expected one of {', '.join(SPLIT_NAMES)})"
            )
        if number in first_line:
            raise AcquisitionError(f"{where}: sequence {number} is listed again (first on line {first_line[number]})")
        first_line[number] = line
        name = f"{number:05d}"
        folder = input_directory / name
        if not folder.is_dir():
            raise AcquisitionError(f"{where}: sequence {number} has no folder {folder}")
        plan[split].append(name)
    if columns is None:
        raise AcquisitionError(f"--splits-csv is empty: {csv_path} (expected the header 'sequence,split' and rows)")
    if not first_line:
        raise AcquisitionError(f"--splits-csv lists no sequence: {csv_path}")
    listed = {name for names in plan.values() for name in names}
    unlisted = [name for name in sequences if name not in listed]
    if unlisted:
        shown = ", ".join(unlisted[:10]) + (", ..." if len(unlisted) > 10 else "")
        warn(f"{len(unlisted)} sequence folder(s) of {input_directory} are not in {csv_path} and are left out: {shown}")
    return {split: names for split, names in plan.items() if names}


def plan_from_ratios(sequences: list, ratios: list, seed: int) -> dict:
    try:
        return split_by_ratios(sequences, list(ratios), seed, flag="--ratios", what="sequence")
    except ConversionError as error:
        raise AcquisitionError(str(error)) from None


# Copying and linking -------------------------------------------------------------------------------------------------
def place_tree(source: Path, target: Path, link: str) -> int:
    """Copy or link every file of `source` (and its subfolders) into a new folder `target`; returns the file count.

    Files are copied as bytes or linked, never opened as anything else.
    """
    target.mkdir()
    count = 0
    for entry in sorted(source.iterdir()):
        destination = target / entry.name
        if entry.is_dir():
            count += place_tree(entry, destination, link)
            continue
        if not entry.is_file():
            warn(f"not a regular file, left out: {entry}")
            continue
        try:
            if link == "copy":
                shutil.copy2(entry, destination)
            elif link == "hardlink":
                os.link(entry, destination)
            else:
                os.symlink(entry.resolve(), destination)
        except OSError as error:
            hint = (" (hard links need both folders on one filesystem: use --link copy or symlink)"
                    if error.errno == errno.EXDEV else "")
            raise AcquisitionError(f"cannot {link} {entry} to {destination}: {error.strerror or error}{hint}") from None
        count += 1
    return count


def video_sources(input_directory: Path) -> dict:
    """{sequence: source video} from convert_video_directory's videos.csv, if there is a readable one."""
    path = input_directory / VIDEOS_CSV
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return {row["sequence"]: row["source"] for row in csv.DictReader(handle)}
    except (OSError, KeyError, UnicodeDecodeError, csv.Error):
        return {}


def check_flag_values(args) -> None:
    """Refuse flag values that cannot work whatever the input (a bad command line, exit status 2)."""
    if args.splits_csv is not None:
        if not args.splits_csv.strip():
            raise AcquisitionError("--splits-csv needs the path of a CSV file with the columns sequence,split")
        if args.seed is not None:
            raise AcquisitionError("--seed only applies to --ratios; a --splits-csv split has no randomness")
    else:
        try:
            check_ratios(args.ratios, "--ratios")
        except ConversionError as error:
            raise AcquisitionError(str(error)) from None


def split(args) -> None:
    """The whole split; raises AcquisitionError / OSError on bad input."""
    check_flag_values(args)
    input_directory = Path(args.input_directory)
    output = Path(args.output_directory)
    sequences = list_sequences(input_directory)
    if args.splits_csv is not None:
        plan = plan_from_csv(Path(args.splits_csv), input_directory, sequences)
    else:
        plan = plan_from_ratios(sequences, args.ratios, 0 if args.seed is None else args.seed)
    check_output_folder(output, args.force, {"--input-directory": input_directory}, "--output-directory")
    with StagedFolder(output) as staged:
        sources = video_sources(input_directory)
        rows = []
        progress = tqdm(total=sum(map(len, plan.values())), desc=args.link, unit="sequence", disable=args.quiet)
        try:
            for split_name, names in plan.items():
                (staged.path / split_name).mkdir()
                for index, name in enumerate(names):
                    sequence = f"{index:05d}"
                    place_tree((input_directory / name).resolve(), staged.path / split_name / sequence, args.link)
                    rows.append((split_name, sequence, name, sources.get(name, "")))
                    progress.update()
        finally:
            progress.close()
        with open(staged.path / SEQUENCES_CSV, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["split", "sequence", "source", "video"])
            writer.writerows(rows)
        staged.commit()
    counts = ", ".join(f"{split_name} {len(names)}" for split_name, names in plan.items())
    print(f"sequences: {counts} -> {output} ({args.link}; sources in {output / SEQUENCES_CSV})", file=sys.stderr)
    missing = [split_name for split_name in SPLITS if split_name not in plan]
    if missing:
        print(f"note: no {', '.join(missing)} sequences, so no such folder: convert it with "
              f"dataset/convert_to_h5.py --splits {' '.join(plan)}", file=sys.stderr)


def main(argv: Optional[list] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_flag_values(args)
    except AcquisitionError as error:
        parser.error(str(error))
    return run_tool(lambda: split(args), args.output_directory)


if __name__ == "__main__":
    sys.exit(main())
