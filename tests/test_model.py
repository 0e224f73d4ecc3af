"""Model: golden parity from the original's files, load_from_ckpt variants, training-step semantics."""
import copy

import pytest
import torch

from lutils.configuration import Configuration
from model.attention import set_attention_backend
from model.checkpoint import CheckpointError, save_file
from model.flow_matching import masked_loss
from model.model import Model

GOLDEN_SETS = ("tiny_ours", "tiny_ldm")
TOLERANCE = 1e-5


class NotATensor:
    """A custom object: unpickling it needs code, so weights_only loading refuses files that hold one."""

    def __init__(self):
        self.note = "custom"


def golden_config(golden_dir, name, *overrides):
    folder = golden_dir / name
    return Configuration(folder / "config.yaml", [f"model.autoencoder.ckpt_path={folder / 'ae.pth'}", *overrides])


@pytest.fixture(scope="module")
def golden_models(golden_dir):
    models = {}
    for name in GOLDEN_SETS:
        model = Model(golden_config(golden_dir, name)["model"])
        model.load_from_ckpt(golden_dir / name / "model.pth")
        models[name] = model.eval()
    return models


@pytest.fixture
def tiny_model(golden_dir):
    """The tiny_ldm architecture with random frozen parts (no files needed)."""
    torch.manual_seed(0)
    config = Configuration(golden_dir / "tiny_ldm" / "config.yaml",
                           ["model.autoencoder.ckpt_path=", "+model.autoencoder.random_init=true", "+model.dino_random_init=true"])
    return Model(config["model"])


@pytest.mark.parametrize("name", GOLDEN_SETS)
@pytest.mark.parametrize("attention", ["sdpa", "math"])
def test_golden_parity(golden_models, golden_dir, name, attention):
    """The acceptance test: the recorded calls of the original reproduce io.pt within 1e-5, with both attention paths."""
    model = golden_models[name]
    set_attention_backend(model, attention)
    io = torch.load(golden_dir / name / "io.pt", weights_only=True)
    with torch.no_grad():
        results = {
            "encode_out": model.encode(io["frames"]),
            "decode_out": model.decode(io["encode_out"]),
            "feats": model.get_features(io["frames"]),
        }
        torch.manual_seed(int(io["seeds"][0]))
        results["vf_out"] = model.predict_vector_field(io["x"], io["t"], io["indices"], io["vf_feats"], io["vf_masks"])
        torch.manual_seed(int(io["seeds"][1]))
        results["vf_out_nomask"] = model.predict_vector_field(io["x"], io["t"], io["indices"], io["vf_feats"],
                                                              torch.zeros_like(io["vf_masks"]))
        torch.manual_seed(int(io["seeds"][2]))
        masked, selected = model.vector_field_regressor(io["x"], io["indices"], io["t"], io["vf_feats"], io["vf_masks"])
        results["reg_masked_out"] = masked
    set_attention_backend(model, "sdpa")
    for key, value in results.items():
        assert (value - io[key]).abs().max() <= TOLERANCE, key
    assert torch.equal(selected, io["reg_masked_selected"])
    assert model.feats_dim == io["feats"].shape[2]


def test_model_builds_without_ae_file_and_checkpoint_supplies_everything(golden_dir, tmp_path, monkeypatch):
    """Building needs no AE file when a full checkpoint follows; using the AE before that says how to fix it."""
    monkeypatch.chdir(tmp_path)  # ckpt_path 'ae.pth' (relative, as in the file) does not exist here
    model = Model(Configuration(golden_dir / "tiny_ours" / "config.yaml")["model"]).eval()
    io = torch.load(golden_dir / "tiny_ours" / "io.pt", weights_only=True)
    with pytest.raises(CheckpointError, match="ckpt_path"):
        model.encode(io["frames"])
    with pytest.raises(CheckpointError, match="dino_weights"):
        model.get_features(io["frames"])
    model.load_from_ckpt(golden_dir / "tiny_ours" / "model.pth")
    with torch.no_grad():
        assert (model.encode(io["frames"]) - io["encode_out"]).abs().max() <= TOLERANCE


def test_config_is_not_modified(golden_dir):
    config = golden_config(golden_dir, "tiny_ldm")
    before = config.to_dict()
    plain = copy.deepcopy(before["model"])
    Model(config["model"])
    Model(plain)
    assert config.to_dict() == before
    assert plain == before["model"] and "num_frames" not in plain["vector_field_regressor"]


