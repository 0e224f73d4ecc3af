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


def test_the_path_object_is_the_functions_maths():
    g = torch.Generator().manual_seed(1)
    latents, noise, t = torch.randn(2, 4, 3, 2, 2, generator=g), torch.randn(2, 4, 3, 2, 2, generator=g), torch.rand(2, 4)
    path = fm.FlowPath(0.1)
    assert torch.equal(path.interpolate(latents, noise, t), fm.interpolate(latents, noise, t, 0.1))
    assert torch.equal(path.target_velocity(latents, noise), fm.target_velocity(latents, noise, 0.1))
    assert fm.masked_loss is fm.FlowPath.loss


@pytest.mark.parametrize("num_steps", [1, 4, 20])
def test_sampler_span_grid_and_clean_times(num_steps):
    path = fm.FlowPath(1e-7)
    start, end = path.time_span().tolist()
    assert (start, end) == (0.0, 1.0)  # noise -> data, as interpolate's end points
    assert path.step_size(num_steps) * num_steps == pytest.approx(end - start)
    assert path.clean_times(3).tolist() == [end] * 3
    with pytest.raises(ValueError, match="num_steps"):
        path.step_size(0)


@pytest.mark.parametrize("T", [1, 3, 4])
def test_rollout_stage_times_closed_form(T):
    """warmup ends staggered at (T-j)/T; each rolling stage moves every target by exactly 1/T, so the first one ends
    clean; with the 1/T velocity scale an ODE step over [0,1] moves a frame by scale * velocity."""
    path = fm.FlowPath(0.0)
    j = torch.arange(T, dtype=torch.float32)
    start, _ = path.stage_times("warmup", torch.tensor(0.0), T)
    end, scale = path.stage_times("warmup", torch.tensor(1.0), T)
    assert torch.allclose(start, torch.zeros(T)) and torch.allclose(end, (T - j) / T)
    assert torch.allclose(scale, end - start)  # d(time)/dt is the velocity scale
    r0, r_scale = path.stage_times("rolling", torch.tensor(0.0), T)
    r1, _ = path.stage_times("rolling", torch.tensor(1.0), T)
    assert torch.allclose(r0, (T - 1 - j) / T) and torch.allclose(r1 - r0, torch.full((T,), 1.0 / T))
    assert r1[0].item() == pytest.approx(1.0) and torch.allclose(r_scale, r1 - r0)
    _, unscaled = path.stage_times("rolling", torch.tensor(0.5), T, scale_rolling=False)
    assert torch.equal(unscaled, torch.ones(T))  # the original's rollout
    joint, joint_scale = path.stage_times("joint", torch.tensor(0.3), T)
    assert torch.allclose(joint, torch.full((T,), 0.3)) and torch.equal(joint_scale, torch.ones(T))
    with pytest.raises(ValueError, match="stage"):
        path.stage_times("sideways", torch.tensor(0.0), T)


def test_noise_levels_of_the_buffer():
    levels = fm.FlowPath(0.0).noise_levels(7, 2, torch.tensor([0.75, 0.5]))
    assert levels.tolist() == [1.0, 1.0, 0.75, 0.5, 0.0, 0.0, 0.0]
