"""model.autoencoder: golden parity with the original code (spec 2.3, 2.4), strict loading, frozen behaviour, sizes."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lutils.configuration import Configuration
from model.autoencoder import (
    VQVAE,
    OursAutoencoder,
    TamingAutoencoder,
    VectorQuantizer,
    build_autoencoder,
    pooled_conv,
)
from model.checkpoint import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_SETS = ["tiny_ours", "tiny_ldm"]
TOL = 1e-5

# The tiny taming ddconfig of the tiny_ldm golden set (x4 down, 64 codes of dim 4), for tests without golden data.
TINY_TAMING = {
    "type": "ldm-vq",
    "random_init": True,
    "config": {
        "embed_dim": 4, "n_embed": 64, "double_z": False, "z_channels": 4, "resolution": 64, "in_channels": 3,
        "out_ch": 3, "ch": 32, "ch_mult": [1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [16], "dropout": 0.0,
    },
}
TINY_OURS = {
    "type": "ours",
    "random_init": True,
    "encoder": {"in_channels": 3, "out_channels": 4},
    "vector_quantizer": {"num_embeddings": 64, "embedding_dimension": 4},
    "decoder": {"in_channels": 4, "out_channels": 3},
}


def ae_config(golden_dir: Path, name: str, **changes) -> dict:
    """The golden set's model.autoencoder block as a plain dict, with `changes` applied."""
    config = Configuration(golden_dir / name / "config.yaml").to_dict()["model"]["autoencoder"]
    config.update(changes)
    return config


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def golden_io(golden_dir):
    return {name: torch.load(golden_dir / name / "io.pt", weights_only=True) for name in GOLDEN_SETS}


def check_golden_outputs(ae, io) -> None:
    encoded = ae.encode(io["frames"])
    assert max_diff(encoded, io["encode_out"]) <= TOL
    assert max_diff(ae.decode(io["encode_out"]), io["decode_out"]) <= TOL
    _, codes = ae.quantize(io["encode_out"].flatten(0, 1))  # 4-D input
    assert torch.equal(codes.view_as(io["decode_codes"]), io["decode_codes"])


# --------------------------------------------------------------------------------------------------------------------
# Parity with the original code (the acceptance test)
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GOLDEN_SETS)
def test_golden_parity_from_ae_file(golden_dir, golden_io, name):
    ae = build_autoencoder(ae_config(golden_dir, name, ckpt_path=str(golden_dir / name / "ae.pth")))
    assert isinstance(ae, OursAutoencoder if name == "tiny_ours" else TamingAutoencoder)
    assert ae.weights.loaded and ae.weights.source == str(golden_dir / name / "ae.pth")
    check_golden_outputs(ae, golden_io[name])


@pytest.mark.parametrize("name", GOLDEN_SETS)
def test_golden_parity_from_model_checkpoint(golden_dir, golden_io, name):
    """model.pth keys `ae.backbone.*` (ours) / `ae.*` (ldm) load strictly into a parent that registers the AE as `ae`."""
    ae = build_autoencoder(ae_config(golden_dir, name, ckpt_path=None))
    assert not ae.weights.loaded
    parent = nn.Module()
    parent.ae = ae
    full = torch.load(golden_dir / name / "model.pth", weights_only=True)["model"]
    parent.load_state_dict({k: v for k, v in full.items() if k.startswith("ae.")}, strict=True)
    assert ae.weights.loaded
    check_golden_outputs(ae, golden_io[name])


def test_relative_ckpt_path_resolves_against_cwd(golden_dir, monkeypatch):
    monkeypatch.chdir(golden_dir / "tiny_ldm")
    ae = build_autoencoder(ae_config(golden_dir, "tiny_ldm"))  # ckpt_path: ae.pth, as in the file
    assert ae.weights.loaded


