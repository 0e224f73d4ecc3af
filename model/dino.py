"""The frozen DINOv2 feature backbone (spec sections 2.5 and 4, "DINO feature extraction").

A ViT assembled from timm's `VisionTransformer` parts whose own state-dict keys are exactly those of the torch.hub
`facebookresearch/dinov2` models (`cls_token`, `pos_embed`, `mask_token`, `patch_embed.proj.*`, `blocks.N.*`, `norm.*`),
so CAGE checkpoints (`dino.*`) and the official `<name>_pretrain.pth` files load strictly. Features are computed as the
original code does: frames in [-1, 1] (no ImageNet normalisation) -> bilinear 224x224 -> last n blocks, each through the
final LayerNorm, patch tokens only -> concatenated on channels (earliest block first) -> bilinear resize to state_res.

The position embedding is resized the hub's way (bicubic with `scale_factor=(g + 0.1) / M`, no antialias, fp32),
which is numerically different from timm's `resample_abs_pos_embed` (`size=g`, antialias): never use timm's
forward paths on these weights.

vitg14 uses the hub's fused SwiGLU FFN; its keys are the hub names `blocks.N.mlp.w12.*` / `blocks.N.mlp.w3.*`
(timm-format files, which call them `mlp.fc1` / `mlp.fc2`, are renamed on load).
"""
from __future__ import annotations

import logging
import math
from functools import partial
from collections.abc import Mapping
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from lutils import schema
from lutils.configuration import to_plain
from model.checkpoint import (
    DDP_PREFIX,
    FrozenPretrained,
    WeightsStatus,
    extract_state_dict,
    load_file,
    load_strict,
    select_prefix,
    strip_prefix,
)

logger = logging.getLogger(__name__)

INPUT_SIZE = 224  # hard-coded DINO input resolution of the original code (spec 1.4)
INTERPOLATE_OFFSET = 0.1  # the hub's "+0.1" kludge in the position-embedding resize
LN_EPS = 1e-6
HUB_URL = "https://dl.fbaipublicfiles.com/dinov2/{name}/{name}_pretrain.pth"

