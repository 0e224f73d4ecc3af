"""The config schema: every key of a config file with its type, default and one-line meaning, and what uses it.

Two kinds of file exist, told apart by their top-level keys (`kind_of`):
- "cage": `name`, `data`, `model`, `training` (train.py, generate.py, evaluate.py, the demos);
- "autoencoder": `name`, `data`, `autoencoder`, `training` (train_autoencoder.py, our VQVAE).

Each section is a dataclass used as a declaration only (never instantiated): a field without a default is required,
`metadata["help"]` is its meaning. The original's keys keep the original's meaning; every key this project added is
optional, marked `added`, and defaults to the original's behaviour. Keys the original ships but never reads
(`training.condition_frames`, ...) are accepted and ignored.

- `validate(tree, kind, section, source)` raises ConfigurationError listing every unknown key (with close matches),
  missing required key and mistyped value, each by its dotted path and with the file (`source`) named;
- `complete(section, mapping, kind)` validates a section and returns it as plain dicts with every default filled,
  so that code reads `config["latent_scale"]` instead of `config.get("latent_scale", 1.0)`; `defaults(kind,
  section)` gives a section's defaults alone;
- `locate(kind, dotted)` says whether a dotted key belongs to the schema (for command-line overrides);
- `markdown()` is the README's config reference (`python -m lutils.schema --markdown`).
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import sys
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

from lutils.errors import CageError


class ConfigurationError(CageError, ValueError):
    """A configuration file, mapping or override that cannot be used (also importable from lutils.configuration)."""


class Inherited:
    """The default of a key whose absence means "take it from elsewhere": `complete` leaves such a key out."""

    def __init__(self, description: str):
        self.description = description

    def __repr__(self) -> str:
        return self.description


FROM_DINO_VERSION = Inherited("dino_version's")


def required(meaning: str, *, choices: Optional[tuple] = None) -> Any:
    """An original key that must be present."""
    return field(metadata={"help": meaning, "choices": choices})


def optional(default: Any, meaning: str, *, choices: Optional[tuple] = None, ours: bool = False,
             needed_for: Optional[str] = None) -> Any:
    """A key with a default; `ours`: a key this project added, not the original's; `needed_for`: required when the
    section's `type` is that value. A default `{}` is a section: all its defaults."""
    metadata = {"help": meaning, "choices": choices, "added": ours, "needed_for": needed_for}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def added(default: Any, meaning: str, *, choices: Optional[tuple] = None) -> Any:
    """A key this project added to the original's schema (always optional)."""
    return optional(default, meaning, choices=choices, ours=True)


# ---------------------------------------------------------------------------------------------------------------------
# The schema
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Data:
    """Where the clips come from and how they are cut (the `data` section)."""

    data_root: str = required("Folder holding the split folders train/, val/, test/ of HDF5 shards.")
    input_size: int = required("Frames are resized so that their shorter side has this size.")
    crop_size: int = required("Side of the square centre crop taken after the resize.")
    frames_per_sample: int = required("Frames in each clip.")
    skip_frames: int = required("Frames skipped between two frames of a clip (the stride minus 1).")
    random_horizontal_flip: bool = optional(False, "Training clips are flipped left-right, whole, with probability 0.5.")
    aug: bool = optional(False, "Training clips get a colour jitter, the same for every frame of a clip.")
    albumentations: bool = optional(False, "Transform with albumentations (frame by frame) instead of torchvision "
                                           "(whole clip).")
    frames_key: Optional[str] = optional(None, "Frames are read from file[frames_key][video] instead of file[video] "
                                               "(EPIC's files: videos).")
    total_videos: int = added(-1, "Length of an epoch, spread evenly over the videos (-1: the number of videos).")
    skip_short_videos: bool = added(False, "Leave out videos shorter than a clip instead of stopping with an error.")


@dataclass(kw_only=True)
class DinoArch:
    """Changes to the DINOv2 architecture named by dino_version (`model.dino_arch`): each key absent keeps its value."""

    patch_size: int = added(FROM_DINO_VERSION, "Patch side in pixels.")
    img_size: int = added(FROM_DINO_VERSION, "Image side the position table was trained for.")
    embed_dim: int = added(FROM_DINO_VERSION, "Token width E.")
    depth: int = added(FROM_DINO_VERSION, "Number of blocks.")
    num_heads: int = added(FROM_DINO_VERSION, "Attention heads.")
    mlp_ratio: float = added(FROM_DINO_VERSION, "Hidden width of the MLPs over E.")
    init_values: float = added(FROM_DINO_VERSION, "Initial LayerScale value.")
    ffn_layer: str = added(FROM_DINO_VERSION, "Feed-forward layer.", choices=("mlp", "swiglu"))


