"""generate(): golden replay of the original (outputs, ODE states, per-call trace), guidance, seeds, schedules."""
import json

import pytest
import torch

from lutils.configuration import Configuration
from model.flow_matching import FlowPath
from model.generation import generate, in_notebook, stages
from model.model import Model

GOLDEN_SETS = ("tiny_ours", "tiny_ldm")


@pytest.fixture(scope="module")
def golden(golden_dir):
    sets = {}
    for name in GOLDEN_SETS:
        folder = golden_dir / name
        config = Configuration(folder / "config.yaml", [f"model.autoencoder.ckpt_path={folder / 'ae.pth'}"])
        model = Model(config["model"]).load_from_ckpt(folder / "model.pth").eval()
        sets[name] = (model, torch.load(folder / "io.pt", weights_only=True), json.loads((folder / "trace.json").read_text()))
    return sets


def golden_call(model, io, **kwargs):
    args = dict(initial_frames=io["gen_initial_frames"], feats=io["gen_feats"], feats_masks=io["gen_feats_masks"],
                batch_size=2, num_steps=3)
    args.update(kwargs)
    return generate(model, 5, "cpu", **args)


@pytest.mark.parametrize("name", GOLDEN_SETS)
@pytest.mark.parametrize("run_index", [0, 1])
def test_replays_the_original(golden, name, run_index):
    """Same seed, same random stream: the original's video, ODE states and every velocity call."""
    model, io, trace = golden[name]
    run = trace["runs"][run_index]
    calls = []
    torch.manual_seed(run["torch_seed"])
    out, latents = golden_call(model, io, gamma=run["gamma"], batched_guidance=False, return_latents=True,
                               on_call=calls.append)
    assert out.shape == io[f"gen_g{run_index}_out"].shape
    assert (out - io[f"gen_g{run_index}_out"]).abs().max() <= 1e-4  # decoding amplifies ~1e-6 latent differences
    assert (latents - io[f"gen_g{run_index}_y_after_stage1"][:, 2:7]).abs().max() <= 1e-5
    assert len(calls) == run["num_calls"]
    for mine, theirs in zip(calls, run["calls"]):
        assert mine["indices"].tolist() == theirs["selected_frame_indices"]
        assert torch.allclose(mine["t"], torch.tensor(theirs["t"]))
        assert (mine["masks"].flatten(2).any(-1)[:, -3:]).tolist() == theirs["feats_masks_nonzero_rows"]
        assert list(mine["x_shape"]) == theirs["x_shape"] and list(mine["feats_shape"]) == theirs["feats_shape"]
    assert [c["i"] for c in calls] == [s["i"] for s in run["stages"] for _ in range(s["num_calls"])]


def test_batched_guidance_equals_two_passes(golden):
    model, io, _ = golden["tiny_ldm"]
    a = golden_call(model, io, gamma=1.5, seed=3, batched_guidance=True)
    b = golden_call(model, io, gamma=1.5, seed=3, batched_guidance=False)
    assert (a - b).abs().max() < 1e-4


def test_gamma_zero_is_the_unguided_result(golden):
    model, io, _ = golden["tiny_ldm"]
    calls = []
    a = golden_call(model, io, gamma=0.0, seed=4, on_call=calls.append)
    assert len(calls) == 6 and all(c["indices"].shape[0] == 2 for c in calls)  # conditional passes only
    with_guidance = golden_call(model, io, gamma=1e-3, seed=4)
    assert (a - with_guidance).abs().max() > 0  # guidance changes the result, gamma 0 does not use it
    unguided = golden_call(model, io, gamma=0.0, seed=4, batched_guidance=False)
    assert torch.equal(a, unguided)


def test_without_controls_guidance_changes_nothing(golden):
    """No revealed control: the two predictions guidance mixes are equal, so (1+γ)v − γv = v (up to rounding). This
    is why evaluation/control.py generates its no-control baseline at γ 0. (past_horizon 0: the context frame is
    not drawn at random, whose draws the extra guidance pass would otherwise shift.)"""
    model, io, _ = golden["tiny_ldm"]
    fixed = dict(seed=5, past_horizon=0)
    unguided = golden_call(model, io, gamma=0.0, feats=None, feats_masks=None, **fixed)
    guided = golden_call(model, io, gamma=2.0, feats=None, feats_masks=None, **fixed)
    assert (guided - unguided).abs().max() < 1e-4
    controlled = golden_call(model, io, gamma=2.0, **fixed)
    assert (controlled - golden_call(model, io, gamma=0.0, **fixed)).abs().max() > 1e-3  # with controls it does


