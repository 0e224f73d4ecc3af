"""Vector-field regressor: golden parity, fused vs math attention, masking, embeddings, parameter layout."""
import math

import pytest
import torch

from lutils.configuration import Configuration
from model.attention import CrossAttentionLayer, set_attention_backend, use_fused
from model.checkpoint import select_prefix
from model.embeddings import PositionEncoding2D, timestamp_embedding
from model.regressor import VectorFieldRegressor, mid_block_ids, random_masking
from tests.conftest import ROOT

GOLDEN_SETS = ("tiny_ours", "tiny_ldm")
TOLERANCE = 1e-5
SPEC_KEYS = ("state_size", "state_res", "inner_dim", "depth", "mid_depth", "fc_dim", "num_heads", "dropout",
             "max_relative_position", "masking_ratio", "causal")


def build(vfr: dict, feats_dim: int, attention: str = "sdpa") -> VectorFieldRegressor:
    return VectorFieldRegressor(**{k: vfr[k] for k in SPEC_KEYS}, feats_dim=feats_dim, attention=attention)


def tiny(causal=False, dropout=0.0, attention="sdpa", depth=3, mid_depth=1) -> VectorFieldRegressor:
    torch.manual_seed(0)
    vfr = dict(state_size=4, state_res=[4, 6], inner_dim=32, depth=depth, mid_depth=mid_depth, fc_dim=48,
               num_heads=4, dropout=dropout, max_relative_position=3, masking_ratio=0.4, causal=causal)
    return build(vfr, feats_dim=12, attention=attention)


def tiny_inputs(b=2, l=5, lf=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, l, 4, 4, 6, generator=g)
    t = torch.rand(b, l, generator=g)
    indices = torch.stack([torch.tensor([0, 4, 5, 6, 7]), torch.tensor([2, 3, 4, 5, 6])])[:b, :l]
    feats = torch.randn(b, lf, 12, 4, 6, generator=g)
    masks = (torch.rand(b, lf, 1, 4, 6, generator=g) < 0.5).float()
    return x, indices, t, feats, masks


@pytest.mark.parametrize("name", GOLDEN_SETS)
@pytest.mark.parametrize("attention", ["sdpa", "math"])
def test_golden_parity(golden_dir, name, attention):
    """The acceptance test: the original's regressor outputs from its checkpoint, with both attention paths."""
    config = Configuration(golden_dir / name / "config.yaml")["model"]
    io = torch.load(golden_dir / name / "io.pt", weights_only=True)
    state = select_prefix(torch.load(golden_dir / name / "model.pth", weights_only=True)["model"], "vector_field_regressor.")
    feats_dim = config["dino_arch"]["embed_dim"] * config["num_dino_layers"]
    regressor = build(config["vector_field_regressor"], feats_dim, attention)
    regressor.load_state_dict(state)  # the dead time_projection weights are accepted and dropped
    regressor.eval()
    with torch.no_grad():
        torch.manual_seed(int(io["seeds"][0]))
        out, _ = regressor(io["x"], io["indices"], io["t"], io["vf_feats"], io["vf_masks"], masking_ratio=0.0)
        torch.manual_seed(int(io["seeds"][1]))
        nomask, _ = regressor(io["x"], io["indices"], io["t"], io["vf_feats"], torch.zeros_like(io["vf_masks"]), masking_ratio=0.0)
        torch.manual_seed(int(io["seeds"][2]))
        assert torch.equal(torch.rand(2, 64), io["reg_masked_noise"])  # the masking noise is the first draw
        torch.manual_seed(int(io["seeds"][2]))
        masked, selected = regressor(io["x"], io["indices"], io["t"], io["vf_feats"], io["vf_masks"])
    assert (out - io["vf_out"]).abs().max() <= TOLERANCE
    assert (nomask - io["vf_out_nomask"]).abs().max() <= TOLERANCE
    assert (masked - io["reg_masked_out"]).abs().max() <= TOLERANCE
    assert torch.equal(selected, io["reg_masked_selected"])


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("ratio", [0.0, 0.4])
def test_fused_and_math_attention_agree(causal, ratio):
    fused, plain = tiny(causal=causal, attention="sdpa").eval(), tiny(causal=causal, attention="math").eval()
    plain.load_state_dict(fused.state_dict())
    inputs = tiny_inputs()
    with torch.no_grad():
        a, mask_a = fused(*inputs, masking_ratio=ratio, generator=torch.Generator().manual_seed(3))
        b, mask_b = plain(*inputs, masking_ratio=ratio, generator=torch.Generator().manual_seed(3))
    assert torch.equal(mask_a, mask_b)
    assert (a - b).abs().max() < 1e-5
    # and the switch works in place
    set_attention_backend(plain, "sdpa")
    with torch.no_grad():
        c, _ = plain(*inputs, masking_ratio=ratio, generator=torch.Generator().manual_seed(3))
    assert torch.equal(c, a)