@dataclass(kw_only=True)
class VectorFieldRegressor:
    """The transformer that predicts the flow's velocities (`model.vector_field_regressor`)."""

    state_size: int = required("S, the latent channels of the autoencoder (also the noise's channels in generation).")
    state_res: List[int] = required("[h, w], the latent grid; control features are resized to it.")
    inner_dim: int = required("D, the transformer width.")
    depth: int = required("Number of spatio-temporal blocks.")
    mid_depth: int = required("Number of central blocks that also cross-attend to the control features.")
    fc_dim: int = required("Hidden width of every feed-forward layer.")
    num_heads: int = required("Attention heads.")
    dropout: float = required("Dropout of the attention probabilities and of the transformer layers.")
    max_relative_position: int = required("M, the clamp of the temporal relative distance.")
    masking_ratio: float = required("Fraction of the latent tokens dropped in training (MAE-style).")
    causal: bool = required("Frame-level causal mask in the temporal attention.")
    num_frames: Optional[int] = optional(None, "Derived (Cc + 1 + T): the original overwrote it, this code ignores it.")
    feats_dim: Optional[int] = optional(None, "Derived (F): the original overwrote it, this code ignores it.")
    attention: str = added("sdpa", "Attention backend: torch's fused kernels, or the original's formulas written out.",
                           choices=("sdpa", "math"))
    activation_checkpointing: bool = added(False, "Training recomputes each block's activations in the backward pass "
                                                  "instead of storing them (less memory, about a third more compute; "
                                                  "the same loss and gradients).")


@dataclass(kw_only=True)
class Coder:
    """Channel sizes of our VQVAE's encoder or decoder."""

    in_channels: int = required("Input channels (encoder: 3, the image; decoder: the latent channels).")
    out_channels: int = required("Output channels (encoder: the latent channels; decoder: 3, the image).")
    mid_channels: int = added(32, "Width of the first stage; the next ones are 2x, 4x and 8x it (32: the original's).")


@dataclass(kw_only=True)
class Quantizer:
    """The codebook of our VQVAE."""

    num_embeddings: int = required("Number of codes.")
    embedding_dimension: int = required("Code width; equal to encoder.out_channels and decoder.in_channels.")


@dataclass(kw_only=True)
class Autoencoder:
    """The frozen VQ autoencoder whose latents the flow models (`model.autoencoder`); the keys of the other type are
    ignored, as the original does."""

    type: str = required("ours: our VQVAE (the original's CLEVRER one); ldm-vq: taming's VQGAN (BAIR, EPIC).",
                         choices=("ours", "ldm-vq"))
    config: Optional[Union[str, Dict[str, Any]]] = optional(
        None, "ldm-vq: f8, f8_small or f16, or a mapping of taming ddconfig values with embed_dim and n_embed.",
        needed_for="ldm-vq")
    ckpt_path: Optional[str] = optional(None, "Weights file, loaded when it exists (a CAGE checkpoint may bring them "
                                              "instead).")
    encoder: Optional[Coder] = optional(None, "ours: the encoder's channels.", needed_for="ours")
    vector_quantizer: Optional[Quantizer] = optional(None, "ours: the codebook.", needed_for="ours")
    decoder: Optional[Coder] = optional(None, "ours: the decoder's channels.", needed_for="ours")
    random_init: bool = added(False, "Without a weights file, run with random weights (tests, toy runs) instead of "
                                     "refusing to.")