def test_encode_decode_accept_4d_and_5d(golden_dir, golden_io):
    ae = build_autoencoder(ae_config(golden_dir, "tiny_ours", ckpt_path=str(golden_dir / "tiny_ours" / "ae.pth")))
    frames = golden_io["tiny_ours"]["frames"][:1]  # [1 4 3 64 64]
    latents = ae.encode(frames)
    assert latents.shape == (1, 4, ae.latent_channels, 64 // ae.downsample_factor, 64 // ae.downsample_factor)
    assert torch.allclose(ae.encode(frames[0]), latents[0], atol=1e-6)
    assert torch.allclose(ae.decode(latents[0]), ae.decode(latents)[0], atol=1e-6)
    quantized, codes = ae.quantize(latents)
    assert quantized.shape == latents.shape and codes.shape == (1, 4, 8, 8)
    with pytest.raises(ValueError, match="shape"):
        ae.encode(frames[0, 0])


# --------------------------------------------------------------------------------------------------------------------
# Strict loading of the AE's own file formats
# --------------------------------------------------------------------------------------------------------------------


def _mutations(state_dict: dict, key: str):
    """(label, mutated state dict, the key the error must name) for a removed, an extra and a mis-shaped key."""
    removed = {k: v for k, v in state_dict.items() if k != key}
    extra = dict(state_dict, **{"encoder.not_a_parameter": torch.zeros(1)})
    reshaped = dict(state_dict, **{key: torch.zeros(*state_dict[key].shape, 2)})
    return [("missing", removed, key), ("unexpected", extra, "encoder.not_a_parameter"), ("shape", reshaped, key)]


@pytest.mark.parametrize("kind", ["ours", "ldm-vq"])
def test_load_checkpoint_is_strict_and_names_the_key(tmp_path, kind):
    source = build_autoencoder(TINY_OURS if kind == "ours" else TINY_TAMING)
    inner = source.backbone if kind == "ours" else source
    state_dict = inner.state_dict()
    key = "decoder.conv_in.weight"
    for label, mutated, named in _mutations(state_dict, key):
        if kind == "ours":
            payload = {"model": {"module." + k: v for k, v in mutated.items()}}
        else:
            payload = {"state_dict": mutated}
        path = tmp_path / f"{kind}_{label}.pth"
        torch.save(payload, path)
        target = build_autoencoder(dict(TINY_OURS if kind == "ours" else TINY_TAMING, random_init=False))
        with pytest.raises(CheckpointError) as error:
            target.load_checkpoint(path)
        assert named in str(error.value) and str(path) in str(error.value), label
        assert not target.weights.loaded


def test_ours_file_with_and_without_module_prefix(tmp_path):
    source = build_autoencoder(TINY_OURS)
    state_dict = source.backbone.state_dict()
    torch.save({"model": {"module." + k: v for k, v in state_dict.items()}}, tmp_path / "ddp.pth")
    torch.save({"model": state_dict}, tmp_path / "plain.pth")
    frames = torch.rand(2, 3, 16, 16) * 2 - 1
    expected = source.decode(source.encode(frames))
    for name in ("ddp.pth", "plain.pth"):
        target = build_autoencoder(dict(TINY_OURS, random_init=False, ckpt_path=str(tmp_path / name)))
        assert target.weights.loaded and target.weights.source == str(tmp_path / name)
        assert torch.equal(target.decode(target.encode(frames)), expected)


def test_taming_file_with_loss_keys_loads(tmp_path):
    source = build_autoencoder(TINY_TAMING)
    payload = {
        "state_dict": dict(
            source.state_dict(),
            **{"loss.discriminator.main.0.weight": torch.zeros(3), "loss.perceptual_loss.lin0.model.1.weight": torch.ones(2)},
        ),
        "global_step": 7,
    }
    torch.save(payload, tmp_path / "vqgan.ckpt")
    target = build_autoencoder(dict(TINY_TAMING, random_init=False, ckpt_path=str(tmp_path / "vqgan.ckpt")))
    assert target.weights.loaded
    frames = torch.rand(1, 3, 16, 16) * 2 - 1
    assert torch.equal(target.decode(target.encode(frames)), source.decode(source.encode(frames)))


# --------------------------------------------------------------------------------------------------------------------
# Missing weights, frozen behaviour
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [TINY_OURS, TINY_TAMING], ids=["ours", "ldm-vq"])
def test_missing_checkpoint_defers_the_error_until_use(tmp_path, caplog, config):
    missing = tmp_path / "nowhere.pth"
    with caplog.at_level(logging.WARNING, logger="model.autoencoder"):
        ae = build_autoencoder(dict(config, random_init=False, ckpt_path=str(missing)))
    assert not ae.weights.loaded
    assert "nowhere.pth" in caplog.text and "not found" in caplog.text
    frames = torch.zeros(1, 1, 3, 16, 16)
    for call in (ae.encode, ae.decode):
        with pytest.raises(CheckpointError, match="model.autoencoder.ckpt_path") as error:
            call(frames if call == ae.encode else torch.zeros(1, 1, 4, 4, 4))
        assert "random_init" in str(error.value) and "load_from_ckpt" in str(error.value)
    random = build_autoencoder(dict(config, ckpt_path=str(missing)))  # random_init: true
    assert random.encode(frames).shape == (1, 1, 4, 16 // random.downsample_factor, 16 // random.downsample_factor)


@pytest.mark.parametrize("config", [TINY_OURS, TINY_TAMING], ids=["ours", "ldm-vq"])
def test_frozen_eval_no_grad_and_encode_skips_decoder(config):
    torch.manual_seed(0)
    ae = build_autoencoder(config)
    assert not any(p.requires_grad for p in ae.parameters())
    frames = (torch.rand(2, 2, 3, 16, 16) * 2 - 1).requires_grad_(True)

    decoder = ae.backbone.decoder if isinstance(ae, OursAutoencoder) else ae.decoder
    decoder_calls = []
    handle = decoder.register_forward_hook(lambda *args: decoder_calls.append(1))
    latents = ae.encode(frames)
    assert not decoder_calls and not latents.requires_grad
    decoded_eval = ae.decode(latents.clone().requires_grad_(True))
    assert len(decoder_calls) == 1 and not decoded_eval.requires_grad
    handle.remove()

    parent = nn.Module()
    parent.ae = ae
    parent.train()
    assert not any(m.training for m in ae.modules())
    assert torch.equal(ae.decode(latents), decoded_eval)
    if config is TINY_OURS:  # the check above can fail: in train mode BatchNorm uses batch statistics
        nn.Module.train(ae)
        assert not torch.allclose(ae.backbone.decode_from_latents(latents.flatten(0, 1)), decoded_eval.flatten(0, 1))


# --------------------------------------------------------------------------------------------------------------------
# Quantizer numerics
# --------------------------------------------------------------------------------------------------------------------


def test_vector_quantizer_ties_straight_through_and_loss():
    vq = VectorQuantizer(4, 2)
    with torch.no_grad():
        vq.embedding.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, -1.0]]))
    z = torch.tensor([[[[0.9]], [[0.1]]], [[[0.5]], [[0.5]]], [[[-2.0]], [[-1.0]]]])  # [3 2 1 1]
    z.requires_grad_(True)
    quantized, codes, loss = vq(z, with_loss=True)
    assert codes.flatten().tolist() == [0, 0, 3]  # duplicates 0/2 and the 0/1 tie -> lowest index
    z_q = vq.embedding.weight[codes.flatten()].detach().view(3, 2, 1, 1)
    assert torch.equal(quantized, z + (z_q - z))  # straight-through float form
    mse = ((z - z_q) ** 2).mean()
    assert torch.allclose(loss, 1.25 * mse)  # codebook + 0.25 * commitment
    loss.backward()
    # commitment term only (beta 0.25) reaches z; the codebook term reaches the embedding
    assert torch.allclose(z.grad, 0.25 * 2 * (z - z_q).detach() / z.numel())
    assert vq.embedding.weight.grad[1].abs().sum() == 0 and vq.embedding.weight.grad[0].abs().sum() > 0


