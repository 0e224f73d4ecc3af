"""lutils.configuration and lutils.io: shipped configs (spec section 1.3), access styles, overrides, save/reload, atomic writes."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from lutils.configuration import Configuration, ConfigurationError
from lutils.io import atomic_path, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

# --------------------------------------------------------------------------------------------------------------------
# Expected values, transcribed from spec section 1.3 (dotted key -> value; the Python type is part of the expectation).
# --------------------------------------------------------------------------------------------------------------------
_COMMON = {
    "data.frames_per_sample": 16,
    "data.random_horizontal_flip": False,
    "model.sigma": 1e-7,
    "model.num_target_frames": 3,
    "model.num_context_frames": 1,
    "model.no_context_p": 0.5,
    "model.no_reference_p": 0.2,
    "model.feats_select_prob": 0.1,
    "model.feature_backbone": "dino",
    "model.vector_field_regressor.state_res": [16, 16],
    "model.vector_field_regressor.inner_dim": 768,
    "model.vector_field_regressor.depth": 9,
    "model.vector_field_regressor.mid_depth": 5,
    "model.vector_field_regressor.fc_dim": 3072,
    "model.vector_field_regressor.num_heads": 8,
    "model.vector_field_regressor.dropout": 0.05,
    "model.vector_field_regressor.max_relative_position": 8,
    "model.vector_field_regressor.masking_ratio": 0.4,
    "model.vector_field_regressor.causal": False,
    "training.batching.batch_size": 16,
    "training.batching.num_workers": 7,
    "training.optimizer.learning_rate": 1e-4,
    "training.optimizer.weight_decay": 5e-6,
    "training.optimizer.num_warmup_steps": 5000,
    "training.optimizer.num_training_steps": 100000,
    "training.num_observations": 16,
    "training.condition_frames": 1,
    "training.frames_to_generate": 15,
}

EXPECTED = {
    "bair": {
        **_COMMON,
        "data.data_root": "./data/BAIR_h5",
        "data.input_size": 256,
        "data.crop_size": 256,
        "data.skip_frames": 0,
        "data.aug": False,
        "data.albumentations": True,
        "model.dino_version": "dinov2_vitb14",
        "model.num_dino_layers": 2,
        "model.vector_field_regressor.state_size": 8,
        "model.autoencoder.type": "ldm-vq",
        "model.autoencoder.config": "f16",
        "model.autoencoder.ckpt_path": "./ae_checkpoints/bair.pth",
    },
    "clevrer": {
        **_COMMON,
        "data.data_root": "./data/CLEVRER_h5",
        "data.input_size": 128,
        "data.crop_size": 128,
        "data.skip_frames": 4,
        "data.aug": True,
        "data.albumentations": False,
        "model.dino_version": "dinov2_vits14",
        "model.num_dino_layers": 1,
        "model.vector_field_regressor.state_size": 4,
        "model.autoencoder.type": "ours",
        "model.autoencoder.ckpt_path": "./ae_checkpoints/clevrer.pth",
        "model.autoencoder.encoder.in_channels": 3,
        "model.autoencoder.encoder.out_channels": 4,
        "model.autoencoder.vector_quantizer.num_embeddings": 8192,
        "model.autoencoder.vector_quantizer.embedding_dimension": 4,
        "model.autoencoder.decoder.in_channels": 4,
        "model.autoencoder.decoder.out_channels": 3,
        "training.alpha_start": 0.999,
    },
    "epic": {
        **_COMMON,
        "data.data_root": "./data/EPIC_h5",
        "data.input_size": 256,
        "data.crop_size": 256,
        "data.skip_frames": 4,
        "data.aug": False,
        "data.albumentations": False,
        "data.frames_key": "videos",
        "model.dino_version": "dinov2_vitb14",
        "model.num_dino_layers": 2,
        "model.vector_field_regressor.state_size": 8,
        "model.autoencoder.type": "ldm-vq",
        "model.autoencoder.config": "f16",
        "model.autoencoder.ckpt_path": "./ae_checkpoints/epic.ckpt",
    },
}
# Spec 1.3 "=> F": feature dim of the control backbone = DINOv2 embed dim x num_dino_layers.
EXPECTED_F = {"bair": 1536, "clevrer": 384, "epic": 1536}
DINO_EMBED_DIM = {"dinov2_vits14": 384, "dinov2_vitb14": 768, "dinov2_vitl14": 1024, "dinov2_vitg14": 1536}

# Every key the original code reads (spec section 1.2), as dotted leaf paths.
KNOWN_KEYS = {
    "name",
    *(f"data.{k}" for k in ("data_root", "input_size", "crop_size", "frames_per_sample", "skip_frames",
                            "random_horizontal_flip", "aug", "albumentations", "frames_key")),
    *(f"model.{k}" for k in ("sigma", "num_target_frames", "num_context_frames", "no_context_p", "no_reference_p",
                             "feats_select_prob", "feature_backbone", "num_dino_layers", "dino_version", "mae_arch",
                             "mae_ckpt", "clip_arch", "no_scale_inv", "same_t")),
    *(f"model.vector_field_regressor.{k}" for k in ("state_size", "state_res", "inner_dim", "depth", "mid_depth",
                                                    "fc_dim", "num_heads", "dropout", "max_relative_position",
                                                    "masking_ratio", "causal", "num_frames", "feats_dim")),
    *(f"model.autoencoder.{k}" for k in ("type", "config", "ckpt_path", "encoder.in_channels", "encoder.out_channels",
                                         "decoder.in_channels", "decoder.out_channels",
                                         "vector_quantizer.num_embeddings", "vector_quantizer.embedding_dimension")),
    "training.batching.batch_size", "training.batching.num_workers",
    *(f"training.optimizer.{k}" for k in ("learning_rate", "weight_decay", "num_warmup_steps", "num_training_steps")),
    "training.num_observations", "training.loss_weights.flow_matching_loss",
    "training.condition_frames", "training.frames_to_generate", "training.alpha_start",
}


def leaf_paths(node, prefix: str = "") -> dict:
    """{dotted path: value} for every non-mapping value of a plain nested dict (lists are leaves)."""
    out = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(leaf_paths(value, path + "."))
        else:
            out[path] = value
    return out


def same_typed(actual, expected) -> bool:
    """Equality that also tells int from bool from float from str (a YAML type slip is a real config error)."""
    if isinstance(expected, list):
        return isinstance(actual, list) and len(actual) == len(expected) and all(
            same_typed(a, e) for a, e in zip(actual, expected))
    return type(actual) is type(expected) and actual == expected


def loose(path: Path, overrides=None) -> Configuration:
    """A file outside the config schema (the generic loading, access and override mechanics)."""
    return Configuration(path, overrides, validate=False)


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def small_yaml(tmp_path) -> Path:
    return write_yaml(tmp_path / "small.yaml", (
        "name: small\n"
        "model:\n"
        "  sigma: 0.0000001\n"
        "  depth: 2\n"
        "  causal: false\n"
        "  inner:\n"
        "    res: [4, 8]\n"
        "    width: 16\n"
        "training:\n"
        "  lr: 0.0001\n"
    ))


# --------------------------------------------------------------------------------------------------------------------
# Shipped configs
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_config_values_match_spec(name):
    cfg = Configuration(CONFIGS / f"{name}.yaml")
    leaves = leaf_paths(cfg.to_dict())
    mismatches = {
        key: (leaves.get(key, "<missing>"), value)
        for key, value in EXPECTED[name].items()
        if key not in leaves or not same_typed(leaves[key], value)
    }
    assert not mismatches, f"{name}: (actual, spec) {mismatches}"
    # The same values through the dotted selector and item access (the path the training code takes).
    for key, value in EXPECTED[name].items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert node == value, key
        assert cfg.select(key) == value, key


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_config_has_exactly_the_spec_keys(name):
    leaves = leaf_paths(Configuration(CONFIGS / f"{name}.yaml").to_dict())
    unknown = set(leaves) - KNOWN_KEYS
    assert not unknown, f"{name}: keys the code never reads (typos?): {sorted(unknown)}"
    extra = set(leaves) - set(EXPECTED[name]) - {"name", "training.loss_weights.flow_matching_loss"}
    assert not extra, f"{name}: keys not in spec 1.3 for this config: {sorted(extra)}"
    # Keys marked '-' in the table must be absent; derived keys are never shipped.
    if name != "epic":
        assert "data.frames_key" not in leaves
    if name != "clevrer":
        assert "training.alpha_start" not in leaves
    assert "model.vector_field_regressor.num_frames" not in leaves
    assert "model.vector_field_regressor.feats_dim" not in leaves
    assert isinstance(leaves["name"], str) and leaves["name"]
    weight = leaves["training.loss_weights.flow_matching_loss"]
    assert type(weight) is float and weight > 0


def test_schema_has_every_key_of_the_spec():
    """Spec section 1.2's key table is covered by lutils/schema.py (which adds our optional keys)."""
    from lutils import schema

    assert [key for key in sorted(KNOWN_KEYS) if schema.locate("cage", key) != "key"] == []


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_config_feature_dim(name):
    cfg = Configuration(CONFIGS / f"{name}.yaml")
    feats = DINO_EMBED_DIM[cfg.model.dino_version] * cfg.model.num_dino_layers
    assert feats == EXPECTED_F[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_to_dict_equals_pyyaml_and_file_untouched(name, tmp_path):
    src = CONFIGS / f"{name}.yaml"
    before_bytes, before_mtime = src.read_bytes(), src.stat().st_mtime_ns
    plain = Configuration(src).to_dict()
    with open(src) as f:
        reference = yaml.safe_load(f)  # the shipped files use plain decimals, so PyYAML 1.1 reads floats too
    assert plain == reference
    assert leaf_paths(plain).keys() == leaf_paths(reference).keys()
    for key, value in leaf_paths(reference).items():
        assert same_typed(leaf_paths(plain)[key], value), key
    # Overrides and saving never write back to the source file.
    cfg = Configuration(src, ["model.sigma=0.5", "+model.vector_field_regressor.num_frames=5"])
    cfg.save(tmp_path / "out.yaml")
    assert src.read_bytes() == before_bytes
    assert src.stat().st_mtime_ns == before_mtime
    assert Configuration(src).to_dict() == reference


# --------------------------------------------------------------------------------------------------------------------
# Access styles
# --------------------------------------------------------------------------------------------------------------------
def test_access_styles_at_every_level(small_yaml):
    cfg = loose(small_yaml)
    # item, attribute, get and select agree at depth 1, 2 and 3
    assert cfg["name"] == cfg.name == cfg.get("name") == cfg.select("name") == "small"
    assert cfg["model"]["depth"] == cfg.model.depth == cfg.get("model").get("depth") == cfg.select("model.depth") == 2
    assert cfg["model"]["inner"]["width"] == cfg.model.inner.width == 16
    assert cfg.get("model").get("inner").get("width") == cfg.select("model.inner.width") == 16
    assert cfg["model"].inner["res"][1] == cfg.model["inner"].res[1] == cfg.select("model.inner.res.1") == 8
    assert list(cfg.model.inner.res) == [4, 8]
    # defaults for missing keys, at every level
    assert cfg.get("missing", 7) == 7
    assert cfg.model.get("missing", "x") == "x"
    assert cfg["model"]["inner"].get("missing", 1.5) == 1.5
    assert cfg.get("missing") is None and cfg.model.inner.get("missing") is None
    assert cfg.select("model.inner.missing", default=3) == 3
    assert cfg.select("nope.deeper") is None
    # present keys ignore the default
    assert cfg.get("name", "other") == "small" and cfg.model.get("depth", 99) == 2


def test_missing_keys_raise_the_right_errors(small_yaml):
    cfg = loose(small_yaml)
    with pytest.raises(KeyError, match="nope"):
        cfg["nope"]
    with pytest.raises(AttributeError, match="nope"):
        cfg.nope
    with pytest.raises(KeyError, match="nope"):
        cfg["model"]["nope"]
    with pytest.raises(AttributeError, match="nope"):
        cfg.model.nope
    assert not hasattr(cfg, "nope") and not hasattr(cfg.model, "nope")
    assert hasattr(cfg, "model") and hasattr(cfg.model.inner, "width")


def test_mapping_protocol(small_yaml):
    cfg = loose(small_yaml)
    assert list(cfg) == ["name", "model", "training"]  # file order kept
    assert len(cfg) == 3
    assert "model" in cfg and "nope" not in cfg
    assert "inner" in cfg.model and "nope" not in cfg.model
    assert dict(cfg.items()).keys() == {"name", "model", "training"}


def test_scientific_notation_loads_as_float(tmp_path):
    path = write_yaml(tmp_path / "sci.yaml", "a: 1e-7\nb:\n  c: 5e-6\n  d: [1e-3, 2E+2]\ne: 0.0000001\nf: 5.0e-6\n")
    cfg = loose(path)
    values = {"a": 1e-7, "b.c": 5e-6, "b.d.0": 1e-3, "b.d.1": 200.0, "e": 1e-7, "f": 5e-6}
    for key, expected in values.items():
        value = cfg.select(key)
        assert type(value) is float, (key, value)
        assert value == expected, key
    assert type(cfg.to_dict()["a"]) is float
    assert type(cfg.a) is float and type(cfg.b.c) is float


def test_from_dict_matches_file_and_does_not_alias(small_yaml):
    with open(small_yaml) as f:
        data = yaml.safe_load(f)
    snapshot = yaml.safe_load(yaml.safe_dump(data))
    cfg = Configuration.from_dict(data, ["model.depth=5", "+model.inner.extra=1"], validate=False)
    assert cfg.model.depth == 5 and cfg.model.inner.extra == 1
    assert data == snapshot  # the input mapping is not modified
    assert Configuration.from_dict(data, validate=False).to_dict() == loose(small_yaml).to_dict()


# --------------------------------------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "override, key, expected",
    [
        ("model.depth=12", "model.depth", 12),
        ("model.sigma=0.25", "model.sigma", 0.25),
        ("model.sigma=1e-6", "model.sigma", 1e-6),
        ("model.causal=true", "model.causal", True),
        ("model.causal=False", "model.causal", False),
        ("model.inner.res=[2,3,5]", "model.inner.res", [2, 3, 5]),
        ("model.inner.width=64", "model.inner.width", 64),
        ("name=other", "name", "other"),
        ("name='12'", "name", "12"),
        ("training.lr=3", "training.lr", 3),
        (" model.depth = 7", "model.depth", 7),
    ],
)
def test_override_sets_yaml_typed_value(small_yaml, override, key, expected):
    cfg = loose(small_yaml, [override])
    value = leaf_paths(cfg.to_dict())[key]
    assert same_typed(value, expected), (value, expected)
    assert cfg.select(key) == expected
    # Only that key changed.
    before = leaf_paths(loose(small_yaml).to_dict())
    after = leaf_paths(cfg.to_dict())
    assert {k for k in before if before[k] != after[k]} <= {key}