@dataclass(kw_only=True)
class Model:
    """The CAGE model (`model`): `Model(config["model"])`."""

    sigma: float = required("σ_min, the minimum noise level of the flow-matching path.")
    num_target_frames: int = required("T, the frames denoised together.")
    num_context_frames: int = required("Cc, the random past context frames before the reference frame (the code "
                                       "assumes 1).")
    no_context_p: float = required("Probability (per batch) that the context latents are replaced with noise.")
    no_reference_p: float = required("Probability, given no context, that the reference latent is replaced too.")
    feats_select_prob: float = required("Probability that a control token is revealed in training.")
    feature_backbone: str = optional("dino", "Control-feature backbone; only dino is implemented (the original's mae "
                                             "and clip paths are broken).", choices=("dino", "mae", "clip"))
    num_dino_layers: int = required("How many of DINOv2's last blocks are concatenated (F = embed_dim x this).")
    dino_version: str = required("DINOv2 model: dinov2_vits14, dinov2_vitb14, dinov2_vitl14 or dinov2_vitg14 (the "
                                 "architectures registered in model/dino.py).")
    mae_arch: Optional[str] = optional(None, "mae backbone only (not implemented): the factory name.")
    mae_ckpt: Optional[str] = optional(None, "mae backbone only (not implemented): the weights file.")
    clip_arch: Optional[str] = optional(None, "clip backbone only (not implemented): the model name.")
    no_scale_inv: bool = optional(False, "Training's random crop of the control features is the identity (features "
                                         "of the whole frame, as generation uses them).")
    same_t: bool = optional(False, "All target frames of a sample share one noise level t in training.")
    latent_scale: float = added(1.0, "Latents are multiplied by it after encoding and divided before decoding "
                                     "(1: the original's).")
    dino_arch: Optional[DinoArch] = added(None, "Changes to dino_version's architecture (small random backbones).")
    dino_random_init: bool = added(False, "Without DINOv2 weights, run with random ones (tests, toy runs) instead of "
                                          "refusing to.")
    dino_weights: Optional[str] = added(None, "DINOv2 weights file (official or timm), or download (the official "
                                              "URL); null: the torch hub cache, else a CAGE checkpoint's.")
    dino_input_size: int = added(224, "Side of the frames at DINOv2's input, a multiple of the patch size (224: the "
                                      "original's).")
    trust_checkpoints: bool = added(False, "Unpickle autoencoder and DINOv2 files fully (only files you trust) "
                                           "instead of weights only.")
    vector_field_regressor: VectorFieldRegressor = required("The transformer that predicts the flow's velocities.")
    autoencoder: Autoencoder = required("The frozen VQ autoencoder.")


@dataclass(kw_only=True)
class Batching:
    """How clips are batched (`training.batching`)."""

    batch_size: int = required("Clips per process and step (the global batch is this x processes).")
    num_workers: int = required("DataLoader worker processes.")


@dataclass(kw_only=True)
class Optimizer:
    """AdamW and its schedule (`training.optimizer`)."""

    learning_rate: float = required("Peak learning rate.")
    weight_decay: float = required("AdamW's decoupled weight decay.")
    num_warmup_steps: int = required("Steps of linear warm-up; gradient clipping starts after them.")
    num_training_steps: int = required("Steps of training, also the horizon of the decay.")
    lr_decay_power: float = added(0.5, "Power of the polynomial decay after warm-up (0.5: the original's; 1: linear).")


@dataclass(kw_only=True)
class Training:
    """The training loop's keys shared by both kinds of config (`training`)."""

    batching: Batching = required("Batch size and loader workers.")
    optimizer: Optimizer = required("AdamW and its learning-rate schedule.")
    num_observations: Optional[int] = optional(None, "Frames of each clip used per step; null: data.frames_per_sample.")
    ema_decay: float = added(0.9999, "Decay of the weights' EMA, used by validation, samples and saved models (0: no "
                                     "EMA).")
    log_every: int = added(100, "Steps between logged averages.")
    save_latest_every: int = added(5000, "Steps between writes of `latest.pth` (resume state and snapshot).")
    save_every: int = added(20000, "Steps between kept `step_N.pth` (resume state and snapshot).")
    validate_every: int = added(5000, "Steps between validations (0: none).")
    val_clips: int = added(16, "Fixed val clips used by validation.")
    grad_clip: float = added(1.0, "Gradient max-norm, applied after warm-up.")
    max_nonfinite_steps: int = added(10, "Non-finite steps in a row that stop the run (each one is skipped).")
    auto_resume: bool = added(False, "Resume from `latest.pth` when the run directory has one.")
    runs_dir: str = added("runs", "Folder of the run directories `<name>_run-<run-name>`.")
    record_samples: bool = added(False, "Write the clip indices each rank trained on (`samples_rank<R>.txt`).")
    sample_every: int = added(20000, "Steps between sample images (0: none).")
    precision: str = added("auto", "bf16 autocast or fp32; auto: bf16 on CUDA and on CPUs with native bf16.",
                           choices=("auto", "bf16", "fp32"))