def test_fused_and_math_gradients_agree():
    fused, plain = tiny(attention="sdpa"), tiny(attention="math")
    plain.load_state_dict(fused.state_dict())
    for net in (fused, plain):
        out, mask = net(*tiny_inputs(), generator=torch.Generator().manual_seed(5))
        (out * mask).square().mean().backward()
    for (name, p), q in zip(fused.named_parameters(), plain.parameters()):
        assert (p.grad - q.grad).abs().max() < 1e-5, name


@pytest.mark.parametrize("attention", ["sdpa", "math"])
def test_cross_layer_is_torchs_pre_norm_decoder_layer(attention):
    """CrossAttentionLayer loads a TransformerDecoderLayer(norm_first=True) state dict both ways (same keys, strict)
    and computes the same outputs and gradients."""
    torch.manual_seed(0)
    reference = torch.nn.TransformerDecoderLayer(d_model=32, nhead=4, dim_feedforward=48, dropout=0.0,
                                                 norm_first=True, batch_first=True)
    ours = CrossAttentionLayer(32, 4, 48, dropout=0.0, backend=attention)
    assert sorted(ours.state_dict()) == sorted(reference.state_dict())
    ours.load_state_dict(reference.state_dict())
    reference.load_state_dict(ours.state_dict())
    g = torch.Generator().manual_seed(1)
    x, memory = torch.randn(6, 5, 32, generator=g), torch.randn(6, 7, 32, generator=g)
    for net in (reference, ours):
        net.train()
        out = net(x, memory)
        (out.square() * torch.linspace(0, 1, 32)).mean().backward()
    assert (ours(x, memory) - reference(x, memory)).abs().max() < 1e-5
    for (name, p), q in zip(ours.named_parameters(), [dict(reference.named_parameters())[n] for n, _ in ours.named_parameters()]):
        assert (p.grad - q.grad).abs().max() < 1e-5, name
    ours.eval(), reference.eval()
    with torch.no_grad():
        assert (ours(x, memory) - reference(x, memory)).abs().max() < 1e-5


def test_cross_layer_dropout_only_in_training():
    layer = CrossAttentionLayer(16, 2, 24, dropout=0.5)
    x, memory = torch.randn(2, 3, 16), torch.randn(2, 4, 16)
    torch.manual_seed(0)
    a = layer(x, memory)
    torch.manual_seed(1)
    assert not torch.allclose(a, layer(x, memory))
    layer.eval()
    assert torch.equal(layer(x, memory), layer(x, memory))


