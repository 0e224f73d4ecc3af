"""The latent cache (dataset/latent_cache.py): exact latents, a key that follows the autoencoder and the data, and a
training run that gives the same losses with it as without it."""
from __future__ import annotations

import json
import logging
import math
import os

import h5py
import pytest
import torch

from dataset.latent_cache import CachedClips, FeatureSource, open_or_build
from lutils.configuration import Configuration, to_plain
from model.model import Model
from tests.conftest import ROOT, write_rendered_splits
from training.distributed import DistInfo
from training.sampler import SeededClips
from training.trainer import FEATURE_SETTINGS, Trainer

TINY = ROOT / "tests" / "configs" / "tiny_train.yaml"
NO_RANDOM_TRANSFORMS = ["data.random_horizontal_flip=false", "data.aug=false"]


@pytest.fixture
def data_root(tmp_path):
    return write_rendered_splits(tmp_path / "data", {"train": 3, "val": 2}, num_frames=12)


def config(data_root, runs, *overrides):
    return Configuration(TINY, [f"data.data_root={data_root}", f"+training.runs_dir={runs}", *NO_RANDOM_TRANSFORMS,
                                *overrides])


def build_model(cfg, seed: int = 0) -> Model:
    torch.manual_seed(seed)
    return Model(cfg["model"]).eval()


def cache_for(model, dataset, cfg):
    return open_or_build(dataset, model.ae, to_plain(cfg["model"]["autoencoder"]),
                         lambda frames: model.ae.encode(frames[None])[0], progress=False)


def train_set(cfg):
    from dataset.clips import clips_from_config

    return clips_from_config(cfg["data"], "train", "train")


def test_cached_latents_equal_fresh_encodes_bit_for_bit(data_root, tmp_path):
    cfg = config(data_root, tmp_path)
    model, dataset = build_model(cfg), train_set(cfg)
    cache = cache_for(model, dataset, cfg)
    assert cache.path.parent == data_root / "latent_cache" and cache.path.name.startswith("train-")
    with torch.no_grad():
        for video in range(dataset.num_videos):
            fresh = model.ae.encode(dataset.read_video(video)[None])[0]  # [L s h w], the frames as training sees them
            assert torch.equal(cache.read(video, 0, dataset.video_length(video), 1), fresh)
            assert torch.equal(cache.read(video, 2, 4, 3), fresh[2:12:3])
    # The clips come with the latents of exactly their frames, and with SeededClips' randomness.
    plain, cached = SeededClips(dataset), CachedClips(dataset, cache)
    for item in [(0, 11), (2, 12345), (1, 7)]:
        clip, index = plain[item]
        clip_c, index_c, latents = cached[item]
        assert torch.equal(clip, clip_c) and index == index_c
        with torch.no_grad():
            from dataset.transforms import to_float

            assert torch.equal(latents, model.ae.encode(to_float(clip)[None])[0])


def test_the_cache_follows_the_autoencoder_and_the_data(data_root, tmp_path, caplog):
    cfg = config(data_root, tmp_path)
    model, dataset = build_model(cfg), train_set(cfg)
    first = cache_for(model, dataset, cfg).path
    assert cache_for(model, dataset, cfg).path == first and first.is_file()  # reused
    mtime = first.stat().st_mtime_ns

    other = build_model(cfg, seed=1)  # other autoencoder weights: another cache
    assert cache_for(other, dataset, cfg).path != first and first.stat().st_mtime_ns == mtime

    write_rendered_splits(tmp_path / "data2", {"train": 3}, num_frames=12, val_seed_offset=0)
    shard = next((data_root / "train").glob("*.hdf5"))
    replacement = next((tmp_path / "data2" / "train").glob("*.hdf5"))
    os.replace(replacement, shard)  # other data under the same name
    os.utime(shard, ns=(1, 1))
    changed = train_set(cfg)
    assert cache_for(model, changed, cfg).path != first

    resized = config(data_root, tmp_path, "data.input_size=40")  # other frame settings
    assert cache_for(model, train_set(resized), resized).path != first

    # A file whose stored identity does not match its name is rebuilt, with a warning.
    path = cache_for(model, changed, cfg).path
    with h5py.File(path, "a") as f:
        ident = json.loads(f.attrs["identity"])
        ident["version"] = -1
        f.attrs["identity"] = json.dumps(ident)
        del f["latents/0"]
    caplog.set_level(logging.WARNING)
    cache = cache_for(model, changed, cfg)
    assert "rebuilding" in caplog.text and cache.read(0, 0, 1, 1).shape == (1, 4, 8, 8)
    assert not list((data_root / "latent_cache").glob(".*.tmp"))  # no temporary file left


def test_the_cache_refuses_random_transforms(data_root, tmp_path):
    cfg = Configuration(TINY, [f"data.data_root={data_root}"])  # tiny_train.yaml flips and jitters
    with pytest.raises(ValueError, match="random_horizontal_flip"):
        cache_for(build_model(cfg), train_set(cfg), cfg)