@dataclass(kw_only=True)
class CageLossWeights:
    """Loss multipliers of CAGE training (`training.loss_weights`)."""

    flow_matching_loss: float = required("Multiplier of the flow-matching loss, the only term.")


@dataclass(kw_only=True)
class CageTraining(Training):
    """CAGE training (`training` of a cage config)."""

    loss_weights: CageLossWeights = required("Loss multipliers.")
    condition_frames: Optional[int] = optional(None, "Shipped by the original, never read.")
    frames_to_generate: Optional[int] = optional(None, "Shipped by the original, never read.")
    alpha_start: Optional[float] = optional(None, "Shipped by the original (CLEVRER), never read.")
    sample_clips: int = added(2, "Val clips of each sample image.")
    sample_frames: int = added(6, "Frames generated for each sample.")
    sample_steps: int = added(20, "ODE steps of each sample.")
    latent_cache: bool = added(False, "Encode the train split once into `<data_root>/latent_cache/` and read the latents "
                                      "(data without flip or jitter).")
    feature_cache: bool = added(False, "Also cache every frame's control features and read no frames (needs "
                                       "latent_cache and model.no_scale_inv).")
    compile: bool = added(False, "Compile the regressor with torch.compile (in place, same weights and keys): faster "
                                 "steps on GPUs after a compile of minutes at the first steps.")


@dataclass(kw_only=True)
class Vqvae:
    """The VQVAE being trained (`autoencoder` of an autoencoder config)."""

    type: str = optional("ours", "Only ours (our VQVAE) is trained here.", choices=("ours",))
    encoder: Coder = required("The encoder's channels.")
    vector_quantizer: Quantizer = required("The codebook.")
    decoder: Coder = required("The decoder's channels.")


@dataclass(kw_only=True)
class AutoencoderLossWeights:
    """Loss multipliers of VQVAE training (`training.loss_weights`)."""

    reconstruction: float = optional(1.0, "Multiplier of the reconstruction MSE.")
    vq: float = optional(1.0, "Multiplier of the codebook and commitment terms (β 0.25).")


@dataclass(kw_only=True)
class AutoencoderTraining(Training):
    """VQVAE training (`training` of an autoencoder config)."""

    ema_decay: float = optional(0.0, "Decay of the weights' EMA (0: no EMA).")
    loss_weights: AutoencoderLossWeights = optional({}, "Loss multipliers.")
    restart_every: int = optional(100, "Steps between restarts of dead codes at encoder outputs (0: never).")
    dead_code_threshold: float = optional(0.03, "A code is dead when its average use falls below this fraction of "
                                                "an even share.")


@dataclass(kw_only=True)
class CageConfig:
    """A CAGE config file."""

    name: str = required("Experiment name: the run directory is `<runs_dir>/<name>_run-<run-name>`.")
    data: Data = required("The clips.")
    model: Model = required("The model.")
    training: CageTraining = required("Training.")


@dataclass(kw_only=True)
class AutoencoderConfig:
    """An autoencoder-training config file."""

    name: str = required("Experiment name: the run directory is `<runs_dir>/<name>_run-<run-name>`.")
    data: Data = required("The frames (clips of frames_per_sample frames, each frame a sample).")
    autoencoder: Vqvae = required("The VQVAE to train.")
    training: AutoencoderTraining = required("Training.")


KINDS = {"cage": CageConfig, "autoencoder": AutoencoderConfig}


def kind_of(tree: Mapping) -> str:
    """"autoencoder" for a file with a top-level `autoencoder` section and no `model`, else "cage"."""
    return "autoencoder" if "autoencoder" in tree and "model" not in tree else "cage"


# ---------------------------------------------------------------------------------------------------------------------
# Reading the declarations
# ---------------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def fields_of(cls: type) -> dict:
    """{name: (type, dataclasses.Field)} of a section, in declaration order."""
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], f) for f in dataclasses.fields(cls)}


