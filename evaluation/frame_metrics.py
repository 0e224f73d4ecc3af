"""Per-frame video quality metrics: PSNR, SSIM and LPIPS between real and generated videos.

Conventions: videos are float tensors [B, T, 3, H, W] with values in [0, 1] (`to_unit` converts uint8 0..255 or
float [-1, 1] videos). Every metric returns one value per frame, a tensor [B, T]; `summarise` reduces it for JSON.

- PSNR: 10 * log10(1 / MSE) over (3, H, W), data range 1, in float64, capped at `PSNR_MAX_DB`. It also takes
  batches of images [N, 3, H, W] and other value ranges (`value_range=`), e.g. an autoencoder's reconstructions in
  [-1, 1]: the one PSNR of the project.
- SSIM: Wang et al. (2004) with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, data range 1, per RGB
  channel, population (not sample) covariances, averaged over the "valid" region (the window never leaves the frame;
  (11 - 1) // 2 = 5 pixels are cropped at each border) and over channels, in float64. This is what
  `skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=1, channel_axis=-1)` computes. Frames smaller than 11 pixels on a side raise ValueError (as scikit-image
  does) rather than silently using a smaller window, which would give numbers not comparable with published ones.
- LPIPS: the `lpips` package (v0.1, AlexNet trunk). Its linear heads ship inside the wheel; the AlexNet backbone is
  loaded from a local file (`load_lpips`), never downloaded.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from evaluation.errors import EvaluationError

PSNR_MAX_DB = 100.0  # PSNR of identical frames (see psnr_per_frame)
PSNR_MIN_MSE = 10.0 ** (-PSNR_MAX_DB / 10.0)

SSIM_WIN_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_FRAMES_PER_CHUNK = 64  # frames filtered at once (bounds float64 memory on long or large videos)

VALUE_RANGES = ("uint8", "minus_one_one", "unit")

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_FILE}"
# torchvision AlexNet conv layer index -> lpips slice holding it (lpips keeps torchvision's layer indices)
ALEXNET_CONV_SLICES = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}
LPIPS_NUM_LINS = 5


class LPIPSWeightsError(EvaluationError):
    """LPIPS backbone weights that are missing or do not fit; the message says which file to provide."""


# ---------------------------------------------------------------------------------------------------- conversion


def to_unit(videos: Tensor, value_range: str = "unit") -> Tensor:
    """float32 videos in [0, 1] from `value_range` "uint8" (0..255), "minus_one_one" ([-1, 1]) or "unit" ([0, 1]).

    Values are clamped to [0, 1], so slight overshoots of a decoder do not count as errors beyond the data range.
    """
    if value_range == "uint8":
        out = videos.to(torch.float32) / 255.0
    elif value_range == "minus_one_one":
        out = (videos.to(torch.float32) + 1.0) / 2.0
    elif value_range == "unit":
        out = videos.to(torch.float32)
    else:
        raise ValueError(f"value_range must be one of {VALUE_RANGES}, got {value_range!r}")
    return out.clamp(0.0, 1.0)


def _check_pair(real: Tensor, fake: Tensor) -> None:
    """Raise ValueError unless real and fake are videos [B, T, 3, H, W] of the same shape."""
    if real.shape != fake.shape:
        raise ValueError(f"real and fake videos differ in shape: {tuple(real.shape)} vs {tuple(fake.shape)}")
    if real.dim() != 5 or real.shape[2] != 3:
        raise ValueError(f"expected videos [B, T, 3, H, W], got shape {tuple(real.shape)}")


def _frames(videos: Tensor, dtype: torch.dtype) -> Tensor:
    """[B, T, C, H, W] -> [B*T, C, H, W] in `dtype`."""
    return rearrange(videos, "b t c h w -> (b t) c h w").to(dtype)


# ---------------------------------------------------------------------------------------------------- PSNR


def psnr_per_frame(real: Tensor, fake: Tensor, value_range: Optional[str] = None) -> Tensor:
    """PSNR in dB per frame (data range 1, float64), capped at PSNR_MAX_DB for identical frames.

    `real` and `fake` are frames [..., C, H, W] of one shape: videos [B, T, 3, H, W] give [B, T], a batch of images
    [N, 3, H, W] gives [N]. Without `value_range` they are taken to lie in [0, 1]; with it, both are converted by
    `to_unit(x, value_range)` first (e.g. "minus_one_one" for decoder outputs in [-1, 1]; values are clamped to the
    range). PSNR does not depend on the range's scale: 4 / MSE in [-1, 1] equals 1 / MSE in [0, 1].

    The MSE is clamped below at 10**(-PSNR_MAX_DB / 10): identical frames give exactly PSNR_MAX_DB instead of inf,
    because JSON has no inf and a mean that is inf would hide every other frame.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real and fake videos differ in shape: {tuple(real.shape)} vs {tuple(fake.shape)}")
    if real.dim() < 3:
        raise ValueError(f"expected frames [..., C, H, W], got shape {tuple(real.shape)}")
    if value_range is not None:
        real, fake = to_unit(real, value_range), to_unit(fake, value_range)
    diff = real.to(torch.float64) - fake.to(torch.float64)
    mse = diff.square().mean(dim=(-3, -2, -1)).clamp_min(PSNR_MIN_MSE)
    return (-10.0 * torch.log10(mse)).clamp_max(PSNR_MAX_DB)  # clamp_max absorbs rounding of log10 at the cap


