"""lutils/schema.py and its use by Configuration: every shipped, test, golden and original config validates; unknown,
missing and mistyped keys fail naming the file and the dotted key; overrides of schema keys; completion with
defaults; schema defaults equal the code's constants; the README's config reference is the generated one."""
from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lutils import schema
from lutils.configuration import Configuration, ConfigurationError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "configs").glob("*.yaml"))
TEST_CONFIGS = sorted((ROOT / "tests" / "configs").glob("*.yaml"))
ORIGINALS = [ROOT / "configs" / f"{name}.yaml" for name in ("bair", "clevrer", "epic")]  # the original's files
AUTOENCODER_FILES = {"toy_autoencoder.yaml", "tiny_autoencoder.yaml"}


def edited(tmp_path: Path, source: Path, old: str, new: str) -> Path:
    """A copy of `source` with `old` (which must occur once) replaced by `new`."""
    text = source.read_text()
    assert text.count(old) == 1, old
    path = tmp_path / source.name
    path.write_text(text.replace(old, new))
    return path


def error_of(*args, **kwargs) -> str:
    with pytest.raises(ConfigurationError) as info:
        Configuration(*args, **kwargs)
    return str(info.value)


# --------------------------------------------------------------------------------------------------------------------
# Every config validates
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", SHIPPED + TEST_CONFIGS, ids=lambda p: p.name)
def test_shipped_and_test_configs_validate(path):
    config = Configuration(path)
    assert config.kind == ("autoencoder" if path.name in AUTOENCODER_FILES else "cage")
    assert schema.problems(config.to_dict(), config.kind) == []


def test_golden_configs_validate(golden_dir):
    paths = sorted(golden_dir.glob("*/config.yaml"))
    assert paths
    for path in paths:
        assert Configuration(path).kind == "cage"


@pytest.mark.parametrize("path", ORIGINALS, ids=lambda p: p.stem)
def test_original_configs_validate_with_their_unread_keys(path):
    """The original's files as PyYAML reads them (as the original did), keys it never reads included."""
    tree = yaml.safe_load(path.read_text())
    assert {"condition_frames", "frames_to_generate"} <= set(tree["training"])
    assert schema.problems(tree, "cage") == []
    assert schema.complete("training", tree["training"])["condition_frames"] == 1


def test_saved_config_of_a_run_validates(tmp_path):
    config = Configuration(ROOT / "configs" / "toy.yaml", ["training.optimizer.lr_decay_power=1", "data.total_videos=5"])
    reloaded = Configuration(config.save(tmp_path / "config.yaml"))
    assert reloaded.to_dict() == config.to_dict() and reloaded.training.optimizer.lr_decay_power == 1


# --------------------------------------------------------------------------------------------------------------------
# Errors in files
# --------------------------------------------------------------------------------------------------------------------
def test_misspelt_key_names_file_key_and_close_match(tmp_path):
    path = edited(tmp_path, ROOT / "configs" / "clevrer.yaml", "learning_rate:", "lerning_rate:")
    message = error_of(path)
    assert str(path) in message
    assert "unknown key 'training.optimizer.lerning_rate'" in message
    assert "did you mean 'training.optimizer.learning_rate'" in message


def test_key_in_the_wrong_section_suggests_the_right_one(tmp_path):
    path = edited(tmp_path, ROOT / "configs" / "bair.yaml", "  num_observations: 16\n",
                  "  num_observations: 16\n  latent_scale: 2.0\n")
    message = error_of(path)
    assert "unknown key 'training.latent_scale'" in message and "'model.latent_scale'" in message


def test_unknown_key_without_close_match_lists_the_sections_keys(tmp_path):
    path = edited(tmp_path, ROOT / "configs" / "bair.yaml", "name: bair\n", "name: bair\nwandb_project: x\n")
    message = error_of(path)
    assert "unknown key 'wandb_project'" in message and "the keys of the top level are: name, data, model, training" \
        in message