def _strip_optional(tp: Any) -> tuple:
    """(type without Optional, whether None is allowed)."""
    if typing.get_origin(tp) is Union and type(None) in typing.get_args(tp):
        rest = tuple(a for a in typing.get_args(tp) if a is not type(None))
        return (rest[0] if len(rest) == 1 else Union[rest]), True
    return tp, False


def _is_section(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp) and isinstance(tp, type)


def _is_free(tp: Any) -> bool:
    """A free-form mapping (or a union with one): its keys are not declared."""
    if typing.get_origin(tp) is Union:
        return any(_is_free(a) for a in typing.get_args(tp))
    return tp is Any or typing.get_origin(tp) is dict


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not MISSING or f.default_factory is not MISSING


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def section_type(kind: str, section: str = "") -> type:
    """The dataclass of the section at dotted path `section` ("" for the whole file) of a `kind` config."""
    cls = KINDS[kind]
    for part in filter(None, section.split(".")):
        inner = _strip_optional(fields_of(cls)[part][0])[0] if part in fields_of(cls) else None
        if not _is_section(inner):
            raise KeyError(f"{kind} config: '{section}' is not a section")
        cls = inner
    return cls


def paths(cls: type, prefix: str = "") -> list:
    """Every dotted key of a section, sections included, depth first in declaration order."""
    out = []
    for name, (tp, _) in fields_of(cls).items():
        out.append(prefix + name)
        inner = _strip_optional(tp)[0]
        if _is_section(inner):
            out.extend(paths(inner, f"{prefix}{name}."))
    return out


def locate(kind: str, dotted: str) -> Optional[str]:
    """"key" when `dotted` is a key of the schema, "free" when it lies inside a free-form mapping (such as an
    ldm-vq autoencoder.config), None when the schema has no such key."""
    cls: Any = KINDS[kind]
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        if not _is_section(cls) or part not in fields_of(cls):
            return None
        tp = _strip_optional(fields_of(cls)[part][0])[0]
        if depth == len(parts) - 1:
            return "key"
        if _is_free(tp):
            return "free"
        cls = tp
    return None


# ---------------------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Mappings (OmegaConf nodes included) and sequences as plain dicts and lists."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def type_name(tp: Any) -> str:
    """How the README and the errors write a type."""
    tp, nullable = _strip_optional(tp)
    if _is_section(tp):
        name = "section"
    elif typing.get_origin(tp) is Union:
        name = " or ".join(type_name(a) for a in typing.get_args(tp))
    elif typing.get_origin(tp) is list:
        name = f"list of {type_name(typing.get_args(tp)[0])}"
    elif _is_free(tp):
        name = "mapping"
    else:
        name = tp.__name__
    return f"{name} or null" if nullable else name


def _as_float(value: Any) -> Optional[float]:
    """A float key's value as a number: ints, floats and numeric strings (PyYAML 1.1 reads 1e-7 as a string)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _type_ok(tp: Any, value: Any) -> bool:
    """Whether a non-section value has type `tp` (lists checked item by item)."""
    tp, nullable = _strip_optional(tp)
    if value is None:
        return nullable
    origin = typing.get_origin(tp)
    if origin is Union:
        return any(_type_ok(a, value) for a in typing.get_args(tp))
    if origin is list:
        return isinstance(value, list) and all(_type_ok(typing.get_args(tp)[0], v) for v in value)
    if _is_free(tp):
        return tp is Any or isinstance(value, Mapping)
    if tp is float:
        return _as_float(value) is not None
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _suggestions(root: type, cls: type, section: str, key: str) -> list:
    """Close matches of an unknown key of section `cls`: keys of that section, then keys of the same or a close name
    in other sections (a key put in the wrong section)."""
    near = [f"{section}.{m}" if section else m for m in difflib.get_close_matches(key, list(fields_of(cls)), n=3)]
    for path in paths(root):
        parent, _, leaf = path.rpartition(".")
        if parent and parent != section and difflib.SequenceMatcher(None, key, leaf).ratio() >= 0.8:
            near.append(path)
    return list(dict.fromkeys(near))[:3]


def suggest(kind: str, dotted: str) -> list:
    """Close matches of a dotted key that a `kind` config's schema lacks, in its deepest existing section."""
    root = cls = KINDS[kind]
    parts = dotted.split(".")
    depth = 0
    while depth < len(parts) - 1 and parts[depth] in fields_of(cls) and \
            _is_section(_strip_optional(fields_of(cls)[parts[depth]][0])[0]):
        cls = _strip_optional(fields_of(cls)[parts[depth]][0])[0]
        depth += 1
    return _suggestions(root, cls, ".".join(parts[:depth]), parts[depth])


