"""The regressor's attention layers: time-dependent spatial attention and relative temporal attention.

Both follow the original's numerics: q/k/v without bias, a time vector of size head_dim added to every head and
token, logits divided by sqrt(inner_dim) (not sqrt(head_dim)), no output projection. Backend "sdpa" (the default)
computes them with `attend`; backend "math" with the original's formulas written out (the oracle of the tests).

The relative temporal term q . E[clamp(idx_key_frame - idx_query_frame)] depends only on the frame pair, so it is
folded into l extra head channels (q . E per key frame on the query side, the key's frame as a one-hot on the key
side), and one attention call covers all frames x tokens, without the [N N] position tensor of the formula.

`CrossAttentionLayer` is the mid blocks' decoder layer: torch's `TransformerDecoderLayer(norm_first=True)` with
the same parameter names and maths, written out so that its attention takes the same path as the other layers.

`attend` calls torch's fused scaled_dot_product_attention, except on the CPU under bf16 autocast: there it
computes softmax(q k^T) v with explicit matmuls, because torch's CPU flash-attention kernel is slower in bf16 than
in fp32 (its backward 3.6x slower at the toy's sizes, docs/benchmarks.md) while explicit bf16 matmuls use the CPU's
bf16 units. Both compute the same function.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

BACKENDS = ("sdpa", "math")


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"attention backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def use_fused(backend: str, x: torch.Tensor) -> bool:
    """Whether to call torch's fused SDPA: backend "sdpa", except for low-precision tensors on the CPU (see above)."""
    return backend == "sdpa" and not (x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, dropout: float, training: bool,
           backend: str, allowed: Optional[torch.Tensor] = None) -> torch.Tensor:
    """softmax(q k^T * scale) v over the last two axes: q [... i e], k [... j e], v [... j f] -> [... i f].
    `allowed` [i j] (bool): the key positions each query may attend to (None: all)."""
    dropout = dropout if training else 0.0
    if use_fused(backend, q):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout, scale=scale)
    logits = (q * scale) @ k.transpose(-2, -1)  # the scale applied to q: [... i e] is smaller than [... i j]
    if allowed is not None:
        logits = logits.masked_fill(~allowed, torch.finfo(torch.bfloat16).min)
    weights = torch.softmax(logits, dim=-1)  # fp32 under autocast (bf16 measured no faster on the CPU)
    return F.dropout(weights, dropout, training) @ v


def feed_forward(dim: int, hidden: int) -> nn.Sequential:
    """Linear -> GELU -> Linear (keys fc.0, fc.2)."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class TimeDependentAttention(nn.Module):
    """Multi-head self-attention over the tokens of one frame, with the frame's time vector added to q, k and v."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, backend: str = "sdpa"):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"inner_dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim, self.dropout = num_heads, dim // num_heads, dropout
        self.scale = 1.0 / math.sqrt(dim)
        self.backend = _check_backend(backend)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.time_qkv = nn.Linear(dim, 3 * self.head_dim, bias=False)

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """x [n t d], time [n d] -> [n t d]."""
        q, k, v = rearrange(self.qkv(x), "n t (three h e) -> three n h t e", three=3, h=self.num_heads)
        qt, kt, vt = rearrange(self.time_qkv(time), "n (three e) -> three n 1 1 e", three=3)
        q, k, v = q + qt, k + kt, v + vt
        out = attend(q, k, v, self.scale, self.dropout, self.training, self.backend)
        return rearrange(out, "n h t e -> n t (h e)")


class RelativePosition(nn.Module):
    """Table of relative frame-distance embeddings [2M+1, head_dim], shared by all heads."""

    def __init__(self, head_dim: int, max_relative_position: int):
        super().__init__()
        self.max_relative_position = max_relative_position
        self.embeddings_table = nn.Parameter(torch.empty(2 * max_relative_position + 1, head_dim))
        nn.init.xavier_uniform_(self.embeddings_table)

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        """indices [b l] -> embeddings [b l(query) l(key) e] of clamp(idx_key - idx_query)."""
        distance = indices[:, None, :] - indices[:, :, None]
        distance = distance.clamp(-self.max_relative_position, self.max_relative_position) + self.max_relative_position
        return self.embeddings_table[distance]


