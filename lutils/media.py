"""Writers for videos (mp4 through PyAV's bundled FFmpeg, gif through Pillow) and PNG contact sheets."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from lutils.io import atomic_path
from lutils.logging import to_video


def as_uint8_frames(frames) -> np.ndarray:
    """Frames as uint8 [T H W 3]: accepts float [T 3 H W] in [-1,1] (tensor) or uint8 [T H W 3] / [T 3 H W]."""
    if isinstance(frames, torch.Tensor):
        frames = to_video(frames) if frames.is_floating_point() else frames.cpu().numpy()
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise TypeError(f"frames must be uint8 or float tensors in [-1,1], got {frames.dtype}")
    if frames.ndim != 4:
        raise ValueError(f"frames must have 4 dims [T H W 3] or [T 3 H W], got shape {frames.shape}")
    if frames.shape[-1] != 3 and frames.shape[1] == 3:
        frames = frames.transpose(0, 2, 3, 1)
    if frames.shape[-1] != 3:
        raise ValueError(f"frames must have 3 colour channels, got shape {frames.shape}")
    return np.ascontiguousarray(frames)


def write_mp4(path: str | Path, frames, fps: float = 8.0, crf: int = 18) -> Path:
    """H.264 mp4 (yuv420p; odd sizes are padded by one pixel, as the codec needs even sizes)."""
    import av

    frames = as_uint8_frames(frames)
    height, width = frames.shape[1:3]
    pad_h, pad_w = height % 2, width % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=_fps_fraction(fps))
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf)}
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return Path(path)


def write_gif(path: str | Path, frames, fps: float = 8.0) -> Path:
    """Looping animated GIF."""
    frames = as_uint8_frames(frames)
    images = [Image.fromarray(frame) for frame in frames]
    with atomic_path(path) as tmp:
        images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0
        )
    return Path(path)


def write_video(path: str | Path, frames, fps: float = 8.0) -> Path:
    """Write frames as .mp4 or .gif, chosen by the file suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".mp4":
        return write_mp4(path, frames, fps)
    if suffix == ".gif":
        return write_gif(path, frames, fps)
    raise ValueError(f"{path}: unsupported video suffix {suffix!r} (use .mp4 or .gif)")


def contact_sheet(
    videos,
    padding: int = 2,
    background: int = 255,
    boxes: Optional[Sequence[Sequence[Sequence[int]]]] = None,
) -> Image.Image:
    """A grid image: one row per video, one column per frame.

    `videos` is [b l 3 H W] float in [-1,1] or uint8 [b l H W 3]. `boxes[row][col]` optionally lists pixel
    rectangles (x0, y0, x1, y1) drawn in red on that frame (used to show control cells).
    """
    if isinstance(videos, torch.Tensor) and videos.ndim == 4:
        videos = videos.unsqueeze(0)
    rows = [as_uint8_frames(video) for video in videos]
    num_cols = max(len(row) for row in rows)
    height, width = rows[0].shape[1:3]
    sheet = Image.new(
        "RGB",
        (num_cols * (width + padding) + padding, len(rows) * (height + padding) + padding),
        (background,) * 3,
    )
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        for c, frame in enumerate(row):
            x, y = padding + c * (width + padding), padding + r * (height + padding)
            sheet.paste(Image.fromarray(frame), (x, y))
            for x0, y0, x1, y1 in (boxes[r][c] if boxes is not None and r < len(boxes) and c < len(boxes[r]) else ()):
                draw.rectangle((x + x0, y + y0, x + x1 - 1, y + y1 - 1), outline=(255, 0, 0))
    return sheet


def save_contact_sheet(path: str | Path, videos, **kwargs) -> Path:
    """Save `contact_sheet(videos)` as PNG, atomically."""
    sheet = contact_sheet(videos, **kwargs)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return Path(path)


def _fps_fraction(fps: float):
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001)
