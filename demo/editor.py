"""The editors' core, without a display: what the animation (`demo.Demo`) and composition (`demo.DemoCompose`)
editors share.

It owns how an editor is built (the original way, from a dataset name, or from a model already loaded), its state
(sources and their features, the cells written into each control frame), the gestures as plain calls (a pointer
pressed, moved and released at pixel (x, y) of the image, a key), the control tensors, generation and saving, and
`scene()`: what there is to show, as data. It imports no matplotlib, so any front end can drive it: scripts and
tests call its methods, demo/view.py turns matplotlib events into these calls and draws the scene (`show()` opens
that view, `snapshot()` renders it). What each gesture does is in the subclasses (demo/demo.py,
demo/demo_compose.py); where a pointer lands on the latent grid is in demo/grid.py; loading is in demo/loading.py.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from demo import grid as pointer
from demo.display import video_frames
from demo.loading import load_model_and_data
from lutils.logging import to_video
from model.controls import mask_cells, pad_controls, pixel_boxes

log = logging.getLogger(__name__)

#: colour of the cells of control frame k (as drawn): FRAME_COLOURS[k % len(FRAME_COLOURS)], matplotlib names
FRAME_COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:pink",
                 "tab:olive", "tab:cyan", "tab:gray")


@dataclass
class CellMarks:
    """Cells to outline (or fill) in one colour, labelled at their first cell when `label` is given."""

    cells: list
    colour: str
    fill: bool = False
    label: Optional[str] = None


@dataclass
class Scene:
    """What an editor shows: an image with its cell grid and marked cells, the mode letter in the top-right corner,
    and a caption (title, mode, keys, the last message). Coordinates are the image's pixels."""

    image: Optional[np.ndarray]  # uint8 [H W 3]; None before an image is loaded (then `placeholder` is shown)
    marks: list = field(default_factory=list)  # CellMarks, drawn in order
    caption: str = ""
    mode: str = ""  # the mode letter ("C", "M", ...), "" for none
    placeholder: str = ""
    size: int = 0  # the image's side in pixels
    grid: tuple = (1, 1)  # (rows, cols) of latent cells
    cell_size: tuple = (1.0, 1.0)  # (height, width) of a cell in pixels


