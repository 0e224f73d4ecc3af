"""Helpers shared by the demo editors and notebooks: loading a model with its data, showing videos, and the
display-free grid editor that `demo.demo.Demo` and `demo.demo_compose.DemoCompose` build on.

Paths taken from a config (configs/<name>.yaml, data.data_root, model.autoencoder.ckpt_path) and the default
checkpoints (CHECKPOINTS) are resolved against the project root (the folder above demo/, or `project_root`), never
against the current directory, so the notebooks work from demo/ as well as from the repository root. Paths you pass
yourself (a config file, ckpt, data_path) are taken as given, relative to the current directory, with the project
root as a fallback.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:  # `model`, `dataset`, `lutils` live beside demo/ (notebooks run from demo/)
    sys.path.insert(0, str(PROJECT_ROOT))

from lutils.configuration import Configuration, to_plain  # noqa: E402
from lutils.logging import to_video  # noqa: E402

log = logging.getLogger(__name__)

WEIGHTS_ROOT_ENV = "CAGE_WEIGHTS_ROOT"
#: Default checkpoint of each released config, relative to the weights root (see `checkpoint_path`).
CHECKPOINTS = {name: f"model_weights/{name}/model.pth" for name in ("bair", "clevrer", "epic")}


def show_video(video: torch.Tensor, show: bool = True) -> List[Image.Image]:
    """Show a video [b l 3 H W] (or [l 3 H W]) in [-1,1] frame by frame and return one PIL image per frame.

    Each returned image holds the b videos of that time step side by side. With `show`, matplotlib displays the
    frames in a grid (rows: time, columns: batch), as in the notebooks.
    """
    if video.ndim == 4:
        video = video.unsqueeze(0)
    if video.ndim != 5 or video.shape[2] != 3:
        raise ValueError(f"expected a video [b l 3 H W], got shape {tuple(video.shape)}")
    frames = to_video(video).transpose(1, 0, 3, 4, 2)  # [l b H W 3]
    images = [Image.fromarray(row.transpose(1, 0, 2, 3).reshape(row.shape[1], -1, 3)) for row in frames]
    if show:
        import matplotlib.pyplot as plt

        for t, image in enumerate(images):
            plt.figure(figsize=(2 * frames.shape[1], 2))
            plt.imshow(image)
            plt.title(f"frame {t}")
            plt.axis("off")
            plt.show()
    return images


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------

def weights_root(project_root: Optional[str | os.PathLike] = None) -> Path:
    """Where CHECKPOINTS are looked up: `project_root`, else $CAGE_WEIGHTS_ROOT, else the project root."""
    if project_root is not None:
        return Path(project_root)
    return Path(os.environ.get(WEIGHTS_ROOT_ENV) or PROJECT_ROOT)


def checkpoint_path(name: str, project_root: Optional[str | os.PathLike] = None) -> Path:
    """The default checkpoint of config `name` (CHECKPOINTS[name] under `weights_root(project_root)`)."""
    if name not in CHECKPOINTS:
        raise KeyError(f"no default checkpoint for config '{name}' (known: {', '.join(sorted(CHECKPOINTS))}); "
                       f"pass ckpt=PATH")
    return weights_root(project_root) / CHECKPOINTS[name]


def _user_path(path: str | os.PathLike, root: Path) -> Path:
    """A path the user gave: as is (relative to the CWD) if it exists, else relative to the project root."""
    path = Path(path).expanduser()
    if path.is_absolute() or path.exists() or not (root / path).exists():
        return path
    return root / path


def _config_path(path: str | os.PathLike, root: Path) -> Path:
    """A path written in a config: relative paths are relative to the project root."""
    path = Path(str(path)).expanduser()
    return path if path.is_absolute() else root / path


def resolve_config(name_or_config, project_root: Optional[str | os.PathLike] = None,
                   overrides: Optional[Sequence[str]] = None) -> Configuration:
    """A Configuration from a config name (configs/<name>.yaml under the project root), a YAML path, or as given."""
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
        path = root / "configs" / f"{text}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in (root / "configs").glob("*.yaml"))
            raise FileNotFoundError(f"config '{text}' not found: {path} does not exist "
                                    f"(configs in {root / 'configs'}: {', '.join(known) or 'none'})")
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

    name_or_config: a config name ("clevrer" -> <project root>/configs/clevrer.yaml), a YAML path, or a
    Configuration. ckpt: the CAGE checkpoint (default: CHECKPOINTS[config name] under the weights root).
    data_path: an HDF5 split folder or shard (default: data.data_root/<split>, relative to the project root);
    `load_data=False` gives dataset None (images only). The dataset has no augmentation, no flip and, unless
    `random_time`, clips starting at frame 0; `frames_per_sample=1` (the demos only need one frame) accepts videos
    of any length. A relative model.autoencoder.ckpt_path is looked up under the project root and beside the config.
    The model is loaded, put in eval mode and moved to `device`.
    """
    from dataset.video_dataset import VideoDataset
    from model.model import Model

    root = Path(project_root) if project_root is not None else PROJECT_ROOT
    config = resolve_config(name_or_config, root, overrides)
    name = str(config.get("name") or config.path.stem)

    if ckpt is None:
        if name not in CHECKPOINTS and config.path.stem not in CHECKPOINTS:
            raise FileNotFoundError(f"no default checkpoint for config '{name}' ({config.path}); pass ckpt=PATH")
        ckpt_file = checkpoint_path(name if name in CHECKPOINTS else config.path.stem, project_root)
    else:
        ckpt_file = _user_path(ckpt, root)
    if not ckpt_file.is_file():
        raise FileNotFoundError(f"model checkpoint not found: {ckpt_file}")

    dataset = None
    if load_data:
        if data_path is None:
            data_root = config.select("data.data_root")
            if data_root is None:
                raise KeyError(f"{config.path}: data.data_root is not set; pass data_path=PATH")
            data_file = _config_path(data_root, root) / split
        else:
            data_file = _user_path(data_path, root)
        if not data_file.exists():
            raise FileNotFoundError(f"data not found: {data_file} (pass data_path=PATH to an HDF5 split, or "
                                    f"load_data=False to use image files only)")
        data = config["data"]
        dataset = VideoDataset(data_file, int(data["input_size"]), int(data["crop_size"]),
                               frames_per_sample=frames_per_sample, skip_frames=int(data.get("skip_frames", 0)),
                               random_time=random_time, random_horizontal_flip=False, aug=False, albumentations=False)

    model_config = to_plain(config["model"])
    ae = model_config.get("autoencoder", {})
    ae_ckpt = ae.get("ckpt_path")
    if ae_ckpt and not Path(str(ae_ckpt)).expanduser().is_absolute():
        for candidate in (root / str(ae_ckpt), config.path.parent / str(ae_ckpt)):
            if candidate.is_file():
                ae["ckpt_path"] = str(candidate)
                break
        else:  # the CAGE checkpoint usually holds the autoencoder too; Model warns if it does not
            ae["ckpt_path"] = str(root / str(ae_ckpt))
    model = Model(model_config).load_from_ckpt(ckpt_file, trust=trust, use_ema=use_ema)
    model = model.eval().to(device)
    return model, dataset, config


