"""Decoding frames from image files and video files (PyAV's bundled FFmpeg; no ffmpeg binary needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
from PIL import Image

from lutils.errors import CageError

VIDEO_EXTENSIONS = ("mp4", "avi", "mov", "mkv", "webm")
RESIZE_MODES = ("squash", "center_crop")


class DecodeError(CageError, ValueError):
    """An image or video that cannot be read; the message names the file."""


def resize_image(image: Image.Image, size: Optional[tuple], mode: str = "squash") -> Image.Image:
    """Resize a PIL image to size=(W, H) with bicubic filtering (the PIL default the original uses).

    "squash" ignores the aspect ratio, like the original converter; "center_crop" first cuts the largest centred
    window with the target aspect ratio.
    """
    if size is None:
        return image
    width, height = size
    if mode == "center_crop":
        src_w, src_h = image.size
        scale = min(src_w / width, src_h / height)
        crop_w, crop_h = round(width * scale), round(height * scale)
        left, top = (src_w - crop_w) // 2, (src_h - crop_h) // 2
        image = image.crop((left, top, left + crop_w, top + crop_h))
    elif mode != "squash":
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    if image.size == (width, height):
        return image
    return image.resize((width, height), resample=Image.BICUBIC)


def _read_image(path: str | Path, size: Optional[tuple], mode: str) -> tuple:
    """(uint8 [H W 3] RGB after any resize, (W, H) of the file itself)."""
    try:
        with Image.open(path) as image:
            source_size = image.size
            image = image.convert("RGB")
            return np.asarray(resize_image(image, size, mode), dtype=np.uint8), source_size
    except (OSError, SyntaxError, ValueError) as error:
        raise DecodeError(f"{path}: cannot read image ({error})") from error


def read_frame_folder(paths: Sequence[str | Path], size: Optional[tuple] = None, mode: str = "squash") -> np.ndarray:
    """Frames from image files as uint8 [T H W 3].

    All files must have the size of the first one, resize or not: a video whose frames differ in size is broken
    input (resizing each frame on its own would hide that), so the odd frame is a DecodeError that names it.
    """
    if not paths:
        raise DecodeError("no frame files given")
    frames = []
    first_size = None
    for path in paths:
        frame, source_size = _read_image(path, size, mode)
        if first_size is None:
            first_size = source_size
        elif source_size != first_size:
            folder = Path(paths[0]).parent
            raise DecodeError(
                f"{path}: frame size {source_size[0]}x{source_size[1]} differs from the first frame of video folder "
                f"{folder} ({Path(paths[0]).name}, {first_size[0]}x{first_size[1]}); every frame of a video must "
                f"have the same size"
            )
        frames.append(frame)
    return np.stack(frames)


def read_video(
    path: str | Path,
    fps: Optional[float] = None,
    size: Optional[tuple] = None,
    mode: str = "squash",
    max_frames: Optional[int] = None,
) -> np.ndarray:
    """Decode a video file to uint8 [T H W 3], optionally resampled to `fps` and resized to size=(W, H).

    Resampling holds each source frame until the next one starts: output frame k shows the source frame whose
    display interval contains k/fps, over the video's whole duration (as ffmpeg's fps filter does).
    """
    return np.stack(list(iter_video(path, fps, size, mode, max_frames)))


def iter_video(
    path: str | Path,
    fps: Optional[float] = None,
    size: Optional[tuple] = None,
    mode: str = "squash",
    max_frames: Optional[int] = None,
) -> Iterator[np.ndarray]:
    """The frames `read_video` returns, one uint8 [H W 3] array at a time (for videos too long to hold in memory).

    A source frame shown for several output frames is yielded as the same read-only array each time.
    Raises DecodeError (naming the file) when the video cannot be opened or decoded, or has no frame.
    """
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as error:
        raise DecodeError(f"{path}: cannot open video ({error})") from error
    count = 0
    try:
        if not container.streams.video:
            raise DecodeError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        source_rate = float(stream.average_rate or stream.guessed_rate or 25)
        previous = None  # [time, frame, converted array or None] of the last decoded source frame
        start_time = None  # some containers start at a non-zero timestamp

        def full() -> bool:
            return max_frames is not None and count >= max_frames

        def held_frame() -> np.ndarray:
            if previous[2] is None:
                previous[2] = _to_array(previous[1], size, mode)
                previous[2].flags.writeable = False
            return previous[2]

        for decoded_index, frame in enumerate(container.decode(stream)):
            time = frame.time if frame.time is not None else decoded_index / source_rate
            start_time = time if start_time is None else start_time
            time -= start_time
            if fps is None:
                yield _to_array(frame, size, mode)
                count += 1
            else:
                # Output frame k = count shows the previous source frame while k/fps is before this frame's time.
                while previous is not None and count / fps < time - 1e-6 and not full():
                    yield held_frame()
                    count += 1
                previous = [time, frame, None]
            if full():
                break
        if fps is not None and previous is not None:
            end = previous[0] + 1.0 / source_rate
            while count / fps < end - 1e-6 and not full():
                yield held_frame()
                count += 1
    except av.error.FFmpegError as error:
        raise DecodeError(f"{path}: cannot decode video ({error})") from error
    finally:
        container.close()
    if count == 0:
        raise DecodeError(f"{path}: video has no frames")


def _to_array(frame, size: Optional[tuple], mode: str) -> np.ndarray:
    return np.asarray(resize_image(frame.to_image(), size, mode), dtype=np.uint8)
