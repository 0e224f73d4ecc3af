"""Showing videos: `show_video` (the original's, importable from `demo.common` as there) and `video_frames`, the
PIL images it shows, which saving uses without a display."""
from __future__ import annotations

from typing import List

import torch
from PIL import Image

from lutils.logging import to_video


def video_frames(video: torch.Tensor) -> List[Image.Image]:
    """One PIL image per time step of a video [b l 3 H W] (or [l 3 H W]) in [-1, 1], the b videos side by side."""
    if video.ndim == 4:
        video = video.unsqueeze(0)
    if video.ndim != 5 or video.shape[2] != 3:
        raise ValueError(f"expected a video [b l 3 H W], got shape {tuple(video.shape)}")
    frames = to_video(video).transpose(1, 0, 3, 4, 2)  # [l b H W 3]
    return [Image.fromarray(row.transpose(1, 0, 2, 3).reshape(row.shape[1], -1, 3)) for row in frames]


def show_video(video: torch.Tensor, show: bool = True) -> List[Image.Image]:
    """Show a video [b l 3 H W] (or [l 3 H W]) in [-1,1] frame by frame and return one PIL image per frame.

    Each returned image holds the b videos of that time step side by side. With `show`, matplotlib displays the
    frames in a grid (rows: time, columns: batch), as in the notebooks.
    """
    images = video_frames(video)
    if show:
        import matplotlib.pyplot as plt

        batch = video.shape[0] if video.ndim == 5 else 1
        for t, image in enumerate(images):
            plt.figure(figsize=(2 * batch, 2))
            plt.imshow(image)
            plt.title(f"frame {t}")
            plt.axis("off")
            plt.show()
    return images
