"""Per-frame PSNR, SSIM and LPIPS (evaluation/frame_metrics.py): closed forms, scikit-image parity, local weights."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evaluation.frame_metrics import (
    ALEXNET_FILE,
    PSNR_MAX_DB,
    SSIM_K1,
    LPIPSWeightsError,
    load_lpips,
    lpips_per_frame,
    psnr_per_frame,
    ssim_per_frame,
    summarise,
    to_unit,
)


def smooth_video(b: int, t: int, size: int, seed: int = 0, low: float = 0.2, high: float = 0.8) -> torch.Tensor:
    """float64 [B, T, 3, size, size] with structure (upsampled noise), values in [low, high]."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b * t, 3, size // 4, size // 4, generator=generator, dtype=torch.float64)
    fine = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (low + (high - low) * fine).reshape(b, t, 3, size, size)


# ---------------------------------------------------------------------------------------------------- to_unit


def test_to_unit_three_ranges():
    u8 = torch.tensor([0, 51, 255], dtype=torch.uint8)
    assert torch.allclose(to_unit(u8, "uint8"), torch.tensor([0.0, 0.2, 1.0]))
    m11 = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    out = to_unit(m11, "minus_one_one")
    assert out.dtype == torch.float32 and torch.equal(out, torch.tensor([0.0, 0.5, 1.0]))
    unit = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float16)
    out = to_unit(unit, "unit")
    assert out.dtype == torch.float32 and torch.equal(out, torch.tensor([0.0, 0.25, 1.0]))
    assert torch.equal(to_unit(torch.tensor([-1.2, 1.3]), "minus_one_one"), torch.tensor([0.0, 1.0]))  # clamped
    with pytest.raises(ValueError, match="value_range"):
        to_unit(m11, "0..1")


# ---------------------------------------------------------------------------------------------------- PSNR


def test_psnr_identical_is_cap_exactly():
    video = smooth_video(2, 3, 16)
    psnr = psnr_per_frame(video, video.clone())
    assert psnr.shape == (2, 3) and psnr.dtype == torch.float64
    assert torch.all(psnr == PSNR_MAX_DB)


@pytest.mark.parametrize("offset", [0.01, 0.05, 0.1])
def test_psnr_constant_offset_closed_form(offset):
    real = smooth_video(1, 2, 16, low=0.3, high=0.6)
    psnr = psnr_per_frame(real, real + offset)
    assert torch.allclose(psnr, torch.full((1, 2), 10 * math.log10(1 / offset**2), dtype=torch.float64), atol=1e-9)


def test_psnr_gaussian_noise():
    torch.manual_seed(0)
    std = 0.05
    real = smooth_video(1, 2, 128, low=0.3, high=0.7)
    fake = real + std * torch.randn_like(real)
    psnr = psnr_per_frame(real, fake)
    assert torch.all((psnr - 10 * math.log10(1 / std**2)).abs() < 0.2)


def test_psnr_frames_independent():
    torch.manual_seed(1)
    real = smooth_video(2, 4, 16)
    fake = real + 0.05 * torch.randn_like(real)
    before = psnr_per_frame(real, fake)
    changed = fake.clone()
    changed[1, 2] = real[1, 2] + 0.2
    after = psnr_per_frame(real, changed)
    assert after.shape == (2, 4)
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[1, 2] = False
    assert torch.equal(after[mask], before[mask])
    assert after[1, 2] < before[1, 2]