class RelativeAttention(nn.Module):
    """Self-attention jointly over all frames x tokens, with time vectors and a relative frame-distance term."""

    def __init__(self, dim: int, num_heads: int, max_relative_position: int, dropout: float = 0.0,
                 causal: bool = False, backend: str = "sdpa"):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"inner_dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim, self.dropout, self.causal = num_heads, dim // num_heads, dropout, causal
        self.scale = 1.0 / math.sqrt(dim)
        self.backend = _check_backend(backend)
        self.relative_position = RelativePosition(self.head_dim, max_relative_position)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.time_qkv = nn.Linear(dim, 3 * self.head_dim, bias=False)

    def forward(self, x: torch.Tensor, time: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """x [b l m d], time [b l d], indices [b l] -> [b l m d]."""
        b, l, m, _ = x.shape
        q, k, v = rearrange(self.qkv(x), "b l m (three h e) -> three b h l m e", three=3, h=self.num_heads)
        qt, kt, vt = rearrange(self.time_qkv(time), "b l (three e) -> three b 1 l 1 e", three=3)
        q, k, v = q + qt, k + kt, v + vt
        relative = self.relative_position(indices).to(q.dtype)  # [b i j e]
        allowed = torch.ones(l, l, dtype=torch.bool, device=x.device).tril() if self.causal else None  # [i j]
        if self.backend == "math":
            out = self._math(q, k, v, relative, allowed)
        else:
            out = self._folded(q, k, v, relative, allowed)
        return rearrange(out, "b h l m e -> b l m (h e)")

    def _folded(self, q, k, v, relative, allowed):
        """One attention call over all l*m tokens. The relative term is folded into extra head channels:
        queries get [q, q.E[r(i, 0)], ..., q.E[r(i, l-1)]] and keys [k, onehot(frame of the key)], so that
        q'.k' = q.k + q.E[r(i, j)] exactly (and, in bf16, with one rounding instead of three). For torch's fused
        kernels the channels are zero-padded to a multiple of 8 and the values to the same width."""
        b, h, l, m, e = q.shape
        position = torch.einsum("bhiae,bije->bhiaj", q, relative)  # [b h i a j]
        frame_of_key = repeat(torch.eye(l, dtype=q.dtype, device=q.device), "j f -> b h j c f", b=b, h=h, c=m)
        fused = use_fused(self.backend, q)
        extra = -(e + l) % 8 if fused else 0
        queries = torch.cat([q, position, q.new_zeros(b, h, l, m, extra)], dim=-1)
        keys = torch.cat([k, frame_of_key, k.new_zeros(b, h, l, m, extra)], dim=-1)
        values = torch.cat([v, v.new_zeros(b, h, l, m, l + extra)], dim=-1) if fused else v
        mask = repeat(allowed, "i j -> (i a) (j c)", a=m, c=m) if allowed is not None else None
        out = attend(rearrange(queries, "b h i a e -> b h (i a) e"), rearrange(keys, "b h j c e -> b h (j c) e"),
                     rearrange(values, "b h j c e -> b h (j c) e"), self.scale, self.dropout, self.training,
                     self.backend, mask)
        return rearrange(out[..., :e], "b h (i a) e -> b h i a e", i=l)

    def _math(self, q, k, v, relative, allowed):
        """The original's formula: (q.k + q.E) / sqrt(D) over the N = l*m tokens, E broadcast over key tokens."""
        b, h, l, m, e = q.shape
        content = rearrange(q, "b h i a e -> b h (i a) e") @ rearrange(k, "b h j c e -> b h e (j c)")
        position = torch.einsum("bhiae,bije->bhiaj", q, relative)  # [b h i a j]
        logits = content + repeat(position, "b h i a j -> b h (i a) (j c)", c=m)
        logits = logits * self.scale
        if allowed is not None:
            logits = logits.masked_fill(~repeat(allowed, "i j -> (i a) (j c)", a=m, c=m), torch.finfo(torch.bfloat16).min)
        weights = F.dropout(torch.softmax(logits, dim=-1), self.dropout, self.training)
        out = weights @ rearrange(v, "b h j c e -> b h (j c) e")
        return rearrange(out, "b h (i a) e -> b h i a e", i=l)


class TimeDependentAttentionLayer(nn.Module):
    """Pre-LN residual block: x += Attn(LN(x), time); x += FFN(LN(x)) (spatial, per frame)."""

    def __init__(self, dim: int, num_heads: int, fc_dim: int, dropout: float = 0.0, backend: str = "sdpa"):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = TimeDependentAttention(dim, num_heads, dropout, backend)
        self.ln2 = nn.LayerNorm(dim)
        self.fc = feed_forward(dim, fc_dim)

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """x [n t d], time [n d]."""
        x = x + self.attn(self.ln1(x), time)
        return x + self.fc(self.ln2(x))


class RelativeAttentionLayer(nn.Module):
    """Pre-LN residual block around RelativeAttention (temporal, over all frames x tokens)."""

    def __init__(self, dim: int, num_heads: int, fc_dim: int, max_relative_position: int, dropout: float = 0.0,
                 causal: bool = False, backend: str = "sdpa"):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = RelativeAttention(dim, num_heads, max_relative_position, dropout, causal, backend)
        self.ln2 = nn.LayerNorm(dim)
        self.fc = feed_forward(dim, fc_dim)

    def forward(self, x: torch.Tensor, time: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """x [b l m d], time [b l d], indices [b l]."""
        x = x + self.attn(self.ln1(x), time, indices)
        return x + self.fc(self.ln2(x))


class ProjectedAttention(nn.Module):
    """Multi-head attention with input and output projections: torch's `MultiheadAttention` maths and key names
    (in_proj_weight [3D D], in_proj_bias [3D], out_proj), batch first, no masks."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, backend: str = "sdpa"):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"inner_dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads, self.dropout, self.backend = num_heads, dropout, _check_backend(backend)
        self.scale = 1.0 / math.sqrt(dim // num_heads)
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)  # MultiheadAttention's initialisation
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Queries from x [n t d], keys and values from memory [n s d] -> [n t d]."""
        w_q, w_kv = self.in_proj_weight.split([x.shape[-1], 2 * x.shape[-1]])
        b_q, b_kv = self.in_proj_bias.split([x.shape[-1], 2 * x.shape[-1]])
        q = rearrange(F.linear(x, w_q, b_q), "n t (h e) -> n h t e", h=self.num_heads)
        k, v = rearrange(F.linear(memory, w_kv, b_kv), "n s (two h e) -> two n h s e", two=2, h=self.num_heads)
        out = attend(q, k, v, self.scale, self.dropout, self.training, self.backend)
        return self.out_proj(rearrange(out, "n h t e -> n t (h e)"))


class CrossAttentionLayer(nn.Module):
    """Pre-LN decoder layer: x += SelfAttn(LN1(x)); x += CrossAttn(LN2(x), memory); x += FFN(LN3(x)) (ReLU).

    torch's `TransformerDecoderLayer(norm_first=True, batch_first=True)` (the original's cross layer, reference-compat
    §4), same parameter names, with dropout in the same places (attention probabilities, each residual branch, the
    FFN's hidden layer)."""

    def __init__(self, dim: int, num_heads: int, fc_dim: int, dropout: float = 0.0, backend: str = "sdpa"):
        super().__init__()
        self.self_attn = ProjectedAttention(dim, num_heads, dropout, backend)
        self.multihead_attn = ProjectedAttention(dim, num_heads, dropout, backend)
        self.linear1, self.linear2 = nn.Linear(dim, fc_dim), nn.Linear(fc_dim, dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """x [n t d], memory [n s d] -> [n t d]."""
        drop = lambda y: F.dropout(y, self.dropout, self.training)  # noqa: E731
        h = self.norm1(x)
        x = x + drop(self.self_attn(h, h))
        x = x + drop(self.multihead_attn(self.norm2(x), memory))
        return x + drop(self.linear2(drop(F.relu(self.linear1(self.norm3(x))))))


def set_attention_backend(module: nn.Module, backend: str) -> None:
    """Switch every attention layer below `module` to "sdpa" or "math"."""
    _check_backend(backend)
    for child in module.modules():
        if isinstance(child, (TimeDependentAttention, RelativeAttention, ProjectedAttention)):
            child.backend = backend
