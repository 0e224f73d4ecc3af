"""What the CUDA path needs, checked without a GPU (issue 14): TF32 set deliberately by the precision, fused-attention
head channels that flash kernels take, activation checkpointing that changes nothing but memory, torch.compile wired
and off by default, metrics kept on the device during a log window.

The bf16 runs of training, generation and evaluation on the CPU (autocast's dtype rules are the CUDA ones) are in
tests/test_training.py (test_precision_option_resolves_and_bf16_trains_on_cpu), tests/test_generation.py
(test_generates_under_bf16_autocast, gamma 1, joint and rollout) and tests/test_evaluate.py (--precision bf16 below).
"""
from __future__ import annotations

import json
import math
import sys
import warnings

import pytest
import torch
import yaml

from lutils import schema
from lutils.configuration import Configuration
from lutils.precision import autocast, set_tf32, tf32_settings
from model import attention
from model.attention import RelativeAttention, TimeDependentAttention
from model import regressor as regressor_module
from model.regressor import VectorFieldRegressor
from tests.conftest import ROOT, write_rendered_splits
from training.distributed import DistInfo
from training.trainer import Trainer

TINY = ROOT / "tests" / "configs" / "tiny_train.yaml"


@pytest.fixture
def restore_tf32():
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_tf32_follows_the_precision_on_cuda_and_is_left_alone_elsewhere(restore_tf32):
    assert set_tf32("cuda", "bf16") == {"tf32_matmul": True, "tf32_cudnn": True}
    assert set_tf32("cuda", "fp32") == {"tf32_matmul": False, "tf32_cudnn": False}  # fp32 means fp32
    with warnings.catch_warnings():  # without a GPU torch warns that it disables CUDA autocast
        warnings.simplefilter("ignore", UserWarning)
        with autocast("cuda", "bf16"):  # the one function train, generate and evaluate call sets them too
            assert tf32_settings() == {"tf32_matmul": True, "tf32_cudnn": True}
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    with autocast("cpu", "bf16"):  # CPU runs: the CUDA flags are not touched
        assert tf32_settings() == {"tf32_matmul": False, "tf32_cudnn": False}


@pytest.mark.parametrize("name", ["bair", "clevrer", "epic", "toy"])
def test_fused_attention_gets_head_channels_in_multiples_of_8(name, monkeypatch):
    """Flash kernels need head channels that are multiples of 8: the configs' heads, and the temporal attention's
    folded relative-position channels once padded, for every number of frames generation and training attend to."""
    vfr = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())["model"]["vector_field_regressor"]
    dim, heads = vfr["inner_dim"], vfr["num_heads"]
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(attention.F, "scaled_dot_product_attention",
                        lambda q, k, v, **kw: seen.append((q.shape[-1], k.shape[-1], v.shape[-1])) or real(q, k, v, **kw))
    with torch.no_grad():
        TimeDependentAttention(dim, heads)(torch.randn(2, 3, dim), torch.randn(2, dim))
        layer = RelativeAttention(dim, heads, vfr["max_relative_position"])
        for frames in range(1, 9):  # training's Cc + 1 + T = 5; generation's stages the same; a margin around it
            layer(torch.randn(1, frames, 2, dim), torch.randn(1, frames, dim), torch.arange(frames)[None])
    assert (dim // heads) % 8 == 0 and len(seen) == 9
    assert all(channels % 8 == 0 for shapes in seen for channels in shapes), seen


def tiny_regressor(checkpointing: bool) -> VectorFieldRegressor:
    torch.manual_seed(0)
    return VectorFieldRegressor(state_size=4, state_res=[4, 6], inner_dim=32, depth=3, mid_depth=1, fc_dim=48,
                                num_heads=4, dropout=0.1, max_relative_position=3, masking_ratio=0.4, causal=False,
                                feats_dim=8, activation_checkpointing=checkpointing)


def loss_and_gradients(regressor: VectorFieldRegressor) -> tuple:
    torch.manual_seed(1)
    x, feats = torch.randn(2, 5, 4, 4, 6), torch.randn(2, 3, 8, 4, 6)
    masks = (torch.rand(2, 3, 1, 4, 6) > 0.5).float()
    indices, times = torch.tensor([[0, 2, 3, 4, 5]] * 2), torch.rand(2, 5)
    torch.manual_seed(2)  # dropout draws: the recomputation must draw the same masks
    velocity, kept = regressor.train()(x, indices, times, feats, masks, generator=torch.Generator().manual_seed(3))
    loss = (velocity.pow(2) * kept).mean()
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in regressor.named_parameters()}