def test_training_with_the_cache_gives_the_same_losses(data_root, tmp_path):
    losses = {}
    for name, extra in [("plain", []), ("cached", ["+training.latent_cache=true"])]:
        trainer = Trainer(config(data_root, tmp_path / name, "training.log_every=1", *extra), "r", DistInfo(), seed=5,
                          precision="fp32")
        assert trainer.train(max_steps=3) == 0
        rows = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
        losses[name] = [r[Trainer.loss_name] for r in rows if Trainer.loss_name in r]
    assert len(losses["plain"]) == 3 and all(math.isfinite(v) for v in losses["cached"])
    assert losses["cached"][0] == pytest.approx(losses["plain"][0], rel=1e-6)  # the same first step
    assert losses["cached"] == pytest.approx(losses["plain"], rel=1e-4)
    assert not (data_root / "latent_cache").exists() or len(list((data_root / "latent_cache").iterdir())) == 1


def feature_source(model, cfg):
    settings = {key: to_plain(cfg["model"]).get(key) for key in FEATURE_SETTINGS}
    return FeatureSource(model.dino, settings, lambda frames: model.get_features(frames))


def test_cached_features_equal_the_whole_frames_features(data_root, tmp_path):
    """The feature cache holds each frame's features bit for bit, and its key follows the backbone's weights."""
    cfg = config(data_root, tmp_path, "+model.no_scale_inv=true")
    model, dataset = build_model(cfg), train_set(cfg)
    cache = open_or_build(dataset, model.ae, to_plain(cfg["model"]["autoencoder"]),
                          lambda frames: model.ae.encode(frames[None])[0], progress=False,
                          features=feature_source(model, cfg))
    assert cache.has_features and cache.path != cache_for(model, dataset, cfg).path  # latent-only: another file
    assert not cache_for(model, dataset, cfg).has_features
    with torch.no_grad():
        for video in range(dataset.num_videos):
            fresh = model.get_features(dataset.read_video(video))  # [L F h w]
            assert torch.equal(cache.read(video, 0, dataset.video_length(video), 1, "features"), fresh)
    # Items: the start SeededClips draws, no frames read, the latents and features of exactly the clip's frames.
    plain, cached = SeededClips(dataset), CachedClips(dataset, cache, features=True)
    for item in [(0, 11), (2, 12345)]:
        clip, _ = plain[item]
        placeholder, index, latents, feats = cached[item]
        assert placeholder.shape == (dataset.frames_per_sample, 0) and index == item[0]
        with torch.no_grad():
            from dataset.transforms import to_float

            assert torch.equal(latents, model.ae.encode(to_float(clip)[None])[0])
            assert torch.equal(feats, model.get_features(to_float(clip)))
    # Other backbone weights: another cache.
    other = build_model(cfg, seed=3)
    other.ae.load_state_dict(model.ae.state_dict())
    again = open_or_build(dataset, other.ae, to_plain(cfg["model"]["autoencoder"]),
                          lambda frames: other.ae.encode(frames[None])[0], progress=False,
                          features=feature_source(other, cfg))
    assert again.path != cache.path


def test_training_with_cached_features_gives_the_same_losses(data_root, tmp_path):
    """With latents and features cached (no frame read), the losses are those of the uncached run: the identity
    crop of no_scale_inv leaves a frame's features as they are, and the random stream is the same."""
    losses = {}
    for name, extra in [("plain", []), ("cached", ["+training.latent_cache=true", "+training.feature_cache=true"])]:
        trainer = Trainer(config(data_root, tmp_path / name, "training.log_every=1", "+model.no_scale_inv=true", *extra),
                          "r", DistInfo(), seed=5, precision="fp32")
        assert trainer.train(max_steps=3) == 0
        rows = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
        losses[name] = [r[Trainer.loss_name] for r in rows if Trainer.loss_name in r]
    assert len(losses["plain"]) == 3 and all(math.isfinite(v) for v in losses["cached"])
    assert losses["cached"] == pytest.approx(losses["plain"], rel=1e-4)


@pytest.mark.parametrize("overrides, match", [
    (["+training.latent_cache=true", "+training.feature_cache=true"], "no_scale_inv"),
    (["+training.feature_cache=true", "+model.no_scale_inv=true"], "latent_cache"),
])
def test_the_feature_cache_refuses_what_it_cannot_cache(data_root, tmp_path, overrides, match):
    trainer = Trainer(config(data_root, tmp_path, *overrides), "r", DistInfo(), seed=5, precision="fp32")
    with pytest.raises(ValueError, match=match):
        trainer.train(max_steps=1)


def test_cached_features_need_no_scale_inv():
    cfg = Configuration(TINY, ["data.data_root=unused"])
    model = build_model(cfg).train()
    latents, features = torch.randn(2, 8, 4, 8, 8), torch.randn(2, 8, 24, 8, 8)
    with pytest.raises(ValueError, match="no_scale_inv"):
        model(torch.empty(2, 8, 0, dtype=torch.uint8), latents=latents, features=features)