def test_psnr_of_image_batches_in_minus_one_one():
    """The autoencoder's case: frames [N, 3, H, W] in [-1, 1]. An offset of 0.2 there is 0.1 in [0, 1]: 20 dB, the
    same as 10 log10(4 / MSE) on the [-1, 1] values. Values beyond the range are clamped first."""
    real = smooth_video(1, 3, 16)[0] * 2 - 1  # [3, 3, 16, 16] in [-0.6, 0.6]
    psnr = psnr_per_frame(real, real + 0.2, value_range="minus_one_one")
    assert psnr.shape == (3,)
    assert torch.allclose(psnr, torch.full((3,), 20.0, dtype=torch.float64), atol=1e-5)  # float32 conversion
    mse = (0.2 ** 2)
    assert torch.allclose(psnr, torch.full((3,), 10 * math.log10(4 / mse), dtype=torch.float64), atol=1e-5)
    overshoot = real.clone()
    overshoot[0] = 1.5  # clamped to 1: only the in-range error counts
    clamped = psnr_per_frame(real, overshoot, value_range="minus_one_one")
    expected = psnr_per_frame(real, overshoot.clamp(-1, 1), value_range="minus_one_one")
    assert torch.equal(clamped, expected) and torch.equal(clamped[1:], torch.full((2,), PSNR_MAX_DB, dtype=torch.float64))
    u8 = (real[:1] * 127.5 + 127.5).round().to(torch.uint8)
    assert psnr_per_frame(u8, u8, value_range="uint8").item() == PSNR_MAX_DB
    with pytest.raises(ValueError, match=r"\[\.\.\., C, H, W\]"):
        psnr_per_frame(real[0, 0], real[0, 0])


def test_shape_errors():
    video = smooth_video(1, 2, 16)
    with pytest.raises(ValueError, match="differ in shape"):
        psnr_per_frame(video, video[:, :1])
    with pytest.raises(ValueError, match=r"\[B, T, 3, H, W\]"):
        ssim_per_frame(video[0], video[0])


# ---------------------------------------------------------------------------------------------------- SSIM


def test_ssim_identical_is_one():
    video = smooth_video(2, 2, 32)
    ssim = ssim_per_frame(video, video.clone())
    assert ssim.shape == (2, 2) and ssim.dtype == torch.float64
    assert torch.allclose(ssim, torch.ones(2, 2, dtype=torch.float64), rtol=0, atol=1e-9)


@pytest.mark.parametrize("a,b", [(0.2, 0.7), (0.5, 0.5), (0.0, 1.0), (0.9, 0.1)])
def test_ssim_constant_images_closed_form(a, b):
    real = torch.full((1, 1, 3, 24, 24), a, dtype=torch.float64)
    fake = torch.full((1, 1, 3, 24, 24), b, dtype=torch.float64)
    c1 = SSIM_K1**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert ssim_per_frame(real, fake).item() == pytest.approx(expected, rel=0, abs=1e-12)


@pytest.mark.parametrize("height,width", [(32, 32), (40, 23), (11, 11)])
def test_ssim_matches_scikit_image(height, width):
    from skimage.metrics import structural_similarity

    torch.manual_seed(2)
    real = torch.rand(2, 2, 3, height, width, dtype=torch.float64)
    fake = (real + 0.2 * torch.randn_like(real)).clamp(0, 1)
    ours = ssim_per_frame(real, fake)
    for b in range(2):
        for t in range(2):
            reference = structural_similarity(
                real[b, t].permute(1, 2, 0).numpy(), fake[b, t].permute(1, 2, 0).numpy(),
                gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=-1,
            )
            assert ours[b, t].item() == pytest.approx(reference, rel=0, abs=1e-6)


def test_ssim_float32_inputs_match_float64():
    real = smooth_video(1, 2, 32)
    fake = smooth_video(1, 2, 32, seed=5)
    assert torch.allclose(ssim_per_frame(real.float(), fake.float()), ssim_per_frame(real, fake), atol=1e-6)


def test_ssim_symmetric():
    real = smooth_video(1, 3, 32, seed=3)
    fake = smooth_video(1, 3, 32, seed=4)
    assert torch.allclose(ssim_per_frame(real, fake), ssim_per_frame(fake, real), rtol=0, atol=1e-12)


def test_ssim_decreases_with_noise():
    torch.manual_seed(3)
    real = smooth_video(1, 1, 48)
    noise = torch.randn_like(real)
    values = [ssim_per_frame(real, real + std * noise).item() for std in (0.0, 0.01, 0.03, 0.1, 0.3)]
    assert values[0] == pytest.approx(1.0, abs=1e-9)
    assert all(later < earlier for earlier, later in zip(values, values[1:])), values


