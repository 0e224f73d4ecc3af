"""Time and position embeddings of the vector-field regressor."""
from __future__ import annotations

import math

import torch
from einops import rearrange, repeat
from torch import nn

TIME_SCALE = 200.0  # the original premultiplies t in [0, 1] by 200
MAX_PERIOD = 10000.0
POSITION_TABLE_ROWS = 512


def timestamp_embedding(t: torch.Tensor, dim: int, scale: float = TIME_SCALE, max_period: float = MAX_PERIOD) -> torch.Tensor:
    """Sinusoidal embedding [..., dim] of timestamps t [...] in fp32, ordered [cos, sin] (zero column if dim is odd)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = scale * t.float()[..., None] * freqs
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[..., :1])], dim=-1)
    return embedding


class PositionEncoding2D(nn.Module):
    """Learned 2-D position code: token y*w + x gets [col_embed[x], row_embed[y]] (x half first)."""

    def __init__(self, dim: int, rows: int = POSITION_TABLE_ROWS):
        super().__init__()
        self.row_embed = nn.Embedding(rows, dim // 2)
        self.col_embed = nn.Embedding(rows, dim // 2)
        nn.init.uniform_(self.row_embed.weight, -1.0, 1.0)
        nn.init.uniform_(self.col_embed.weight, -1.0, 1.0)

    def forward(self, height: int, width: int) -> torch.Tensor:
        """[h*w, dim] codes in row-major token order."""
        device = self.row_embed.weight.device
        cols = self.col_embed(torch.arange(width, device=device))  # [w d/2]
        rows = self.row_embed(torch.arange(height, device=device))  # [h d/2]
        grid = torch.cat([repeat(cols, "w d -> h w d", h=height), repeat(rows, "h d -> h w d", w=width)], dim=-1)
        return rearrange(grid, "h w d -> (h w) d")
