"""Frozen VQ autoencoders: our small VQVAE ("ours", CLEVRER) and the taming VQGAN ("ldm-vq", BAIR/EPIC).

Both map frames in [-1, 1] to *unquantized* latents (`encode`) and quantize-then-decode in `decode`, as the original
CAGE code does (spec section 2.3, 2.4). Parameter names match the original checkpoints exactly.
"""
from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from einops import rearrange
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
    strip_prefix,
)

logger = logging.getLogger(__name__)

AE_TYPES = ("ours", "ldm-vq")

HOW_TO_PROVIDE = (
    "Set model.autoencoder.ckpt_path to an existing autoencoder checkpoint file, or load a full CAGE checkpoint "
    "with Model.load_from_ckpt, or set model.autoencoder.random_init: true (tests / toy runs only)."
)

# ---------------------------------------------------------------------------------------------------------------------
# "ours": the small VQVAE of the original code (spec section 2.3)
# ---------------------------------------------------------------------------------------------------------------------

GN_EPS = 1e-6  # every GroupNorm of the VQVAE (residual blocks, attn_norm, out_norm)
LEAK = 0.2
GN_GROUPS = 32
DEFAULT_MID_CHANNELS = 32  # the original's width; the others are 2x, 4x and 8x it
CODER_DEFAULTS = schema.defaults("cage", "model.autoencoder.encoder")  # mid_channels: DEFAULT_MID_CHANNELS
AE_DEFAULTS = schema.defaults("cage", "model.autoencoder")  # random_init, ckpt_path, ...


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups (one per channel below 32 channels: only narrower-than-original VQVAEs), eps 1e-6."""
    return nn.GroupNorm(min(GN_GROUPS, channels), channels, eps=GN_EPS, affine=True)


def swish(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(x)."""
    return x * torch.sigmoid(x)


def pooled_conv(conv: nn.Conv2d, x: torch.Tensor, factor: int) -> torch.Tensor:
    """avgpool_f(conv(x)) as one convolution of stride f: [b i H W] -> [b o H/f W/f].

    Averaging the f x f outputs of a k x k kernel is a (k+f-1) x (k+f-1) kernel (the mean of the k x k one shifted
    to each of the f^2 positions) applied at stride f, with the same padding: the same function (equal up to
    rounding), computed at 1/f^2 of the output positions and without the pooling pass. On the CPU the separate
    pooling cost as much as the convolution before it (docs/benchmarks.md)."""
    if factor == 1:
        return conv(x)
    weight = conv.weight  # [o i k k]
    merged = sum(F.pad(weight, (dx, factor - 1 - dx, dy, factor - 1 - dy)) for dy in range(factor) for dx in range(factor))
    return F.conv2d(x, merged / factor**2, conv.bias, stride=factor, padding=conv.padding)


class ResidualBlock(nn.Module):
    """conv3x3 -> avgpool(f) -> GN -> LeakyReLU -> conv3x3 -> GN, plus a (1x1 conv, avgpool, GN) shortcut.

    Each conv + pool pair runs as one strided convolution (`pooled_conv`); the shortcut keeps the original's module
    layout (`downsample.0` conv, `.1` pool, `.2` norm: the checkpoint keys)."""

    def __init__(self, in_channels: int, out_channels: int, downsample_factor: int = 1):
        super().__init__()
        self.factor = downsample_factor
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = group_norm(out_channels)
        self.downsample = None
        if downsample_factor != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                nn.AvgPool2d(downsample_factor),
                group_norm(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.bn1(pooled_conv(self.conv1, x, self.factor)), LEAK)  # [b out h/f w/f]
        h = self.bn2(self.conv2(h))
        shortcut = x if self.downsample is None else self.downsample[2](pooled_conv(self.downsample[0], x, self.factor))
        return F.leaky_relu(h + shortcut, LEAK)


