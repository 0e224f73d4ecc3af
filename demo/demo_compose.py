"""Compose a scene from parts of several images: the original demo/demo_compose.py's editor, same keys, same gestures,
same cells. There is no input frame: the video comes only from the controls (noise context and reference).

This module owns what is particular to composition: its state, keys, gestures, canvas and picture. What every
editor shares (construction, the gesture calls, control tensors, generation, saving) is in demo/editor.py; the
figure that shows it and sends it mouse and key events is demo/view.py.

The original way (configs/<name>.yaml, CHECKPOINTS[name] of demo/loading.py, importable from demo.common, the config's test split):

    demo = DemoCompose("clevrer", steps=10, num_frames=9, past_horizon=4)   # source_image="x.png": that image only
    demo.run(indices=[0, 1, 2])     # shows clip 0; `n` shows the next (then random clips)

then, in the figure (`%matplotlib widget` in Jupyter):
  c      select mode: each press starts a new object; drag over its cells (painting)
  n      on an image: show the next image (the next entry of `indices`, else a random clip), so several objects
         can be selected before pasting. In paste or move mode: go on to the next object, whose control frames
         restart at 1
  v      paste mode on a white canvas; opens control frame 0. Each click pastes the current object there (so that
         the mean of its cells' top-left corners lies under the pointer); pasting again adds another instance
  m      move mode: drag the current object; at the release it is written into the next control frame (1, 2, ...)
  enter  generate from the controls alone; the video goes to demo.generated_frames (frame k follows control frame k)
  x      snapshot of the figure into demo.out_images
Cells that land off the grid are dropped, with a warning.

State, with the original's meaning: `masks[k]` [h w] the cells of control frame k and `controls[k]` [F h w] the
features placed there; `features[i]` [F h w] of the i-th image shown; `groups` the selected objects' cells, each
taken from the image `group_images[i]`.

Scripts drive the same state without clicks (a model you already have: `DemoCompose.from_model(...)`):

    demo.run(indices=[0, 1], show=False)
    demo.select(cells=[(2, 2), (2, 3)])      # an object of image 0 (or rect=(x0, y0, x1, y1) in pixels)
    demo.next_image()                        # image 1
    demo.select(rect=(40, 40, 60, 60))       # an object of image 1
    demo.paste(at=(4, 2))                    # control frame 0: object 1, top-left cell at (4, 2) (or xy=(x, y))
    demo.move(at=(4, 3)); demo.move(at=(4, 4))   # control frames 1, 2
    demo.next_object()                       # object 2
    demo.paste(at=(0, 0)); demo.move(at=(1, 0))
    video = demo.generate()                  # [1 N 3 H W] in [-1, 1]
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from demo.editor import CellMarks, Editor
from lutils.logging import to_video


class DemoCompose(Editor):
    """The composition editor (see the module docstring)."""

    KEYS = {"c": "select_mode", "n": "next", "v": "paste_mode", "m": "move_mode", "enter": "generate",
            "x": "snapshot"}
    MODE_NAMES = {"s": "still", "c": "select (c)", "v": "paste (v)", "m": "move (m)"}
    HELP = "c: select   n: next   v: paste   m: move   enter: generate   x: snapshot"
    video_offset = 0

    def __init__(self, dataset_name: Optional[str] = None, source_image: Optional[str] = None,
                 random_time: bool = False, device: str = "cpu", steps: int = 20, num_frames: int = 3,
                 past_horizon: int = -1, *, config: Optional[str] = None):
        """The original's constructor (its first argument was called `config`; both names work). `source_image`, an
        image file, is then the only image, loaded in [-1, 1]: every image shown is it, and it is index 0."""
        if (dataset_name is None) == (config is None):
            raise TypeError("give the dataset name, e.g. DemoCompose('clevrer') (or config='clevrer')")
        self._source_image = source_image
        super().__init__(dataset_name if config is None else config, random_time, device, steps, num_frames,
                         past_horizon)

    def _needs_data(self) -> bool:
        return self._source_image is None

    def _setup(self, model, config, dataset, *, source_image: Optional[str] = None, **kwargs) -> None:
        super()._setup(model, config, dataset, **kwargs)
        self.source_image = getattr(self, "_source_image", None) if source_image is None else source_image

    def _reset(self) -> None:
        super()._reset()
        self.queue: list = []  # the images still to show (the original's `indices`)
        self.images: list = []  # [3 H W] in [-1, 1]: the images shown so far
        self.sources: list = []  # what each shown image is (an index, a file)
        self.features: list = []  # [F h w]: the features of each shown image
        self.groups: list = []  # the objects: their cells, in the order they were added
        self.group_images: list = []  # the image each object was selected in
        self.cur_object = 0  # the object being pasted and moved
        self.ctrl_id = 0  # the control frame of the current object written last
        self.masks: list = []  # [h w]: the cells of each control frame
        self.controls: list = []  # [F h w]: the features placed in each control frame
        self.placements: list = []  # (frame, object, [(source, destination)]) for drawing the canvas
        self.view = "source"

    # Images ------------------------------------------------------------------------------------------------------
    def run(self, indices: Optional[Sequence[int]] = None, *, images: Optional[Sequence] = None,
            show: bool = True) -> torch.Tensor:
        """Start over and show the first image: `indices` (dataset clips) and then `images` (image files, HDF5
        specs or tensors) are shown in turn, then random clips (or the constructor's source_image). With `show`,
        open the figure. Returns the image [3 H W]."""
        self._reset()
        self.queue = list(indices or []) + list(images or [])
        self.next_image()
        if show:
            self.show()
        return self.images[-1]

    def load_source(self, spec, frame: Optional[int] = None) -> torch.Tensor:
        """As Editor.load_source; with a source_image, that image is the only one, index 0 (as the original)."""
        if self.source_image is not None and isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
            if int(spec) != 0:
                raise IndexError(f"index {spec}: with source_image the only image is index 0 ({self.source_image})")
            spec = self.source_image
        return super().load_source(spec, frame)

    def next_image(self) -> int:
        """`n` on an image: show the next image; returns its number among the images shown."""
        if self.queue:
            spec = self.queue.pop(0)
        elif self.source_image is not None:
            spec = self.source_image
        else:
            spec = self.random_index()
        image = self.load_source(spec)
        self.images.append(image)
        self.features.append(self.features_of(image[None])[0])
        self.sources.append(spec if not isinstance(spec, torch.Tensor) else "tensor")
        self.view, self.mode = "source", "s"
        self.message = f"image {len(self.images) - 1}: {self.sources[-1]}"
        self._refresh()
        return len(self.images) - 1

    # Keys --------------------------------------------------------------------------------------------------------
    def select_mode(self) -> None:
        """The 'c' key: select mode; each press starts a new object (back on the last image if on the canvas)."""
        self._need_images()
        self.mode, self.view = "c", "source"

    def paste_mode(self) -> None:
        """The 'v' key: paste mode on the canvas; opens control frame 0."""
        self._need_images()
        self._extend(self.masks, self.controls, 1, self.features[0])  # control frame 0, once
        self.mode, self.view = "v", "canvas"
        self.message = f"paste and move object {self.cur_object + 1}"

    def move_mode(self) -> None:
        """The 'm' key: move mode."""
        self.mode = "m"

    def next(self) -> None:
        """The 'n' key: the next object in paste or move mode, else the next image."""
        if self.mode == "m":
            self.mode = "v"
        if self.mode == "v":
            self.next_object()
        else:
            self.next_image()

    def next_object(self) -> int:
        """`n` in paste or move mode: go on to the next object, whose control frames restart at 1."""
        if self.cur_object < len(self.groups) - 1:
            self.cur_object += 1
            self.ctrl_id = 0
            self.mode = "v"
            self.message = f"paste and move object {self.cur_object + 1}"
        else:
            self.mode = "s"
            self.message = "all objects placed"
        return self.cur_object

    # Scripted gestures -------------------------------------------------------------------------------------------
    def select(self, cells=None, *, rect=None, add: bool = False) -> list:
        """A new object in the current image: cells [(row, col), ...] or those under the pixel rectangle
        rect=(x0, y0, x1, y1), as one press-and-drag in select mode. `add` extends the last object instead."""
        self._need_images()
        new = self._cells(cells, rect)
        self.mode, self.view = "c", "source"
        if not add or not self.groups:
            self._start_group()
        for cell in new:
            self._add_cell(cell)
        self.message = f"object {len(self.groups)}: {len(self.groups[-1])} cell(s) of image {self.group_images[-1]}"
        self._refresh()
        return list(self.groups[-1])

    def paste(self, at=None, *, xy=None) -> list:
        """Control frame 0: paste the current object with the top-left of its cells at cell `at`=(row, col), or at
        pixel `xy` as a click in paste mode. Each paste adds an instance. Returns the destination cells."""
        self._need_object()
        if self.mode != "v":
            self.paste_mode()
        placed = self._write(0, self._placed(self._object_cells(), xy=xy, at=at))
        self._refresh()
        return [dst for _, dst in placed]

    def move(self, at=None, *, xy=None) -> int:
        """The next control frame (1, 2, ...) of the current object: its cells with their top-left at cell `at`, or
        placed at pixel `xy` as a drag released there in move mode. Returns the control frame written."""
        self._need_object()
        self.mode, self.view = "m", "canvas"
        self.ctrl_id += 1
        self._write(self.ctrl_id, self._placed(self._object_cells(), xy=xy, at=at))
        self._refresh()
        return self.ctrl_id

    # Gestures (the core's pointer_press / pointer_move / pointer_release) ----------------------------------------
    def _press(self, xy) -> None:
        if self.mode == "c":
            self._need_images()
            self.press = True
            self._start_group()
            self._add_cell(self.cell_at(xy))
        elif self.mode == "v":
            if self.cur_object < len(self.groups):
                self._write(0, self._placed(self._object_cells(), xy=xy))
        elif self.mode == "m":
            self._need_object()
            self.press = True
            self.ctrl_id += 1
            self.moving = self._placed(self._object_cells(), xy=xy)

    def _drag(self, xy) -> None:
        if self.mode == "c":
            self._add_cell(self.cell_at(xy))
        elif self.mode == "m":
            self.moving = self._placed(self._object_cells(), xy=xy)

    def _release(self) -> None:
        if self.mode == "m" and self.moving is not None:
            self._write(self.ctrl_id, self.moving)
            self.moving = None

    # State -------------------------------------------------------------------------------------------------------
    def _start_group(self) -> None:
        self.groups.append([])
        self.group_images.append(len(self.images) - 1)

    def _add_cell(self, cell) -> None:
        if cell is not None and cell not in self.groups[-1]:
            self.groups[-1].append(cell)

    def _object_cells(self) -> list:
        return self.groups[self.cur_object]

    def _write(self, frame: int, placed: tuple) -> list:
        """Write the current object into control frame `frame`: each (source, destination) pair copies the features
        of the object's image at the source cell to the destination cell. Returns the pairs."""
        pairs = placed[0]
        if frame == 0:
            self.ctrl_id = 0
        source = self.features[self.group_images[self.cur_object]]
        self._write_cells(self.masks, self.controls, frame, source, pairs)
        self.placements.append((frame, self.cur_object, pairs))
        self._report_write(frame, placed)
        return pairs

    def _control_frames(self) -> tuple:
        return self.controls, self.masks

    def _source_of(self, obj: int) -> int:
        return self.group_images[obj]

    def _clear_controls(self) -> None:
        self.masks, self.controls, self.placements = [], [], []

    def _replay(self, frame: int, obj: int, pairs: list) -> None:
        self.cur_object = obj
        self._write(frame, (pairs, []))

    def _after_undo(self, frame: int, obj: int) -> None:
        self.cur_object, self.ctrl_id = obj, max(frame - 1, 0)
        if self.mode in ("v", "m"):  # paste and move mode show control frame 0, which stays open
            self._extend(self.masks, self.controls, 1, self.features[0])

    def load_controls(self, controls, images: Sequence, names: Optional[Sequence[str]] = None) -> int:
        """Start over with `images` (one per source of `controls`: files, HDF5 specs or tensors) and the control
        frames of `controls` (model.controls.Controls, e.g. from a controls file). Each distinct selection of a source
        becomes an object, placed in the frames the file gives it. `names` replace what `sources` records for each
        image. Returns the number of control frames."""
        self._reset()
        self.queue = list(images)
        for k in range(len(images)):
            self.next_image()
            if names is not None:
                self.sources[k] = names[k]
        objects: dict = {}
        for placement in controls.placements:
            key = (placement.source, tuple(tuple(cell) for cell in placement.cells))
            if key not in objects:
                objects[key] = len(self.groups)
                self.groups.append([tuple(cell) for cell in placement.cells])
                self.group_images.append(placement.source)
            for frame, pairs in self._pairs_by_frame(placement).items():
                self._replay(frame, objects[key], pairs)
        self.cur_object, self.ctrl_id = max(len(self.groups) - 1, 0), 0
        self.mode, self.view = ("v", "canvas") if self.groups else ("s", "source")
        self.message = f"{len(controls.placements)} placement(s) loaded into {self.num_control_frames} control frame(s)"
        self._refresh()
        return self.num_control_frames

    def generate(self, num_frames: Optional[int] = None, **generate_kwargs) -> torch.Tensor:
        """Generate from the controls alone (initial_frames=None): [1, num_frames, 3, H, W] in [-1, 1]."""
        self._need_images()
        return super().generate(num_frames, **generate_kwargs)

    def _need_images(self) -> None:
        if not self.images:
            raise RuntimeError("no image shown: call run(indices=...) first")

    def _need_object(self) -> None:
        self._need_images()
        if self.cur_object >= len(self.groups) or not self.groups[self.cur_object]:
            raise RuntimeError(f"no object {self.cur_object + 1} to place: select objects (c, then drag over them) "
                               f"first ({len(self.groups)} selected)")

    # What there is to show ---------------------------------------------------------------------------------------
    def canvas(self, frame: int = 0) -> np.ndarray:
        """uint8 [H W 3]: a white canvas with the source pixels of the cells placed in control frame `frame`."""
        canvas = np.full((self.im_res, self.im_res, 3), 255, dtype=np.uint8)
        if not self.images:
            return canvas
        pixels = to_video(torch.stack(self.images)).transpose(0, 2, 3, 1)  # [S H W 3]
        ch, cw = self.cell_size
        for placed_frame, obj, pairs in self.placements:
            if placed_frame != frame:
                continue
            image = pixels[self.group_images[obj]]
            for (r, c), (dr, dc) in pairs:
                canvas[round(dr * ch):round((dr + 1) * ch), round(dc * cw):round((dc + 1) * cw)] = \
                    image[round(r * ch):round((r + 1) * ch), round(c * cw):round((c + 1) * cw)]
        return canvas

    def title(self) -> str:
        if self.view == "canvas":
            return f"paste and move object {self.cur_object + 1} of {len(self.groups)}"
        return f"{self.dataset_name}, idx={self.sources[-1] if self.sources else None}"

    def _picture(self) -> tuple:
        """On an image: it, with the objects selected on it in red. On the canvas: control frame 0 as pasted, the
        cells of control frames 1, 2, ... in their colours, the object being dragged in blue."""
        if not self.images:
            return None, [], "call run(...) to show the images"
        if self.view == "source":
            current = len(self.images) - 1
            marks = [CellMarks(list(cells), "red", fill=True)
                     for cells, image in zip(self.groups, self.group_images) if image == current]
            return self.images[-1], marks, ""
        marks = self._control_frame_marks(self.masks[1:], first=1)
        if self.moving:
            marks.append(CellMarks([dst for _, dst in self.moving[0]], "blue", fill=True))
        return self.canvas(0), marks, ""
