"""The two HDF5 video layouts: reading, detecting and writing shards.

original   (written by the original CAGE code)
    /len/<v>        scalar int, frame count of video v ("0", "1", ... per shard)
    /videos         empty group (created, unused)
    /<v>/<t>        one [H W 3] uint8 dataset per frame, lzf
    EPIC variant (frames_key="videos"): frames at /videos/<v>/<t>, /len/<v> still at the root.

chunked    (ours, see docs/data-format.md; root attribute cage_format="chunked")
    /videos/<v>     one [T H W 3] uint8 dataset per video, chunked one frame per chunk
    /lengths        int64 [N], frame counts
    /names          [N] strings, the source video of each entry
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterable, Optional, Sequence

import h5py
import numpy as np

from dataset.staging import make_staging_dir
from lutils.errors import CageError
from lutils.io import temporary_path_for

FORMAT_ATTR = "cage_format"
FORMAT_VERSION_ATTR = "cage_format_version"
CHUNKED = "chunked"
ORIGINAL = "original"
LAYOUTS = (CHUNKED, ORIGINAL)
CHUNKED_VERSION = 1
SHARD_SUFFIXES = (".hdf5", ".h5")
COMPRESSIONS = ("none", "lzf", "gzip")


class H5FormatError(CageError, ValueError):
    """A file that is not a readable CAGE video HDF5 shard."""


class DataNotFoundError(CageError, FileNotFoundError):
    """A dataset path that does not exist, or a folder without HDF5 shards."""


class OutputExistsError(CageError, FileExistsError):
    """An output folder that already holds data (replace it with --force)."""


def shard_name(index: int) -> str:
    """Shard file names as the original writes them: shard_0001.hdf5, shard_0002.hdf5, ..."""
    return f"shard_{index:04d}.hdf5"


def list_shards(data_path: str | Path) -> list:
    """Sorted shard files of a split folder (*.hdf5 and *.h5), or the file itself."""
    data_path = Path(data_path)
    if not data_path.exists():
        raise DataNotFoundError(f"dataset path does not exist: {data_path}")
    if data_path.is_file():
        return [data_path]
    shards = sorted(p for p in data_path.iterdir() if p.suffix in SHARD_SUFFIXES and not p.name.startswith("."))
    if not shards:
        raise DataNotFoundError(f"no HDF5 shards (*.hdf5, *.h5) in {data_path}")
    return shards


def open_h5(path: str | Path, mode: str = "r") -> h5py.File:
    """Open an HDF5 file, turning h5py's terse errors into one that names the file."""
    try:
        return h5py.File(path, mode)
    except OSError as error:
        raise H5FormatError(f"{path}: cannot open as HDF5 ({error})") from error


def detect_layout(f: h5py.File, frames_key: Optional[str] = None) -> tuple:
    """(layout, frames group key or None) of an open shard."""
    if f.attrs.get(FORMAT_ATTR) is not None:
        layout = f.attrs[FORMAT_ATTR]
        layout = layout.decode() if isinstance(layout, bytes) else str(layout)
        if layout != CHUNKED:
            raise H5FormatError(f"{f.filename}: unknown {FORMAT_ATTR} '{layout}' (this code reads '{CHUNKED}')")
        version = int(f.attrs.get(FORMAT_VERSION_ATTR, 0))
        if version > CHUNKED_VERSION:
            raise H5FormatError(
                f"{f.filename}: chunked layout version {version} is newer than this code ({CHUNKED_VERSION})"
            )
        if "videos" not in f or "lengths" not in f:
            raise H5FormatError(f"{f.filename}: chunked layout without /videos or /lengths (incomplete file?)")
        return CHUNKED, None
    if "len" in f and isinstance(f["len"], h5py.Group):
        if frames_key is not None:
            if frames_key not in f:
                raise H5FormatError(f"{f.filename}: frames_key '{frames_key}' not found (top-level keys: {_top(f)})")
            return ORIGINAL, frames_key
        # The EPIC variant keeps frames under /videos; the plain one leaves /videos empty.
        num = len(f["len"])
        if num and "0" not in f and "videos" in f and "0" in f["videos"]:
            return ORIGINAL, "videos"
        return ORIGINAL, None
    raise H5FormatError(
        f"{f.filename}: not a CAGE video file: no '{FORMAT_ATTR}' attribute and no /len group "
        f"(top-level keys: {_top(f)})"
    )


def _top(f: h5py.File, limit: int = 8) -> str:
    keys = list(f.keys())
    return ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "") if keys else "none"