def test_overrides_apply_in_order_and_do_not_leak(small_yaml):
    cfg = loose(small_yaml, ["model.depth=3", "model.depth=4"])
    assert cfg.model.depth == 4
    assert loose(small_yaml).model.depth == 2
    assert cfg.overrides == ["model.depth=3", "model.depth=4"]


def test_plus_adds_new_keys_at_any_depth(small_yaml):
    cfg = loose(small_yaml, ["+seed=7", "+model.inner.new_flag=true", "+extra.deep.list=[1,2]",
                                     "+extra.deep.rate=1e-5", "+model.depth=3"])
    assert cfg.seed == 7
    assert cfg.model.inner.new_flag is True
    assert list(cfg.extra.deep.list) == [1, 2]
    assert type(cfg.select("extra.deep.rate")) is float and cfg.select("extra.deep.rate") == 1e-5
    assert cfg.model.depth == 3  # '+' on an existing key just sets it
    # existing siblings survive the additions
    assert cfg.model.inner.width == 16 and list(cfg.model.inner.res) == [4, 8]


@pytest.mark.parametrize("override", ["model.dpeth=3", "model.inner.widht=1", "seed=1", "model.inner.width.x=1"])
def test_override_of_missing_key_names_key_and_plus_hint(small_yaml, override):
    key = override.split("=")[0]
    with pytest.raises(ConfigurationError) as info:
        loose(small_yaml, [override])
    message = str(info.value)
    assert f"'{key}'" in message
    assert f"+{key}=" in message
    assert isinstance(info.value, ValueError)