def _check(root: type, cls: type, node: Any, section: str, require: bool, found: list) -> None:
    """Append every problem of `node`, the section `cls` at dotted path `section` of schema `root`, to `found`."""
    where = f"'{section}'" if section else "the top level"
    if not isinstance(node, Mapping):
        found.append(f"{where} must be a mapping (section), got {type(node).__name__} {node!r}")
        return
    fields = fields_of(cls)
    for key, value in node.items():
        dotted = f"{section}.{key}" if section else str(key)
        if key not in fields:
            near = _suggestions(root, cls, section, str(key))
            hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else \
                f"; the keys of {where} are: {', '.join(fields)}"
            found.append(f"unknown key '{dotted}'{hint}")
            continue
        tp, f = fields[key]
        inner, nullable = _strip_optional(tp)
        choices = f.metadata.get("choices")
        if _is_section(inner) and not (value is None and nullable):
            _check(root, inner, value, dotted, require, found)
        elif not _type_ok(tp, value):
            found.append(f"'{dotted}' must be {type_name(tp)}, got {type(value).__name__} {value!r}")
        elif choices and value is not None and value not in choices:
            found.append(f"'{dotted}' must be one of {', '.join(choices)}, got {value!r}")
    if not require:
        return
    for name, (_, f) in fields.items():
        dotted = f"{section}.{name}" if section else name
        needed_for = f.metadata.get("needed_for")
        if name not in node and not _has_default(f):
            found.append(f"missing required key '{dotted}': {f.metadata['help']}")
        elif node.get(name) is None and needed_for is not None and node.get("type") == needed_for:
            found.append(f"missing required key '{dotted}' (needed for type {needed_for}): {f.metadata['help']}")


def problems(tree: Any, kind: str = "cage", section: str = "", require: bool = True) -> list:
    """Every problem of `tree`, the section at dotted path `section` of a `kind` config, as messages."""
    found: list = []
    _check(KINDS[kind], section_type(kind, section), _plain(tree), section, require, found)
    return found


def validate(tree: Any, kind: str = "cage", section: str = "", source: str = "<config>",
             require: bool = True) -> None:
    """Raise ConfigurationError naming `source` and listing every problem of `tree` (see `problems`); `require`
    False skips the missing-key check (a file that overrides will complete)."""
    found = problems(tree, kind, section, require)
    if len(found) == 1:
        raise ConfigurationError(f"{source}: {found[0]}")
    if found:
        raise ConfigurationError(f"{source}: {len(found)} problems:\n" + "\n".join(f"  - {p}" for p in found))


# ---------------------------------------------------------------------------------------------------------------------
# Completion
# ---------------------------------------------------------------------------------------------------------------------


def _filled(tp: Any, value: Any) -> Any:
    inner = _strip_optional(tp)[0]
    if value is None:
        return None
    if _is_section(inner):
        return _filled_section(inner, value)
    if inner is float:
        return _as_float(value)
    return value


def _filled_section(cls: type, node: Mapping) -> dict:
    out = {}
    for name, (tp, f) in fields_of(cls).items():
        if name in node:
            out[name] = _filled(tp, node[name])
        elif _has_default(f) and not isinstance(f.default, Inherited):
            out[name] = _filled(tp, _default(f))
    return out


def defaults(kind: str = "cage", section: str = "") -> dict:
    """{key: default} of every key of a section that has a default (sections with defaults filled in); the keys
    whose default comes from elsewhere (dino_arch's) are left out."""
    return _filled_section(section_type(kind, section), {})