# ---------------------------------------------------------------------------------------------------------------------
# The editor base: grid geometry, selection, controls, generation, snapshots, saving, matplotlib plumbing
# ---------------------------------------------------------------------------------------------------------------------

FRAME_COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:pink",
                 "tab:olive", "tab:cyan", "tab:gray")


class GridEditor:
    """State and plumbing shared by the editors; all logic works without a display.

    Coordinates: pixel (x, y) with x to the right and y down, pixel i covering [i, i+1); cells (row, col) of the
    latent grid, each im_res/state_res pixels. Subclasses implement `_draw`, `_on_drag` and `KEYS`.
    """

    KEYS: dict = {}
    #: index in the generated video of the frame that control frame 0 drives
    video_offset = 0

    def __init__(self, model, config, dataset=None, *, device=None, steps: int = 20, num_frames: int = 3,
                 past_horizon: int = -1, seed: Optional[int] = 0, chunk_size: int = 4, fps: float = 8.0):
        from model.controls import Controls

        self.model, self.config, self.dataset = model.eval(), config, dataset
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.steps, self.num_frames, self.past_horizon = int(steps), int(num_frames), int(past_horizon)
        self.seed, self.chunk_size, self.fps = seed, int(chunk_size), float(fps)
        self.input_size, self.im_res = int(config["data"]["input_size"]), int(config["data"]["crop_size"])
        self.grid = tuple(int(v) for v in model.state_res)  # (h, w) cells
        self.cell_size = (self.im_res / self.grid[0], self.im_res / self.grid[1])  # (height, width) in pixels
        self._controls_class = Controls
        self.controls = Controls(self.grid, self.num_frames)
        self.selected: list = []
        self.next_frame = 0
        self.mode = "select"
        self.generated_frames: Optional[torch.Tensor] = None
        self.out_images: list = []
        self.message = ""
        self.figure = None
        self._axes: dict = {}
        self._press = None

    @classmethod
    def from_config(cls, name_or_config, ckpt=None, data_path=None, device="cpu", split: str = "test",
                    project_root=None, overrides=None, load_data: bool = True, random_time: bool = False,
                    **kwargs):
        """Load the model and data with `load_model_and_data`, then build the editor (kwargs go to __init__)."""
        model, dataset, config = load_model_and_data(name_or_config, ckpt, data_path, device, split, project_root,
                                                     overrides, load_data=load_data, random_time=random_time)
        return cls(model, config, dataset, device=device, **kwargs)

    # Geometry ----------------------------------------------------------------------------------------------------
    def cell_at(self, xy: Sequence[float]) -> tuple:
        """The (row, col) cell under pixel (x, y), clamped to the grid."""
        x, y = float(xy[0]), float(xy[1])
        row = min(max(int(y // self.cell_size[0]), 0), self.grid[0] - 1)
        col = min(max(int(x // self.cell_size[1]), 0), self.grid[1] - 1)
        return row, col

    def cell_center(self, cell: Sequence[int]) -> tuple:
        """Pixel (x, y) of the centre of a cell."""
        return ((cell[1] + 0.5) * self.cell_size[1], (cell[0] + 0.5) * self.cell_size[0])

    def cells_in_rect(self, rect: Sequence[float]) -> list:
        """Cells touched by the pixel rectangle (x0, y0, x1, y1) (corners in any order; a point gives one cell)."""
        x0, y0, x1, y1 = (float(v) for v in rect)
        (r0, c0), (r1, c1) = self.cell_at((min(x0, x1), min(y0, y1))), self.cell_at((max(x0, x1), max(y0, y1)))
        return [(r, c) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]

    def _cells(self, cells=None, rect=None) -> list:
        if (cells is None) == (rect is None):
            raise ValueError("give exactly one of cells=[(row, col), ...] or rect=(x0, y0, x1, y1)")
        if rect is not None:
            return self.cells_in_rect(rect)
        out = []
        for cell in cells:
            r, c = (int(v) for v in cell)
            if not (0 <= r < self.grid[0] and 0 <= c < self.grid[1]):
                raise ValueError(f"cell ({r}, {c}) is outside the {self.grid[0]}x{self.grid[1]} grid")
            out.append((r, c))
        if not out:
            raise ValueError("no cells given")
        return out

    def _offset(self, from_xy, to_xy, offset) -> tuple:
        if offset is not None:
            if from_xy is not None or to_xy is not None:
                raise ValueError("give either from_xy and to_xy (pixels) or offset=(rows, cols)")
            return int(offset[0]), int(offset[1])
        if from_xy is None or to_xy is None:
            raise ValueError("give from_xy and to_xy (pixels) or offset=(rows, cols)")
        (r0, c0), (r1, c1) = self.cell_at(from_xy), self.cell_at(to_xy)
        return r1 - r0, c1 - c0

    def _place(self, source: int, cells: Sequence[tuple], frame: int, offset: Sequence[int], label: str):
        """Add a placement for one control frame, dropping the cells that would land outside the grid."""
        from model.controls import ControlsError

        h, w = self.grid
        kept = [(r, c) for r, c in cells if 0 <= r + offset[0] < h and 0 <= c + offset[1] < w]
        if not kept:
            raise ControlsError(f"{label}: the selection moved by {tuple(offset)} cells lies outside the {h}x{w} grid")
        if frame >= self.controls.num_frames:
            self.controls.num_frames = frame + 1
        self.controls.place(source, kept, [frame], tuple(offset), label)
        return self.controls.placements[-1]

    # Sources -----------------------------------------------------------------------------------------------------
    def load_source(self, spec, frame: Optional[int] = None) -> torch.Tensor:
        """One image [3 H W] in [-1, 1] (CPU): a dataset index (frame 0 of its clip, or frame `frame` of the
        video), an image file or HDF5 spec "PATH[:video[:frame]]" (dataset.frames.load_frame), or a tensor."""
        if isinstance(spec, torch.Tensor):
            image = spec.detach().float().cpu()
            if image.ndim == 4 and image.shape[0] == 1:
                image = image[0]
            if tuple(image.shape) != (3, self.im_res, self.im_res):
                raise ValueError(f"image tensor must be [3 {self.im_res} {self.im_res}] in [-1, 1], "
                                 f"got {tuple(spec.shape)}")
            if image.min() < -1.0001 or image.max() > 1.0001:
                raise ValueError("image tensor values must lie in [-1, 1]")
            return image
        if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
            if self.dataset is None:
                raise ValueError(f"dataset index {spec} given but the editor has no dataset")
            index = int(spec)
            if not 0 <= index < len(self.dataset):
                raise IndexError(f"dataset index {index} out of range ({len(self.dataset)} videos)")
            if frame is None:
                return self.dataset[index][0].float()
            return self.dataset.transform(self.dataset.read_clip(index, int(frame)))[0].float()
        from dataset.frames import load_frame

        return load_frame(str(spec), self.input_size, self.im_res)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """DINO control features [S F h w] (CPU) of images [S 3 H W] in [-1, 1]."""
        return self.model.get_features(images.to(self.device)).float().cpu()

    # Controls ----------------------------------------------------------------------------------------------------
    @property
    def num_control_frames(self) -> int:
        """Control frames written so far (1 + the last frame that has a placement)."""
        frames = [f for p in self.controls.placements for f in p.frames]
        return max(frames) + 1 if frames else 0

    def source_features(self) -> torch.Tensor:
        """[S F h w] features of the sources the placements refer to (CPU)."""
        raise NotImplementedError

    def build_controls(self, num_frames: Optional[int] = None) -> tuple:
        """(feats [1 N F h w], masks [1 N 1 h w]) of the current controls, N = num_frames (default: all frames)."""
        feats, masks = self.controls.build(self.source_features())
        n = self.controls.num_frames if num_frames is None else int(num_frames)
        if n <= feats.shape[1]:
            return feats[:, :n], masks[:, :n]
        pad = n - feats.shape[1]
        return (torch.cat([feats, feats.new_zeros(1, pad, *feats.shape[2:])], 1),
                torch.cat([masks, masks.new_zeros(1, pad, *masks.shape[2:])], 1))

    # Generation --------------------------------------------------------------------------------------------------
    def _initial_frames(self) -> Optional[torch.Tensor]:
        return None

    def generate(self, num_frames: Optional[int] = None, **generate_kwargs) -> torch.Tensor:
        """Generate a video from the controls with model.generation.generate; stored in `generated_frames`.

        num_frames defaults to max(self.num_frames, control frames written). Defaults (overridable by kwargs):
        joint method, euler solver, num_steps=self.steps, past_horizon, chunk_size and seed of the editor.
        """
        from model.generation import generate

        written = self.num_control_frames
        n = max(self.num_frames, written) if num_frames is None else int(num_frames)
        if n < written:
            log.warning("generating %d frames: the controls of frames %d..%d are not used", n, n, written - 1)
        feats = masks = None
        if self.controls.placements:
            feats, masks = self.build_controls(n)
        kwargs = dict(method="joint", odesolver="euler", num_steps=self.steps, past_horizon=self.past_horizon,
                      chunk_size=self.chunk_size, seed=self.seed)
        kwargs.update(generate_kwargs)
        self.generated_frames = generate(self.model, n, self.device, initial_frames=self._initial_frames(),
                                         feats=feats, feats_masks=masks, **kwargs)
        self.message = f"generated {n} frames"
        self._refresh()
        return self.generated_frames

    # Output ------------------------------------------------------------------------------------------------------
    def render(self, figure=None):
        """Draw the editor into `figure` (default: a new off-screen Agg figure, no display needed); return it."""
        if figure is None:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure

            figure = Figure(figsize=self._figsize())
            FigureCanvasAgg(figure)
        figure.clear()
        axes = self._draw(figure)
        if figure is self.figure:
            self._axes = axes
        return figure

    def snapshot(self) -> Image.Image:
        """The 'x' key: the current editor picture as a PIL image, appended to `out_images`."""
        figure = self.render()
        figure.canvas.draw()
        image = Image.fromarray(np.asarray(figure.canvas.buffer_rgba())[..., :3].copy())
        self.out_images.append(image)
        self.message = f"snapshot {len(self.out_images)} taken"
        self._refresh()
        return image

    def control_boxes(self) -> list:
        """Pixel rectangles (x0, y0, x1, y1) of the control cells of each generated-video frame."""
        ch, cw = self.cell_size
        by_frame = self.controls.cells_by_frame()
        length = self.generated_frames.shape[1] if self.generated_frames is not None else len(by_frame)
        boxes = [[] for _ in range(length)]
        for frame, cells in enumerate(by_frame):
            if frame + self.video_offset < length:
                boxes[frame + self.video_offset] = [(round(c * cw), round(r * ch), round((c + 1) * cw),
                                                     round((r + 1) * ch)) for r, c in cells]
        return boxes

    def save(self, path: str | os.PathLike) -> list:
        """Write the result; returns the files written.

        .mp4 / .gif: the generated video; .png: a strip of its frames with the control cells outlined;
        anything else is a folder: frame_000.png ... of the video (if generated) and snapshot_000.png ... of
        `out_images`.
        """
        from lutils.media import save_contact_sheet, write_video

        path = Path(path)
        suffix = path.suffix.lower()
        if suffix in (".mp4", ".gif", ".png"):
            if self.generated_frames is None:
                raise RuntimeError("nothing generated yet: call generate() (or press enter) first")
            path.parent.mkdir(parents=True, exist_ok=True)
            video = self.generated_frames[:1].clamp(-1, 1)
            if suffix == ".png":
                return [save_contact_sheet(path, video, boxes=[self.control_boxes()])]
            return [write_video(path, video[0], fps=self.fps)]
        if suffix:
            raise ValueError(f"{path}: use .mp4, .gif, .png, or a folder name without a suffix")
        if self.generated_frames is None and not self.out_images:
            raise RuntimeError("nothing to save: no generated video and no snapshots")
        path.mkdir(parents=True, exist_ok=True)
        written = []
        if self.generated_frames is not None:
            for t, image in enumerate(show_video(self.generated_frames[:1].clamp(-1, 1), show=False)):
                image.save(path / f"frame_{t:03d}.png")
                written.append(path / f"frame_{t:03d}.png")
        for k, image in enumerate(self.out_images):
            image.save(path / f"snapshot_{k:03d}.png")
            written.append(path / f"snapshot_{k:03d}.png")
        return written

    # Matplotlib layer ----------------------------------------------------------------------------------------------
    def connect(self, figure=None):
        """Create (or take) a pyplot figure, draw the editor in it and connect mouse drags and keys; return it.

        Works with any interactive backend, in Jupyter with `%matplotlib widget` (ipympl); with the inline backend
        the figure is a static picture and the editor is driven through its methods.
        """
        import matplotlib.pyplot as plt

        if figure is None:
            figure = plt.figure(figsize=self._figsize())
        self.figure = figure
        canvas = figure.canvas
        manager = getattr(canvas, "manager", None)
        default_keys = getattr(manager, "key_press_handler_id", None)
        if default_keys is not None:  # matplotlib's own shortcuts ('c', 'v', 's', ...) would fight ours
            canvas.mpl_disconnect(default_keys)
        if hasattr(canvas, "header_visible"):  # ipympl
            canvas.header_visible = False
        self._cids = [canvas.mpl_connect("button_press_event", self._on_press),
                      canvas.mpl_connect("button_release_event", self._on_release),
                      canvas.mpl_connect("key_press_event", self._on_key)]
        self.render(figure)
        return figure

    def disconnect(self) -> None:
        if self.figure is not None:
            for cid in getattr(self, "_cids", []):
                self.figure.canvas.mpl_disconnect(cid)
        self._cids = []

    def _axes_name(self, axes) -> Optional[str]:
        for name, ax in self._axes.items():
            if ax is axes:
                return name
        return None

    def _on_press(self, event) -> None:
        toolbar = getattr(event.canvas, "toolbar", None)
        if getattr(toolbar, "mode", "") or event.inaxes is None or event.xdata is None:
            self._press = None
            return
        self._press = (self._axes_name(event.inaxes), (event.xdata, event.ydata))

    def _on_release(self, event) -> None:
        press, self._press = self._press, None
        if press is None or event.inaxes is None or event.xdata is None:
            return
        name = self._axes_name(event.inaxes)
        if name is None or name != press[0]:
            return
        self._guarded(self._on_drag, name, press[1], (event.xdata, event.ydata))

    def _on_key(self, event) -> None:
        action = self.KEYS.get(event.key)
        if action is not None:
            self._guarded(getattr(self, action))

    def _guarded(self, function, *args) -> None:
        """Run an action from an event: errors are shown in the figure instead of being lost in a callback."""
        try:
            function(*args)
        except Exception as error:  # noqa: BLE001 - user-facing message
            self.message = f"error: {error}"
            log.warning("%s", error)
        self._refresh()

    def _refresh(self) -> None:
        if self.figure is not None:
            self.render(self.figure)
            self.figure.canvas.draw_idle()

    # Drawing helpers -----------------------------------------------------------------------------------------------
    def _figsize(self) -> tuple:
        return (5, 5)

    def _draw(self, figure) -> dict:
        raise NotImplementedError

    def _on_drag(self, axes_name: str, from_xy, to_xy) -> None:
        raise NotImplementedError

    def _show_image(self, ax, image: torch.Tensor, title: str) -> None:
        """An image [3 H W] in [-1,1] (or uint8 [H W 3]) with the cell grid, in pixel coordinates."""
        pixels = image if isinstance(image, np.ndarray) else to_video(image[None])[0].transpose(1, 2, 0)
        ax.imshow(pixels, extent=(0, self.im_res, self.im_res, 0), interpolation="nearest")
        ch, cw = self.cell_size
        for r in range(1, self.grid[0]):
            ax.axhline(r * ch, color="white", linewidth=0.3, alpha=0.5)
        for c in range(1, self.grid[1]):
            ax.axvline(c * cw, color="white", linewidth=0.3, alpha=0.5)
        ax.set_xlim(0, self.im_res)
        ax.set_ylim(self.im_res, 0)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=9)

    def _mark_cells(self, ax, cells, colour: str, fill: bool = False, label: Optional[str] = None) -> None:
        from matplotlib.patches import Rectangle

        ch, cw = self.cell_size
        for r, c in cells:
            ax.add_patch(Rectangle((c * cw, r * ch), cw, ch, facecolor=colour if fill else "none",
                                   edgecolor=colour, alpha=0.45 if fill else 0.9, linewidth=1.2))
        if label is not None and cells:
            r, c = min(cells)
            ax.text(c * cw + 1, r * ch + 1, label, color=colour, fontsize=7, va="top", ha="left",
                    fontweight="bold")

    def _draw_controls(self, ax, first_frame: int = 0) -> None:
        """Outline the destination cells of each control frame >= first_frame, one colour per frame."""
        for frame, cells in enumerate(self.controls.cells_by_frame()):
            if frame >= first_frame and cells:
                colour = FRAME_COLOURS[frame % len(FRAME_COLOURS)]
                self._mark_cells(ax, cells, colour, label=str(frame + self.video_offset))

    def _status(self, figure, help_text: str) -> None:
        figure.suptitle(f"mode: {self.mode}   {help_text}" + (f"\n{self.message}" if self.message else ""),
                        fontsize=8)
