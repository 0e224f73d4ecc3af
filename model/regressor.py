"""The vector-field regressor: a spatio-temporal transformer over latent tokens, conditioned on control features.

Parameter names and numerics follow the original (reference-compat §2.2, §3), so its checkpoints load unchanged.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from einops import rearrange, repeat
from torch import nn
from torch.utils.checkpoint import checkpoint

from model import rng
from model.attention import CrossAttentionLayer, RelativeAttentionLayer, TimeDependentAttentionLayer
from model.checkpoint import legacy_unused_keys
from model.embeddings import PositionEncoding2D, timestamp_embedding


class PassThrough(nn.Module):
    """The `cross` slot of blocks without cross-attention."""

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        return x


class SpatioTemporalBlock(nn.Module):
    """Spatial attention per frame, then temporal attention over frames x tokens, then (mid blocks) cross-attention."""

    def __init__(self, dim: int, num_heads: int, fc_dim: int, dropout: float, max_relative_position: int,
                 causal: bool, cross: bool, backend: str):
        super().__init__()
        self.spatial = TimeDependentAttentionLayer(dim, num_heads, fc_dim, dropout, backend)
        self.temporal = RelativeAttentionLayer(dim, num_heads, fc_dim, max_relative_position, dropout, causal, backend)
        self.cross = CrossAttentionLayer(dim, num_heads, fc_dim, dropout, backend) if cross else PassThrough()

    def forward(self, x: torch.Tensor, time: torch.Tensor, indices: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x [b l m d], time [b l d], indices [b l], cond [b l n d] -> [b l m d]."""
        b = x.shape[0]
        x = rearrange(self.spatial(rearrange(x, "b l m d -> (b l) m d"), rearrange(time, "b l d -> (b l) d")),
                      "(b l) m d -> b l m d", b=b)
        x = self.temporal(x, time, indices)
        x = self.cross(rearrange(x, "b l m d -> (b l) m d"), rearrange(cond, "b l n d -> (b l) n d"))
        return rearrange(x, "(b l) m d -> b l m d", b=b)


def mid_block_ids(depth: int, mid_depth: int) -> list:
    """The central blocks that get cross-attention: {(depth - mid_depth)//2 + k}."""
    if not 0 <= mid_depth <= depth:
        raise ValueError(f"mid_depth must be within [0, depth={depth}], got {mid_depth}")
    start = (depth - mid_depth) // 2
    return list(range(start, start + mid_depth))