def test_vqvae_forward_output_shapes():
    vae = VQVAE(3, 4, 4, 3, 16, 4).eval()
    out = vae(torch.rand(2, 3, 32, 32) * 2 - 1, with_loss=True)
    assert out.latents.shape == out.quantized_latents.shape == (2, 4, 4, 4)
    assert out.codes.shape == (2, 4, 4) and out.reconstructions.shape == (2, 3, 32, 32)
    assert out.reconstructions.abs().max() < 1 and out.vq_loss.ndim == 0


# --------------------------------------------------------------------------------------------------------------------
# Config handling and sizes (spec 2.3, 2.4)
# --------------------------------------------------------------------------------------------------------------------


def test_unknown_type_and_unknown_taming_config_are_errors():
    with pytest.raises(ValueError, match="ours, ldm-vq"):
        build_autoencoder(dict(TINY_TAMING, type="ldm-kl"))
    with pytest.raises(ValueError, match="f16"):
        build_autoencoder(dict(TINY_TAMING, config="f32"))
    with pytest.raises(ValueError, match="n_embed"):
        build_autoencoder(dict(TINY_TAMING, config={k: v for k, v in TINY_TAMING["config"].items() if k != "n_embed"}))


def test_clevrer_vqvae_size():
    config = Configuration(ROOT / "configs" / "clevrer.yaml").to_dict()["model"]["autoencoder"]
    ae = OursAutoencoder(dict(config, random_init=True))
    assert sum(p.numel() for p in ae.parameters()) == 7_329_703
    assert sum(p.numel() for p in VQVAE(3, 4, 4, 3, 8192, 4).parameters()) == 7_329_703
    assert (ae.latent_channels, ae.downsample_factor) == (4, 8)
    assert len(ae.state_dict()) == 121  # spec 2.1: ae 121 keys for clevrer
    assert ae.encode(torch.zeros(1, 3, 128, 128)).shape == (1, 4, 16, 16)