def test_missing_key_error_suggests_close_match(small_yaml):
    with pytest.raises(ConfigurationError, match=r"model\.depth"):
        loose(small_yaml, ["model.dpeth=3"])


@pytest.mark.parametrize("override", ["model.depth", "model.depth:3", "", "=3", "+=3", "model..depth=1"])
def test_malformed_override_errors(small_yaml, override):
    with pytest.raises(ConfigurationError):
        loose(small_yaml, [override])


def test_override_of_list_element(small_yaml):
    """A dotted list index is accepted as an existing key, so it must set that element."""
    cfg = loose(small_yaml, ["model.inner.res.0=32"])
    assert list(cfg.model.inner.res) == [32, 8]


# --------------------------------------------------------------------------------------------------------------------
# Bad files
# --------------------------------------------------------------------------------------------------------------------
def test_nonexistent_file_errors(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigurationError, match="nope.yaml"):
        Configuration(missing)
    with pytest.raises(ConfigurationError):
        Configuration(tmp_path)  # a directory is not a config file


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "just a string\n", "42\n"], ids=["list", "string", "int"])
def test_top_level_must_be_mapping(tmp_path, text):
    path = write_yaml(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigurationError, match="bad.yaml"):
        Configuration(path)


def test_invalid_yaml_errors(tmp_path):
    path = write_yaml(tmp_path / "broken.yaml", "a: [1, 2\nb: {\n")
    with pytest.raises(ConfigurationError, match="broken.yaml"):
        Configuration(path)