@pytest.mark.parametrize("variant", ["wrapped", "bare", "ddp", "legacy_name", "no_frozen_parts"])
def test_load_from_ckpt_variants(golden_dir, tmp_path, variant):
    state = torch.load(golden_dir / "tiny_ldm" / "model.pth", weights_only=True)["model"]
    assert any(k.startswith("vector_field_regressor.time_projection") for k in state)  # dead weights in the file
    if variant == "ddp":
        state = {f"module.{k}": v for k, v in state.items()}
    if variant == "legacy_name":
        state = {k.replace("feats_project_in", "dino_project_in"): v for k, v in state.items()}
    if variant == "no_frozen_parts":
        state = {k: v for k, v in state.items() if k.startswith("vector_field_regressor.")}
    path = save_file(state if variant == "bare" else {"model": state}, tmp_path / "ckpt.pth")
    config = Configuration(golden_dir / "tiny_ldm" / "config.yaml",
                           ["model.autoencoder.ckpt_path=", "+model.autoencoder.random_init=true", "+model.dino_random_init=true"])
    model = Model(config["model"]).load_from_ckpt(path).eval()
    reference = torch.load(golden_dir / "tiny_ldm" / "model.pth", weights_only=True)["model"]
    loaded = model.state_dict()
    for key, value in reference.items():
        if "time_projection" in key or (variant == "no_frozen_parts" and not key.startswith("vector_field_regressor.")):
            continue
        assert torch.equal(loaded[key], value), key
    assert model.ae.weights.loaded == (variant != "no_frozen_parts")