@pytest.mark.parametrize("mid", [8, 16, 64])
def test_vqvae_mid_channels_option(mid, tmp_path):
    """encoder/decoder.mid_channels scale the 32-64-128-256 widths; the default is the original architecture."""
    config = Configuration(ROOT / "configs" / "clevrer.yaml").to_dict()["model"]["autoencoder"]
    narrow = dict(config, random_init=True, encoder=dict(config["encoder"], mid_channels=mid),
                  decoder=dict(config["decoder"], mid_channels=mid))
    ae = OursAutoencoder(narrow)
    assert ae.backbone.encoder.conv_in.out_channels == mid and ae.backbone.decoder.out_conv.in_channels == mid
    assert ae.backbone.encoder.out_conv.in_channels == 8 * mid
    assert len(ae.state_dict()) == 121  # same keys as the original, other shapes
    assert ae.decode(ae.encode(torch.zeros(1, 1, 3, 64, 64))).shape == (1, 1, 3, 64, 64)
    torch.save({"model": ae.backbone.state_dict()}, tmp_path / "narrow.pth")
    loaded = OursAutoencoder(dict(narrow, random_init=False)).load_checkpoint(tmp_path / "narrow.pth")
    assert all(torch.equal(a, b) for a, b in zip(ae.state_dict().values(), loaded.state_dict().values()))
    default = OursAutoencoder(dict(config, random_init=True))
    with pytest.raises(Exception, match="size mismatch|shape"):  # a narrow checkpoint does not load into the default
        default.load_checkpoint(tmp_path / "narrow.pth")


def test_vqvae_mid_channels_must_fit_group_norm():
    with pytest.raises(ValueError, match="encoder.mid_channels .* got 48"):
        VQVAE(3, 4, 4, 3, 16, 4, encoder_mid_channels=48)


def test_named_taming_configs_sizes():
    expected = {"f8": (67_717_295, 8, 4), "f8_small": (63_777_455, 8, 4), "f16": (69_593_371, 16, 8)}
    for name, (params, factor, channels) in expected.items():
        ae = TamingAutoencoder({"config": name})
        assert sum(p.numel() for p in ae.parameters()) == params, name
        assert (ae.downsample_factor, ae.latent_channels) == (factor, channels), name
        if name == "f16":
            assert len(ae.state_dict()) == 343  # spec 2.1: ae 343 keys for bair/epic
        del ae


@pytest.mark.parametrize("kernel,padding,factor,size", [(3, 1, 2, 16), (3, 1, 2, 9), (1, 0, 2, 10), (3, 1, 4, 16), (3, 1, 1, 7)])
@pytest.mark.parametrize("bias", [False, True])
def test_pooled_conv_is_pool_after_conv(kernel, padding, factor, size, bias):
    """pooled_conv (one strided convolution) computes avgpool_f(conv(x)), outputs and gradients, odd sizes included."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 5, kernel, padding=padding, bias=bias)
    x = torch.randn(2, 3, size, size, requires_grad=True)
    fused = pooled_conv(conv, x, factor)
    reference = F.avg_pool2d(conv(x), factor)
    assert fused.shape == reference.shape
    assert (fused - reference).abs().max() < 1e-5
    weights = torch.randn_like(reference)
    grads = [torch.autograd.grad((out * weights).sum(), (x, conv.weight)) for out in (fused, reference)]
    for a, b in zip(*grads):
        assert (a - b).abs().max() < 1e-4
