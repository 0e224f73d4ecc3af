"""Decoding frames from image files and video files (PyAV's bundled FFmpeg; no ffmpeg binary needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

VIDEO_EXTENSIONS = ("mp4", "avi", "mov", "mkv", "webm")
RESIZE_MODES = ("squash", "center_crop")


class DecodeError(ValueError):
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


def read_image(path: str | Path, size: Optional[tuple] = None, mode: str = "squash") -> np.ndarray:
    """One image file as uint8 [H W 3] RGB."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            return np.asarray(resize_image(image, size, mode), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as error:
        raise DecodeError(f"{path}: cannot read image ({error})") from error


def read_frame_folder(paths: Sequence[str | Path], size: Optional[tuple] = None, mode: str = "squash") -> np.ndarray:
    """Frames from image files as uint8 [T H W 3]; all frames must share one size when no resize is asked for."""
    if not paths:
        raise DecodeError("no frame files given")
    frames = []
    for path in paths:
        frame = read_image(path, size, mode)
        if frames and frame.shape != frames[0].shape:
            raise DecodeError(
                f"{path}: frame size {frame.shape[1]}x{frame.shape[0]} differs from the first frame of the video "
                f"({frames[0].shape[1]}x{frames[0].shape[0]}, {paths[0]}); pass --image_size or --target_size to resize"
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
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as error:
        raise DecodeError(f"{path}: cannot open video ({error})") from error
    frames: list = []
    try:
        if not container.streams.video:
            raise DecodeError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        source_rate = float(stream.average_rate or stream.guessed_rate or 25)
        previous = None  # (time, frame) of the last decoded source frame
        next_index = 0
        start_time = None  # some containers start at a non-zero timestamp

        def emit_until(limit: float) -> None:
            nonlocal next_index
            while next_index / fps < limit - 1e-6 and (max_frames is None or len(frames) < max_frames):
                frames.append(_to_array(previous[1], size, mode))
                next_index += 1

        for decoded_index, frame in enumerate(container.decode(stream)):
            time = frame.time if frame.time is not None else decoded_index / source_rate
            start_time = time if start_time is None else start_time
            time -= start_time
            if fps is None:
                frames.append(_to_array(frame, size, mode))
            else:
                if previous is not None:
                    emit_until(time)
                previous = (time, frame)
            if max_frames is not None and len(frames) >= max_frames:
                break
        if fps is not None and previous is not None:
            emit_until(previous[0] + 1.0 / source_rate)
    except av.error.FFmpegError as error:
        raise DecodeError(f"{path}: cannot decode video ({error})") from error
    finally:
        container.close()
    if not frames:
        raise DecodeError(f"{path}: video has no frames")
    return np.stack(frames)


def _to_array(frame, size: Optional[tuple], mode: str) -> np.ndarray:
    return np.asarray(resize_image(frame.to_image(), size, mode), dtype=np.uint8)