class UpBlock(nn.Module):
    """Nearest x2 upsampling -> conv3x3 (no bias) -> BatchNorm2d -> LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # [b c 2h 2w]
        return F.leaky_relu(self.norm(self.conv(x)), LEAK)


class AttentionBottleneckMixin:
    """Adds pre_attn_residual -> x + MHA(attn_norm(x)) over the h*w tokens (1 head) -> post_attn_residual."""

    def build_attention(self, channels: int) -> None:
        self.pre_attn_residual = ResidualBlock(channels, channels)
        self.attn_norm = group_norm(channels)
        self.attn = nn.MultiheadAttention(channels, 1, batch_first=True)
        self.post_attn_residual = ResidualBlock(channels, channels)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre_attn_residual(x)  # [b c h w]
        height = x.shape[-2]
        tokens = rearrange(self.attn_norm(x), "b c h w -> b (h w) c")
        # need_weights at its default (True), as the original: it picks the kernel; with it parity is bit-exact
        attended = self.attn(tokens, tokens, tokens)[0]  # [b (h w) c]
        x = x + rearrange(attended, "b (h w) c -> b c h w", h=height)
        return self.post_attn_residual(x)


class VQVAEEncoder(AttentionBottleneckMixin, nn.Module):
    """Frames [b 3 H W] -> latents [b C H/8 W/8]; no output squashing."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int = DEFAULT_MID_CHANNELS):
        super().__init__()
        widths = [mid_channels, 2 * mid_channels, 4 * mid_channels, 8 * mid_channels]  # 32, 64, 128, 256
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.residuals = nn.ModuleList(ResidualBlock(a, b, 2) for a, b in zip(widths[:-1], widths[1:]))
        self.build_attention(widths[-1])
        self.out_norm = group_norm(widths[-1])
        self.out_conv = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)  # [b 32 H W]
        for block in self.residuals:
            x = block(x)  # halves the resolution
        x = self.attend(x)  # [b 256 h w]
        return self.out_conv(swish(self.out_norm(x)))  # [b C h w]