def test_cpu_bf16_takes_the_math_path_and_matches_fp32():
    """On the CPU under bf16 autocast "sdpa" runs the math path (torch's bf16 CPU flash kernel is the slow one);
    the regressor's output then stays within bf16 rounding of its fp32 output."""
    x = torch.zeros(2, 3)
    assert use_fused("sdpa", x) and not use_fused("math", x) and not use_fused("sdpa", x.bfloat16())
    net = tiny(depth=3, mid_depth=3).eval()
    inputs = tiny_inputs()
    with torch.no_grad():
        full, _ = net(*inputs, masking_ratio=0.0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low, _ = net(*inputs, masking_ratio=0.0)
    assert low.dtype == torch.float32 or low.dtype == torch.bfloat16
    error = (low.float() - full).abs().max() / full.abs().max()
    assert 0 < error < 0.05, error


def test_causal_mask_blocks_future_frames():
    """With causal attention, changing the last frame does not change earlier frames' outputs; without, it does."""
    for causal in (True, False):
        net = tiny(causal=causal, depth=2, mid_depth=0).eval()
        x, indices, t, feats, masks = tiny_inputs()
        x2 = x.clone()
        x2[:, -1] += 1.0
        with torch.no_grad():
            a, _ = net(x, indices, t, feats, masks, masking_ratio=0.0)
            b, _ = net(x2, indices, t, feats, masks, masking_ratio=0.0)
        changed = (a[:, :-1] - b[:, :-1]).abs().max()
        assert (changed < 1e-6) if causal else (changed > 1e-3)


def test_random_masking_keeps_int_n_times_one_minus_ratio_shared_across_frames():
    ids_keep, ids_restore, kept = random_masking(3, 256, int(256 * (1 - 0.4)), torch.device("cpu"),
                                                 torch.Generator().manual_seed(0))
    assert ids_keep.shape == (3, 153) and kept.sum(1).tolist() == [153.0] * 3
    assert torch.equal(torch.gather(torch.arange(256).expand(3, -1), 1, ids_keep).sort(1).values,
                       kept.nonzero()[:, 1].reshape(3, 153))
    net = tiny().eval()
    with torch.no_grad():
        _, mask = net(*tiny_inputs(), generator=torch.Generator().manual_seed(1))
    assert mask.shape == (2, 5, 1, 4, 6)
    assert (mask.sum(dim=(2, 3, 4)) == int(24 * 0.6)).all()
    assert (mask == mask[:, :1]).all()  # the same tokens in every frame


def test_dropped_tokens_do_not_influence_kept_outputs():
    """Dropped tokens' latents never enter the network: changing them changes nothing but their zero-filled cells."""
    net = tiny().eval()
    x, indices, t, feats, masks = tiny_inputs()
    with torch.no_grad():
        a, mask = net(x, indices, t, feats, masks, generator=torch.Generator().manual_seed(2))
        x2 = x + (1 - mask) * 5.0
        b, _ = net(x2, indices, t, feats, masks, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)


def test_controls_only_matter_where_revealed():
    net = tiny().eval()
    x, indices, t, feats, masks = tiny_inputs()
    with torch.no_grad():
        a, _ = net(x, indices, t, feats, masks, masking_ratio=0.0)
        b, _ = net(x, indices, t, feats + (1 - masks) * 3.0, masks, masking_ratio=0.0)
        c, _ = net(x, indices, t, feats + masks * 3.0, masks, masking_ratio=0.0)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


def test_timestamp_embedding_closed_form():
    t = torch.tensor([0.0, 0.25, 1.0])
    emb = timestamp_embedding(t, 6)
    freqs = [math.exp(-math.log(10000) * k / 3) for k in range(3)]
    expected = [[math.cos(200 * v * f) for f in freqs] + [math.sin(200 * v * f) for f in freqs] for v in t.tolist()]
    assert torch.allclose(emb, torch.tensor(expected), atol=1e-5)
    assert timestamp_embedding(t, 7).shape == (3, 7) and (timestamp_embedding(t, 7)[:, -1] == 0).all()


def test_position_encoding_layout():
    enc = PositionEncoding2D(8)
    pos = enc(3, 5)
    assert pos.shape == (15, 8)
    y, x = 2, 4
    assert torch.equal(pos[y * 5 + x], torch.cat([enc.col_embed.weight[x], enc.row_embed.weight[y]]))


def test_mid_blocks_are_central():
    assert mid_block_ids(9, 5) == [2, 3, 4, 5, 6]
    assert mid_block_ids(3, 1) == [1] and mid_block_ids(5, 3) == [1, 2, 3]
    net = tiny(depth=5, mid_depth=3)
    kinds = [type(block.cross).__name__ for block in net.main_blocks]
    assert kinds == ["PassThrough", "CrossAttentionLayer", "CrossAttentionLayer", "CrossAttentionLayer", "PassThrough"]


@pytest.mark.parametrize("name, feats_dim, expected", [("bair", 1536, 170_393_952), ("clevrer", 384, 169_477_344)])
def test_parameter_count_matches_spec_without_dead_time_projection(name, feats_dim, expected):
    """Spec §2.2: 170,591,840 / 169,675,232 parameters including the unused time_projection (197,888)."""
    vfr = Configuration(ROOT / "configs" / f"{name}.yaml")["model"]["vector_field_regressor"]
    with torch.device("meta"):
        net = build(vfr, feats_dim)
    assert sum(p.numel() for p in net.parameters()) == expected
    assert len(net.state_dict()) == 295 - 4  # the original's 295 keys minus time_projection.{0,2}.{weight,bias}


@pytest.mark.parametrize("causal", [False, True])
def test_cpu_bf16_temporal_attention_matches_the_formula(causal):
    """Under CPU bf16 autocast "sdpa" takes the folded explicit path (relative term as extra channels); it computes
    the original's formula (backend "math") up to bf16 rounding, forward and backward."""
    from model.attention import RelativeAttention

    torch.manual_seed(0)
    folded, formula = RelativeAttention(32, 4, 2, causal=causal), RelativeAttention(32, 4, 2, causal=causal, backend="math")
    formula.load_state_dict(folded.state_dict())
    x, time = torch.randn(2, 5, 6, 32), torch.randn(2, 5, 32)
    indices = torch.tensor([[0, 1, 2, 4, 7], [0, 2, 3, 5, 6]])
    outs, grads = [], []
    for net in (folded, formula):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x, time, indices)
        out.float().square().mean().backward()
        outs.append(out.float())
        grads.append(net.qkv.weight.grad)
    scale = outs[1].abs().max()
    assert 0 < (outs[0] - outs[1]).abs().max() / scale < 2e-2
    assert (grads[0] - grads[1]).abs().max() / grads[1].abs().max() < 3e-2