# --------------------------------------------------------------------------------------------------------------------
# Export, save and reload
# --------------------------------------------------------------------------------------------------------------------
def test_to_dict_is_plain_python(small_yaml):
    plain = loose(small_yaml, ["+x.y=[1,{z: 2}]"]).to_dict()

    def check(node):
        assert type(node) in (dict, list, str, int, float, bool, type(None)), type(node)
        if isinstance(node, dict):
            for v in node.values():
                check(v)
        elif isinstance(node, list):
            for v in node:
                check(v)

    check(plain)
    assert plain["x"]["y"] == [1, {"z": 2}]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_save_and_reload_keeps_overrides(name, tmp_path):
    overrides = ["model.sigma=1e-6", "training.batching.batch_size=2", "model.vector_field_regressor.causal=true",
                 "model.vector_field_regressor.state_res=[8,4]", "training.runs_dir=run1", "model.latent_scale=1e-8"]
    cfg = Configuration(CONFIGS / f"{name}.yaml", overrides)
    out = cfg.save(tmp_path / "sub" / "dir" / "saved.yaml")
    assert Path(out) == tmp_path / "sub" / "dir" / "saved.yaml"
    reloaded = Configuration(out)
    assert reloaded.to_dict() == cfg.to_dict()
    for a, b in zip(leaf_paths(reloaded.to_dict()).items(), leaf_paths(cfg.to_dict()).items()):
        assert a[0] == b[0] and same_typed(a[1], b[1]), (a, b)
    assert reloaded.model.sigma == 1e-6 and reloaded.training.runs_dir == "run1"
    assert type(reloaded.model.latent_scale) is float and reloaded.model.latent_scale == 1e-8
    # The saved file is also read correctly by the original's PyYAML 1.1 loader (floats keep a dot).
    with open(out) as f:
        assert yaml.safe_load(f) == cfg.to_dict()
    # to_yaml is the same document
    assert yaml.safe_load(cfg.to_yaml()) == cfg.to_dict()
    assert sorted(p.name for p in out.parent.iterdir()) == ["saved.yaml"]