ARCH_KEYS = ("patch_size", "img_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "init_values", "ffn_layer")
DEFAULT_ARCH = dict(patch_size=14, img_size=518, mlp_ratio=4.0, init_values=1.0, ffn_layer="mlp")
ARCHS = {
    "dinov2_vits14": dict(DEFAULT_ARCH, embed_dim=384, depth=12, num_heads=6),
    "dinov2_vitb14": dict(DEFAULT_ARCH, embed_dim=768, depth=12, num_heads=12),
    "dinov2_vitl14": dict(DEFAULT_ARCH, embed_dim=1024, depth=24, num_heads=16),
    "dinov2_vitg14": dict(DEFAULT_ARCH, embed_dim=1536, depth=40, num_heads=24, ffn_layer="swiglu"),
}
FFN_LAYERS = ("mlp", "swiglu")


def resolve_arch(name: str, overrides: Optional[Mapping] = None) -> dict:
    """The architecture of hub model `name`, with the entries of `overrides` (model.dino_arch) replacing its values."""
    if name not in ARCHS:
        raise ValueError(f"unknown dino_version {name!r}; supported: {', '.join(ARCHS)}")
    arch = dict(ARCHS[name])
    if overrides:
        unknown = sorted(set(overrides) - set(ARCH_KEYS))
        if unknown:
            raise ValueError(f"model.dino_arch: unknown keys {unknown}; allowed: {list(ARCH_KEYS)}")
        arch.update({k: overrides[k] for k in overrides})
    if arch["ffn_layer"] not in FFN_LAYERS:
        raise ValueError(f"model.dino_arch.ffn_layer must be one of {FFN_LAYERS}, got {arch['ffn_layer']!r}")
    return arch


def hub_cache_file(name: str) -> Path:
    """Where torch.hub keeps the official `<name>_pretrain.pth` (the original code's torch.hub.load left it there)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / f"{name}_pretrain.pth"


def how_to_provide(name: str) -> str:
    """The user-facing instructions for giving the backbone its weights."""
    return (
        f"Provide the {name} weights in one of these ways: "
        f"(1) load a CAGE checkpoint that holds dino.* keys with Model.load_from_ckpt; "
        f"(2) set model.dino_weights: /path/to/{name}_pretrain.pth (the official torch.hub file) or a timm "
        f"checkpoint file of the same model; "
        f"(3) place the official file at {hub_cache_file(name)} (the torch hub cache, where the original code's "
        f"torch.hub.load left it); "
        f"(4) set model.dino_weights: download to fetch {HUB_URL.format(name=name)} (needs network access); "
        f"(5) set model.dino_random_init: true for tests and toy runs (random features)."
    )


class SwiGLUFFN(nn.Module):
    """The hub's fused SwiGLU FFN (vitg14): w3(silu(a) * b) with [a, b] = w12(x); keys mlp.w12.* and mlp.w3.*."""

    def __init__(self, in_features: int, hidden_features: int, bias: bool = True, **_):
        super().__init__()
        hidden = (int(hidden_features * 2 / 3) + 7) // 8 * 8  # the hub's rounding: 1536 * 4 -> 4096
        self.w12 = nn.Linear(in_features, 2 * hidden, bias=bias)
        self.w3 = nn.Linear(hidden, in_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)  # [n t hidden] each
        return self.w3(F.silu(a) * b)


class DinoBackbone(FrozenPretrained, nn.Module):
    """Frozen DINOv2 ViT with hub key names; frames [n 3 H W] in [-1,1] -> features [n E*num_layers h w]."""

    def __init__(self, name: str = "dinov2_vitb14", arch: Optional[Mapping] = None, num_layers: int = 1,
                 allow_random: bool = False, input_size: int = INPUT_SIZE):
        super().__init__()
        self.name = name
        self.input_size = int(input_size)  # frames are resized to input_size² before the ViT (the original: 224)
        self.arch = resolve_arch(name, arch)
        self.num_layers = int(num_layers)
        a = self.arch
        if not 1 <= self.num_layers <= a["depth"]:
            raise ValueError(f"num_dino_layers must be in [1, {a['depth']}], got {num_layers}")
        extra = dict(mlp_layer=SwiGLUFFN) if a["ffn_layer"] == "swiglu" else {}
        vit = VisionTransformer(
            img_size=a["img_size"], patch_size=a["patch_size"], embed_dim=a["embed_dim"], depth=a["depth"],
            num_heads=a["num_heads"], mlp_ratio=a["mlp_ratio"], init_values=a["init_values"], qkv_bias=True,
            num_classes=0, global_pool="token", norm_layer=partial(nn.LayerNorm, eps=LN_EPS),
            **extra,
        )
        # Own attributes in hub order: cls_token, pos_embed, mask_token, patch_embed, blocks, norm.
        self.cls_token = vit.cls_token  # [1 1 E]
        self.pos_embed = vit.pos_embed  # [1 1+M*M E]
        self.mask_token = nn.Parameter(torch.zeros(1, a["embed_dim"]))  # [1 E], unused (hub key, kept for files)
        self.patch_embed = vit.patch_embed
        self.blocks = vit.blocks
        self.norm = vit.norm
        self.patch_size = int(a["patch_size"])
        self.weights = WeightsStatus(f"DINOv2 ({name})", how_to_provide(name), allow_random=allow_random)
        self.freeze()

    @property
    def embed_dim(self) -> int:
        return int(self.cls_token.shape[-1])

    # Weights ---------------------------------------------------------------------------------------------------------
    def load_weights(self, source: Union[str, Path, Mapping], trust: bool = False) -> None:
        """Load a hub-format (with mask_token) or timm-format (without) state dict, a file path, or a CAGE checkpoint.

        An optional `module.` prefix is stripped and, when the file holds `dino.*` keys (a CAGE checkpoint), only those
        are used. Everything else must match exactly (CheckpointError with the key diff otherwise).
        """
        if isinstance(source, Mapping):
            label, state_dict = "state dict", dict(source)
        else:
            label = str(source)
            state_dict = extract_state_dict(load_file(source, trust=trust), source)
        state_dict = strip_prefix(state_dict, DDP_PREFIX)
        own = nn.Module.state_dict(self)
        if "cls_token" not in state_dict and any(k.startswith("dino.") for k in state_dict):
            state_dict = select_prefix(state_dict, "dino.")
        if any(".mlp.w12." in k for k in own):  # vitg14, timm-format file: mlp.fc1/fc2 -> hub mlp.w12/w3
            state_dict = {k.replace(".mlp.fc1.", ".mlp.w12.").replace(".mlp.fc2.", ".mlp.w3."): v
                          for k, v in state_dict.items()}
        timm_format = "mask_token" not in state_dict
        if timm_format:  # timm drops the hub's (unused) mask_token
            state_dict["mask_token"] = own["mask_token"]
        load_strict(self, state_dict, label)
        if timm_format:
            logger.info("%s: no mask_token (timm format); kept the initialised mask_token (unused by CAGE)", label)
        self.weights.mark_loaded(label)

    # Features --------------------------------------------------------------------------------------------------------
    def interpolated_pos_embed(self, h_patches: int, w_patches: int) -> torch.Tensor:
        """Position embedding [1 1+h*w E] for an h x w patch grid, resized exactly like the hub (cls position kept).

        The stored M x M grid is resized in fp32 with bicubic, `scale_factor=((h + 0.1) / M, (w + 0.1) / M)` and no
        antialias; the stored tensor is returned unchanged when the grid already is M x M.
        """
        num_patches = self.pos_embed.shape[1] - 1
        m = int(math.sqrt(num_patches))
        if m * m != num_patches:
            raise ValueError(f"pos_embed holds {num_patches} patch positions, not a square grid")
        if h_patches == m and w_patches == m:
            return self.pos_embed
        pos = self.pos_embed.float()
        cls_pos, grid = pos[:, :1], pos[:, 1:]  # [1 1 E], [1 M*M E]
        grid = rearrange(grid, "1 (h w) e -> 1 e h w", h=m)
        scale = ((h_patches + INTERPOLATE_OFFSET) / m, (w_patches + INTERPOLATE_OFFSET) / m)
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)  # [1 E h w]
        if tuple(grid.shape[-2:]) != (h_patches, w_patches):
            raise RuntimeError(f"pos_embed resize gave {tuple(grid.shape[-2:])}, expected {(h_patches, w_patches)}")
        grid = rearrange(grid, "1 e h w -> 1 (h w) e")
        return torch.cat([cls_pos, grid], dim=1).to(self.pos_embed.dtype)  # [1 1+h*w E]

    def block_outputs(self, images: torch.Tensor, num_layers: int) -> list:
        """Token outputs [n 1+h*w E] of the last `num_layers` blocks (earliest first), before the final norm."""
        h_patches, w_patches = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
        x = rearrange(self.patch_embed.proj(images), "n e h w -> n (h w) e")  # [n h*w E]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # [n 1+h*w E]
        x = x + self.interpolated_pos_embed(h_patches, w_patches).to(x.dtype)
        first = len(self.blocks) - num_layers
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i >= first:
                outputs.append(x)
        return outputs

    @torch.no_grad()
    def get_layers(self, frames: torch.Tensor, num_layers: Optional[int] = None) -> torch.Tensor:
        """Frames [n 3 H W] in [-1,1] -> concatenated normed patch features [n E*num_layers g g], g = input_size //
        patch size (16 at the original's 224 input)."""
        self.weights.require()
        num_layers = self.num_layers if num_layers is None else int(num_layers)
        if not 1 <= num_layers <= len(self.blocks):
            raise ValueError(f"num_layers must be in [1, {len(self.blocks)}], got {num_layers}")
        size = self.input_size
        images = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False)
        grid = size // self.patch_size
        layers = [
            rearrange(self.norm(out)[:, 1:], "n (h w) e -> n e h w", h=grid)  # [n E 16 16]
            for out in self.block_outputs(images, num_layers)
        ]
        return torch.cat(layers, dim=1)  # [n E*num_layers 16 16]

    @torch.no_grad()
    def get_features(self, frames: torch.Tensor, num_layers: Optional[int] = None,
                     out_res: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Frames [n 3 H W] in [-1,1] -> features [n E*num_layers h w], bilinear-resized to out_res (h, w)."""
        feats = self.get_layers(frames, num_layers)  # [n E*k 16 16]
        if out_res is not None and tuple(out_res) != tuple(feats.shape[-2:]):
            feats = F.interpolate(feats, size=tuple(int(s) for s in out_res), mode="bilinear", align_corners=False)
        return feats

    def forward(self, frames: torch.Tensor, out_res: Optional[Sequence[int]] = None) -> torch.Tensor:
        return self.get_features(frames, self.num_layers, out_res)


def build_dino(model_config: Mapping) -> DinoBackbone:
    """The DINO backbone of `model_config` (dino_version, dino_arch, num_dino_layers, dino_weights, dino_random_init,
    dino_input_size: the frames' size at the ViT's input, default 224 as the original).

    Weights: `dino_weights` (a path, or "download" for the official URL) if set; otherwise the official file in the
    torch hub cache if present (named architectures only); otherwise none: the backbone then waits for a CAGE
    checkpoint (Model.load_from_ckpt), and refuses to run unless `dino_random_init` is true. Never touches the network
    unless `dino_weights: download`.
    """
    model_config = {**schema.defaults("cage", "model"), **to_plain(model_config)}
    name = model_config["dino_version"]
    arch = model_config.get("dino_arch")  # absent or null: dino_version's architecture as it is
    allow_random = bool(model_config["dino_random_init"])
    trust = bool(model_config["trust_checkpoints"])
    input_size = int(model_config["dino_input_size"])
    dino = DinoBackbone(name, arch, num_layers=int(model_config["num_dino_layers"]), allow_random=allow_random,
                        input_size=input_size)
    if input_size % dino.patch_size:
        raise ValueError(f"model.dino_input_size ({input_size}) must be a multiple of the patch size "
                         f"({dino.patch_size})")
    weights = model_config["dino_weights"]
    if weights is not None and str(weights) == "download":
        url = HUB_URL.format(name=name)
        state_dict = torch.hub.load_state_dict_from_url(url, map_location="cpu", weights_only=True,
                                                        file_name=f"{name}_pretrain.pth")
        dino.load_weights(state_dict)
        dino.weights.mark_loaded(url)
    elif weights is not None:
        dino.load_weights(str(weights), trust=trust)
    elif dino.arch == ARCHS[name] and hub_cache_file(name).is_file():
        dino.load_weights(hub_cache_file(name), trust=trust)
        logger.info("DINOv2 (%s): loaded weights from the torch hub cache %s", name, hub_cache_file(name))
    elif allow_random:
        logger.warning("DINOv2 (%s): no weights found, using RANDOM weights (model.dino_random_init: true); "
                       "features are meaningless unless a CAGE checkpoint with dino.* keys is loaded later", name)
    return dino