class Editor:
    """State and plumbing shared by the editors. Subclasses define KEYS, the gesture hooks (`_press`, `_drag`,
    `_release`), `_control_frames`, `_initial_frames` and `_picture`."""

    #: key -> name of the method it calls
    KEYS: dict = {}
    #: mode letter (the original's) -> what the status line calls it
    MODE_NAMES: dict = {}
    HELP = ""
    #: index in the generated video of the frame that control entry 0 drives
    video_offset = 0

    def __init__(self, dataset_name: str, random_time: bool = False, device: str = "cpu", steps: int = 20,
                 num_frames: int = 3, past_horizon: int = -1):
        """The original's constructor: configs/<dataset_name>.yaml and CHECKPOINTS[dataset_name] (demo/loading.py),
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
        self._figure = None  # the demo.view.EditorFigure showing the editor, if any
        self._listeners: list = []  # called after every change (front ends redraw)
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
        """Say what a write did; cells dropped off the grid are a warning (logged and in `message`)."""
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

    def _extend(self, masks: list, features: list, length: int, like: torch.Tensor) -> None:
        """Grow the state lists `masks` [h w] and `features` [F h w, zeros like `like`] with empty control frames
        to `length` entries."""
        while len(masks) < length:
            masks.append(self._new_mask(self.grid))
            features.append(torch.zeros_like(like))

    def _write_cells(self, masks: list, features: list, frame: int, source: torch.Tensor, pairs) -> None:
        """Write entry `frame` of the state lists (grown to it): each (source cell, destination cell) pair marks the
        destination in masks[frame] and copies the features [F h w] `source` has at the source cell there."""
        self._extend(masks, features, frame + 1, source)
        for (r, c), (dr, dc) in pairs:
            masks[frame][dr, dc] = 1.0
            features[frame][:, dr, dc] = source[:, r, c]

    # Gestures, from any front end --------------------------------------------------------------------------------
    def pointer_press(self, xy: Sequence[float]) -> None:
        """The pointer pressed at pixel (x, y) of the image shown."""
        self._act(self._press, tuple(xy))

    def pointer_move(self, xy: Sequence[float]) -> None:
        """The pointer moved to pixel (x, y); only a drag (after a press on the image) does something."""
        if self.press:
            self._act(self._drag, tuple(xy))

    def pointer_release(self) -> None:
        """The pointer released; a release without a press on the image (e.g. a drag started outside it) does
        nothing."""
        pressed, self.press = self.press, False
        if pressed:
            self._act(self._release)

    def key_press(self, key: str) -> bool:
        """Key `key` (matplotlib's names: "c", "enter", ...); False when it is not one of KEYS."""
        action = self.KEYS.get(key)
        if action is not None:
            self._act(getattr(self, action))
        return action is not None

    def _act(self, function, *args) -> None:
        """Run a gesture: an error becomes the message shown (and a logged warning) instead of escaping a front
        end's callback; the front ends are told afterwards."""
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

    # Front ends --------------------------------------------------------------------------------------------------
    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener()` after every change of what the editor shows."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _refresh(self) -> None:
        for listener in list(self._listeners):
            listener()

    # Controls ----------------------------------------------------------------------------------------------------
    def _control_frames(self) -> tuple:
        """([F h w], [h w]): the features and masks of the control frames written, as state lists."""
        raise NotImplementedError

    def control_tensors(self, num_frames: Optional[int] = None) -> tuple:
        """(feats [1 K F h w], masks [1 K 1 h w]) of the K control frames written, or (None, None) when none is.

        With `num_frames`, fitted to that many frames by model.controls.pad_controls (frames without controls
        appended, or the frames beyond it cut), also when none is written.
        """
        features, masks = self._control_frames()
        if masks:
            feats, masks = torch.stack(features)[None], torch.stack(masks)[None, :, None]
        elif num_frames is None:
            return None, None
        else:
            feats = torch.zeros(1, 0, self.model.feats_dim, *self.grid)
            masks = torch.zeros(1, 0, 1, *self.grid)
        return (feats, masks) if num_frames is None else pad_controls(feats, masks, int(num_frames))

    @property
    def num_control_frames(self) -> int:
        return len(self._control_frames()[1])

    def control_boxes(self) -> list:
        """Pixel rectangles (x0, y0, x1, y1) of the control cells of each frame of the generated video (before
        generating: of the frames the control frames written drive)."""
        length = self.generated_frames.shape[1] if self.generated_frames is not None \
            else self.num_control_frames + self.video_offset
        _, masks = self.control_tensors(num_frames=length - self.video_offset)
        return pixel_boxes(masks, (self.im_res, self.im_res), leading_frames=self.video_offset)

    # Controls files (docs/controls.md) ---------------------------------------------------------------------------
    def _source_of(self, obj: int) -> int:
        """The source (image) index of object `obj`'s cells."""
        raise NotImplementedError

    def controls_file(self, sources: Sequence[str]) -> dict:
        """The controls written, as the contents of a controls file naming `sources` (one per image of the editor;
        "input" for the animated image): each write becomes one placement per shift, in the order written, so the
        file gives generate.py the masks and features the editor holds (a later write wins on a shared cell, in
        both)."""
        placements = []
        for frame, obj, pairs in self.placements:
            by_offset: dict = {}
            for (r, c), (dr, dc) in pairs:
                by_offset.setdefault((dr - r, dc - c), []).append([r, c])
            for offset, cells in by_offset.items():
                placements.append({"source": self._source_of(obj), "cells": cells,
                                   "frames": [frame - self.video_offset], "offset": list(offset)})
        return {"grid": list(self.grid), "sources": list(sources), "placements": placements}

    def undo(self) -> int:
        """Take back the last write (a move, or a paste): the control frames are rebuilt from the writes before it,
        and the next move writes the undone frame again. Returns that control frame."""
        if not self.placements:
            raise RuntimeError("nothing to undo: no cells written yet")
        *kept, (frame, obj, _) = self.placements
        self._clear_controls()
        for written, written_obj, pairs in kept:
            self._replay(written, written_obj, pairs)
        self._after_undo(frame, obj)
        self.moving = None
        self.message = f"undid the write into control frame {frame}"
        self._refresh()
        return frame

    def _clear_controls(self) -> None:
        raise NotImplementedError

    def _replay(self, frame: int, obj: int, pairs: list) -> None:
        raise NotImplementedError

    def _after_undo(self, frame: int, obj: int) -> None:
        raise NotImplementedError

    @staticmethod
    def _pairs_by_frame(placement) -> dict:
        """{generated frame: [(source cell, destination cell)]} of a model.controls.Placement."""
        frames: dict = {}
        for frame, source, destination in placement.destinations():
            frames.setdefault(frame, []).append((tuple(source), tuple(destination)))
        return frames

    # Generation --------------------------------------------------------------------------------------------------
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
        written = self.num_control_frames
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
            for t, image in enumerate(video_frames(self.generated_frames[:1].clamp(-1, 1))):
                image.save(path / f"frame_{t:03d}.png")
                written.append(path / f"frame_{t:03d}.png")
        for k, image in enumerate(self.out_images):
            image.save(path / f"snapshot_{k:03d}.png")
            written.append(path / f"snapshot_{k:03d}.png")
        return written

    # What there is to show ---------------------------------------------------------------------------------------
    def scene(self) -> Scene:
        """The editor's picture as data, for any front end (demo/view.py draws it with matplotlib)."""
        image, marks, placeholder = self._picture()
        if image is not None and not isinstance(image, np.ndarray):
            image = to_video(image[None])[0].transpose(1, 2, 0)
        mode = self.MODE_NAMES.get(self.mode, "none")
        caption = f"{self.title()}   mode: {mode}   {self.HELP}" + (f"\n{self.message}" if self.message else "")
        return Scene(image, marks, caption, (self.mode or "").upper(), placeholder, self.im_res, self.grid,
                     self.cell_size)

    def _picture(self) -> tuple:
        """(image [3 H W] in [-1, 1] or uint8 [H W 3] or None, [CellMarks], text shown when there is no image)."""
        raise NotImplementedError

    def title(self) -> str:
        return self.dataset_name

    @staticmethod
    def _control_frame_marks(masks: Sequence[torch.Tensor], first: int) -> list:
        """CellMarks of the control frames first, first+1, ...: one colour each, labelled by video frame."""
        marks = []
        for k, mask in enumerate(masks):
            cells = mask_cells(mask)
            if cells:
                frame = first + k
                marks.append(CellMarks(cells, FRAME_COLOURS[frame % len(FRAME_COLOURS)], label=str(frame)))
        return marks

    # The matplotlib view (demo/view.py) --------------------------------------------------------------------------
    def show(self):
        """Open the editor's pyplot figure, drawn and connected to mouse and keys, as the original's run() does.

        Interactive with any GUI backend or, in Jupyter, `%matplotlib widget` (ipympl); with a non-interactive
        backend the figure still receives events sent through its canvas. Returns the figure.
        """
        from demo.view import EditorFigure

        self.close()
        self._figure = EditorFigure(self)
        return self._figure.fig

    def close(self) -> None:
        """Disconnect and close the editor's figure, if any."""
        if self._figure is not None:
            self._figure.close()
        self._figure = None

    @property
    def fig(self):
        """The editor's pyplot figure (after `show()`), else None."""
        return None if self._figure is None else self._figure.fig

    @property
    def ax(self):
        """The axes showing the image (after `show()`), else None."""
        return None if self._figure is None else self._figure.ax

    def render(self):
        """The editor drawn in a new off-screen Agg figure (no display needed)."""
        from demo.view import render_scene

        return render_scene(self.scene())

    def snapshot(self):
        """The 'x' key: the current editor picture as a PIL image, appended to `out_images`."""
        from demo.view import scene_image

        image = scene_image(self.scene())
        self.out_images.append(image)
        self.message = f"snapshot {len(self.out_images)} taken (demo.out_images)"
        self._refresh()
        return image