def test_load_from_ckpt_mismatch_lists_keys(tiny_model, golden_dir, tmp_path):
    state = dict(torch.load(golden_dir / "tiny_ldm" / "model.pth", weights_only=True)["model"])
    state.pop("vector_field_regressor.msk_token")
    state["vector_field_regressor.extra.weight"] = torch.zeros(1)
    state["vector_field_regressor.project_in.0.bias"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as error:
        tiny_model.load_from_ckpt(save_file({"model": state}, tmp_path / "bad.pth"))
    message = str(error.value)
    assert "vector_field_regressor.msk_token" in message and "vector_field_regressor.extra.weight" in message
    assert "project_in.0.bias" in message and "bad.pth" in message


def test_files_needing_code_are_refused_unless_trusted(tiny_model, golden_dir, tmp_path):
    state = torch.load(golden_dir / "tiny_ldm" / "model.pth", weights_only=True)["model"]
    path = tmp_path / "pickled.pth"
    torch.save({"model": state, "extra": NotATensor()}, path)
    with pytest.raises(CheckpointError, match="trust"):
        tiny_model.load_from_ckpt(path)
    tiny_model.load_from_ckpt(path, trust=True)
    assert torch.equal(tiny_model.vector_field_regressor.msk_token, state["vector_field_regressor.msk_token"])


def test_frame_index_sampling(tiny_model):
    indices = tiny_model.sample_frame_indices(4000, 16, generator=torch.Generator().manual_seed(0))
    context, reference, targets = indices[:, 0], indices[:, 1], indices[:, 2:]
    assert reference.min() == 1 and reference.max() == 12  # [Cc, O - T - 1]
    assert (context >= 0).all() and (context < reference).all()
    assert torch.equal(targets, reference[:, None] + torch.arange(1, 4))
    assert set(context[reference == 12].tolist()) == set(range(12))  # every earlier frame can be the context


def test_crop_features_and_allowed_region(tiny_model):
    frames = torch.rand(3, 3, 32, 32) * 2 - 1
    tiny_model.no_scale_inv = True  # identity crop: features of the frames themselves, everything allowed
    feats, allowed = tiny_model.control_features(frames, torch.Generator().manual_seed(0))
    assert torch.equal(allowed, torch.ones_like(allowed))
    assert torch.allclose(feats, tiny_model.get_features(frames), atol=1e-6)
    tiny_model.no_scale_inv = False
    feats, allowed = tiny_model.control_features(frames, torch.Generator().manual_seed(0))
    crops = tiny_model.random_crops(3, "cpu", torch.Generator().manual_seed(0))
    coords = (torch.arange(8) + 0.5) / 8 * 2 - 1  # cell centres in normalised coordinates
    for i, (s_x, s_y, t_x, t_y) in enumerate(crops.tolist()):
        inside_x = ((coords - t_x) / s_x).abs() <= 1
        inside_y = ((coords - t_y) / s_y).abs() <= 1
        expected = (inside_y[:, None] & inside_x[None, :]).float()
        assert torch.equal(allowed[i, 0], expected)  # the cells the crop window covers
        assert (feats[i][:, expected == 0] == 0).all()  # features pasted back only there


def test_inverse_crop_grid_is_fp32_under_bf16_autocast(tiny_model, monkeypatch):
    """bf16 features (autocast) land on exactly the cells fp32 features land on: the grid is built in fp32."""
    cell_ids = torch.arange(64, dtype=torch.float32).reshape(1, 1, 8, 8) + 1  # exact in bf16; 0 means "no feature"
    monkeypatch.setattr(tiny_model, "get_features", lambda x: cell_ids.expand(x.shape[0], 1, 8, 8).to(
        torch.bfloat16 if torch.is_autocast_enabled("cpu") else torch.float32))
    frames = torch.zeros(512, 3, 32, 32)
    feats32, allowed32 = tiny_model.control_features(frames, torch.Generator().manual_seed(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats16, allowed16 = tiny_model.control_features(frames, torch.Generator().manual_seed(3))
    assert feats16.dtype == torch.bfloat16
    assert torch.equal(feats16.float(), feats32) and torch.equal(allowed16.float(), allowed32)


def test_condition_dropout(tiny_model):
    inputs = torch.randn(64, 5, 4, 8, 8)
    tiny_model.no_context_p, tiny_model.no_reference_p = 0.0, 0.0
    assert torch.equal(tiny_model.drop_conditioning(inputs), inputs)
    tiny_model.no_context_p, tiny_model.no_reference_p = 1.0, 0.0
    out = tiny_model.drop_conditioning(inputs)
    assert not torch.isclose(out[:, 0], inputs[:, 0]).all(dim=(1, 2, 3)).any()
    assert torch.equal(out[:, 1:], inputs[:, 1:])
    tiny_model.no_context_p, tiny_model.no_reference_p = 1.0, 1.0
    out = tiny_model.drop_conditioning(inputs)
    assert not torch.isclose(out[:, :2], inputs[:, :2]).all(dim=(2, 3, 4)).any() and torch.equal(out[:, 2:], inputs[:, 2:])
    tiny_model.no_context_p, tiny_model.no_reference_p = 0.5, 0.0
    dropped = ~torch.isclose(tiny_model.drop_conditioning(inputs, torch.Generator().manual_seed(1))[:, 0], inputs[:, 0]).all(dim=(1, 2, 3))
    assert 0 < dropped.sum() < 64  # one coin per sample, not per batch


def test_training_forward_is_seeded_and_trains_only_the_regressor(tiny_model):
    tiny_model.train()
    observations = torch.rand(2, 16, 3, 32, 32) * 2 - 1
    a = tiny_model(observations, generator=torch.Generator().manual_seed(7))
    b = tiny_model(observations, generator=torch.Generator().manual_seed(7))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert a["reconstructed_vectors"].shape == (2, 3, 4, 8, 8) and a["selected_masks"].shape == (2, 3, 1, 8, 8)
    assert 0 < a["num_controls"] < 64
    assert not tiny_model.ae.training and not tiny_model.dino.training  # frozen parts stay in eval mode
    masked_loss(a["reconstructed_vectors"], a["target_vectors"], a["selected_masks"]).backward()
    with_grad = {name.split(".")[0] for name, p in tiny_model.named_parameters() if p.grad is not None}
    assert with_grad == {"vector_field_regressor"}


@pytest.mark.parametrize("name, keys, numel, sections", [
    ("bair", 813, 326_765_691, {"ae": 343, "dino": 175, "vector_field_regressor": 295}),
    ("clevrer", 591, 199_061_962, {"ae": 121, "dino": 175, "vector_field_regressor": 295}),
])
def test_state_dict_layout_matches_the_original(name, keys, numel, sections):
    """Spec §2.1 counts, minus the 4 dead time_projection keys (197,888 elements) that we drop."""
    from tests.conftest import ROOT

    with torch.device("meta"):
        model = Model(Configuration(ROOT / "configs" / f"{name}.yaml")["model"])
    state = model.state_dict()
    assert len(state) == keys - 4
    assert sum(v.numel() for v in state.values()) == numel - 197_888
    for section, count in sections.items():
        expected = count - 4 if section == "vector_field_regressor" else count
        assert sum(1 for k in state if k.startswith(section + ".")) == expected


def test_latent_scale_scales_encode_and_undoes_it_in_decode(tiny_model, golden_dir):
    """model.latent_scale multiplies encoder latents and divides them back before decoding; 1 is the original."""
    from lutils.configuration import Configuration

    config = Configuration(golden_dir / "tiny_ldm" / "config.yaml",
                           ["model.autoencoder.ckpt_path=", "+model.autoencoder.random_init=true",
                            "+model.dino_random_init=true", "+model.latent_scale=4.0"])
    scaled = Model(config["model"]).eval()
    scaled.load_state_dict(tiny_model.state_dict())  # a scale is configuration, not a weight: same keys
    tiny_model.eval()
    frames = torch.rand(1, 2, 3, 32, 32) * 2 - 1
    assert torch.allclose(scaled.encode(frames), 4.0 * tiny_model.encode(frames))
    assert torch.allclose(scaled.decode(scaled.encode(frames)), tiny_model.decode(tiny_model.encode(frames)), atol=1e-6)
    with pytest.raises(ValueError, match="latent_scale"):
        Model(Configuration.from_dict(config.to_dict(), ["model.latent_scale=0"])["model"])


def test_inconsistent_config_names_the_key_to_fix(golden_dir):
    overrides = ["model.autoencoder.ckpt_path=", "+model.autoencoder.random_init=true", "+model.dino_random_init=true"]
    config = Configuration(golden_dir / "tiny_ldm" / "config.yaml", [*overrides, "model.vector_field_regressor.state_size=8"])
    with pytest.raises(ValueError, match=r"state_size is 8.*4 latent channels: set state_size to 4"):
        Model(config["model"])
    model = Model(Configuration(golden_dir / "tiny_ldm" / "config.yaml", overrides)["model"])
    model.check_frame_size(32)  # tiny_ldm: 32 px, downsampling 4 -> the 8 x 8 state_res
    with pytest.raises(ValueError, match=r"data.crop_size is 64.*state_res is \[8, 8\]: set state_res to \[16, 16\]"):
        model.check_frame_size(64)
    with pytest.raises(ValueError, match="crop_size to 32"):
        model.check_frame_size(30)


def test_export_for_original_round_trips_through_the_key_surgery(golden_dir, tmp_path):
    from model.checkpoint import cage_state_dict, export_for_original

    state = torch.load(golden_dir / "tiny_ldm" / "model.pth", weights_only=True)["model"]
    ours = {k: v for k, v in state.items() if "time_projection" not in k}
    shadow = {"vector_field_regressor.msk_token": torch.full_like(ours["vector_field_regressor.msk_token"], 3.0)}
    exported = export_for_original(ours, inner_dim=64, ema=shadow)["model"]
    assert {k: tuple(v.shape) for k, v in exported.items()} == {k: tuple(v.shape) for k, v in state.items()}
    back, updates = cage_state_dict({"model": exported}, "exported.pth")
    assert updates is None and set(back) == set(ours)
    assert torch.equal(back["vector_field_regressor.msk_token"], shadow["vector_field_regressor.msk_token"])
    with_ema, updates = cage_state_dict({"model": ours, "ema": {"shadow": shadow, "num_updates": 7}}, "run.pth")
    assert updates == 7 and torch.equal(with_ema["vector_field_regressor.msk_token"], shadow["vector_field_regressor.msk_token"])
    raw, updates = cage_state_dict({"model": ours, "ema": {"shadow": shadow, "num_updates": 7}}, "run.pth", use_ema=False)
    assert updates is None and torch.equal(raw["vector_field_regressor.msk_token"], ours["vector_field_regressor.msk_token"])


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path):
    from model.checkpoint import load_file

    (tmp_path / "notes.pth").write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pth: not a readable PyTorch checkpoint"):
        load_file(tmp_path / "notes.pth")
