"""Loading a model with its data for the demos: the checkpoint registry, where relative paths are looked up, and
`load_model_and_data`. (`demo.common` re-exports these names, where the original had them.)

`CHECKPOINTS` maps a config name to its checkpoint, as in the original; edit it to register your own model
(`demo.common.CHECKPOINTS["mine"] = "path/to/model.pth"` beside `configs/mine.yaml`), then `Demo("mine")`.

Where relative paths are looked up: a config name ("clevrer" -> configs/clevrer.yaml), a CHECKPOINTS entry and the
paths written in a config (data.data_root, model.autoencoder.ckpt_path) are tried under the current directory first,
as the original does, then under the project root (the folder above demo/), so the notebooks also work from demo/
or from anywhere else. $CAGE_WEIGHTS_ROOT, when set, comes before both for CHECKPOINTS. Passing `project_root`
uses that folder only. Paths you pass yourself (a config file, ckpt, data_path) are taken as given, relative to the
current directory, with the project root as a fallback.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Sequence

from lutils.configuration import Configuration, ConfigurationError, to_plain

log = logging.getLogger(__name__)

#: The project root (the folder holding demo/, configs/, model_weights/): the fallback for relative paths.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
WEIGHTS_ROOT_ENV = "CAGE_WEIGHTS_ROOT"
#: Checkpoint of each config name (the original's dict and paths); edit it to register your own models.
CHECKPOINTS = {
    "bair": "./model_weights/bair/model.pth",
    "clevrer": "./model_weights/clevrer/model.pth",
    "epic": "./model_weights/epic/model.pth",
}


def search_roots(project_root: Optional[str | os.PathLike] = None) -> list:
    """Folders under which relative config, checkpoint and data paths are tried, in order."""
    if project_root is not None:
        return [Path(project_root)]
    roots = [Path.cwd(), PROJECT_ROOT]
    return roots if roots[0].resolve() != roots[1] else roots[1:]


def _first_existing(relative: Path, roots: Sequence[Path]) -> Path:
    """`relative` under the first root where it exists, else under the first root (for the error message)."""
    for root in roots:
        if (root / relative).exists():
            return root / relative
    return roots[0] / relative


def checkpoint_path(name: str, project_root: Optional[str | os.PathLike] = None) -> Path:
    """The checkpoint of config `name`: CHECKPOINTS[name], absolute, or under $CAGE_WEIGHTS_ROOT, the current
    directory or the project root (the first where it exists; `project_root` alone when given)."""
    if name not in CHECKPOINTS:
        raise KeyError(f"no checkpoint registered for config '{name}' (CHECKPOINTS has: "
                       f"{', '.join(sorted(CHECKPOINTS))}); add it with demo.common.CHECKPOINTS[{name!r}] = "
                       f"'path/to/model.pth', or pass ckpt=PATH")
    entry = Path(str(CHECKPOINTS[name])).expanduser()
    if entry.is_absolute():
        return entry
    return _first_existing(entry, checkpoint_roots(project_root))


def checkpoint_roots(project_root: Optional[str | os.PathLike] = None) -> list:
    """Folders under which a relative CHECKPOINTS entry is tried, in order."""
    roots = search_roots(project_root)
    if project_root is None and os.environ.get(WEIGHTS_ROOT_ENV):
        roots = [Path(os.environ[WEIGHTS_ROOT_ENV])] + roots
    return roots


def _user_path(path: str | os.PathLike, root: Path) -> Path:
    """A path the user gave: as is (relative to the CWD) if it exists, else relative to the project root."""
    path = Path(path).expanduser()
    if path.is_absolute() or path.exists() or not (root / path).exists():
        return path
    return root / path


def _config_path(path: str | os.PathLike, roots: Sequence[Path], config_dir: Optional[Path] = None) -> Path:
    """A path written in a config: absolute, or under the first of `roots` (then the config's folder) where it exists."""
    path = Path(str(path)).expanduser()
    if path.is_absolute():
        return path
    return _first_existing(path, [*roots, *([config_dir] if config_dir is not None else [])])


def resolve_config(name_or_config, project_root: Optional[str | os.PathLike] = None,
                   overrides: Optional[Sequence[str]] = None) -> Configuration:
    """A Configuration from a config name (configs/<name>.yaml, see the module docstring), a YAML path, or as given."""
    root = Path(project_root) if project_root is not None else PROJECT_ROOT
    if isinstance(name_or_config, Configuration):
        if overrides:
            raise ValueError("overrides apply to a config name or path, not to a Configuration object")
        return name_or_config
    text = str(name_or_config)
    looks_like_path = isinstance(name_or_config, os.PathLike) or text.endswith((".yaml", ".yml")) or "/" in text \
        or os.sep in text
    if looks_like_path:
        path = _user_path(text, root)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
    else:
        roots = search_roots(project_root)
        path = _first_existing(Path("configs") / f"{text}.yaml", roots)
        if not path.is_file():
            known = sorted({p.stem for r in roots for p in (r / "configs").glob("*.yaml")})
            looked = " and ".join(str(r / "configs" / f"{text}.yaml") for r in roots)
            raise FileNotFoundError(
                f"unknown config name '{text}': {looked} do(es) not exist. Known configs: {', '.join(known) or 'none'}. "
                f"To use your own model, add configs/{text}.yaml and register its checkpoint: "
                f"demo.common.CHECKPOINTS[{text!r}] = 'path/to/model.pth'")
    return Configuration(path, overrides)


def load_model_and_data(
    name_or_config,
    ckpt: Optional[str | os.PathLike] = None,
    data_path: Optional[str | os.PathLike] = None,
    device="cpu",
    split: str = "test",
    project_root: Optional[str | os.PathLike] = None,
    overrides: Optional[Sequence[str]] = None,
    load_data: bool = True,
    frames_per_sample: int = 1,
    random_time: bool = False,
    trust: bool = False,
    use_ema: bool = True,
):
    """(model, dataset, config) for the demos.

    name_or_config: a config name ("clevrer" -> configs/clevrer.yaml), a YAML path, or a Configuration. ckpt: the
    CAGE checkpoint (default: CHECKPOINTS[config name]). data_path: an HDF5 split folder or shard (default:
    data.data_root/<split> of the config); `load_data=False` gives dataset None (images only). The dataset has no
    augmentation, no flip and, unless `random_time`, clips starting at frame 0; `frames_per_sample=1` (the demos only
    need one frame) accepts videos of any length. Relative paths are resolved as the module docstring says. The
    model is loaded, put in eval mode and moved to `device`.
    """
    from model.model import Model

    root = Path(project_root) if project_root is not None else PROJECT_ROOT
    roots = search_roots(project_root)
    config = resolve_config(name_or_config, project_root, overrides)
    name = str(config.get("name") or config.path.stem)

    if ckpt is None:
        key = config.path.stem if config.path.stem in CHECKPOINTS else name
        if key not in CHECKPOINTS:
            raise FileNotFoundError(
                f"no checkpoint registered for config '{config.path.stem}' ({config.path}): add "
                f"demo.common.CHECKPOINTS[{config.path.stem!r}] = 'path/to/model.pth' (known: "
                f"{', '.join(sorted(CHECKPOINTS))}), or pass ckpt=PATH")
        ckpt_file = checkpoint_path(key, project_root)
    else:
        ckpt_file = _user_path(ckpt, root)
    if not ckpt_file.is_file():
        searched = "" if ckpt is not None or Path(str(CHECKPOINTS[key])).is_absolute() else \
            f" (looked under {', '.join(str(r) for r in checkpoint_roots(project_root))})"
        raise FileNotFoundError(f"model checkpoint not found: {ckpt_file}{searched}")

    dataset = load_dataset(config, data_path, split, project_root, frames_per_sample, random_time) if load_data \
        else None

    model_config = to_plain(config["model"])
    ae = model_config.get("autoencoder", {})
    if ae.get("ckpt_path"):  # the CAGE checkpoint usually holds the autoencoder too; Model warns if the file is absent
        ae["ckpt_path"] = str(_config_path(ae["ckpt_path"], roots, config.path.parent))
    model = Model.from_config({"model": model_config, "data": config.get("data") or {}}, ckpt_file, trust=trust,
                              use_ema=use_ema)
    model = model.eval().to(device)
    log.info("loaded the model from %s", ckpt_file)
    return model, dataset, config


def load_dataset(config, data_path: Optional[str | os.PathLike] = None, split: str = "test",
                 project_root: Optional[str | os.PathLike] = None, frames_per_sample: int = 1,
                 random_time: bool = False):
    """The demos' dataset: `data_path` (an HDF5 split folder or shard) or data.data_root/<split> of the config
    (a Configuration), resolved as the module docstring says; FileNotFoundError names what was looked for."""
    from dataset.clips import clips_from_config

    root = Path(project_root) if project_root is not None else PROJECT_ROOT
    roots = search_roots(project_root)
    if data_path is None:
        data_root = config.select("data.data_root")
        if data_root is None:
            raise ConfigurationError(f"{config.path}: data.data_root is not set; pass data_path=PATH")
        data_file = _config_path(Path(str(data_root)) / split, roots)
    else:
        data_file = _user_path(data_path, root)
    if not data_file.exists():
        if data_path is not None:
            raise FileNotFoundError(f"data not found: {data_file}")
        searched = "" if Path(str(config.select("data.data_root"))).is_absolute() else \
            f", looked under {', '.join(str(r) for r in roots)}"
        raise FileNotFoundError(
            f"data not found: {data_file} (data.data_root/{split} of {config.path}{searched}). Set data.data_root "
            f"in the config, or load other data with Demo.from_config(name, data_path=PATH) or "
            f"load_model_and_data(..., data_path=PATH); load_data=False uses image files only")
    return clips_from_config(config["data"], split, "demo", path=data_file, frames_per_sample=frames_per_sample,
                             random_time=random_time)