def test_save_overwrites_existing_file(small_yaml, tmp_path):
    target = tmp_path / "target.yaml"
    target.write_text("old: 1\n")
    loose(small_yaml, ["model.depth=9"]).save(target)
    assert loose(target).model.depth == 9
    assert "old" not in loose(target)


# --------------------------------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------------------------------
def test_atomic_write_text_creates_and_replaces(tmp_path):
    target = tmp_path / "a" / "b.txt"
    atomic_write_text(target, "first")
    assert target.read_text() == "first"
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["b.txt"]


def test_atomic_file_gets_umask_permissions(tmp_path):
    reference = tmp_path / "plain.txt"
    reference.write_text("x")
    target = atomic_write_text(tmp_path / "atomic.txt", "x")
    assert (target.stat().st_mode & 0o777) == (reference.stat().st_mode & 0o777)


def test_atomic_path_exception_keeps_old_content_and_no_temp(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old content")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            assert tmp != target and tmp.parent == target.parent
            tmp.write_bytes(b"half writ")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old content"
    assert [p.name for p in tmp_path.iterdir()] == ["data.bin"]


def test_atomic_path_exception_without_old_file_leaves_nothing(tmp_path):
    target = tmp_path / "new.txt"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_config_save_failure_keeps_old_file(small_yaml, tmp_path, monkeypatch):
    target = tmp_path / "out" / "cfg.yaml"
    target.parent.mkdir()
    target.write_text("old: 1\n")
    original = Path.write_text

    def failing_write_text(self, text, *args, **kwargs):
        original(self, text[:10], *args, **kwargs)  # a partial write, then the disk "fills up"
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", failing_write_text)
    with pytest.raises(OSError, match="disk full"):
        loose(small_yaml).save(target)
    monkeypatch.undo()
    assert target.read_text() == "old: 1\n"
    assert [p.name for p in target.parent.iterdir()] == ["cfg.yaml"]


def test_shipped_configs_copied_load_identically(tmp_path, monkeypatch):
    """Loading does not depend on the file's location (no CWD-relative lookups)."""
    monkeypatch.chdir(tmp_path)
    for name in EXPECTED:
        shutil.copy(CONFIGS / f"{name}.yaml", tmp_path / f"{name}.yaml")
        assert Configuration(f"{name}.yaml").to_dict() == Configuration(CONFIGS / f"{name}.yaml").to_dict()
