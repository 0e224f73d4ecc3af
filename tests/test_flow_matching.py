"""Flow-matching maths against closed forms."""
import pytest
import torch

from model import flow_matching as fm


@pytest.mark.parametrize("sigma", [0.0, 1e-7, 0.1])
def test_path_end_points_and_velocity(sigma):
    g = torch.Generator().manual_seed(0)
    latents, noise = torch.randn(2, 5, 3, 4, 4, generator=g), torch.randn(2, 5, 3, 4, 4, generator=g)
    zeros, ones = torch.zeros(2, 5), torch.ones(2, 5)
    assert torch.allclose(fm.interpolate(latents, noise, zeros, sigma), noise)
    assert torch.allclose(fm.interpolate(latents, noise, ones, sigma), latents + sigma * noise, atol=1e-6)
    t = torch.rand(2, 5, generator=g)
    eps = 1e-3
    numeric = (fm.interpolate(latents, noise, t + eps, sigma).double() - fm.interpolate(latents, noise, t - eps, sigma).double()) / (2 * eps)
    assert torch.allclose(numeric.float(), fm.target_velocity(latents, noise, sigma), atol=1e-3)


def test_timestamps():
    t = fm.sample_timestamps(1000, 5, 2, generator=torch.Generator().manual_seed(0))
    assert (t[:, :2] == 1).all() and (t[:, 2:] >= 0).all() and (t[:, 2:] < 1).all()
    assert abs(t[:, 2:].mean().item() - 0.5) < 0.02 and (t[:, 2] != t[:, 3]).any()
    shared = fm.sample_timestamps(50, 5, 2, same_t=True, generator=torch.Generator().manual_seed(0))
    assert (shared[:, 2:] == shared[:, 2:3]).all() and (shared[:, :2] == 1).all()


def test_masked_loss_closed_form():
    pred = torch.zeros(1, 2, 3, 2, 2)
    target = torch.zeros(1, 2, 3, 2, 2)
    target[0, 0, :, 0, 0] = 2.0  # kept token, squared error 4 on each of 3 channels
    target[0, 1, :, 1, 1] = 7.0  # dropped token: ignored
    mask = torch.zeros(1, 2, 1, 2, 2)
    mask[0, 0, 0, 0, 0] = mask[0, 1, 0, 0, 1] = 1.0
    # sum = 3 * 4 = 12 over 3 channels x 2 kept tokens
    assert fm.masked_loss(pred, target, mask).item() == pytest.approx(12 / 6)