def random_masking(batch: int, num_tokens: int, keep: int, device: torch.device,
                   generator: Optional[torch.Generator] = None) -> tuple:
    """(ids_keep [b keep], ids_restore [b n], kept mask [b n]) from one uniform noise vector per sample.

    The noise is drawn even when every token is kept, so the random stream matches the original's.
    """
    noise = rng.uniform((batch, num_tokens), 0.0, 1.0, device, generator)
    if keep >= num_tokens:  # keeping all tokens: the original's shuffle changes nothing but summation order
        ids = torch.arange(num_tokens, device=device).expand(batch, -1)
        return ids, ids, torch.ones(batch, num_tokens, device=device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    kept = torch.zeros(batch, num_tokens, device=device)
    kept[:, :keep] = 1.0
    return ids_shuffle[:, :keep], ids_restore, torch.gather(kept, 1, ids_restore)


class VectorFieldRegressor(nn.Module):
    """Predicts the flow-matching velocity of latent frames [b l s h w] from their noisy versions and controls."""

    def __init__(
        self,
        state_size: int,
        state_res: Sequence[int],
        inner_dim: int,
        depth: int,
        mid_depth: int,
        fc_dim: int,
        num_heads: int,
        dropout: float,
        max_relative_position: int,
        masking_ratio: float,
        causal: bool,
        feats_dim: int,
        num_frames: Optional[int] = None,
        attention: str = "sdpa",
        activation_checkpointing: bool = False,
    ):
        super().__init__()
        # Training only: recompute each block in the backward pass (model.vector_field_regressor.activation_checkpointing)
        self.activation_checkpointing = activation_checkpointing
        self.state_size, self.state_res = state_size, tuple(state_res)
        self.inner_dim, self.masking_ratio, self.num_frames = inner_dim, masking_ratio, num_frames
        self.msk_token = nn.Parameter(torch.randn(feats_dim))
        self.position_encoding = PositionEncoding2D(inner_dim)
        self.project_in = nn.Sequential(nn.Linear(state_size, inner_dim))
        self.feats_project_in = nn.Sequential(nn.Linear(feats_dim, inner_dim))
        mids = set(mid_block_ids(depth, mid_depth))
        self.main_blocks = nn.ModuleList([
            SpatioTemporalBlock(inner_dim, num_heads, fc_dim, dropout, max_relative_position, causal, i in mids, attention)
            for i in range(depth)
        ])
        self.project_out = nn.Sequential(nn.Linear(inner_dim, inner_dim), nn.GELU(), nn.LayerNorm(inner_dim))
        # Indices 0 and 2 were reshapes in the original; kept as identities so the conv is still `out_conv.1`.
        self.out_conv = nn.Sequential(
            nn.Identity(), nn.Conv2d(inner_dim, state_size, kernel_size=3, padding=1, bias=False), nn.Identity()
        )

    def forward(
        self,
        input_latents: torch.Tensor,
        indices: torch.Tensor,
        timestamps: torch.Tensor,
        feats: torch.Tensor,
        feats_masks: torch.Tensor,
        masking_ratio: Optional[float] = None,
        generator: Optional[torch.Generator] = None,
    ) -> tuple:
        """input_latents [b l s h w], indices [b l], timestamps [b l], feats [b lf f h w], feats_masks [b lf 1 h w]
        (lf <= l: controls of the last lf frames) -> (velocity [b l s h w], kept-token mask [b l 1 h w])."""
        b, l, _, h, w = input_latents.shape
        n = h * w
        ratio = self.masking_ratio if masking_ratio is None else masking_ratio
        keep = int(n * (1 - ratio))
        time = rearrange(timestamp_embedding(timestamps.flatten(), self.inner_dim), "(b l) d -> b l d", b=b)
        time = time.to(input_latents.dtype)
        pos = self.position_encoding(h, w)  # [n d]

        ids_keep, ids_restore, kept = random_masking(b, n, keep, input_latents.device, generator)
        tokens = rearrange(input_latents, "b l s h w -> b l (h w) s")
        tokens = torch.gather(tokens, 2, repeat(ids_keep, "b m -> b l m s", l=l, s=tokens.shape[-1]))
        x = self.project_in(tokens) + pos[ids_keep][:, None]  # [b l m d]

        cond = self.condition(feats, feats_masks, l, pos)  # [b l n d]
        indices = indices.long()
        recompute = self.activation_checkpointing and torch.is_grad_enabled()
        for block in self.main_blocks:
            if recompute:  # the RNG state is restored for the recomputation: dropout draws the same masks
                x = checkpoint(block, x, time, indices, cond, use_reentrant=False)
            else:
                x = block(x, time, indices, cond)

        x = self.project_out(x)
        x = torch.cat([x, x.new_zeros(b, l, n - x.shape[2], x.shape[3])], dim=2)  # dropped tokens re-enter as zeros
        x = torch.gather(x, 2, repeat(ids_restore, "b n -> b l n d", l=l, d=x.shape[-1]))
        x = rearrange(x, "b l (h w) d -> (b l) d h w", h=h)
        velocity = rearrange(self.out_conv(x), "(b l) s h w -> b l s h w", b=b)
        kept = repeat(kept, "b (h w) -> b l 1 h w", l=l, h=h).to(velocity.dtype)
        return velocity, kept

    def condition(self, feats: torch.Tensor, feats_masks: torch.Tensor, num_frames: int, pos: torch.Tensor) -> torch.Tensor:
        """Condition tokens [b l n d]: controls front-padded to l frames, unrevealed cells replaced by msk_token."""
        b, lf = feats.shape[:2]
        if lf > num_frames:
            raise ValueError(f"got controls for {lf} frames but only {num_frames} input frames")
        feats = rearrange(feats, "b l f h w -> b l (h w) f")
        masks = rearrange(feats_masks, "b l 1 h w -> b l (h w) 1").to(feats.dtype)
        if lf < num_frames:
            pad = num_frames - lf
            feats = torch.cat([self.msk_token.to(feats.dtype).expand(b, pad, feats.shape[2], -1), feats], dim=1)
            masks = torch.cat([masks.new_zeros(b, pad, masks.shape[2], 1), masks], dim=1)
        feats = masks * feats + (1 - masks) * self.msk_token.to(feats.dtype)
        return pos.detach() + self.feats_project_in(feats)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        for key in legacy_unused_keys(state_dict, prefix):
            state_dict.pop(key)  # the original's dead time_projection weights
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