# ---------------------------------------------------------------------------------------------------- SSIM


def gaussian_window(win_size: int = SSIM_WIN_SIZE, sigma: float = SSIM_SIGMA, dtype=torch.float64) -> Tensor:
    """Normalised 1-D Gaussian weights [win_size] (scipy.ndimage's kernel for truncate = (win_size // 2) / sigma)."""
    x = torch.arange(win_size, dtype=dtype) - (win_size - 1) / 2.0
    weights = torch.exp(-0.5 * (x / sigma) ** 2)
    return weights / weights.sum()


def _filter_valid(images: Tensor, window: Tensor) -> Tensor:
    """Separable Gaussian filter of every channel of [N, C, H, W], valid region only (no padding)."""
    channels, size = images.shape[1], window.numel()
    rows = window.view(1, 1, size, 1).expand(channels, 1, size, 1)
    cols = window.view(1, 1, 1, size).expand(channels, 1, 1, size)
    return F.conv2d(F.conv2d(images, rows, groups=channels), cols, groups=channels)


def _ssim_frames(x: Tensor, y: Tensor, window: Tensor) -> Tensor:
    """Mean SSIM per frame [N] of float64 frames [N, C, H, W] in [0, 1]."""
    c1, c2 = (SSIM_K1 * 1.0) ** 2, (SSIM_K2 * 1.0) ** 2  # data range 1
    channels = x.shape[1]
    stats = _filter_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1), window)
    mu_x, mu_y, xx, yy, xy = stats.split(channels, dim=1)
    var_x, var_y, cov = xx - mu_x * mu_x, yy - mu_y * mu_y, xy - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return (numerator / denominator).mean(dim=(1, 2, 3))


def ssim_per_frame(real: Tensor, fake: Tensor) -> Tensor:
    """SSIM per frame [B, T] (11x11 Gaussian window, sigma 1.5, valid region, channel mean, float64).

    Raises ValueError for frames smaller than 11 pixels on either side.
    """
    _check_pair(real, fake)
    height, width = real.shape[-2:]
    if min(height, width) < SSIM_WIN_SIZE:
        raise ValueError(
            f"SSIM needs frames of at least {SSIM_WIN_SIZE}x{SSIM_WIN_SIZE} pixels (its Gaussian window), "
            f"got {height}x{width}"
        )
    batch = real.shape[0]
    x, y = _frames(real, torch.float64), _frames(fake, torch.float64)
    window = gaussian_window(dtype=torch.float64).to(x.device)
    values = [
        _ssim_frames(x[i:i + SSIM_FRAMES_PER_CHUNK], y[i:i + SSIM_FRAMES_PER_CHUNK], window)
        for i in range(0, x.shape[0], SSIM_FRAMES_PER_CHUNK)
    ]
    return rearrange(torch.cat(values), "(b t) -> b t", b=batch)


# ---------------------------------------------------------------------------------------------------- LPIPS


def _missing_weights_message(weights_path: Optional[str | Path]) -> str:
    """How to obtain the AlexNet weights, for LPIPSWeightsError."""
    where = "no weights file was given" if weights_path is None else f"weights file not found: {weights_path}"
    return (
        f"LPIPS needs the ImageNet AlexNet backbone weights, but {where}. Provide the file {ALEXNET_FILE} "
        f"(published by torchvision at {ALEXNET_URL}; it is also in ~/.cache/torch/hub/checkpoints/ on a machine "
        f"where torchvision downloaded it) or a full LPIPS state dict. Nothing is downloaded implicitly."
    )


def _backbone_keys() -> dict:
    """{torchvision AlexNet key: lpips key} for the five conv layers' weights and biases."""
    return {
        f"features.{index}.{param}": f"net.slice{slice_}.{index}.{param}"
        for index, slice_ in ALEXNET_CONV_SLICES.items()
        for param in ("weight", "bias")
    }


