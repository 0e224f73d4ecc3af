"""train_autoencoder.py: our VQVAE learns, restarts dead codes, resumes exactly, and its checkpoint loads in Model."""
import subprocess
import sys

import pytest
import torch

from lutils.configuration import Configuration
from lutils.logger import read_metrics
from model.model import Model
from tests.conftest import ROOT, write_rendered_splits
from training.autoencoder_trainer import AutoencoderTrainer
from training.distributed import DistInfo

CONFIG = ROOT / "tests" / "configs" / "tiny_autoencoder.yaml"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_rendered_splits(tmp_path_factory.mktemp("ae_data"), {"train": 4, "val": 2}, num_frames=6,
                                 val_seed_offset=20)


def config(data_root, runs, *overrides):
    return Configuration(CONFIG, [f"data.data_root={data_root}", f"+training.runs_dir={runs}", *overrides])


def test_reconstruction_improves_on_a_fixed_batch(data_root, tmp_path):
    trainer = AutoencoderTrainer(config(data_root, tmp_path, "training.optimizer.num_warmup_steps=0",
                                        "training.restart_every=0"), "fit", DistInfo(), seed=0)
    batch = torch.stack([trainer.train_set.sample(i, torch.Generator().manual_seed(i))[0] for i in range(4)])[:, None]
    losses = [float(trainer.train_step(batch)["Training/Loss/reconstruction"]) for _ in range(25)]
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3


def test_dead_codes_are_restarted_at_encoder_outputs(data_root, tmp_path):
    trainer = AutoencoderTrainer(config(data_root, tmp_path), "restart", DistInfo(), seed=0)
    frames = torch.rand(2, 3, 32, 32) * 2 - 1
    out = trainer.model(frames)
    trainer.last_latents, trainer.last_codes = out.latents.detach(), out.codes
    used = set(out.codes.unique().tolist())
    dead = [k for k in range(64) if k not in used][:5]
    trainer.usage.fill_(1.0)
    trainer.usage[dead] = 0.0
    trainer.global_step = 1  # restart_every 2: the update after step 2 restarts
    before = trainer.model.vector_quantizer.embedding.weight.detach().clone()
    trainer.after_step()
    after = trainer.model.vector_quantizer.embedding.weight.detach()
    candidates = out.latents.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    for k in dead:
        assert not torch.equal(after[k], before[k])
        assert (candidates - after[k]).abs().sum(1).min() == 0  # an encoder output of the batch
    unchanged = [k for k in range(64) if k not in dead]
    assert torch.equal(after[unchanged], before[unchanged])


def test_resume_is_exact_and_checkpoint_loads_in_model(data_root, tmp_path):
    straight = AutoencoderTrainer(config(data_root, tmp_path / "a"), "r", DistInfo(), seed=3)
    assert straight.train() == 0
    first = AutoencoderTrainer(config(data_root, tmp_path / "b"), "r", DistInfo(), seed=3)
    assert first.train(max_steps=3) == 0
    resumed = AutoencoderTrainer(config(data_root, tmp_path / "b"), "r", DistInfo(), seed=3, resume_step=-1)
    assert resumed.train() == 0
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(straight.usage, resumed.usage)
    # The checkpoint is an autoencoder file for a CAGE model of type "ours".
    ckpt = tmp_path / "a" / "tiny_ae_run-r" / "checkpoints" / "latest.pth"
    cage = Configuration(ROOT / "tests" / "configs" / "tiny_train.yaml", [
        "model.autoencoder=" + "{type: ours, ckpt_path: " + str(ckpt) + ", encoder: {in_channels: 3, out_channels: 4}, "
        "vector_quantizer: {num_embeddings: 64, embedding_dimension: 4}, decoder: {in_channels: 4, out_channels: 3}}"])
    model = Model(cage["model"]).eval()
    assert model.ae.weights.loaded
    frames = torch.rand(1, 2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = straight.model.eval().encode(frames[0])
        assert torch.allclose(model.encode(frames)[0], expected, atol=1e-6)


def test_cli_logs_psnr_and_codebook_use(data_root, tmp_path):
    result = subprocess.run([sys.executable, "train_autoencoder.py", "--config", str(CONFIG), "--run-name", "cli",
                             f"data.data_root={data_root}", f"+training.runs_dir={tmp_path}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "tiny_ae_run-cli"
    records = read_metrics(run / "metrics.jsonl")
    keys = set().union(*records)
    assert {"Validation/psnr", "Validation/codebook_used", "Training/Stats/perplexity", "Training/Loss/vq"} <= keys
    assert (run / "samples" / "step_6.png").is_file() and (run / "checkpoints" / "final_step_6.pth").is_file()