def test_seeds_shapes_and_range(golden):
    model, io, _ = golden["tiny_ours"]
    a = golden_call(model, io, seed=11)
    b = golden_call(model, io, seed=11, generator=None)
    c = golden_call(model, io, seed=12)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (2, 7, 3, 64, 64) and a.device.type == "cpu"
    assert a.min() >= -1 and a.max() <= 1  # the ours decoder ends in tanh
    assert torch.equal(a[:, :2], io["gen_initial_frames"])  # initial frames prepended as given


@pytest.mark.parametrize("kwargs", [
    dict(feats=None, feats_masks=None),
    dict(past_horizon=0),
    dict(method="rollout"),
    dict(method="rollout", scale_rollout_velocity=False),
    dict(odesolver="midpoint", num_steps=2),
    dict(odesolver="dopri5", atol=1e-2, rtol=1e-2),
])
def test_options_run(golden, kwargs):
    model, io, _ = golden["tiny_ldm"]
    out = golden_call(model, io, seed=1, **kwargs)
    assert out.shape == (2, 7, 3, 32, 32) and torch.isfinite(out).all()


def test_single_initial_frame_and_no_initial_frames(golden):
    model, io, _ = golden["tiny_ldm"]
    calls = []
    one = generate(model, 4, "cpu", initial_frames=io["gen_initial_frames"][:, :1], seed=0, num_steps=2, on_call=calls.append)
    assert one.shape == (2, 5, 3, 32, 32)
    assert calls[0]["indices"][0].tolist()[:2] == [0, 1]  # fake noise context 0, the given frame 1 as reference
    none = generate(model, 3, "cpu", batch_size=3, seed=0, num_steps=2)
    assert none.shape == (3, 3, 3, 32, 32)


def test_past_horizon_zero_uses_the_reference_as_context(golden):
    model, io, _ = golden["tiny_ldm"]
    calls = []
    golden_call(model, io, seed=2, past_horizon=0, on_call=calls.append)
    assert all(c["indices"][0, 0] == c["indices"][0, 1] for c in calls[3:])  # after the first stage


def test_schedules():
    assert stages("joint", 5, 2, 3, 0, -1) == [("joint", 2, 0), ("joint", 5, 0)]
    assert stages("joint", 9, 2, 3, 2, 4) == [("joint", 2, 0), ("joint", 5, 2), ("joint", 8, 4)]
    assert stages("rollout", 6, 2, 3, 0, -1) == [("joint", 2, 0), ("warmup", 5, 0), ("rolling", 6, 0), ("rolling", 7, 0)]
    with pytest.raises(ValueError, match="method"):
        stages("bogus", 5, 2, 3, 0, -1)


def test_rollout_timestamps_stagger(golden):
    model, io, _ = golden["tiny_ldm"]
    calls = []
    golden_call(model, io, seed=0, method="rollout", num_steps=1, on_call=calls.append)
    # num_steps 1: each stage is evaluated at t = 0; targets j get ((T-1-j) + 0)/T while rolling, 0 in warmup
    stage_t = {c["stage"]: c["t"][0, -3:].tolist() for c in calls}
    assert stage_t["warmup"] == [0.0, 0.0, 0.0]
    assert stage_t["rolling"] == pytest.approx([2 / 3, 1 / 3, 0.0])


def test_noise_levels_for_the_plot():
    levels = FlowPath(0.0).noise_levels(8, 3, torch.tensor([0.5, 0.25, 0.0]))
    assert levels.tolist() == [1, 1, 1, 0.5, 0.25, 0.0, 0, 0]
    assert not in_notebook()  # plain pytest: no plot, only the progress bar


@pytest.mark.parametrize("method", ["joint", "rollout"])
def test_generates_under_bf16_autocast(golden, method):
    """The path CUDA bf16 autocast takes, on the CPU: bf16 velocities are written into the fp32 ODE state."""
    model, io, _ = golden["tiny_ldm"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        video, latents = golden_call(model, io, method=method, gamma=1.0, seed=0, return_latents=True)
    reference, reference_latents = golden_call(model, io, method=method, gamma=1.0, seed=0, return_latents=True)
    assert video.dtype == torch.float32 and latents.dtype == torch.float32 and torch.isfinite(video).all()
    assert video.shape == reference.shape == (2, 7, 3, 32, 32)
    # bf16 keeps about 3 significant digits: the latents stay close to the fp32 ones
    assert (latents - reference_latents).abs().mean() < 0.05 * reference_latents.abs().mean()
