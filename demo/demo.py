"""Animate an image by moving its parts: the original demo/demo.py's editor, same keys, same gestures, same cells.

This module owns what is particular to animation: its state, keys, gestures and picture. What every editor shares
(construction, the gesture calls, control tensors, generation, saving) is in demo/editor.py; the figure that shows
it and sends it mouse and key events is demo/view.py.

The original way (configs/<name>.yaml, CHECKPOINTS[name] of demo/loading.py, importable from demo.common, the config's test split):

    demo = Demo("clevrer", device="cuda:0", num_frames=12)
    demo.run(index=47)          # shows frame 0 of clip 47 in a figure (no index: a random clip)

then, in the figure (`%matplotlib widget` in Jupyter):
  c      select mode, a new selection: press and drag over the cells of a part (painting; every cell under the
         pointer is added). A press also restarts the control frames at 1, so several parts can move together.
  m      move mode: drag the selection; at the release its cells are written into the next control frame
         (1, 2, ...), placed so that the mean of their top-left corners lies under the pointer. A bare click places
         it where you click. Cells that land off the grid are dropped, with a warning.
  enter  generate; the video goes to demo.generated_frames (frame 0 is the input image, frame k follows control
         frame k)
  x      snapshot of the figure into demo.out_images

State, with the original's meaning: `masks[0]` the selected cells, `masks[k]` [h w] the cells of control frame k;
`features[0]` [F h w] the image's DINO features, `features[k]` the features placed in control frame k.

Scripts drive the same state without clicks (a model you already have: `Demo.from_model(model, config, dataset)`):

    demo.run(index=47, show=False)
    demo.select(cells=[(5, 5), (5, 6)])       # or rect=(x0, y0, x1, y1) in pixels
    demo.move(offset=(0, 1))                  # control frame 1: one column to the right (or xy=(x, y) as a click)
    demo.move(offset=(0, 2))                  # control frame 2
    video = demo.generate()                   # [1 1+N 3 H W] in [-1, 1]
    demo.save("out.gif")
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from demo.editor import CellMarks, Editor
from model.controls import mask_cells


class Demo(Editor):
    """The animation editor (see the module docstring)."""

    KEYS = {"c": "select_mode", "m": "move_mode", "enter": "generate", "x": "snapshot"}
    MODE_NAMES = {"c": "select (c)", "m": "move (m)"}
    HELP = "c: select   m: move   enter: generate   x: snapshot"
    video_offset = 1

    def _reset(self) -> None:
        super()._reset()
        self.images: list = []  # [3 H W] in [-1, 1]: the image to animate
        self.features: list = []  # [F h w]: 0 the image's features, k those placed in control frame k
        self.masks: list = [self._new_mask(self.grid)]  # [h w]: 0 the selected cells, k those of control frame k
        self.selected: list = []  # the current selection's cells, in the order they were added
        self.frame_id = 1  # the control frame the next move writes
        self.source = None
        self.placements: list = []  # (control frame, 0, [(source, destination)]) of every write, in order

    @property
    def source_image(self) -> Optional[torch.Tensor]:
        """The image being animated [3 H W] in [-1, 1], or None before run()."""
        return self.images[0] if self.images else None

    # Actions -----------------------------------------------------------------------------------------------------
    def run(self, index: Optional[int] = None, *, image=None, frame: Optional[int] = None,
            show: bool = True) -> torch.Tensor:
        """Load the image to animate, compute its features, clear the controls and (with `show`) open the figure.

        index: a dataset clip (its first frame, or frame `frame` of the video); image: an image file, an HDF5 spec
        "PATH[:video[:frame]]" or a tensor [3 H W] in [-1, 1]. Neither: a random clip, as the original.
        Returns the image [3 H W].
        """
        if index is not None and image is not None:
            raise ValueError("give index or image, not both")
        spec = image if image is not None else (self.random_index() if index is None else index)
        source = self.load_source(spec, frame)
        features = self.features_of(source[None])[0]
        self._reset()
        self.images, self.features = [source], [features]
        self.source = spec if not isinstance(spec, torch.Tensor) else "tensor"
        if show:
            self.show()
        return source

    def select_mode(self) -> None:
        """The 'c' key: select mode, starting a new selection."""
        self.mode, self.selected = "c", []

    def move_mode(self) -> None:
        """The 'm' key: move mode."""
        self.mode = "m"

    def select(self, cells=None, *, rect=None, add: bool = False) -> list:
        """Select cells [(row, col), ...] or those under the pixel rectangle rect=(x0, y0, x1, y1), as a drag in
        select mode: the moves restart at control frame 1. `add` extends the current selection. Returns it."""
        self._need_image()
        new = self._cells(cells, rect)
        if not add:
            self.selected = []
        self.mode, self.frame_id = "c", 1
        for cell in new:
            self._add_cell(cell)
        self._commit_selection()
        self._refresh()
        return list(self.selected)

    def move(self, offset=None, *, xy=None) -> int:
        """Write the next control frame: the selection moved by offset=(rows, cols), or placed at pixel xy=(x, y)
        as a click in move mode. Returns the control frame written (1, 2, ...)."""
        self._need_selection()
        frame = self._write(self._placed(self.selected, xy=xy, offset=offset))
        self._refresh()
        return frame

    # Gestures (the core's pointer_press / pointer_move / pointer_release) ----------------------------------------
    def _press(self, xy) -> None:
        if self.mode == "c":
            self._need_image()
            self.press, self.frame_id = True, 1
            self._add_cell(self.cell_at(xy))
        elif self.mode == "m":
            self._need_selection()
            self.press = True
            self.moving = self._placed(self.selected, xy=xy)

    def _drag(self, xy) -> None:
        if self.mode == "c":
            self._add_cell(self.cell_at(xy))
        elif self.mode == "m":
            self.moving = self._placed(self.selected, xy=xy)

    def _release(self) -> None:
        if self.mode == "c":
            self._commit_selection()
        elif self.mode == "m" and self.moving is not None:
            self._write(self.moving)
            self.moving = None

    # State -------------------------------------------------------------------------------------------------------
    def _add_cell(self, cell) -> None:
        if cell is not None and cell not in self.selected:
            self.selected.append(cell)

    def _commit_selection(self) -> None:
        for r, c in self.selected:
            self.masks[0][r, c] = 1.0
        self.message = f"{len(self.selected)} cell(s) selected"

    def _write(self, placed: tuple) -> int:
        """Write control frame `frame_id` from placed = ([(source, destination)], dropped): each pair copies the
        image's features of the source cell to the destination cell. Returns the frame and advances to the next."""
        frame = self.frame_id
        self._write_cells(self.masks, self.features, frame, self.features[0], placed[0])
        self.placements.append((frame, 0, list(placed[0])))
        self.frame_id += 1
        self._report_write(frame, placed)
        return frame

    def _control_frames(self) -> tuple:
        return self.features[1:], self.masks[1:]

    def _source_of(self, obj: int) -> int:
        return 0

    def _clear_controls(self) -> None:
        self.masks, self.features, self.placements = self.masks[:1], self.features[:1], []

    def _replay(self, frame: int, obj: int, pairs: list) -> None:
        self.frame_id = frame
        self._write((pairs, []))

    def _after_undo(self, frame: int, obj: int) -> None:
        self.frame_id = frame

    def load_controls(self, controls, sources: Sequence[str]) -> int:
        """Replace the control frames by those of `controls` (model.controls.Controls, e.g. from a controls file
        with its list of `sources`), on the image loaded: every placement must take its cells from "input". The
        selection becomes the last placement's cells, so moving goes on from there. Returns the control frames."""
        self._need_image()
        for k, placement in enumerate(controls.placements):
            if sources[placement.source] != "input":
                raise ValueError(f"{placement.label or f'placement {k}'}: the animation editor moves parts of its "
                                 f"input image, source {placement.source} is '{sources[placement.source]}'")
        self._clear_controls()
        self.moving = None
        for placement in controls.placements:
            for frame, pairs in self._pairs_by_frame(placement).items():
                self._replay(frame + self.video_offset, 0, pairs)
        if controls.placements:
            self.selected = [tuple(cell) for cell in controls.placements[-1].cells]
            self._commit_selection()
        self.frame_id = len(self.masks)
        self.message = f"{len(controls.placements)} placement(s) loaded into {self.num_control_frames} control frame(s)"
        self._refresh()
        return self.num_control_frames

    def _initial_frames(self) -> torch.Tensor:
        self._need_image()
        return self.images[0][None, None]

    def generate(self, num_frames: Optional[int] = None, **generate_kwargs) -> torch.Tensor:
        """Animate the image: [1, 1 + num_frames, 3, H, W] in [-1, 1] (frame 0 is the input)."""
        self._need_image()
        return super().generate(num_frames, **generate_kwargs)

    def _need_image(self) -> None:
        if not self.images:
            raise RuntimeError("no image loaded: call run(index=...) or run(image=...) first")

    def _need_selection(self) -> None:
        self._need_image()
        if not self.selected:
            raise RuntimeError("select cells (c, then drag over them) before moving them")

    # What there is to show ---------------------------------------------------------------------------------------
    def title(self) -> str:
        return f"{self.dataset_name}, idx: {self.source}"

    def _picture(self) -> tuple:
        """The image; the cells ever selected (filled) and the current selection in red; each control frame's cells
        in its colour; the group being dragged in blue."""
        if not self.images:
            return None, [], "call run(...) to load an image"
        marks = [CellMarks(mask_cells(self.masks[0]), "red", fill=True), CellMarks(list(self.selected), "red"),
                 *self._control_frame_marks(self.masks[1:], first=1)]
        if self.moving:
            marks.append(CellMarks([dst for _, dst in self.moving[0]], "blue", fill=True))
        return self.images[0], marks, ""
