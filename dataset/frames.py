"""Single frames for generation: an image file, or frame t of video v of an HDF5 split ("PATH[:v[:t]]")."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from dataset.transforms import ClipTransform
from lutils.errors import CageError

H5_SPEC = re.compile(r"^(?P<path>.+?\.(?:h5|hdf5)|[^:]+)(?::(?P<video>\d+))?(?::(?P<frame>\d+))?$")


class FrameSourceError(CageError, ValueError):
    """A frame that cannot be had: no such video or frame in the HDF5 data, an unreadable image."""


class FrameNotFoundError(CageError, FileNotFoundError):
    """A frame source (image file or HDF5 data) that does not exist."""


def load_frame(spec: str, input_size: int, crop_size: int, base_dir: Optional[Path] = None) -> torch.Tensor:
    """float [3 crop crop] in [-1, 1], resized and centre-cropped like the training clips (no augmentation)."""
    transform = ClipTransform(input_size, crop_size)
    match = H5_SPEC.match(spec)
    path = Path(match.group("path")) if match else Path(spec)
    if base_dir is not None and not path.is_absolute() and not path.exists():
        path = Path(base_dir) / path
    if path.is_dir() or path.suffix in (".h5", ".hdf5"):
        from dataset.clips import clips_from_config

        if not path.exists():
            raise FrameNotFoundError(f"HDF5 data not found: {path} (from '{spec}')")
        video, frame = int(match.group("video") or 0), int(match.group("frame") or 0)
        data = clips_from_config(None, path.name, "stored", path=path, frames_per_sample=1)  # transformed below
        if not 0 <= video < data.num_videos:
            raise FrameSourceError(f"'{spec}': video {video} does not exist ({data.num_videos} videos in {path})")
        if not 0 <= frame < data.video_length(video):
            raise FrameSourceError(f"'{spec}': frame {frame} does not exist (video {video} has {data.video_length(video)})")
        return transform(data.read_clip(video, frame))[0]
    if not path.is_file():
        raise FrameNotFoundError(f"image not found: {path} (from '{spec}')")
    try:
        with Image.open(path) as image:
            return frame_from_image(image, input_size, crop_size)
    except OSError as error:
        raise FrameSourceError(f"{path}: cannot read image ({error})") from error


def frame_from_image(image: Image.Image, input_size: int, crop_size: int) -> torch.Tensor:
    """float [3 crop crop] in [-1, 1] of a decoded image, exactly as load_frame makes it from the image's file (the
    web editor decodes uploads in memory with this, so generate.py on the same file sees the same frame)."""
    pixels = np.array(image.convert("RGB"), dtype=np.uint8)  # a writable copy for torch
    return ClipTransform(input_size, crop_size)(torch.from_numpy(pixels).permute(2, 0, 1)[None])[0]