class VQVAEDecoder(AttentionBottleneckMixin, nn.Module):
    """Latents [b C h w] -> images [b 3 8h 8w] in (-1, 1) (tanh)."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int = DEFAULT_MID_CHANNELS):
        super().__init__()
        widths = [8 * mid_channels, 4 * mid_channels, 2 * mid_channels, mid_channels]  # 256, 128, 64, 32
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.build_attention(widths[0])
        self.residuals = nn.ModuleList(
            nn.Sequential(ResidualBlock(a, b, 1), UpBlock(b, b)) for a, b in zip(widths[:-1], widths[1:])
        )
        self.out_norm = group_norm(widths[-1])
        self.out_conv = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.attend(self.conv_in(z))  # [b 256 h w]
        for block in self.residuals:
            x = block(x)  # doubles the resolution
        return torch.tanh(self.out_conv(swish(self.out_norm(x))))  # [b 3 H W]


class VectorQuantizer(nn.Module):
    """Nearest codebook entry by squared L2 (z.z + e.e - 2 z.e, ties -> lowest index), straight-through output."""

    def __init__(self, num_embeddings: int, embedding_dimension: int, beta: float = 0.25):
        super().__init__()
        self.num_embeddings, self.embedding_dimension, self.beta = num_embeddings, embedding_dimension, beta
        self.embedding = nn.Embedding(num_embeddings, embedding_dimension)
        self.embedding.weight.data.uniform_(-1.0 / num_embeddings, 1.0 / num_embeddings)

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """Code indices [n h w] of latents [n c h w]."""
        flat = rearrange(z, "n c h w -> (n h w) c")
        codebook = self.embedding.weight  # [k c]
        distances = (
            torch.sum(flat**2, dim=1, keepdim=True) + torch.sum(codebook**2, dim=1) - 2 * flat @ codebook.t()
        )  # [(n h w) k]
        return rearrange(torch.argmin(distances, dim=1), "(n h w) -> n h w", n=z.shape[0], h=z.shape[2])

    def forward(self, z: torch.Tensor, with_loss: bool = False):
        """(straight-through quantized [n c h w], codes [n h w], loss or None)."""
        codes = self.codes(z)
        z_q = rearrange(self.embedding(codes), "n h w c -> n c h w")
        loss = None
        if with_loss:  # codebook term + beta * commitment term
            loss = F.mse_loss(z_q, z.detach()) + self.beta * F.mse_loss(z, z_q.detach())
        quantized = z + (z_q - z).detach()  # straight-through estimator; parity depends on this float form
        return quantized, codes, loss


@dataclass
class VQVAEOutput:
    """What a full VQVAE pass produces."""

    latents: torch.Tensor  # [n C h w] unquantized encoder output
    quantized_latents: torch.Tensor  # [n C h w]
    codes: torch.Tensor  # [n h w]
    reconstructions: torch.Tensor  # [n 3 H W]
    vq_loss: Optional[torch.Tensor]


class VQVAE(nn.Module):
    """The original small VQVAE (encoder, vector_quantizer, decoder) with its exact parameter names."""

    downsample_factor = 8

    def __init__(
        self,
        encoder_in: int,
        encoder_out: int,
        decoder_in: int,
        decoder_out: int,
        num_embeddings: int,
        embedding_dimension: int,
        encoder_mid_channels: int = DEFAULT_MID_CHANNELS,
        decoder_mid_channels: int = DEFAULT_MID_CHANNELS,
    ):
        super().__init__()
        if not encoder_out == embedding_dimension == decoder_in:
            raise ValueError(
                f"VQVAE: encoder out_channels ({encoder_out}), embedding_dimension ({embedding_dimension}) and "
                f"decoder in_channels ({decoder_in}) must be equal"
            )
        for name, width in (("encoder", encoder_mid_channels), ("decoder", decoder_mid_channels)):
            if not (isinstance(width, int) and width >= 1 and (width % GN_GROUPS == 0 or GN_GROUPS % width == 0)):
                raise ValueError(f"VQVAE: {name}.mid_channels must be a positive int that is a multiple or a divisor "
                                 f"of {GN_GROUPS} (GroupNorm groups), got {width!r}")
        self.encoder = VQVAEEncoder(encoder_in, encoder_out, encoder_mid_channels)
        self.decoder = VQVAEDecoder(decoder_in, decoder_out, decoder_mid_channels)
        self.vector_quantizer = VectorQuantizer(num_embeddings, embedding_dimension)

    @classmethod
    def from_config(cls, config: Mapping) -> "VQVAE":
        """From the `autoencoder` section of a config (type "ours"): encoder/decoder/vector_quantizer sizes, and the
        optional encoder.mid_channels / decoder.mid_channels (default 32, the original's 32-64-128-256 widths)."""
        return cls(
            encoder_in=int(config["encoder"]["in_channels"]),
            encoder_out=int(config["encoder"]["out_channels"]),
            decoder_in=int(config["decoder"]["in_channels"]),
            decoder_out=int(config["decoder"]["out_channels"]),
            num_embeddings=int(config["vector_quantizer"]["num_embeddings"]),
            embedding_dimension=int(config["vector_quantizer"]["embedding_dimension"]),
            encoder_mid_channels=int({**CODER_DEFAULTS, **config["encoder"]}["mid_channels"]),
            decoder_mid_channels=int({**CODER_DEFAULTS, **config["decoder"]}["mid_channels"]),
        )

    @property
    def latent_channels(self) -> int:
        return self.vector_quantizer.embedding_dimension

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Unquantized latents [n C h w] of images [n 3 H W]."""
        return self.encoder(x)

    def decode_from_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Quantize latents [n C h w], then decode to images [n 3 H W]."""
        quantized, _, _ = self.vector_quantizer(z)
        return self.decoder(quantized)

    def forward(self, x: torch.Tensor, with_loss: bool = False) -> VQVAEOutput:
        latents = self.encoder(x)
        quantized, codes, loss = self.vector_quantizer(latents, with_loss=with_loss)
        return VQVAEOutput(latents, quantized, codes, self.decoder(quantized), loss)


# ---------------------------------------------------------------------------------------------------------------------
# Shared frozen-autoencoder plumbing
# ---------------------------------------------------------------------------------------------------------------------


def over_frames(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply an image function [n ...] to [b l ...] (5-D) or [n ...] (4-D) input."""
    if x.dim() == 5:
        batch = x.shape[0]
        out = fn(rearrange(x, "b l c h w -> (b l) c h w"))
        return rearrange(out, "(b l) c h w -> b l c h w", b=batch)
    if x.dim() == 4:
        return fn(x)
    raise ValueError(f"expected [b l c h w] or [n c h w] input, got shape {tuple(x.shape)}")


class FrozenAutoencoder(FrozenPretrained, nn.Module):
    """Common API: frozen, eval-only, no-grad encode/decode/quantize and weights bookkeeping."""

    def _init_weights_status(self, config: Mapping) -> None:
        self.weights = WeightsStatus("the autoencoder", HOW_TO_PROVIDE, allow_random=bool({**AE_DEFAULTS, **config}["random_init"]))

    # subclasses implement these on 4-D tensors
    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _quantize(self, z: torch.Tensor):
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames [b l 3 H W] (or [n 3 H W]) in [-1, 1] -> unquantized latents [b l C h w] (or [n C h w])."""
        self.weights.require()
        return over_frames(self._encode, frames)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [b l C h w] (or [n C h w]) -> images [b l 3 H W] (or [n 3 H W]); quantizes first, no clamping."""
        self.weights.require()
        return over_frames(self._decode, latents)

    @torch.no_grad()
    def quantize(self, latents: torch.Tensor):
        """(quantized latents, code indices) of latents [n C h w] -> ([n C h w], [n h w]); 5-D works too."""
        self.weights.require()
        if latents.dim() == 5:
            batch = latents.shape[0]
            quantized, codes = self._quantize(rearrange(latents, "b l c h w -> (b l) c h w"))
            return (
                rearrange(quantized, "(b l) c h w -> b l c h w", b=batch),
                rearrange(codes, "(b l) h w -> b l h w", b=batch),
            )
        if latents.dim() != 4:
            raise ValueError(f"expected [n c h w] or [b l c h w] latents, got shape {tuple(latents.shape)}")
        return self._quantize(latents)

    def load_checkpoint(self, path: str | Path, trust: bool = False) -> "FrozenAutoencoder":
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: Mapping, trust: bool = False) -> "FrozenAutoencoder":
        """Build, then load `config["ckpt_path"]` if that file exists (relative paths: against the current dir).

        A missing file is not an error: a full CAGE checkpoint may provide the weights later. Using the module
        before any weights arrived raises a CheckpointError that says how to provide them.
        """
        module = cls(config)
        ckpt_path = {**AE_DEFAULTS, **config}["ckpt_path"]
        if ckpt_path:
            path = Path(str(ckpt_path)).expanduser()
            if path.is_file():
                module.load_checkpoint(path, trust=trust)
            else:
                logger.warning(
                    "autoencoder checkpoint %s not found (resolved to %s); the autoencoder has no weights until a "
                    "full CAGE checkpoint is loaded",
                    ckpt_path,
                    path.absolute(),
                )
        elif not module.weights.allow_random:
            logger.warning("model.autoencoder.ckpt_path is not set; the autoencoder has no weights yet")
        return module


class OursAutoencoder(FrozenAutoencoder):
    """Frozen `type: ours` autoencoder: our VQVAE as submodule `backbone` (keys `backbone.encoder.*` ...)."""

    def __init__(self, config: Mapping):
        super().__init__()
        self._init_weights_status(config)
        self.backbone = VQVAE.from_config(config)
        self.freeze()

    @property
    def latent_channels(self) -> int:
        return self.backbone.latent_channels

    @property
    def downsample_factor(self) -> int:
        return self.backbone.downsample_factor

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode(x)  # encoder only: no quantizer, no decoder pass

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.backbone.decode_from_latents(z)

    def _quantize(self, z: torch.Tensor):
        quantized, codes, _ = self.backbone.vector_quantizer(z)
        return quantized, codes

    def load_checkpoint(self, path: str | Path, trust: bool = False) -> "OursAutoencoder":
        """Load an original AE file `{"model": {"module.<VQVAE key>": tensor}}`; the `module.` prefix is optional."""
        state_dict = strip_prefix(extract_state_dict(load_file(path, trust=trust), path, keys=("model",)), DDP_PREFIX)
        load_strict(self.backbone, state_dict, str(path))
        self.weights.mark_loaded(str(path))
        return self


# ---------------------------------------------------------------------------------------------------------------------
# "ldm-vq": taming-transformers VQGAN (spec section 2.4)
# ---------------------------------------------------------------------------------------------------------------------

_TAMING_COMMON = dict(double_z=False, in_channels=3, out_ch=3, ch=128, num_res_blocks=2, dropout=0.0)

TAMING_CONFIGS = {
    "f8": dict(_TAMING_COMMON, embed_dim=4, z_channels=4, n_embed=16384, resolution=256, ch_mult=[1, 2, 2, 4],
               attn_resolutions=[32]),
    "f8_small": dict(_TAMING_COMMON, embed_dim=4, z_channels=4, n_embed=16384, resolution=64, ch_mult=[1, 2, 2, 4],
                     attn_resolutions=[16]),
    "f16": dict(_TAMING_COMMON, embed_dim=8, z_channels=8, n_embed=16384, resolution=256, ch_mult=[1, 1, 2, 2, 4],
                attn_resolutions=[16]),
}

_DDCONFIG_REQUIRED = ("embed_dim", "n_embed", "z_channels", "resolution", "in_channels", "out_ch", "ch", "ch_mult",
                      "num_res_blocks", "attn_resolutions")


def taming_ddconfig(config) -> dict:
    """The ddconfig (with embed_dim and n_embed) for a named config ("f8", "f8_small", "f16") or a dict of values."""
    if isinstance(config, str):
        if config not in TAMING_CONFIGS:
            raise ValueError(
                f"unknown taming autoencoder config {config!r}; use one of {sorted(TAMING_CONFIGS)} or a dict of "
                f"ddconfig values with embed_dim and n_embed"
            )
        return dict(TAMING_CONFIGS[config])
    if isinstance(config, Mapping):
        ddconfig = to_plain(config)
        missing = [key for key in _DDCONFIG_REQUIRED if key not in ddconfig]
        if missing:
            raise ValueError(f"taming autoencoder config dict lacks {missing}")
        ddconfig.setdefault("double_z", False)
        ddconfig.setdefault("dropout", 0.0)
        return ddconfig
    raise ValueError(f"model.autoencoder.config must be one of {sorted(TAMING_CONFIGS)} or a dict, got {config!r}")


class TamingAutoencoder(FrozenAutoencoder):
    """Frozen `type: ldm-vq` autoencoder: taming Encoder -> quant_conv | quantize -> post_quant_conv -> Decoder."""

    def __init__(self, config: Mapping):
        super().__init__()
        from taming.modules.diffusionmodules.model import Decoder, Encoder
        from taming.modules.vqvae.quantize import VectorQuantizer2

        self._init_weights_status(config)
        if "config" not in config:
            raise ValueError(f"model.autoencoder.config is required for type ldm-vq (one of {sorted(TAMING_CONFIGS)})")
        ddconfig = taming_ddconfig(config["config"])
        embed_dim, n_embed = int(ddconfig.pop("embed_dim")), int(ddconfig.pop("n_embed"))
        self.ddconfig = ddconfig
        self.encoder = Encoder(**ddconfig)
        with contextlib.redirect_stdout(io.StringIO()):  # taming's Decoder prints the latent shape
            self.decoder = Decoder(**ddconfig)
        self.quantize = VectorQuantizer2(n_embed, embed_dim, beta=0.25, sane_index_shape=True)
        self.quant_conv = nn.Conv2d(ddconfig["z_channels"], embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)
        self.freeze()

    # `quantize` is both the taming submodule (keys quantize.embedding.weight, kept in self._modules) and the public
    # method inherited from FrozenAutoencoder; attribute lookup finds the method, so the submodule is used via _modules.

    @property
    def latent_channels(self) -> int:
        return self.quant_conv.out_channels

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ddconfig["ch_mult"]) - 1)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(x))  # no quantization

    def _quantize(self, z: torch.Tensor):
        quantized, _, (_, _, codes) = self._modules["quantize"](z)
        return quantized, codes

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        quantized, _ = self._quantize(z)
        return self.decoder(self.post_quant_conv(quantized))

    def load_checkpoint(self, path: str | Path, trust: bool = False) -> "TamingAutoencoder":
        """Load a taming/Lightning file `{"state_dict": {...}}` strictly, ignoring the `loss.*` (GAN/LPIPS) keys."""
        state_dict = extract_state_dict(load_file(path, trust=trust), path, keys=("state_dict",))
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("loss.")}
        load_strict(self, state_dict, str(path))
        self.weights.mark_loaded(str(path))
        return self


# ---------------------------------------------------------------------------------------------------------------------
# Factory
# ---------------------------------------------------------------------------------------------------------------------

AUTOENCODERS = {"ours": OursAutoencoder, "ldm-vq": TamingAutoencoder}


def build_autoencoder(ae_config: Mapping, trust: bool = False) -> FrozenAutoencoder:
    """The frozen autoencoder of `model.autoencoder` (type "ours" or "ldm-vq"), with its checkpoint if it exists."""
    ae_config = schema.complete("model.autoencoder", ae_config)  # unknown or mistyped keys, an unknown type: errors
    ae_type = ae_config["type"]
    return AUTOENCODERS[ae_type].from_config(ae_config, trust=trust)