class VideoShard:
    """Read access to one shard of either layout. Videos are addressed by their local index 0..N-1."""

    def __init__(self, path: str | Path, frames_key: Optional[str] = None, lengths: Optional[np.ndarray] = None):
        self.path = Path(path)
        self.file = open_h5(self.path)
        try:
            self.layout, self.frames_key = detect_layout(self.file, frames_key)
            self.lengths = np.asarray(lengths, dtype=np.int64) if lengths is not None else self._read_lengths()
        except Exception:
            self.file.close()
            raise
        self._videos = self.file["videos"] if self.layout == CHUNKED else None
        self.frames_root = self.file[self.frames_key] if self.frames_key else self.file

    def _read_lengths(self) -> np.ndarray:
        if self.layout == CHUNKED:
            return np.asarray(self.file["lengths"][()], dtype=np.int64)
        group = self.file["len"]
        num = len(group)
        lengths = np.empty(num, dtype=np.int64)
        for v in range(num):
            if str(v) not in group:
                raise H5FormatError(f"{self.path}: /len has {num} entries but no '/len/{v}' (keys must be 0..N-1)")
            lengths[v] = int(group[str(v)][()])
        return lengths

    @property
    def num_videos(self) -> int:
        return len(self.lengths)

    def names(self) -> list:
        """Source names of the videos (chunked layout), else their local indices as strings."""
        if self.layout == CHUNKED and "names" in self.file:
            return [n.decode() if isinstance(n, bytes) else str(n) for n in self.file["names"][()]]
        return [str(v) for v in range(self.num_videos)]

    def read(self, video: int, start: int, count: int, step: int = 1) -> np.ndarray:
        """Frames start, start+step, ... (count of them) of a video as uint8 [count H W 3]."""
        stop = start + (count - 1) * step + 1
        if start < 0 or count < 1 or stop > self.lengths[video]:
            raise IndexError(
                f"{self.path}: video {video} has {self.lengths[video]} frames, asked for {count} from {start} step {step}"
            )
        if self.layout == CHUNKED:
            return self._videos[str(video)][start:stop:step]
        group = self.frames_root[str(video)]
        frames = [group[str(t)][()] for t in range(start, stop, step)]
        shapes = {frame.shape for frame in frames}
        if len(shapes) > 1:
            raise H5FormatError(f"{self.path}: video {video} has frames of mixed shapes {sorted(shapes)}")
        return np.stack(frames)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.file.close()

    def __enter__(self) -> "VideoShard":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _compression_args(compression: Optional[str]) -> dict:
    if compression in (None, "none"):
        return {}
    if compression == "lzf":
        return {"compression": "lzf"}
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": 4}
    raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")


class _CommitOrAbort:
    """Context manager protocol of the writers: commit on success, abort (delete temporary files) on error."""

    def commit(self, *args, **kwargs):
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class ShardWriter(_CommitOrAbort):
    """Writes videos into one shard under a temporary name; `commit()` renames it to `path`.

    Used as a context manager, it commits on success and deletes the temporary file on any error,
    so an interrupted run never leaves a file that looks like a complete shard.
    """

    def __init__(self, path: str | Path, layout: str = CHUNKED, compression: Optional[str] = None):
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.path = Path(path)
        self.layout = layout
        # The original layout is always lzf per frame, as the original maker writes it.
        self._compression = _compression_args("lzf" if layout == ORIGINAL else compression)
        self._tmp = temporary_path_for(self.path)
        self._file = h5py.File(self._tmp, "w")
        self._lengths: list = []
        self._names: list = []
        if layout == CHUNKED:
            self._file.attrs[FORMAT_ATTR] = CHUNKED
            self._file.attrs[FORMAT_VERSION_ATTR] = CHUNKED_VERSION
            self._videos = self._file.create_group("videos")
        else:
            self._len = self._file.create_group("len")
            self._file.create_group("videos")

    @property
    def num_videos(self) -> int:
        return len(self._lengths)

    def add_video(self, frames: np.ndarray, name: str = "") -> int:
        """Append one video, uint8 [T H W 3]; returns its local index."""
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
            raise ValueError(
                f"video '{name}': expected uint8 frames [T>0, H, W, 3], got {frames.dtype} {tuple(frames.shape)}"
            )
        key = str(self.num_videos)
        if self.layout == CHUNKED:
            self._videos.create_dataset(key, data=frames, chunks=(1,) + frames.shape[1:], **self._compression)
        else:
            group = self._file.create_group(key)
            for t, frame in enumerate(frames):
                group.create_dataset(str(t), data=frame, **self._compression)
            self._len.create_dataset(key, data=len(frames))
        self._lengths.append(len(frames))
        self._names.append(name)
        return int(key)

    def commit(self) -> Path:
        if self.layout == CHUNKED:
            self._file.create_dataset("lengths", data=np.asarray(self._lengths, dtype=np.int64))
            self._file.create_dataset("names", data=np.asarray(self._names, dtype=object), dtype=h5py.string_dtype())
        self._file.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()