def test_missing_sigma_names_file_and_dotted_path(tmp_path):
    path = edited(tmp_path, ROOT / "configs" / "bair.yaml", "  sigma: 0.0000001\n", "")
    message = error_of(path)
    assert message.startswith(f"{path}: missing required key 'model.sigma'")


def test_cli_reports_a_missing_key_by_its_dotted_path(tmp_path):
    """The issue's example: train.py used to end in `error: 'sigma'`."""
    path = edited(tmp_path, ROOT / "configs" / "bair.yaml", "  sigma: 0.0000001\n", "")
    result = subprocess.run([sys.executable, "train.py", "--config", str(path), "--run-name", "t", "--dry-run"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert f"error: {path}: missing required key 'model.sigma'" in result.stderr


@pytest.mark.parametrize("old, new, key, expected", [
    ("    depth: 9\n", "    depth: nine\n", "model.vector_field_regressor.depth", "must be int, got str 'nine'"),
    ("    causal: False\n", "    causal: 1\n", "model.vector_field_regressor.causal", "must be bool, got int 1"),
    ("  sigma: 0.0000001\n", "  sigma: [1]\n", "model.sigma", "must be float, got list"),
    ("    state_res: [16, 16]\n", "    state_res: [16, a]\n", "model.vector_field_regressor.state_res",
     "must be list of int"),
    ("  frames_per_sample: 16\n", "  frames_per_sample: 16.0\n", "data.frames_per_sample", "must be int"),
    ("    config: f16\n", "    config: 16\n", "model.autoencoder.config", "must be str or mapping or null"),
    ("    type: ldm-vq\n", "    type: ldm\n", "model.autoencoder.type", "must be one of ours, ldm-vq"),
    ("  batching:\n    batch_size: 16\n    num_workers: 7\n", "  batching: 16\n", "training.batching",
     "must be a mapping"),
])
def test_wrong_type_names_file_key_and_expected_type(tmp_path, old, new, key, expected):
    path = edited(tmp_path, ROOT / "configs" / "bair.yaml", old, new)
    message = error_of(path)
    assert message.startswith(f"{path}: '{key}' {expected}"), message


def test_every_problem_is_reported_at_once(tmp_path):
    path = edited(tmp_path, ROOT / "configs" / "epic.yaml", "  sigma: 0.0000001\n", "  sigm: 0.0000001\n")
    path.write_text(path.read_text().replace("    depth: 9\n", "    depth: x\n"))
    message = error_of(path)
    assert f"{path}: 3 problems:" in message
    for part in ("unknown key 'model.sigm'; did you mean 'model.sigma'", "'model.vector_field_regressor.depth' must be int",
                 "missing required key 'model.sigma'"):
        assert part in message


def test_autoencoder_keys_depend_on_its_type():
    ours = error_of(ROOT / "configs" / "bair.yaml", ["model.autoencoder.type=ours"])
    for key in ("encoder", "vector_quantizer", "decoder"):
        assert f"missing required key 'model.autoencoder.{key}' (needed for type ours)" in ours
    ldm = error_of(ROOT / "configs" / "clevrer.yaml", ["model.autoencoder.type=ldm-vq"])
    assert "missing required key 'model.autoencoder.config' (needed for type ldm-vq)" in ldm
    # The other type's keys are ignored, as the original ignores them (a type switched by an override keeps them).
    both = Configuration(ROOT / "configs" / "clevrer.yaml", ["model.autoencoder.type=ldm-vq", "model.autoencoder.config=f16"])
    assert both.model.autoencoder.encoder.in_channels == 3


def test_autoencoder_config_has_its_own_training_keys():
    config = Configuration(ROOT / "tests" / "configs" / "tiny_autoencoder.yaml", ["training.dead_code_threshold=0.1"])
    assert config.kind == "autoencoder" and config.training.dead_code_threshold == 0.1
    message = error_of(ROOT / "tests" / "configs" / "tiny_autoencoder.yaml", ["training.latent_cache=true"])
    assert "'training.latent_cache' is not a key of a autoencoder config" in message


def test_from_dict_validates_unless_told_not_to():
    message = str(pytest.raises(ConfigurationError, Configuration.from_dict, {"name": "x", "modle": {}}).value)
    assert message.startswith("<dict>: 4 problems:") and "unknown key 'modle'; did you mean 'model'" in message
    assert "missing required key 'data'" in message
    assert Configuration.from_dict({"name": "x", "modle": {}}, validate=False).modle == {}
    whole = yaml.safe_load((ROOT / "configs" / "epic.yaml").read_text())
    assert Configuration.from_dict(whole, ["model.latent_scale=2"]).model.latent_scale == 2


# --------------------------------------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------------------------------------
def test_override_of_schema_keys_the_file_lacks_needs_no_plus():
    config = Configuration(ROOT / "configs" / "bair.yaml", [
        "model.latent_scale=4.0", "training.optimizer.lr_decay_power=1", "model.dino_arch.embed_dim=48",
        "data.skip_short_videos=true", "+training.auto_resume=true"])
    assert config.model.latent_scale == 4.0 and config.training.optimizer.lr_decay_power == 1
    assert dict(config.model.dino_arch) == {"embed_dim": 48}
    assert config.data.skip_short_videos is True and config.training.auto_resume is True
    assert "latent_scale" not in Configuration(ROOT / "configs" / "bair.yaml").model  # the file is not changed


@pytest.mark.parametrize("override", ["training.optimizer.lerning_rate=1", "+training.optimizer.lerning_rate=1"])
def test_override_of_a_key_the_schema_lacks_fails_even_with_plus(override):
    message = error_of(ROOT / "configs" / "bair.yaml", [override])
    assert "'training.optimizer.lerning_rate' is not a key of a cage config (" in message
    assert "Did you mean: training.optimizer.learning_rate?" in message
    assert "to add a new key" not in message  # '+' does not help


def test_override_of_a_wrong_type_names_the_override():
    message = error_of(ROOT / "configs" / "bair.yaml", ["model.sigma=abc"])
    assert "configs/bair.yaml with overrides model.sigma=abc: 'model.sigma' must be float, got str 'abc'" in message


def test_override_can_supply_a_key_the_file_lacks(tmp_path):
    path = edited(tmp_path, ROOT / "configs" / "bair.yaml", "  data_root: ./data/BAIR_h5\n", "")
    assert "missing required key 'data.data_root'" in error_of(path)
    assert Configuration(path, ["data.data_root=/somewhere"]).data.data_root == "/somewhere"


def test_free_form_mappings_take_new_keys_with_plus():
    tiny = ROOT / "tests" / "configs" / "tiny_train.yaml"
    config = Configuration(tiny, ["+model.autoencoder.config.give_pre_end=true"])
    assert config.model.autoencoder.config.give_pre_end is True
    message = error_of(tiny, ["model.autoencoder.config.give_pre_end=true"])
    assert "Write '+model.autoencoder.config.give_pre_end=true' to add a new key" in message


# --------------------------------------------------------------------------------------------------------------------
# Completion and defaults
# --------------------------------------------------------------------------------------------------------------------
def test_complete_keeps_the_files_values_and_fills_the_defaults():
    model = yaml.safe_load((ROOT / "configs" / "clevrer.yaml").read_text())["model"]
    snapshot = yaml.safe_load(yaml.safe_dump(model))
    full = schema.complete("model", model)
    assert model == snapshot  # not modified
    for key, value in model.items():
        if not isinstance(value, dict):
            assert full[key] == value, key
    assert full["latent_scale"] == 1.0 and full["same_t"] is False and full["dino_input_size"] == 224
    assert full["dino_arch"] is None and full["dino_weights"] is None
    assert full["vector_field_regressor"]["attention"] == "sdpa"
    assert full["vector_field_regressor"]["num_frames"] is None
    assert full["autoencoder"]["encoder"] == {"in_channels": 3, "out_channels": 4, "mid_channels": 32}
    assert full["autoencoder"]["random_init"] is False and full["autoencoder"]["config"] is None


def test_complete_converts_float_keys_and_keeps_partial_dino_arch():
    model = yaml.safe_load((ROOT / "configs" / "toy.yaml").read_text())["model"]
    model["sigma"] = "1e-7"  # how PyYAML 1.1 (the original's loader) reads 1e-7
    model["latent_scale"] = 4
    model["dino_arch"] = {"embed_dim": 48}
    full = schema.complete("model", model)
    assert type(full["sigma"]) is float and full["sigma"] == 1e-7
    assert type(full["latent_scale"]) is float and full["latent_scale"] == 4.0
    assert full["dino_arch"] == {"embed_dim": 48}  # absent keys keep dino_version's values


def test_complete_accepts_configuration_nodes_and_sections():
    config = Configuration(ROOT / "configs" / "toy.yaml")
    assert schema.complete("model", config["model"])["latent_scale"] == 4.0
    assert schema.complete("model.autoencoder", config.model.autoencoder)["encoder"]["mid_channels"] == 16
    training = schema.complete("training", config.to_dict()["training"])
    assert training["grad_clip"] == 1.0 and training["sample_steps"] == 10
    whole = config.completed()
    assert whole["training"]["optimizer"]["lr_decay_power"] == 0.5 and whole["data"]["total_videos"] == -1
    assert whole["model"]["vector_field_regressor"]["attention"] == "sdpa"


def test_complete_of_an_autoencoder_training_section():
    training = Configuration(ROOT / "tests" / "configs" / "tiny_autoencoder.yaml").to_dict()["training"]
    del training["loss_weights"]
    full = schema.complete("training", training, kind="autoencoder")
    assert full["loss_weights"] == {"reconstruction": 1.0, "vq": 1.0}
    assert full["ema_decay"] == 0.0 and full["dead_code_threshold"] == 0.03 and full["restart_every"] == 2


def test_complete_rejects_bad_sections_by_dotted_path():
    model = yaml.safe_load((ROOT / "configs" / "bair.yaml").read_text())["model"]
    del model["sigma"]
    with pytest.raises(ConfigurationError, match=r"^<model>: missing required key 'model\.sigma'"):
        schema.complete("model", model)
    with pytest.raises(ConfigurationError, match=r"^cfg\.yaml: unknown key 'data\.skip_frame'; did you mean "
                                                 r"'data\.skip_frames'"):
        schema.complete("data", {"data_root": "x", "input_size": 1, "crop_size": 1, "frames_per_sample": 1,
                                 "skip_frames": 0, "skip_frame": 1}, source="cfg.yaml")


def test_training_defaults_of_the_two_kinds():
    """The trainers read their options from the schema: the autoencoder trainer's defaults differ from CAGE's where
    it needs other behaviour, and the CAGE trainer's own options are not keys of an autoencoder config."""
    from training.loop import DEFAULTS
    from training.schedule import POWER

    cage, autoencoder = schema.defaults("cage", "training"), schema.defaults("autoencoder", "training")
    assert DEFAULTS == cage
    assert (cage["ema_decay"], autoencoder["ema_decay"]) == (0.9999, 0.0)
    assert (autoencoder["restart_every"], autoencoder["dead_code_threshold"]) == (100, 0.03)
    assert {"sample_clips", "sample_frames", "sample_steps", "latent_cache", "feature_cache"} <= set(cage) - set(autoencoder)
    assert schema.defaults("cage", "training.optimizer")["lr_decay_power"] == POWER
    assert schema.defaults("autoencoder", "training.optimizer")["lr_decay_power"] == POWER


def test_model_defaults_and_choices_equal_the_codes():
    from lutils.precision import PRECISIONS
    from model.attention import BACKENDS
    from model.autoencoder import AE_TYPES, DEFAULT_MID_CHANNELS
    from model.dino import ARCH_KEYS, ARCHS, FFN_LAYERS, INPUT_SIZE
    from model.model import REGRESSOR_KEYS
    from model.regressor import VectorFieldRegressor

    def choices(cls, name):
        return schema.fields_of(cls)[name][1].metadata["choices"]

    assert schema.defaults("cage", "model")["dino_input_size"] == INPUT_SIZE
    assert schema.defaults("cage", "model.autoencoder.encoder")["mid_channels"] == DEFAULT_MID_CHANNELS
    assert schema.defaults("autoencoder", "autoencoder.decoder")["mid_channels"] == DEFAULT_MID_CHANNELS
    assert tuple(schema.fields_of(schema.DinoArch)) == ARCH_KEYS
    assert choices(schema.DinoArch, "ffn_layer") == FFN_LAYERS
    assert all(name in schema.fields_of(schema.Model)["dino_version"][1].metadata["help"] for name in ARCHS)
    assert choices(schema.Autoencoder, "type") == AE_TYPES
    assert choices(schema.VectorFieldRegressor, "attention") == BACKENDS
    attention = inspect.signature(VectorFieldRegressor).parameters["attention"].default
    assert schema.defaults("cage", "model.vector_field_regressor")["attention"] == attention
    assert choices(schema.Training, "precision") == PRECISIONS
    required = [name for name, (_, f) in schema.fields_of(schema.VectorFieldRegressor).items()
                if f.default is dataclasses.MISSING]
    assert tuple(required) == REGRESSOR_KEYS


def test_data_defaults_equal_the_datasets():
    from dataset.video_dataset import VideoDataset

    parameters = inspect.signature(VideoDataset).parameters
    data = schema.defaults("cage", "data")
    for key in ("aug", "albumentations", "frames_key", "total_videos", "skip_short_videos"):
        assert data[key] == parameters[key].default, key


def test_added_keys_are_optional_and_every_key_has_a_meaning():
    """The project's rule: every key we added to the original's schema is optional."""
    def walk(cls, prefix=""):
        for name, (tp, f) in schema.fields_of(cls).items():
            yield prefix + name, tp, f
            inner = schema._strip_optional(tp)[0]
            if dataclasses.is_dataclass(inner):
                yield from walk(inner, f"{prefix}{name}.")

    cage = list(walk(schema.CageConfig))
    assert len(cage) > 100
    for path, _, f in cage:
        if f.metadata.get("added"):
            assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING, path
    for path, _, f in cage + list(walk(schema.AutoencoderConfig)):
        meaning = f.metadata["help"]
        assert meaning and "\n" not in meaning and meaning.endswith("."), path


def test_locate_tells_schema_keys_free_form_and_unknown():
    assert schema.locate("cage", "model.sigma") == "key"
    assert schema.locate("cage", "model.vector_field_regressor") == "key"
    assert schema.locate("cage", "model.autoencoder.config.ch") == "free"
    assert schema.locate("cage", "model.nope") is None and schema.locate("cage", "name.x") is None
    assert schema.locate("autoencoder", "training.restart_every") == "key"
    assert schema.locate("cage", "training.restart_every") is None


# --------------------------------------------------------------------------------------------------------------------
# The README's config reference
# --------------------------------------------------------------------------------------------------------------------
def test_readme_config_reference_is_the_generated_one():
    section = schema.readme_section((ROOT / "README.md").read_text())
    assert section == schema.markdown(), "README.md is stale: run python -m lutils.schema --write-readme README.md"


def test_markdown_lists_every_key_once():
    text = schema.markdown()
    for path in schema.paths(schema.CageConfig):
        assert text.count(f"| `{path}` |") == 1 + (path.startswith("training") and
                                                   path in schema.paths(schema.AutoencoderConfig)), path
    for path in schema.paths(schema.AutoencoderConfig):
        assert f"| `{path}` |" in text, path


def test_markdown_command_and_readme_update(tmp_path):
    printed = subprocess.run([sys.executable, "-m", "lutils.schema", "--markdown"], cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
    assert printed.returncode == 0 and printed.stdout == schema.markdown()
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{schema.BEGIN_MARKER}\nstale\n{schema.END_MARKER}\nafter\n")
    schema.write_readme(readme)
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n") and text.endswith(f"{schema.END_MARKER}\nafter\n")
    assert "stale" not in text and schema.readme_section(text) == schema.markdown()
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="marker"):
        schema.write_readme(readme)