def test_ssim_small_frames_raise():
    video = smooth_video(1, 1, 40)[..., :10, :]
    with pytest.raises(ValueError, match="10x40"):
        ssim_per_frame(video, video)


# ---------------------------------------------------------------------------------------------------- summarise


def test_summarise():
    per_frame = torch.tensor([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])
    summary = summarise(per_frame)
    assert summary["mean"] == pytest.approx(3.0)
    assert summary["std"] == pytest.approx(float(np.std([1, 2, 3, 3, 4, 5])))
    assert summary["per_frame_mean"] == pytest.approx([2.0, 3.0, 4.0])
    assert summary["count"] == 6
    assert summarise(torch.zeros(0, 3))["count"] == 0


# ---------------------------------------------------------------------------------------------------- LPIPS


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory):
    """A seeded random torchvision AlexNet state dict saved as alexnet-owt-7be5be79.pth (no download)."""
    from torchvision.models import alexnet

    torch.manual_seed(4)
    state_dict = alexnet(weights=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / ALEXNET_FILE
    torch.save(state_dict, path)
    return path, state_dict


@pytest.fixture(scope="module")
def lpips_model(alexnet_file):
    return load_lpips(alexnet_file[0], "cpu")


def test_lpips_missing_file(tmp_path):
    for path in (None, tmp_path / "nope.pth"):
        with pytest.raises(LPIPSWeightsError, match=ALEXNET_FILE) as info:
            load_lpips(path, "cpu")
        assert "Nothing is downloaded" in str(info.value)


def test_lpips_loads_torchvision_backbone(alexnet_file, lpips_model):
    _, saved = alexnet_file
    state = lpips_model.state_dict()
    for index, slice_ in {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}.items():
        for param in ("weight", "bias"):
            assert torch.equal(state[f"net.slice{slice_}.{index}.{param}"], saved[f"features.{index}.{param}"])
    assert not lpips_model.training
    assert not any(p.requires_grad for p in lpips_model.parameters())


def test_lpips_values(lpips_model):
    torch.manual_seed(5)
    real = torch.rand(1, 3, 3, 64, 64)
    fake = (real + 0.3 * torch.randn_like(real)).clamp(0, 1)
    same = lpips_per_frame(lpips_model, real, real.clone(), batch_size=2)
    assert same.shape == (1, 3) and same.dtype == torch.float32
    assert torch.all(same == 0)
    different = lpips_per_frame(lpips_model, real, fake, batch_size=2)
    assert torch.all(different > 0)
    assert torch.allclose(lpips_per_frame(lpips_model, real, fake, batch_size=64), different, atol=1e-6)


def test_lpips_full_state_dict(tmp_path, lpips_model):
    full = {k: v.clone() for k, v in lpips_model.state_dict().items()}
    full["lin0.model.1.weight"] = torch.full_like(full["lin0.model.1.weight"], 0.5)
    full.pop("lins.0.model.1.weight")  # an alias of lin0; files may hold either name
    path = tmp_path / "lpips_full.pth"
    torch.save(full, path)
    model = load_lpips(path, "cpu")
    state = model.state_dict()
    assert torch.equal(state["net.slice3.6.weight"], full["net.slice3.6.weight"])
    assert torch.all(state["lin0.model.1.weight"] == 0.5) and torch.all(state["lins.0.model.1.weight"] == 0.5)


def test_lpips_bad_keys(tmp_path, alexnet_file):
    path = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(LPIPSWeightsError, match="features.0.weight"):
        load_lpips(path, "cpu")
    partial = {k: v for k, v in alexnet_file[1].items() if k != "features.8.bias"}
    torch.save(partial, path)
    with pytest.raises(LPIPSWeightsError, match=r"missing keys: features\.8\.bias"):
        load_lpips(path, "cpu")
    wrong_shape = dict(alexnet_file[1])
    wrong_shape["features.3.weight"] = torch.zeros(1, 1, 1, 1)
    torch.save(wrong_shape, path)
    with pytest.raises(LPIPSWeightsError, match="net.slice2.3.weight"):
        load_lpips(path, "cpu")
