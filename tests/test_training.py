"""Training: schedule, EMA, sampler, loss decrease, exact resume, robustness, export, DDP and signals."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from lutils.configuration import Configuration
from model.checkpoint import CheckpointError, load_file, save_file
from model.flow_matching import masked_loss
from model.model import Model
from tests.conftest import ROOT, write_rendered_splits
from training.distributed import DistInfo
from training.ema import EMA
from training.sampler import ResumableSampler
from training.schedule import build_scheduler, learning_rate
from training.trainer import Trainer, TrainingStopped

TINY = ROOT / "tests" / "configs" / "tiny_train.yaml"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_rendered_splits(tmp_path_factory.mktemp("tiny_data"), {"train": 6, "val": 2}, num_frames=12)


def tiny_config(data_root, runs_dir, *overrides):
    return Configuration(TINY, [f"data.data_root={data_root}", f"+training.runs_dir={runs_dir}", *overrides])


def flat_state(trainer):
    state = {f"model.{k}": v for k, v in trainer.model.state_dict().items()}
    state.update({f"ema.{k}": v for k, v in trainer.ema.shadow.items()})
    for i, (key, value) in enumerate(trainer.optimizer.state_dict()["state"].items()):
        state.update({f"adam.{key}.{k}": v for k, v in value.items() if torch.is_tensor(v)})
    return state


# Closed forms ----------------------------------------------------------------------------------------------------------
def test_learning_rate_schedule_closed_form():
    peak, warmup, total, end = 1e-4, 100, 1100, 1e-7
    assert learning_rate(0, peak, warmup, total) == 0.0  # the very first step uses lr 0
    assert learning_rate(50, peak, warmup, total) == pytest.approx(peak / 2)
    assert learning_rate(warmup, peak, warmup, total) == pytest.approx(peak)
    assert learning_rate(600, peak, warmup, total) == pytest.approx((peak - end) * 0.5 ** 0.5 + end)
    assert learning_rate(total, peak, warmup, total) == pytest.approx(end)
    assert learning_rate(total + 5, peak, warmup, total) == end
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    scheduler = build_scheduler(optimizer, warmup, total)
    seen = []
    for _ in range(total + 3):
        seen.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    for step in (0, 1, 50, warmup, 333, 600, total, total + 2):
        assert seen[step] == pytest.approx(learning_rate(step, peak, warmup, total), rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("power", [0.5, 1.0])
def test_lr_decay_power_option(data_root, tmp_path, power):
    """training.optimizer.lr_decay_power (optional, default the original's 0.5) sets the decay after warm-up."""
    extra = [] if power == 0.5 else [f"+training.optimizer.lr_decay_power={power}"]
    cfg = tiny_config(data_root, tmp_path, "training.optimizer.num_warmup_steps=2",
                      "training.optimizer.num_training_steps=10", *extra)
    trainer = Trainer(cfg, "lr", DistInfo(), seed=1)
    peak = float(cfg["training"]["optimizer"]["learning_rate"])
    seen = []
    for _ in range(10):
        seen.append(trainer.scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.scheduler.step()
    remaining = 1 - (6 - 2) / (10 - 2)
    assert seen[6] == pytest.approx((peak - 1e-7) * remaining ** power + 1e-7, rel=1e-6)
    with pytest.raises(ValueError, match="lr_decay_power"):
        Trainer(tiny_config(data_root, tmp_path, "+training.optimizer.lr_decay_power=0"), "lr0", DistInfo(), seed=1)


def test_ema_closed_form_and_swap():
    module = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(module.weight)
    ema = EMA(module, decay=0.5)
    module.weight.data.fill_(1.0)
    ema.update(module)  # decay min(0.5, 1/10) = 0.1 -> 0.9
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 0.9))
    module.weight.data.fill_(2.0)
    ema.update(module)  # decay min(0.5, 2/11) -> 0.9 * 2/11 + 2 * 9/11
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 0.9 * 2 / 11 + 2 * 9 / 11))
    with ema.swapped_in(module):
        assert torch.allclose(module.weight, ema.shadow["weight"])
    assert torch.equal(module.weight, torch.full((1, 2), 2.0))


