"""Clip-consistent transforms: resize of the shorter side, centre crop, whole-clip flip, colour jitter."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

# Colour jitter ranges of the original (drawn once per clip): factors 1+U[-0.1,0.1), hue shift U[-0.25,0.25).
JITTER_FACTOR_RANGE = 0.1
JITTER_HUE_RANGE = 0.25


def resize_torchvision(clip: torch.Tensor, size: int) -> torch.Tensor:
    """torchvision Resize(size) on uint8 [T 3 H W]: shorter side to `size`, bilinear, antialiased."""
    height, width = clip.shape[-2:]
    if min(height, width) == size:
        return clip
    return TF.resize(clip, size, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)


def resize_albumentations(clip: torch.Tensor, size: int) -> torch.Tensor:
    """albumentations SmallestMaxSize(size) semantics on uint8 [T 3 H W]: both sides scaled and rounded,
    bilinear without antialiasing (OpenCV INTER_LINEAR; values may differ from OpenCV's fixed-point maths by 1)."""
    height, width = clip.shape[-2:]
    scale = size / min(height, width)
    if scale == 1.0:
        return clip
    new_size = (round(height * scale), round(width * scale))
    resized = F.interpolate(clip.float(), size=new_size, mode="bilinear", align_corners=False, antialias=False)
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def center_crop(clip: torch.Tensor, size: int, floor_offsets: bool = False) -> torch.Tensor:
    """Square centre crop. torchvision rounds the offset ((H-c)/2 rounded), albumentations floors it."""
    height, width = clip.shape[-2:]
    if size > height or size > width:
        raise ValueError(f"crop size {size} is larger than the resized frame {height}x{width}")
    if floor_offsets:
        top, left = (height - size) // 2, (width - size) // 2
    else:
        top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return clip[..., top:top + size, left:left + size]


def draw_jitter(generator: Optional[torch.Generator] = None) -> tuple:
    """(brightness, contrast, saturation, hue) drawn once per clip."""
    uniform = torch.rand(4, generator=generator) * 2 - 1  # U[-1, 1)
    factors = 1.0 + JITTER_FACTOR_RANGE * uniform[:3]
    return float(factors[0]), float(factors[1]), float(factors[2]), float(JITTER_HUE_RANGE * uniform[3])


def color_jitter(clip: torch.Tensor, brightness: float, contrast: float, saturation: float, hue: float) -> torch.Tensor:
    """Apply the same colour changes, in this order, to every frame of a uint8 clip."""
    clip = TF.adjust_brightness(clip, brightness)
    clip = TF.adjust_contrast(clip, contrast)
    clip = TF.adjust_saturation(clip, saturation)
    return TF.adjust_hue(clip, hue)


OUTPUT_DTYPES = ("float32", "uint8")


class ClipTransform:
    """uint8 [T 3 H W] -> float32 [T 3 crop crop] in [-1, 1] (or uint8 when asked), randomness drawn once per clip."""

    def __init__(
        self,
        input_size: int,
        crop_size: int,
        random_horizontal_flip: bool = False,
        aug: bool = False,
        albumentations: bool = False,
        output_dtype: str = "float32",
    ):
        if crop_size > input_size:
            raise ValueError(f"crop_size ({crop_size}) must not exceed input_size ({input_size})")
        if output_dtype not in OUTPUT_DTYPES:
            raise ValueError(f"output_dtype must be one of {OUTPUT_DTYPES}, got {output_dtype!r}")
        self.input_size, self.crop_size = input_size, crop_size
        self.random_horizontal_flip, self.aug, self.albumentations = random_horizontal_flip, aug, albumentations
        self.output_dtype = output_dtype

    def resize_crop(self, clip: torch.Tensor) -> torch.Tensor:
        """The transform's fixed part: uint8 [T 3 H W] -> uint8 [T 3 crop crop] (shorter side resized, centre crop)."""
        if self.albumentations:
            return center_crop(resize_albumentations(clip, self.input_size), self.crop_size, floor_offsets=True)
        return center_crop(resize_torchvision(clip, self.input_size), self.crop_size)

    def deterministic(self, clip: torch.Tensor) -> torch.Tensor:
        """Only the fixed part, as float32 in [-1, 1]: what the clip is when neither flip nor jitter is on."""
        return to_float(self.resize_crop(clip).contiguous())

    def __call__(self, clip: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        clip = self.resize_crop(clip)
        if self.random_horizontal_flip and torch.rand(1, generator=generator).item() < 0.5:
            clip = clip.flip(-1)
        if self.aug:
            clip = color_jitter(clip, *draw_jitter(generator))
        if self.output_dtype == "uint8":
            return clip.contiguous()
        return to_float(clip)


def to_float(clip: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [-1, 1] as x/127.5 - 1 (also on the GPU, for loaders that return uint8)."""
    return clip.float().div_(127.5).sub_(1.0)