class SplitWriter(_CommitOrAbort):
    """Writes one split folder of shards (shard_0001.hdf5, ...) with at most `num_per_shard` videos each.

    Everything is written into a hidden staging folder beside `out_dir`; `commit()` swaps it in place of
    `out_dir` (which must be absent or empty unless `overwrite`), so readers never see a partial split. The staging
    folder is named after this process, so that a later run can tell and remove it if this one is killed
    (dataset.staging.remove_stale).
    """

    def __init__(
        self,
        out_dir: str | Path,
        layout: str = CHUNKED,
        compression: Optional[str] = None,
        num_per_shard: int = 100000,
        overwrite: bool = False,
    ):
        self.out_dir = Path(out_dir)
        if num_per_shard < 1:
            raise ValueError(f"num_per_shard must be >= 1, got {num_per_shard}")
        if self.out_dir.exists() and any(self.out_dir.iterdir()) and not overwrite:
            raise OutputExistsError(f"output folder is not empty: {self.out_dir} (use --force to replace it)")
        self.layout, self.compression, self.num_per_shard = layout, compression, num_per_shard
        self.overwrite = overwrite
        self._tmp_dir = make_staging_dir(self.out_dir)  # named after this process (dataset/staging.py)
        self._shard: Optional[ShardWriter] = None
        self.shards: list = []
        self.num_videos = 0
        self._committed = False

    def add_video(self, frames: np.ndarray, name: str = "") -> None:
        if self._shard is not None and self._shard.num_videos >= self.num_per_shard:
            self.shards.append(self._shard.commit().name)
            self._shard = None
        if self._shard is None:
            self._shard = ShardWriter(
                self._tmp_dir / shard_name(len(self.shards) + 1), self.layout, self.compression
            )
        self._shard.add_video(frames, name)
        self.num_videos += 1

    @property
    def staging_dir(self) -> Path:
        """The hidden folder the shards are written to until commit (e.g. to add data to finished shards)."""
        return self._tmp_dir

    def finish_shards(self) -> list:
        """Close the last shard; returns the names of all shards."""
        if self._shard is not None:
            self.shards.append(self._shard.commit().name)
            self._shard = None
        return list(self.shards)

    def commit(self, extra_files: Optional[dict] = None) -> Path:
        """Close the last shard, write `extra_files` {name: text} and move the split into place."""
        if self._committed:
            return self.out_dir
        self.finish_shards()
        for name, text in (extra_files or {}).items():
            (self._tmp_dir / name).write_text(text)
        old = None
        if self.out_dir.exists():
            old = make_staging_dir(self.out_dir)  # an empty folder, replaced by the previous split
            os.replace(self.out_dir, old)
        os.replace(self._tmp_dir, self.out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self._committed = True
        return self.out_dir

    def abort(self) -> None:
        if self._committed:
            return
        if self._shard is not None:
            self._shard.abort()
        shutil.rmtree(self._tmp_dir, ignore_errors=True)


def commit_splits(staged_splits: Iterable) -> list:
    """Consume (SplitWriter, manifest) pairs, one per finished split, then move every split into place with its
    manifest.json. If producing any split fails, every split staged so far is deleted: all or nothing."""
    staged: list = []
    try:
        for writer, manifest in staged_splits:
            staged.append((writer, manifest))
    except BaseException:
        for writer, _ in staged:
            writer.abort()
        raise
    for writer, manifest in staged:
        writer.commit({"manifest.json": json.dumps(manifest, indent=2) + "\n"})
    return staged


def write_videos(
    out_dir: str | Path,
    videos: Iterable,
    names: Optional[Sequence[str]] = None,
    layout: str = CHUNKED,
    compression: Optional[str] = None,
    num_per_shard: int = 100000,
    overwrite: bool = False,
) -> Path:
    """Write an iterable of uint8 [T H W 3] videos as one split folder."""
    with SplitWriter(out_dir, layout, compression, num_per_shard, overwrite) as writer:
        for i, frames in enumerate(videos):
            writer.add_video(frames, names[i] if names is not None else str(i))
    return Path(out_dir)
