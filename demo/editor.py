"""The base of the animation (`demo.Demo`) and composition (`demo.DemoCompose`) editors.

It owns what both share: how an editor is built (the original way, from a dataset name, or from a model already
loaded), the matplotlib figure and its mouse and key events, generation, snapshots and saving. What each gesture
does is in the subclasses; where a pointer lands on the latent grid is in demo/grid.py.

Every state change goes through plain methods, so the editors also run without a display: scripts and tests drive
them through the methods or through real matplotlib events on a non-interactive backend.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from demo import grid as pointer
from demo.common import load_model_and_data, show_video
from lutils.logging import to_video

log = logging.getLogger(__name__)

FRAME_COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:pink",
                 "tab:olive", "tab:cyan", "tab:gray")


class Editor:
    """State and plumbing shared by the editors. Subclasses define KEYS, the gesture hooks (`_press`, `_drag`,
    `_release`), `control_tensors`, `_initial_frames` and `_draw`."""

    #: key -> name of the method it calls
    KEYS: dict = {}
    #: mode letter (the original's) -> what the status line calls it
    MODE_NAMES: dict = {}
    HELP = ""
    #: index in the generated video of the frame that control entry 0 drives
    video_offset = 0

    def __init__(self, dataset_name: str, random_time: bool = False, device: str = "cpu", steps: int = 20,
                 num_frames: int = 3, past_horizon: int = -1):
        """The original's constructor: configs/<dataset_name>.yaml and CHECKPOINTS[dataset_name] (demo/common.py),
        the config's test split, the model on `device`."""
        model, dataset, config = load_model_and_data(dataset_name, device=device, random_time=random_time,
                                                     load_data=self._needs_data())
        self.dataset_name = dataset_name
        self._setup(model, config, dataset, device=device, steps=steps, num_frames=num_frames,
                    past_horizon=past_horizon)
        self.reinit()

    @classmethod
    def from_model(cls, model, config, dataset=None, *, device=None, steps: int = 20, num_frames: int = 3,
                   past_horizon: int = -1, seed: Optional[int] = 0, chunk_size: int = 4, fps: float = 8.0,
                   **options):
        """An editor on a model, config and dataset you already have (e.g. from `load_model_and_data`)."""
        editor = cls.__new__(cls)
        editor.dataset_name = str(config.get("name") or getattr(getattr(config, "path", None), "stem", "model"))
        editor._setup(model, config, dataset, device=device, steps=steps, num_frames=num_frames,
                      past_horizon=past_horizon, seed=seed, chunk_size=chunk_size, fps=fps, **options)
        editor.reinit()
        return editor

    @classmethod
    def from_config(cls, name_or_config, ckpt=None, data_path=None, device="cpu", split: str = "test",
                    project_root=None, overrides=None, load_data: bool = True, random_time: bool = False,
                    **kwargs):
        """Load with `load_model_and_data` (any config path, checkpoint or data), then `from_model(**kwargs)`."""
        model, dataset, config = load_model_and_data(name_or_config, ckpt, data_path, device, split, project_root,
                                                     overrides, load_data=load_data, random_time=random_time)
        return cls.from_model(model, config, dataset, device=device, **kwargs)

    def _needs_data(self) -> bool:
        return True

    def _setup(self, model, config, dataset, *, device=None, steps: int = 20, num_frames: int = 3,
               past_horizon: int = -1, seed: Optional[int] = 0, chunk_size: int = 4, fps: float = 8.0) -> None:
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model, self.config, self.dataset = model.eval().to(self.device), config, dataset
        self.steps, self.num_frames, self.past_horizon = int(steps), int(num_frames), int(past_horizon)
        self.seed, self.chunk_size, self.fps = seed, int(chunk_size), float(fps)
        self.input_size, self.im_res = int(config["data"]["input_size"]), int(config["data"]["crop_size"])
        self.grid = tuple(int(v) for v in model.state_res)  # (h, w) cells
        self.grid_size = self.grid[0]  # the original's name
        self.cell_size = (self.im_res / self.grid[0], self.im_res / self.grid[1])  # (height, width) in pixels
        self.ts = int(self.im_res / self.grid[0])  # the original's cell size in pixels
        self.fig = self.ax = None
        self._cids: list = []
        self.out_images: list = []

    def reinit(self) -> None:
        """Forget everything but the model: images, controls, the generated video and the snapshots."""
        self.close()
        self.out_images = []
        self._reset()

    def _reset(self) -> None:
        """Forget the controls and the generated video (subclasses extend it)."""
        self.mode = None
        self.press = False
        self.moving: Optional[tuple] = None  # ([(source, destination)], dropped) of the group being dragged
        self.generated_frames: Optional[torch.Tensor] = None
        self.message = ""

    # Sources -----------------------------------------------------------------------------------------------------
    def random_index(self) -> int:
        """A random clip of the dataset (numpy's global RNG, as the original)."""
        if self.dataset is None:
            raise ValueError("no dataset to draw a random clip from: give an index or an image")
        return int(np.random.randint(len(self.dataset)))

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
                raise IndexError(f"dataset index {index} out of range ({len(self.dataset)} videos in "
                                 f"{getattr(self.dataset, 'data_path', 'the dataset')})")
            if frame is None:
                return self.dataset[index][0].float()
            return self.dataset.transform(self.dataset.read_clip(index, int(frame)))[0].float()
        from dataset.frames import load_frame

        return load_frame(str(spec), self.input_size, self.im_res)

    @torch.no_grad()
    def features_of(self, images: torch.Tensor) -> torch.Tensor:
        """DINO control features [S F h w] (CPU, fp32) of images [S 3 H W] in [-1, 1]."""
        return self.model.get_features(images.to(self.device)).float().cpu()

    # Cells -------------------------------------------------------------------------------------------------------
    def cell_at(self, xy: Sequence[float]) -> Optional[tuple]:
        """The (row, col) cell under pixel (x, y), None off the grid."""
        return pointer.cell_under(xy, self.cell_size, self.grid)

    def cell_center(self, cell: Sequence[int]) -> tuple:
        """Pixel (x, y) of the centre of a cell."""
        return ((cell[1] + 0.5) * self.cell_size[1], (cell[0] + 0.5) * self.cell_size[0])

    def _cells(self, cells=None, rect=None) -> list:
        """Cells given as [(row, col), ...] or as the pixel rectangle rect=(x0, y0, x1, y1); checked."""
        if (cells is None) == (rect is None):
            raise ValueError("give exactly one of cells=[(row, col), ...] or rect=(x0, y0, x1, y1)")
        if rect is not None:
            out = pointer.cells_in_rect(rect, self.cell_size, self.grid)
        else:
            out = []
            for cell in cells:
                r, c = (int(v) for v in cell)
                if not (0 <= r < self.grid[0] and 0 <= c < self.grid[1]):
                    raise ValueError(f"cell ({r}, {c}) is outside the {self.grid[0]}x{self.grid[1]} grid")
                out.append((r, c))
        if not out:
            raise ValueError("no cells given")
        return out

    def _placed(self, cells: Sequence[tuple], *, xy=None, offset=None, at=None) -> tuple:
        """([(source, destination)], [dropped source cells]) of `cells` placed at pointer `xy` (the original's
        rule), moved by `offset` (rows, cols) or with their top-left at cell `at`; off-grid cells are dropped."""
        if sum(v is not None for v in (xy, offset, at)) != 1:
            raise ValueError("give exactly one of xy=(x, y) (pixels), offset=(rows, cols) or at=(row, col)")
        if xy is not None:
            return pointer.place_group(cells, xy, self.cell_size, self.grid)
        shift = offset if offset is not None else pointer.at_top_left(cells, at)
        return pointer.shift_group(cells, shift, self.grid)

    def _report_write(self, frame: int, placed: tuple) -> None:
        """Say what a write did; cells dropped off the grid are a warning (logged and shown in the figure)."""
        pairs, dropped = placed
        self.message = f"control frame {frame}: {len(pairs)} cell(s) placed"
        if dropped:
            text = (f"control frame {frame}: {len(dropped)} of {len(pairs) + len(dropped)} cell(s) land off the "
                    f"{self.grid[0]}x{self.grid[1]} grid and are dropped")
            log.warning("%s", text)
            self.message = f"warning: {text}"

    @staticmethod
    def _new_mask(grid: Sequence[int]) -> torch.Tensor:
        return torch.zeros(int(grid[0]), int(grid[1]))

    # Generation --------------------------------------------------------------------------------------------------
    def control_tensors(self) -> tuple:
        """(feats [1 K F h w], masks [1 K 1 h w]) of the K control frames written, or (None, None)."""
        raise NotImplementedError

    @property
    def num_control_frames(self) -> int:
        feats, _ = self.control_tensors()
        return 0 if feats is None else feats.shape[1]

    def _initial_frames(self) -> Optional[torch.Tensor]:
        return None

    def generate(self, num_frames: Optional[int] = None, **generate_kwargs) -> torch.Tensor:
        """The enter key: generate from the controls with model.generation.generate, into `generated_frames`.

        num_frames defaults to the editor's `num_frames`, as the original; control frames beyond it are not used
        (a warning says so: raise `num_frames` to use them). Defaults (overridable by kwargs): joint method, euler
        solver, num_steps=self.steps, past_horizon, chunk_size and seed of the editor (seed None: torch's global
        RNG, as the original).
        """
        from model.generation import generate

        feats, masks = self.control_tensors()
        written = 0 if feats is None else feats.shape[1]
        n = self.num_frames if num_frames is None else int(num_frames)
        unused = written - n
        kwargs = dict(method="joint", odesolver="euler", num_steps=self.steps, past_horizon=self.past_horizon,
                      chunk_size=self.chunk_size, seed=self.seed)
        kwargs.update(generate_kwargs)
        self.generated_frames = generate(self.model, n, self.device, initial_frames=self._initial_frames(),
                                         feats=feats, feats_masks=masks, **kwargs)
        self.message = f"F: generated {n} frames (demo.generated_frames)"
        if unused > 0:
            text = (f"generated {n} frames: the last {unused} control frame(s) are not used (set num_frames to "
                    f"{written} to use them)")
            log.warning("%s", text)
            self.message = f"F, warning: {text}"
        self._refresh()
        return self.generated_frames

    # Output ------------------------------------------------------------------------------------------------------
    def render(self):
        """The editor drawn in a new off-screen Agg figure (no display needed)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=self.FIGSIZE)
        FigureCanvasAgg(figure)
        self._paint(figure, figure.add_subplot(1, 1, 1))
        return figure

    def snapshot(self) -> Image.Image:
        """The 'x' key: the current editor picture as a PIL image, appended to `out_images`."""
        figure = self.render()
        figure.canvas.draw()
        image = Image.fromarray(np.asarray(figure.canvas.buffer_rgba())[..., :3].copy())
        self.out_images.append(image)
        self.message = f"snapshot {len(self.out_images)} taken (demo.out_images)"
        self._refresh()
        return image

    def control_boxes(self) -> list:
        """Pixel rectangles (x0, y0, x1, y1) of the control cells of each generated-video frame."""
        _, masks = self.control_tensors()
        control_frames = [] if masks is None else [self._mask_cells(m[0]) for m in masks[0]]
        length = self.generated_frames.shape[1] if self.generated_frames is not None \
            else len(control_frames) + self.video_offset
        boxes = [[] for _ in range(length)]
        ch, cw = self.cell_size
        for k, cells in enumerate(control_frames):
            if k + self.video_offset < length:
                boxes[k + self.video_offset] = [(round(c * cw), round(r * ch), round((c + 1) * cw),
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

    # The figure and its events -------------------------------------------------------------------------------------
    FIGSIZE = (9.5, 4)

    def show(self):
        """Create the editor's pyplot figure, draw it and connect mouse and keys, as the original's run() does.

        Interactive with any GUI backend or, in Jupyter, `%matplotlib widget` (ipympl); with a non-interactive
        backend the figure still receives events sent through its canvas. Returns the figure.
        """
        import matplotlib.pyplot as plt

        self.close()
        self.fig = plt.figure(figsize=self.FIGSIZE)
        self.ax = self.fig.add_subplot(1, 1, 1)
        canvas = self.fig.canvas
        manager = getattr(canvas, "manager", None)
        default_keys = getattr(manager, "key_press_handler_id", None)
        if default_keys is not None:  # matplotlib's own shortcuts ('c', 'v', 's', ...) would fight ours
            canvas.mpl_disconnect(default_keys)
        if hasattr(canvas, "header_visible"):  # ipympl
            canvas.header_visible = False
        self._cids = [canvas.mpl_connect("button_press_event", self.on_press),
                      canvas.mpl_connect("motion_notify_event", self.on_motion),
                      canvas.mpl_connect("button_release_event", self.on_release),
                      canvas.mpl_connect("key_press_event", self.on_key)]
        self._refresh()
        return self.fig

    def close(self) -> None:
        """Disconnect and close the editor's figure, if any."""
        fig = getattr(self, "fig", None)
        if fig is not None:
            import matplotlib.pyplot as plt

            for cid in self._cids:
                fig.canvas.mpl_disconnect(cid)
            plt.close(fig)
        self.fig = self.ax = None
        self._cids = []

    def on_press(self, event) -> None:
        toolbar = getattr(event.canvas, "toolbar", None)
        if self.ax is None or event.inaxes is not self.ax or event.xdata is None or getattr(toolbar, "mode", ""):
            return
        self._guarded(self._press, (event.xdata, event.ydata))

    def on_motion(self, event) -> None:
        if self.ax is None or event.inaxes is not self.ax or event.xdata is None or not self.press:
            return
        self._guarded(self._drag, (event.xdata, event.ydata))

    def on_release(self, event) -> None:
        pressed, self.press = self.press, False
        if pressed:  # a release without a press on the image (e.g. a drag started outside it) does nothing
            self._guarded(self._release)

    def on_key(self, event) -> None:
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

    def _press(self, xy) -> None:
        raise NotImplementedError

    def _drag(self, xy) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    def _refresh(self) -> None:
        if self.ax is not None:
            self.ax.clear()
            self._paint(self.fig, self.ax)
            self.fig.canvas.draw_idle()

    # Drawing -----------------------------------------------------------------------------------------------------
    def _paint(self, figure, ax) -> None:
        self._draw(ax)
        if self.mode:
            ax.annotate(self.mode.upper(), (self.im_res - 20, 20), fontsize=16, color="black")
        mode = self.MODE_NAMES.get(self.mode, "none")
        figure.suptitle(f"{self.title()}   mode: {mode}   {self.HELP}" + (f"\n{self.message}" if self.message else ""),
                        fontsize=8)

    def title(self) -> str:
        return self.dataset_name

    def _draw(self, ax) -> None:
        raise NotImplementedError

    def _show_image(self, ax, image) -> None:
        """An image [3 H W] in [-1,1] (or uint8 [H W 3]) with the cell grid.

        Drawn as the original's plain imshow draws it (pixel i centred on coordinate i, the image spanning
        -0.5 .. im_res - 0.5), so that a pointer reports the coordinates, and selects the cells, it did there.
        """
        pixels = image if isinstance(image, np.ndarray) else to_video(image[None])[0].transpose(1, 2, 0)
        edge = self.im_res - 0.5
        ax.imshow(pixels, extent=(-0.5, edge, edge, -0.5), interpolation="nearest")
        ch, cw = self.cell_size
        for r in range(1, self.grid[0]):
            ax.axhline(r * ch, color="white", linewidth=0.3, alpha=0.5)
        for c in range(1, self.grid[1]):
            ax.axvline(c * cw, color="white", linewidth=0.3, alpha=0.5)
        ax.set_xlim(-0.5, edge)
        ax.set_ylim(edge, -0.5)
        ax.set_xticks([])
        ax.set_yticks([])

    def _mark_cells(self, ax, cells, colour: str, fill: bool = False, label: Optional[str] = None) -> None:
        from matplotlib.patches import Rectangle

        ch, cw = self.cell_size
        for r, c in cells:
            ax.add_patch(Rectangle((c * cw, r * ch), cw, ch, facecolor=colour if fill else "none",
                                   edgecolor=colour, alpha=0.35 if fill else 0.9, linewidth=1.2))
        if label is not None and cells:
            r, c = min(cells)
            ax.text(c * cw + 1, r * ch + 1, label, color=colour, fontsize=7, va="top", ha="left",
                    fontweight="bold")

    def _draw_control_frames(self, ax, masks: Sequence[torch.Tensor], first: int) -> None:
        """Outline the cells of control frames first, first+1, ..., one colour each, labelled by video frame."""
        for k, mask in enumerate(masks):
            cells = self._mask_cells(mask)
            if cells:
                frame = first + k
                self._mark_cells(ax, cells, FRAME_COLOURS[frame % len(FRAME_COLOURS)], label=str(frame))

    @staticmethod
    def _mask_cells(mask: torch.Tensor) -> list:
        """The (row, col) cells set in a mask [h w], sorted."""
        return [tuple(c) for c in torch.nonzero(mask > 0).tolist()]