def test_activation_checkpointing_gives_the_same_loss_and_gradients(monkeypatch):
    calls = []
    real = regressor_module.checkpoint
    monkeypatch.setattr("model.regressor.checkpoint", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    plain_loss, plain_grads = loss_and_gradients(tiny_regressor(False))
    assert calls == []
    loss, grads = loss_and_gradients(tiny_regressor(True))
    assert len(calls) == 3 and all(kw == {"use_reentrant": False} for kw in calls)  # one per block
    assert torch.equal(loss, plain_loss) and grads.keys() == plain_grads.keys()
    for name, grad in grads.items():  # bit for bit: the same operations are recomputed, dropout included
        assert torch.equal(grad, plain_grads[name]), name
    with torch.no_grad():  # no gradients (sampling, validation): nothing to recompute
        tiny_regressor(True)(torch.randn(1, 5, 4, 4, 6), torch.arange(5)[None], torch.rand(1, 5),
                             torch.randn(1, 3, 8, 4, 6), torch.ones(1, 3, 1, 4, 6))
    assert len(calls) == 3


def test_training_options_are_off_by_default_and_documented():
    regressor = schema.complete("model.vector_field_regressor", yaml.safe_load(TINY.read_text())["model"]
                                ["vector_field_regressor"])
    assert regressor["activation_checkpointing"] is False
    training = schema.complete("training", yaml.safe_load(TINY.read_text())["training"])
    assert training["compile"] is False
    readme = (ROOT / "README.md").read_text()
    assert "vector_field_regressor.activation_checkpointing" in readme and "`training.compile`" in readme


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_rendered_splits(tmp_path_factory.mktemp("cuda_path_data"), {"train": 6, "val": 2}, num_frames=12)


def test_trainer_wires_both_options(data_root, tmp_path, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **kw: compiled.append(type(self).__name__))

    def trainer(name, *overrides):
        config = Configuration(TINY, [f"data.data_root={data_root}", f"+training.runs_dir={tmp_path}", *overrides])
        return Trainer(config, name, DistInfo(), seed=1)

    plain = trainer("plain")
    assert compiled == [] and not plain.model.vector_field_regressor.activation_checkpointing
    both = trainer("both", "+training.compile=true", "+model.vector_field_regressor.activation_checkpointing=true")
    assert compiled == ["VectorFieldRegressor"] and both.model.vector_field_regressor.activation_checkpointing
    # the same run with and without recomputation: the same losses, step for step
    monkeypatch.undo()
    losses = {}
    for name, overrides in (("off", ()), ("on", ("+model.vector_field_regressor.activation_checkpointing=true",))):
        run = trainer(name, "training.validate_every=0", "training.sample_every=0", *overrides)
        batch = next(iter(run.loader()))
        losses[name] = [float(run.train_step(batch[0])[Trainer.loss_name]) for _ in range(2)]
    assert losses["on"] == losses["off"]


def test_metrics_stay_on_the_device_until_the_log_window_ends(data_root, tmp_path, monkeypatch):
    """No host sync per step for the logged values: the loop reads a metric tensor (float()) only when a window ends.
    (The data pipeline's own CPU tensors, read in the loader, are not device tensors and are not counted.)"""
    config = Configuration(TINY, [f"data.data_root={data_root}", f"+training.runs_dir={tmp_path}",
                                  "training.validate_every=0", "training.sample_every=0", "training.log_every=4"])
    trainer = Trainer(config, "sync", DistInfo(), seed=1)
    reads = []
    real = torch.Tensor.__float__

    def spy(self):
        if sys._getframe(1).f_code.co_filename.endswith(("training/loop.py", "training/trainer.py")):
            reads.append(trainer.global_step)
        return real(self)

    monkeypatch.setattr(torch.Tensor, "__float__", spy)
    trainer._steps(8, None)
    assert set(reads) == {4, 8}  # read at the ends of the two windows, never at steps 1-3 or 5-7


def test_evaluate_runs_under_bf16_close_to_fp32(golden_dir, tmp_path):
    """evaluate.py's default on GPUs (and on CPUs with native bf16): generation under bf16 autocast, end to end on the
    golden tiny model. The scores are finite and within 0.5 dB PSNR / 0.02 SSIM of the fp32 run's: the sampler's state
    stays fp32 and bf16 changes the velocities in their third significant digit."""
    import evaluate
    from dataset.make_synthetic import main as make_synthetic

    data = tmp_path / "data"
    assert make_synthetic(["--out_dir", str(data), "--train", "0", "--val", "0", "--test", "2", "--frames", "6",
                           "--size", "32", "--min_objects", "1", "--max_objects", "1", "--seed", "3", "--quiet"]) == 0
    folder = golden_dir / "tiny_ldm"
    results = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision / "results.json"
        assert evaluate.main(["--config", str(folder / "config.yaml"), "--ckpt", str(folder / "model.pth"),
                              "--data", str(data), "--num-videos", "2", "--cond-frames", "1", "--gen-frames", "4",
                              "--steps", "2", "--gamma", "1", "--method", "rollout", "--batch-size", "2",
                              "--device", "cpu", "--precision", precision, "--no-fvd",
                              "--control-clips", "0", "--out", str(out),
                              f"model.autoencoder.ckpt_path={folder / 'ae.pth'}"]) == 0
        results[precision] = json.loads(out.read_text())
        assert results[precision]["protocol"]["precision"] == precision
    for name, tolerance in (("psnr", 0.5), ("ssim", 0.02)):
        bf16, fp32 = results["bf16"]["metrics"][name]["mean"], results["fp32"]["metrics"][name]["mean"]
        assert math.isfinite(bf16) and bf16 == pytest.approx(fp32, abs=tolerance), name


def test_clipping_and_ema_stay_fp32_under_bf16_autocast(data_root, tmp_path, monkeypatch):
    config = Configuration(TINY, [f"data.data_root={data_root}", f"+training.runs_dir={tmp_path}",
                                  "training.validate_every=0", "training.sample_every=0"])
    trainer = Trainer(config, "bf16", DistInfo(), seed=1, precision="bf16")
    clipped = []
    real = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_",
                        lambda parameters, max_norm: clipped.extend(p.grad.dtype for p in parameters) or
                        real(parameters, max_norm))
    batch = next(iter(trainer.loader()))
    metrics = trainer.train_step(batch[0])
    assert not metrics["skipped"] and metrics[Trainer.loss_name].dtype == torch.float32
    assert clipped and set(clipped) == {torch.float32}  # clipped fp32 gradients of fp32 weights
    assert metrics["Training/Stats/grad_norm"].dtype == torch.float32
    assert {p.dtype for p in trainer.trainable} == {value.dtype for value in trainer.ema.shadow.values()} == \
        {torch.float32}