def _lpips_entries(state_dict: Mapping, path: Path) -> dict:
    """The lpips-named backbone (and, for full LPIPS files, linear head) tensors of a loaded state dict."""
    mapping = _backbone_keys()
    if any(key.startswith("net.") for key in state_dict):  # (b) a full LPIPS state dict
        required = list(mapping.values())
        entries = {key: state_dict[key] for key in required if key in state_dict}
        for i in range(LPIPS_NUM_LINS):
            for name in (f"lin{i}.model.1.weight", f"lins.{i}.model.1.weight"):
                if name in state_dict:  # lin{i} and lins.{i} are the same module: set both names
                    entries[f"lin{i}.model.1.weight"] = entries[f"lins.{i}.model.1.weight"] = state_dict[name]
    else:  # (a) torchvision's AlexNet state dict
        required = list(mapping)
        entries = {mapping[key]: state_dict[key] for key in required if key in state_dict}
    missing = [key for key in required if key not in state_dict]
    if missing:
        raise LPIPSWeightsError(
            f"{path}: not an AlexNet ({ALEXNET_FILE}) or LPIPS state dict; missing keys: {', '.join(missing)} "
            f"(file keys: {', '.join(list(state_dict)[:10])}{', ...' if len(state_dict) > 10 else ''})"
        )
    return entries


def _load_entries(model: nn.Module, entries: Mapping, path: Path) -> None:
    """Copy `entries` into the model's state dict after checking shapes; LPIPSWeightsError on mismatch."""
    target = model.state_dict()
    wrong = [
        f"{key}: model {tuple(target[key].shape)} vs file {tuple(value.shape)}"
        for key, value in entries.items()
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(target[key].shape)
    ]
    if wrong:
        raise LPIPSWeightsError(f"{path}: tensors do not fit LPIPS' AlexNet: " + "; ".join(wrong))
    merged = dict(target)
    merged.update({key: value.to(target[key].dtype) for key, value in entries.items()})
    model.load_state_dict(merged, strict=True)


def load_lpips(weights_path: Optional[str | Path], device: str | torch.device = "cpu") -> nn.Module:
    """LPIPS (AlexNet, v0.1) with its backbone from a local file, frozen, in eval mode, on `device`.

    `weights_path` is torchvision's ImageNet AlexNet state dict (`alexnet-owt-7be5be79.pth`) or a full LPIPS state
    dict (keys `net.slice1.0.weight`, ..., optionally `lin0.model.1.weight`, ...; heads it lacks come from the wheel).
    """
    if weights_path is None or not Path(weights_path).is_file():
        raise LPIPSWeightsError(_missing_weights_message(weights_path))
    path = Path(weights_path)
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors of many kinds: report them all the same way
        raise LPIPSWeightsError(f"{path}: not a readable PyTorch weights file ({error})") from error
    if not isinstance(state_dict, Mapping):
        raise LPIPSWeightsError(f"{path}: expected a state dict, got {type(state_dict).__name__}")

    import lpips  # lazily: only LPIPS needs it

    with warnings.catch_warnings():  # lpips calls torchvision's deprecated `alexnet(pretrained=...)`
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    _load_entries(model, _lpips_entries(state_dict, path), path)
    model.eval().requires_grad_(False)
    return model.to(device)


@torch.no_grad()
def lpips_per_frame(model: nn.Module, real: Tensor, fake: Tensor, batch_size: int = 64) -> Tensor:
    """LPIPS distance per frame [B, T] (float32, on CPU) of videos in [0, 1], `batch_size` frames at a time."""
    _check_pair(real, fake)
    device = next(model.parameters()).device
    batch = real.shape[0]
    x, y = _frames(real, torch.float32), _frames(fake, torch.float32)
    values = []
    for i in range(0, x.shape[0], batch_size):
        a = x[i:i + batch_size].to(device) * 2.0 - 1.0  # lpips expects [-1, 1] with normalize=False
        b = y[i:i + batch_size].to(device) * 2.0 - 1.0
        values.append(model(a, b, normalize=False).reshape(-1).float().cpu())
    return rearrange(torch.cat(values), "(b t) -> b t", b=batch)


# ---------------------------------------------------------------------------------------------------- summary


def summarise(per_frame: Tensor) -> dict:
    """{"mean", "std" (population, over all B*T frames), "per_frame_mean" (list over T), "count"} of a metric [B, T].

    An empty input gives None for mean and std (JSON has no NaN).
    """
    values = per_frame.detach().to(torch.float64).cpu()
    if values.dim() != 2:
        raise ValueError(f"expected a per-frame metric [B, T], got shape {tuple(values.shape)}")
    count = values.numel()
    if count == 0:
        return {"mean": None, "std": None, "per_frame_mean": [], "count": 0}
    return {
        "mean": float(values.mean()),
        "std": float(values.std(correction=0)),
        "per_frame_mean": [float(v) for v in values.mean(dim=0)],
        "count": int(count),
    }
