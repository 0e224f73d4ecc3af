"""model.dino: golden parity with the hub DINOv2 (spec 2.5, section 4), hub key names, hub pos-embed resize, loading, weights status."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from lutils.configuration import Configuration
from model import dino as dino_module
from model.checkpoint import CheckpointError, select_prefix
from model.dino import DinoBackbone, SwiGLUFFN, build_dino, resolve_arch

GOLDEN_SETS = ("tiny_ours", "tiny_ldm")
TINY = dict(patch_size=14, img_size=518, embed_dim=48, depth=2, num_heads=3, mlp_ratio=4, init_values=1.0)
TOL = 1e-5


def tiny(num_layers: int = 2, **kwargs) -> DinoBackbone:
    """A random tiny backbone that may run without weights."""
    return DinoBackbone("dinov2_vits14", TINY, num_layers=num_layers, allow_random=True, **kwargs)


def frames(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth-ish frames [n 3 size size] in (-1, 1)."""
    g = torch.Generator().manual_seed(seed)
    return torch.tanh(F.interpolate(torch.randn(n, 3, 8, 8, generator=g), size=(size, size), mode="bilinear"))


def randomize(module: nn.Module, seed: int = 1) -> nn.Module:
    """Overwrite every tensor with noise, so that loads and round trips are visible."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.state_dict().values():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return module


@pytest.fixture(scope="module")
def golden(golden_dir):
    """{set: (model config, dino.* state dict, io dict)} for the golden sets."""
    out = {}
    for name in GOLDEN_SETS:
        folder = golden_dir / name
        if not (folder / "io.pt").is_file():
            pytest.skip(f"golden set {name} not found in {golden_dir}")
        config = Configuration(folder / "config.yaml")["model"]
        state = torch.load(folder / "model.pth", map_location="cpu", weights_only=True)["model"]
        io = torch.load(folder / "io.pt", map_location="cpu", weights_only=True)
        out[name] = (config, select_prefix(state, "dino."), io)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Parity with the original (hub DINOv2 inside the reference CAGE code)
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", GOLDEN_SETS)
def test_golden_parity(golden, name):
    config, state, io = golden[name]
    dino = build_dino(config)
    assert dino.num_layers == config["num_dino_layers"] and not dino.weights.loaded
    dino.load_weights(state)
    assert dino.weights.loaded
    b, l = io["frames"].shape[:2]
    flat = rearrange(io["frames"], "b l c h w -> (b l) c h w")

    pos = dino.interpolated_pos_embed(16, 16)
    layers = dino.get_layers(flat)
    feats = dino(flat, out_res=tuple(config["vector_field_regressor"]["state_res"]))
    diffs = {
        "dino_pos_embed_224": (pos - io["dino_pos_embed_224"]).abs().max().item(),
        "dino_layers_224": (layers - io["dino_layers_224"]).abs().max().item(),
        "feats": (feats - rearrange(io["feats"], "b l c h w -> (b l) c h w")).abs().max().item(),
    }
    print(f"{name} max abs diffs: {diffs}")
    assert pos.shape == io["dino_pos_embed_224"].shape
    assert layers.shape == io["dino_layers_224"].shape
    assert feats.shape == (b * l, *io["feats"].shape[2:])
    assert io["feats"].shape[2] == dino.embed_dim * int(config["num_dino_layers"])
    assert all(d <= TOL for d in diffs.values()), diffs


def test_golden_key_set_and_parent_load(golden):
    config, state, io = golden["tiny_ours"]
    dino = build_dino(config)
    own = dino.state_dict()
    assert list(own) == list(state)  # same names, same (hub) order
    assert {k: tuple(v.shape) for k, v in own.items()} == {k: tuple(v.shape) for k, v in state.items()}

    # Registered as `dino` in a parent, the full golden keys load strictly and mark the weights as loaded.
    parent = nn.Module()
    parent.dino = build_dino(config)
    full = {f"dino.{k}": v for k, v in state.items()}
    assert set(parent.state_dict()) == set(full)
    parent.load_state_dict(full, strict=True)
    assert parent.dino.weights.loaded
    parent.dino.weights.require()


# ---------------------------------------------------------------------------------------------------------------------
# The position-embedding resize
# ---------------------------------------------------------------------------------------------------------------------

def test_pos_embed_is_the_hub_resize_not_timms():
    dino = randomize(tiny())
    pos = dino.interpolated_pos_embed(16, 16)  # [1 257 E]
    assert pos.shape == (1, 257, 48)
    assert torch.equal(pos[:, 0], dino.pos_embed[:, 0])  # cls position kept

    grid = rearrange(dino.pos_embed[:, 1:].float(), "1 (h w) e -> 1 e h w", h=37)
    hub = F.interpolate(grid, scale_factor=(16.1 / 37, 16.1 / 37), mode="bicubic", antialias=False)
    assert torch.equal(pos[:, 1:], rearrange(hub, "1 e h w -> 1 (h w) e"))

    # timm's resample_abs_pos_embed: size=(16, 16) with antialias -> a clearly different tensor.
    timm_like = F.interpolate(grid, size=(16, 16), mode="bicubic", antialias=True)
    assert (pos[:, 1:] - rearrange(timm_like, "1 e h w -> 1 (h w) e")).abs().max() > 1e-2
    from timm.layers import resample_abs_pos_embed

    timm_pos = resample_abs_pos_embed(dino.pos_embed, new_size=(16, 16), num_prefix_tokens=1)
    assert (pos - timm_pos).abs().max() > 1e-2

    # Already the stored grid: unchanged; a non-square grid keeps (h, w) token order.
    assert dino.interpolated_pos_embed(37, 37) is dino.pos_embed
    assert dino.interpolated_pos_embed(16, 20).shape == (1, 1 + 16 * 20, 48)


# ---------------------------------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------------------------------

def test_features_layers_and_resize():
    dino = randomize(tiny(num_layers=2))
    x = frames(3, 40)
    layers = dino.get_layers(x)  # [3 96 16 16]
    assert layers.shape == (3, 96, 16, 16)
    one = dino.get_layers(x, num_layers=1)
    assert torch.allclose(layers[:, 48:], one, atol=1e-6)  # earliest block first: the last block comes second
    assert not torch.allclose(layers[:, :48], one, atol=1e-3)

    assert torch.equal(dino(x), layers)  # out_res None and 16x16 are identities
    assert torch.equal(dino(x, out_res=(16, 16)), layers)
    resized = dino(x, out_res=(8, 6))
    assert resized.shape == (3, 96, 8, 6)
    assert torch.allclose(resized, F.interpolate(layers, size=(8, 6), mode="bilinear", align_corners=False))

    # Input goes through a plain bilinear 224 resize: a 224 input equals its own upsampled version.
    up = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
    assert torch.allclose(dino.get_layers(up), layers, atol=1e-5)
    # No ImageNet normalisation: a shifted input gives different features.
    assert not torch.allclose(dino.get_layers((x + 1) / 2), layers, atol=1e-3)
    with pytest.raises(ValueError):
        dino.get_layers(x, num_layers=3)


def test_state_dict_round_trip(tmp_path):
    a = randomize(tiny())
    path = tmp_path / "dino.pth"
    torch.save(a.state_dict(), path)
    b = tiny()
    b.weights.allow_random = False
    b.load_weights(path)
    assert b.weights.loaded and b.weights.source == str(path)
    x = frames()
    assert torch.equal(a(x), b(x))


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------

def test_load_formats_and_errors(caplog):
    src = randomize(tiny())
    hub = src.state_dict()

    timm_format = {k: v for k, v in hub.items() if k != "mask_token"}
    dst = tiny()
    mask_before = dst.mask_token.clone()
    with caplog.at_level(logging.INFO, logger="model.dino"):
        dst.load_weights(timm_format)
    assert "mask_token" in caplog.text
    assert torch.equal(dst.mask_token, mask_before) and torch.equal(dst.pos_embed, src.pos_embed)

    dst = tiny()
    dst.load_weights({f"module.{k}": v for k, v in hub.items()})
    assert torch.equal(dst.blocks[1].mlp.fc2.weight, src.blocks[1].mlp.fc2.weight)
    dst = tiny()
    dst.load_weights({"model": {f"dino.{k}": v for k, v in hub.items()}, "other": 1}["model"])  # CAGE layout
    assert torch.equal(dst.mask_token, src.mask_token)

    wrong_shape = dict(hub, **{"blocks.0.attn.qkv.weight": torch.zeros(3, 3)})
    with pytest.raises(CheckpointError, match=r"blocks\.0\.attn\.qkv\.weight"):
        tiny().load_weights(wrong_shape)
    extra = dict(hub, **{"head.weight": torch.zeros(3)})
    with pytest.raises(CheckpointError, match=r"unexpected in file.*\n.*head\.weight"):
        tiny().load_weights(extra)
    missing = {k: v for k, v in hub.items() if k != "norm.bias"}
    with pytest.raises(CheckpointError, match=r"norm\.bias"):
        tiny().load_weights(missing)


def test_swiglu_ffn_matches_hub_and_timm_formats():
    ffn = SwiGLUFFN(48, 48 * 4)
    assert ffn.w12.weight.shape == (256, 48) and ffn.w3.weight.shape == (48, 128)  # hub hidden rounding
    x = torch.randn(2, 5, 48)
    a, b = ffn.w12(x).chunk(2, dim=-1)
    assert torch.allclose(ffn(x), ffn.w3(F.silu(a) * b))
    from timm.layers import SwiGLUPacked

    timm_ffn = SwiGLUPacked(in_features=48, hidden_features=256, act_layer=nn.SiLU)
    timm_ffn.load_state_dict({"fc1.weight": ffn.w12.weight, "fc1.bias": ffn.w12.bias,
                              "fc2.weight": ffn.w3.weight, "fc2.bias": ffn.w3.bias})
    assert torch.allclose(timm_ffn(x), ffn(x), atol=1e-6)

    # A swiglu backbone saves hub names (mlp.w12 / mlp.w3) and also loads timm names (mlp.fc1 / mlp.fc2).
    arch = dict(TINY, ffn_layer="swiglu")
    src = randomize(DinoBackbone("dinov2_vitg14", arch, allow_random=True))
    hub = src.state_dict()
    assert "blocks.0.mlp.w12.weight" in hub and not any(".fc1." in k for k in hub)
    timm_format = {k.replace(".w12.", ".fc1.").replace(".w3.", ".fc2."): v for k, v in hub.items() if k != "mask_token"}
    dst = DinoBackbone("dinov2_vitg14", arch)
    dst.load_weights(timm_format)
    assert torch.equal(dst(frames()), src(frames()))


# ---------------------------------------------------------------------------------------------------------------------
# Weights status and build_dino
# ---------------------------------------------------------------------------------------------------------------------

def test_unloaded_backbone_refuses_to_run_and_random_init_warns(caplog, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty hub cache
    config = {"dino_version": "dinov2_vits14", "dino_arch": TINY, "num_dino_layers": 1}
    dino = build_dino(config)
    with pytest.raises(CheckpointError) as error:
        dino(frames())
    assert "dino_weights" in str(error.value) and "dino_random_init" in str(error.value)
    assert "dinov2_vits14_pretrain.pth" in str(error.value)

    with caplog.at_level(logging.WARNING, logger="model.dino"):
        dino = build_dino(dict(config, dino_random_init=True))
    assert any(r.levelno == logging.WARNING and "random" in r.getMessage().lower() for r in caplog.records)
    assert dino(frames()).shape == (2, 48, 16, 16)


def test_build_dino_weight_sources(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setitem(dino_module.ARCHS, "dinov2_tiny14", dict(dino_module.DEFAULT_ARCH, **TINY))
    src = randomize(tiny())
    config = {"dino_version": "dinov2_tiny14", "num_dino_layers": 2}

    # Explicit file path.
    path = tmp_path / "weights.pth"
    torch.save({"model": src.state_dict()}, path)
    dino = build_dino(dict(config, dino_weights=str(path)))
    assert dino.weights.loaded and torch.equal(dino(frames()), src(frames()))

    # Hub cache (named architecture only; a dino_arch override ignores it).
    (tmp_path / "checkpoints").mkdir()
    torch.save(src.state_dict(), tmp_path / "checkpoints" / "dinov2_tiny14_pretrain.pth")
    assert build_dino(config).weights.source.endswith("dinov2_tiny14_pretrain.pth")
    assert not build_dino(dict(config, dino_arch={"num_heads": 4})).weights.loaded

    # "download": the official URL through torch.hub (network mocked).
    seen = {}

    def fake_download(url, **kwargs):
        seen.update(url=url, **kwargs)
        return src.state_dict()

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    dino = build_dino(dict(config, dino_weights="download"))
    assert seen["url"] == "https://dl.fbaipublicfiles.com/dinov2/dinov2_tiny14/dinov2_tiny14_pretrain.pth"
    assert seen["weights_only"] is True and dino.weights.source == seen["url"]


def test_named_sizes_and_feature_dim():
    expected = {  # (embed dim, parameters incl. mask_token); vits14 / vitb14 counts from spec 2.5
        "dinov2_vits14": (384, 22_056_576),
        "dinov2_vitb14": (768, 86_580_480),
        "dinov2_vitl14": (1024, 304_368_640),
        "dinov2_vitg14": (1536, 1_136_480_768),
    }
    for name, (dim, params) in expected.items():
        with torch.device("meta"):
            dino = DinoBackbone(name)
        assert dino.embed_dim == dim
        assert sum(p.numel() for p in dino.parameters()) == params, name
        assert dino.pos_embed.shape == (1, 1370, dim) and dino.mask_token.shape == (1, dim)
        assert resolve_arch(name, None)["embed_dim"] == dim  # from the name alone, no weights built
    assert resolve_arch("dinov2_vitb14", {"embed_dim": 48})["embed_dim"] == 48
    with pytest.raises(ValueError, match="dino_version"):
        resolve_arch("dinov2_vitx14", None)
    with pytest.raises(ValueError, match="dino_arch"):
        DinoBackbone("dinov2_vits14", {"embed_dims": 48})


def test_frozen():
    dino = tiny()
    assert not any(p.requires_grad for p in dino.parameters())
    parent = nn.Sequential(dino)
    parent.train()
    assert not dino.training and not any(m.training for m in dino.modules())
    x = frames().requires_grad_(False)
    assert not dino(x).requires_grad


def test_dino_input_size_option(monkeypatch, tmp_path):
    """model.dino_input_size resizes the frames to another ViT input: a 112 input gives an 8x8 patch grid, and equals
    the default backbone run on frames already at 112 (the resize is the only difference). Default: 224."""
    monkeypatch.setitem(dino_module.ARCHS, "dinov2_tiny14", dict(dino_module.DEFAULT_ARCH, **TINY))
    path = tmp_path / "weights.pth"
    src = randomize(tiny())
    torch.save(src.state_dict(), path)
    config = {"dino_version": "dinov2_tiny14", "num_dino_layers": 2, "dino_weights": str(path)}
    assert build_dino(config).input_size == 224
    small = build_dino(dict(config, dino_input_size=112))
    x = frames(2, 40)
    layers = small.get_layers(x)
    assert layers.shape == (2, 96, 8, 8)
    at_112 = F.interpolate(x, size=(112, 112), mode="bilinear", align_corners=False)
    manual = torch.cat([rearrange(small.norm(out)[:, 1:], "n (h w) e -> n e h w", h=8)
                        for out in small.block_outputs(at_112, 2)], dim=1)
    assert torch.allclose(layers, manual, atol=1e-6)
    with pytest.raises(ValueError, match="dino_input_size"):
        build_dino(dict(config, dino_input_size=100))