def complete(section: str, mapping: Any, kind: str = "cage", source: Optional[str] = None) -> dict:
    """The section at dotted path `section` ("model", "training", "data", "model.autoencoder", ...; "" for the
    whole file) of a `kind` config, validated, as plain dicts with every absent key at its default.

    `mapping` may be a plain dict (e.g. from yaml.safe_load), an OmegaConf node or a Configuration section. Float
    keys come back as floats (also when written as ints or as PyYAML's strings such as '1e-7'). Absent keys whose
    default is "taken from elsewhere" (dino_arch's) stay absent; a key that is null stays null. Raises
    ConfigurationError (naming `source`, default the section) for unknown, missing or mistyped keys.
    """
    tree = _plain(mapping)
    validate(tree, kind, section, source or f"<{section or kind + ' config'}>")
    return _filled_section(section_type(kind, section), tree)


# ---------------------------------------------------------------------------------------------------------------------
# The README's config reference
# ---------------------------------------------------------------------------------------------------------------------


def _default_text(f: dataclasses.Field) -> str:
    if not _has_default(f):
        return "required"
    if f.metadata.get("needed_for"):
        return f"required for type {f.metadata['needed_for']}"
    value = _default(f)
    if isinstance(value, Inherited):
        return f"{value.description}"
    if value == {}:
        return "(its defaults)"
    if isinstance(value, bool) or value is None:
        return f"`{str(value).lower() if value is not None else 'null'}`"
    return f"`{value}`"


def _rows(cls: type, prefix: str = "", only: Optional[tuple] = None, origin: bool = True) -> list:
    """Table rows of the keys of `cls` (those named in `only`), each section followed by its keys."""
    rows = []
    for name, (tp, f) in fields_of(cls).items():
        if only is not None and name not in only:
            continue
        meaning = f.metadata["help"]
        if f.metadata.get("choices"):
            meaning += f" One of: {', '.join(f.metadata['choices'])}."
        source = (" ours |" if f.metadata.get("added") else " original |") if origin else ""
        rows.append(f"| `{prefix}{name}` | {type_name(tp)} | {_default_text(f)} |{source} {meaning} |")
        inner = _strip_optional(tp)[0]
        if _is_section(inner):
            rows.extend(_rows(inner, f"{prefix}{name}.", origin=origin))
    return rows


def markdown() -> str:
    """The config reference of README.md (between its config-reference markers), generated from the schema."""
    lines = [
        "Generated from `lutils/schema.py` by `python -m lutils.schema --markdown` (a test keeps the two equal). "
        "Origin original: a key of the original CAGE; ours: a key this project added, always optional, whose "
        "default keeps the original's behaviour.",
        "",
        "CAGE configs (`train.py`, `generate.py`, `evaluate.py`, the demos):",
        "",
        "| Key | Type | Default | Origin | Meaning |",
        "|---|---|---|---|---|",
        *_rows(CageConfig),
        "",
        "Autoencoder configs (`train_autoencoder.py`, ours; a file with a top-level `autoencoder` and no `model`): "
        "`name` and `data` as above, and",
        "",
        "| Key | Type | Default | Meaning |",
        "|---|---|---|---|",
        *_rows(AutoencoderConfig, only=("autoencoder", "training"), origin=False),
    ]
    return "\n".join(lines) + "\n"


BEGIN_MARKER = "<!-- config-reference: begin (generated by python -m lutils.schema --markdown) -->"
END_MARKER = "<!-- config-reference: end -->"


def readme_section(text: str) -> str:
    """The text between the config-reference markers of a README."""
    if text.count(BEGIN_MARKER) != 1 or text.count(END_MARKER) != 1:
        raise ValueError("README: expected one config-reference begin marker and one end marker")
    return text.split(BEGIN_MARKER, 1)[1].split(END_MARKER, 1)[0].strip("\n") + "\n"


def write_readme(path: str | Path) -> None:
    """Replace the config-reference section of the README at `path` with `markdown()`."""
    path = Path(path)
    text = path.read_text()
    readme_section(text)  # both markers present
    head, rest = text.split(BEGIN_MARKER, 1)
    tail = rest.split(END_MARKER, 1)[1]
    path.write_text(f"{head}{BEGIN_MARKER}\n{markdown()}{END_MARKER}{tail}")


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description="The config schema: print the README reference, or update it.")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--markdown", action="store_true", help="print the config reference (markdown)")
    group.add_argument("--write-readme", metavar="README", help="replace the config-reference section of README")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown())
    else:
        write_readme(args.write_readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