def test_sampler_splits_ranks_and_resumes():
    def take(sampler, n):
        iterator = iter(sampler)
        return [next(iterator) for _ in range(n)]

    ranks = [take(ResumableSampler(10, rank, 2, seed=3), 5) for rank in range(2)]
    assert sorted(i for r in ranks for i, _ in r) == list(range(10))  # one epoch, disjoint halves
    full = take(ResumableSampler(10, 1, 2, seed=3), 12)
    assert take(ResumableSampler(10, 1, 2, seed=3, start=7), 5) == full[7:]  # resume continues the stream
    assert len({seed for _, seed in full}) == 12


# Training --------------------------------------------------------------------------------------------------------------
def test_loss_decreases_on_a_repeated_batch(data_root, tmp_path):
    config = tiny_config(data_root, tmp_path)
    torch.manual_seed(0)
    model = Model(config["model"]).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    batch = torch.rand(2, 8, 3, 32, 32) * 2 - 1
    losses = []
    for _ in range(40):
        out = model(batch, generator=torch.Generator().manual_seed(0))  # same draws every step
        loss = masked_loss(out["reconstructed_vectors"], out["target_vectors"], out["selected_masks"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_resume_is_bit_exact(data_root, tmp_path):
    """2N steps in one go == N steps, stop, resume, N steps: every weight, EMA and Adam state identical."""
    straight = Trainer(tiny_config(data_root, tmp_path / "a"), "r", DistInfo(), seed=5)
    assert straight.train() == 0
    first = Trainer(tiny_config(data_root, tmp_path / "b"), "r", DistInfo(), seed=5)
    assert first.train(max_steps=4) == 0 and first.global_step == 4
    resumed = Trainer(tiny_config(data_root, tmp_path / "b"), "r", DistInfo(), seed=5, resume_step=-1)
    assert resumed.global_step == 4
    assert resumed.train() == 0 and resumed.global_step == 8
    a, b = flat_state(straight), flat_state(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    torch.manual_seed(5)  # the trainer's initialisation seed
    initial = Model(tiny_config(data_root, tmp_path)["model"]).state_dict()
    assert any(not torch.equal(v, a[f"model.{k}"]) for k, v in initial.items() if k.startswith("vector_field_regressor."))


def test_gradient_clipping_starts_after_warm_up(data_root, tmp_path, monkeypatch):
    """The original clips only when global_step > num_warmup_steps (spec section 4): not at step == warm-up."""
    seen = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording(parameters, max_norm, *args, **kwargs):
        seen.append(max_norm)
        return clip(parameters, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording)
    trainer = Trainer(tiny_config(data_root, tmp_path, "training.optimizer.num_warmup_steps=2"), "r", DistInfo(), seed=5)
    assert trainer.train(max_steps=5) == 0
    assert seen == [float("inf")] * 3 + [1.0, 1.0]  # steps 0, 1, 2 unclipped; 3 and 4 clipped at 1.0


def test_checkpoints_and_files(data_root, tmp_path):
    trainer = Trainer(tiny_config(data_root, tmp_path), "files", DistInfo(), seed=1)
    assert trainer.train() == 0
    run = tmp_path / "tiny_run-files"
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["final_step_8.pth", "latest.pth", "step_4.pth"]
    assert (run / "config.yaml").is_file() and (run / "metrics.jsonl").is_file()
    state = load_file(run / "checkpoints" / "latest.pth")  # weights_only loading works for our own files
    assert state["global_step"] == 8 and set(state) >= {"model", "ema", "optimizer", "lr_scheduler", "rng", "sampler"}
    # our checkpoint loads like an original one, with the EMA weights by default
    model = Model(tiny_config(data_root, tmp_path)["model"]).load_from_ckpt(run / "checkpoints" / "latest.pth")
    assert torch.equal(model.vector_field_regressor.msk_token, state["ema"]["shadow"]["vector_field_regressor.msk_token"])
    raw = Model(tiny_config(data_root, tmp_path)["model"]).load_from_ckpt(run / "checkpoints" / "latest.pth", use_ema=False)
    assert torch.equal(raw.vector_field_regressor.msk_token, state["model"]["vector_field_regressor.msk_token"])
    # the resume state leaves out nothing the config cannot rebuild (here the frozen parts are random: kept)
    assert any(k.startswith("dino.") for k in state["model"]) and any(k.startswith("ae.") for k in state["model"])
    # beside each checkpoint, an inference snapshot: EMA regressor + frozen parts in the original's layout
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == names
    snapshot = load_file(run / "snapshots" / "latest.pth")
    assert snapshot["global_step"] == 8 and snapshot["ema_weights"] and "optimizer" not in snapshot
    assert "vector_field_regressor.time_projection.0.weight" in snapshot["model"]  # the original's strict load
    from_snapshot = Model(tiny_config(data_root, tmp_path)["model"]).load_from_ckpt(run / "snapshots" / "latest.pth")
    assert all(torch.equal(from_snapshot.state_dict()[k], v) for k, v in model.state_dict().items())
    from PIL import Image

    with Image.open(run / "samples" / "step_8.png") as sheet:  # rows real/generated x 2 clips, 4 frames of 32 px
        assert sheet.size == (4 * 34 + 2, 4 * 34 + 2)
    assert (run / "samples" / "step_8.gif").is_file()
    metrics = (run / "metrics.jsonl").read_text()
    assert "Training/Stats/grad_norm" in metrics and "Validation/loss" in metrics


def test_validation_reports_what_the_controls_are_worth(data_root, tmp_path):
    """control_gain = loss with every control hidden - loss: 0 when the features cannot matter, else not."""
    trainer = Trainer(tiny_config(data_root, tmp_path), "val", DistInfo(), seed=1)
    values = trainer.validate()
    assert values["Validation/control_gain"] == pytest.approx(
        values["Validation/loss_without_controls"] - values["Validation/loss"])
    assert values["Validation/control_gain"] != 0.0
    assert trainer.model.feats_select_prob == 0.3  # restored
    trainer.ema.shadow["vector_field_regressor.feats_project_in.0.weight"].zero_()  # controls no longer reach tokens
    blind = trainer.validate()
    assert blind["Validation/control_gain"] == pytest.approx(0.0, abs=1e-6)


def test_export_for_the_original_code(data_root, tmp_path):
    Trainer(tiny_config(data_root, tmp_path), "exp", DistInfo(), seed=1).train()
    out = tmp_path / "exported.pth"
    result = subprocess.run([sys.executable, "-m", "training.export", str(tmp_path / "tiny_run-exp" / "checkpoints" / "latest.pth"),
                             "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    exported = torch.load(out, weights_only=True)
    assert list(exported) == ["model"]
    keys = exported["model"].keys()
    assert {f"vector_field_regressor.time_projection.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")} <= set(keys)
    assert any(k.startswith("ae.") for k in keys) and any(k.startswith("dino.") for k in keys)
    Model(tiny_config(data_root, tmp_path)["model"]).load_from_ckpt(out)


def test_resume_state_leaves_file_weights_to_the_config(data_root, tmp_path):
    """With the autoencoder loaded from a file, the resume state holds no ae.* weights (the run's snapshot and
    training.export bring them back from the file), and resuming from it continues the same run."""
    first = Trainer(tiny_config(data_root, tmp_path), "ae", DistInfo(), seed=1)
    ae_file = save_file({"state_dict": first.model.ae.state_dict()}, tmp_path / "ae.pth")  # a taming-style file
    config = ["model.autoencoder.random_init=false", f"model.autoencoder.ckpt_path={ae_file}"]
    trainer = Trainer(tiny_config(data_root, tmp_path, *config), "file", DistInfo(), seed=1)
    assert trainer.model.ae.weights.loaded
    assert trainer.train(max_steps=2) == 0
    latest = tmp_path / "tiny_run-file" / "checkpoints" / "latest.pth"
    state = load_file(latest)
    assert not any(k.startswith("ae.") for k in state["model"]) and any(k.startswith("dino.") for k in state["model"])
    out = tmp_path / "exported.pth"
    result = subprocess.run([sys.executable, "-m", "training.export", str(latest), "--out", str(out), "--no-ema"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    exported = torch.load(out, weights_only=True)["model"]
    for key, value in first.model.ae.state_dict().items():
        assert torch.equal(exported[f"ae.{key}"], value), key
    resumed = Trainer(tiny_config(data_root, tmp_path, *config), "file", DistInfo(), seed=1, resume_step=-1)
    assert resumed.global_step == 2
    assert all(torch.equal(resumed.model.state_dict()[k], v) for k, v in state["model"].items())


def test_nonfinite_steps_are_skipped_then_stop_the_run(data_root, tmp_path):
    trainer = Trainer(tiny_config(data_root, tmp_path, "+training.max_nonfinite_steps=2"), "nan", DistInfo(), seed=1)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    bad = torch.full((2, 8, 3, 32, 32), 255, dtype=torch.uint8)
    trainer.model.ae.encode = lambda frames: torch.full((frames.shape[0], frames.shape[1], 4, 8, 8), float("nan"))
    metrics = trainer.train_step(bad)
    assert metrics["skipped"] and trainer.nonfinite["nan"] == 1 and trainer.global_step == 1
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in before.items())  # no update
    with pytest.raises(TrainingStopped, match="non-finite"):
        trainer.train_step(bad)


def test_missing_inputs_fail_before_work(data_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="train"):
        Trainer(tiny_config(tmp_path / "nowhere", tmp_path), "x", DistInfo())
    with pytest.raises(CheckpointError, match="ckpt_path"):
        Trainer(tiny_config(data_root, tmp_path, "model.autoencoder.random_init=false"), "x", DistInfo())
    with pytest.raises(CheckpointError, match="no checkpoint|does not exist"):
        Trainer(tiny_config(data_root, tmp_path), "x", DistInfo(), resume_step=-1)


def run_train(data_root, runs, *extra, launcher=(sys.executable, "train.py"), **kwargs):
    command = [*launcher, "--config", str(TINY), "--run-name", "p", f"data.data_root={data_root}",
               f"+training.runs_dir={runs}", *extra]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


@pytest.mark.slow
def test_sigterm_writes_a_loadable_checkpoint(data_root, tmp_path):
    process = run_train(data_root, tmp_path, "training.optimizer.num_training_steps=100000", "training.log_every=1",
                        "training.validate_every=0")
    metrics = tmp_path / "tiny_run-p" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and metrics.read_text().count("\n") >= 3):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    state = load_file(tmp_path / "tiny_run-p" / "checkpoints" / "latest.pth")
    assert 3 <= state["global_step"] < 100000
    Model(tiny_config(data_root, tmp_path)["model"]).load_from_ckpt(tmp_path / "tiny_run-p" / "checkpoints" / "latest.pth")
    assert "continue with --resume-step -1" in output


@pytest.mark.slow
def test_two_process_ddp_with_gloo(data_root, tmp_path):
    process = run_train(data_root, tmp_path, "+training.record_samples=true", "training.validate_every=0",
                        launcher=(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                                  "train.py"),
                        env={**os.environ, "OMP_NUM_THREADS": "1"})
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    assert "2 ranks hold identical weights" in output
    run = tmp_path / "tiny_run-p"
    seen = [[line.split()[1:] for line in (run / f"samples_rank{r}.txt").read_text().splitlines()] for r in range(2)]
    assert len(seen[0]) == len(seen[1]) == 8 and seen[0] != seen[1]
    assert not set(seen[0][0]) & set(seen[1][0])  # within an epoch the ranks get disjoint clips
    state = load_file(run / "checkpoints" / "final_step_8.pth")
    torch.manual_seed(1543)
    initial = Model(tiny_config(data_root, tmp_path)["model"]).state_dict()
    assert any(not torch.equal(initial[k], v) for k, v in state["model"].items() if k.startswith("vector_field_regressor."))


@pytest.mark.parametrize("processes, omp, expected", [(2, None, "half"), (1, None, "all"), (2, "1", "kept")])
def test_cpu_processes_share_the_cores(monkeypatch, processes, omp, expected):
    """N CPU processes of one node take cores/N threads each, unless OMP_NUM_THREADS decides."""
    from training.distributed import share_cpu_threads

    before = torch.get_num_threads()
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    try:
        torch.set_num_threads(3)
        got = share_cpu_threads(processes)
        assert got == {"half": 4, "all": 8, "kept": 3}[expected] == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_num_processes_is_the_num_gpus_option():
    from train import build_parser

    assert build_parser().parse_args(["--config", "c", "--run-name", "r", "--num-processes", "2"]).num_gpus == 2


def test_failed_save_keeps_the_previous_checkpoint(data_root, tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(data_root, tmp_path), "disk", DistInfo(), seed=1)
    assert trainer.train(max_steps=4) == 0
    latest = tmp_path / "tiny_run-disk" / "checkpoints" / "latest.pth"
    good = latest.read_bytes()

    def disk_full(obj, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    trainer.global_step = 5
    assert trainer.save() is None  # logged, not raised: training can go on
    assert latest.read_bytes() == good
    assert not [p for p in latest.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_auto_resume_continues_from_latest(data_root, tmp_path):
    Trainer(tiny_config(data_root, tmp_path), "auto", DistInfo(), seed=1).train(max_steps=4)
    again = Trainer(tiny_config(data_root, tmp_path, "+training.auto_resume=true", "training.optimizer.learning_rate=0.01"),
                    "auto", DistInfo(), seed=1)
    assert again.global_step == 4
    log = (again.run_dir / "log.txt").read_text()  # a resume under other settings says which ones
    assert "written with other settings" in log and "training.optimizer.learning_rate:" in log and "-> 0.01" in log
    assert "training.auto_resume: (absent) -> True" in log
    with pytest.raises(FileExistsError, match="resume-step"):  # never silently overwrite a run's checkpoints
        Trainer(tiny_config(data_root, tmp_path), "auto", DistInfo(), seed=1)


def test_precision_option_resolves_and_bf16_trains_on_cpu(data_root, tmp_path):
    from lutils.precision import resolve_precision

    assert resolve_precision("fp32", "cuda") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("auto", "cuda") == "bf16"  # the original trains CUDA runs in bf16 autocast
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", "cpu")
    losses = {}
    for precision in ("fp32", "bf16"):
        trainer = Trainer(tiny_config(data_root, tmp_path / precision), "r", DistInfo(), seed=5, precision=precision)
        assert trainer.precision == precision
        assert trainer.train(max_steps=3) == 0
        rows = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
        losses[precision] = [r[Trainer.loss_name] for r in rows if Trainer.loss_name in r]
    assert losses["bf16"] and all(math.isfinite(v) for v in losses["bf16"])
    # the same draws at lower precision: the first losses agree to bf16's few digits, not bit for bit
    assert losses["bf16"][0] == pytest.approx(losses["fp32"][0], rel=0.05) and losses["bf16"] != losses["fp32"]


def test_a_run_without_ema_validates_samples_and_snapshots_its_raw_weights(data_root, tmp_path):
    trainer = Trainer(tiny_config(data_root, tmp_path, "training.ema_decay=0"), "noema", DistInfo(), seed=1)
    assert trainer.ema is None and trainer.train() == 0
    run = tmp_path / "tiny_run-noema"
    assert (run / "samples" / "step_8.png").is_file()
    assert "Validation/loss" in (run / "metrics.jsonl").read_text()
    snapshot = load_file(run / "snapshots" / "latest.pth")
    assert not snapshot["ema_weights"]
    assert torch.equal(snapshot["model"]["vector_field_regressor.msk_token"], trainer.model.vector_field_regressor.msk_token)
