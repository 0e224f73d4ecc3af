"""Compose a scene from parts of several images (the original demo/demo_compose.py, as a display-free editor plus a
thin matplotlib layer). No input frame: the video comes only from the controls (noise context and reference).

    demo = DemoCompose.from_config("clevrer", steps=10, num_frames=9, past_horizon=4)
    demo.run(indices=[0, 1], images=["ball.png"])    # sources, all loaded in [-1, 1]
    demo.select(rect=(10, 10, 30, 30))               # an object in the current source (pixels or cells=...)
    demo.paste(at=(4, 2))                            # control frame 0: top-left cell of the object at (4, 2)
    demo.move(offset=(0, 1)); demo.move(offset=(0, 2))   # control frames 1, 2 (offsets from the pasted place)
    demo.next_source()                               # the next image; its objects are new objects
    demo.select(cells=[(3, 3), (3, 4)]); demo.paste(xy=(100, 20))
    video = demo.generate()                          # [1 N 3 H W] in [-1, 1]

Interactive (`demo.connect()`; left: the current source, right: the canvas, i.e. control frame 0, with the later
control frames outlined), keys:
  c      new object in the current source: select mode (drag over its cells on the left)
  n      next source image (a new random clip when run() was given no sources)
  v      paste mode: a click on the canvas puts the object's top-left cell there (click again to re-place it)
  m      move mode: each drag on the canvas (from the object to where it goes) writes the next control frame
  enter  generate;  x  snapshot into out_images
Control frame j drives generated frame j.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from demo.common import GridEditor
from lutils.logging import to_video


class DemoCompose(GridEditor):
    """The composition editor. State: `sources` (specs), `source_images` [S 3 H W] in [-1, 1], `source_feats`
    [S F h w], `current_source`, `selected` cells of the current object, `object` (the current object: source,
    cells, offset once pasted), `objects` (all pasted objects), `controls`, `next_frame`, `mode`,
    `generated_frames`, `out_images`."""

    KEYS = {"c": "new_object", "n": "next_source", "v": "paste_mode", "m": "move_mode", "enter": "generate",
            "x": "snapshot"}
    video_offset = 0
    HELP = "c: object   n: next image   v: paste   m: move   enter: generate   x: snapshot"

    def __init__(self, model, config, dataset=None, **kwargs):
        super().__init__(model, config, dataset, **kwargs)
        self.sources: list = []
        self.source_images: Optional[torch.Tensor] = None
        self.source_feats: Optional[torch.Tensor] = None
        self.current_source = 0
        self.random_sources = False
        self.object: Optional[dict] = None
        self.objects: list = []
        self.next_frame = 1
        self._rng = torch.Generator().manual_seed(self.seed) if self.seed is not None else None

    # Sources -----------------------------------------------------------------------------------------------------
    def run(self, sources: Optional[Sequence] = None, *, indices: Optional[Sequence[int]] = None,
            images: Optional[Sequence] = None) -> torch.Tensor:
        """Load the source images and clear everything else; returns them [S 3 H W] in [-1, 1].

        sources: dataset indices, image files / HDF5 specs or tensors, in order; `indices` and `images` are
        appended. None at all: one random dataset clip, and next_source() keeps drawing new random clips.
        """
        specs = list(sources or []) + list(indices or []) + list(images or [])
        self.random_sources = not specs
        if self.random_sources:
            specs = [self._random_index()]
        images_ = torch.stack([self.load_source(spec) for spec in specs])
        self.sources = [spec if not isinstance(spec, torch.Tensor) else "tensor" for spec in specs]
        self.source_images, self.source_feats = images_, self.features(images_)
        self.current_source = 0
        self.reset()
        return self.source_images

    def add_source(self, spec) -> int:
        """Load one more source image; returns its index."""
        self._need_sources()
        image = self.load_source(spec)
        self.source_images = torch.cat([self.source_images, image[None]])
        self.source_feats = torch.cat([self.source_feats, self.features(image[None])])
        self.sources.append(spec if not isinstance(spec, torch.Tensor) else "tensor")
        return len(self.sources) - 1

    def next_source(self) -> int:
        """The 'n' key: finish the current object and go to the next source (cycling through the given sources,
        or a new random clip). Returns the current source index."""
        self._need_sources()
        self._finish_object()
        if self.random_sources and self.current_source == len(self.sources) - 1:
            self.add_source(self._random_index())
        self.current_source = (self.current_source + 1) % len(self.sources)
        self.mode = "select"
        self.message = f"source {self.current_source}: {self.sources[self.current_source]}"
        self._refresh()
        return self.current_source

    def _random_index(self) -> int:
        if self.dataset is None:
            raise ValueError("no sources given and no dataset to draw random clips from")
        return int(torch.randint(len(self.dataset), (1,), generator=self._rng).item())

    # Objects -----------------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the objects, the controls and the generated video (sources and snapshots are kept)."""
        self.controls = self._controls_class(self.grid, self.num_frames)
        self.object, self.objects, self.selected = None, [], []
        self.next_frame, self.mode = 1, "select"
        self.generated_frames, self.message = None, ""
        self._refresh()

    def new_object(self) -> None:
        """The 'c' key: finish the current object and select a new one in the current source."""
        self._finish_object()
        self.mode = "select"

    next_object = new_object

    def paste_mode(self) -> None:
        """The 'v' key."""
        self.mode = "paste"

    def move_mode(self) -> None:
        """The 'm' key."""
        self.mode = "move"

    def _finish_object(self) -> None:
        self.object, self.selected, self.next_frame = None, [], 1

    def select(self, cells=None, *, rect=None, add: bool = False) -> list:
        """Select the cells of an object in the current source: cells [(row, col), ...] or the pixel rectangle
        rect=(x0, y0, x1, y1); `add` extends the selection. Selecting after a paste starts a new object."""
        self._need_sources()
        new = self._cells(cells, rect)
        if self.object is not None and self.object["offset"] is not None:
            self._finish_object()
        self.selected = sorted(set(self.selected if add else []) | set(new))
        self.object = {"source": self.current_source, "cells": list(self.selected), "offset": None,
                       "placements": []}
        self.message = f"{len(self.selected)} cell(s) of source {self.current_source} selected"
        self._refresh()
        return list(self.selected)

    def paste(self, at=None, *, xy=None) -> tuple:
        """Control frame 0: put the current object with its top-left cell at cell `at`=(row, col) or under pixel
        `xy`=(x, y) of the canvas. Pasting again re-places the object (and drops its moves). Cells that land off
        the grid are dropped. Returns the offset (rows, cols) from the object's place in its source."""
        self._need_sources()
        if self.object is None or not self.object["cells"]:
            raise RuntimeError("select an object (its cells in the current source) before pasting it")
        if (at is None) == (xy is None):
            raise ValueError("give at=(row, col) or xy=(x, y)")
        row, col = (int(v) for v in at) if at is not None else self.cell_at(xy)
        cells = self.object["cells"]
        offset = (row - min(r for r, _ in cells), col - min(c for _, c in cells))
        self._remove_object_placements()
        placement = self._place(self.object["source"], cells, 0, offset, f"object {len(self.objects)} paste")
        self.object["offset"] = offset
        self.object["placements"].append(placement)
        self.objects.append(self.object)
        self.next_frame = 1
        self.message = f"object {len(self.objects) - 1} pasted at cell ({row}, {col})"
        self._refresh()
        return offset

    def move(self, from_xy=None, to_xy=None, *, offset=None) -> int:
        """Write the next control frame (1, 2, ...) of the current object: its pasted place moved by the drag
        from_xy -> to_xy (canvas pixels) or by offset=(rows, cols). Returns the control frame written."""
        self._need_sources()
        if self.object is None or self.object["offset"] is None:
            raise RuntimeError("paste the object (v) before moving it")
        shift = self._offset(from_xy, to_xy, offset)
        total = (self.object["offset"][0] + shift[0], self.object["offset"][1] + shift[1])
        frame = self.next_frame
        index = self._object_index()
        self.object["placements"].append(self._place(self.object["source"], self.object["cells"], frame, total,
                                                     f"object {index} move {frame}"))
        self.next_frame += 1
        self.message = f"control frame {frame}: object {index} moved by {shift[0]:+d}, {shift[1]:+d} cells"
        self._refresh()
        return frame

    def _object_index(self) -> int:
        return next(i for i, o in enumerate(self.objects) if o is self.object)

    def _remove_object_placements(self) -> None:
        if self.object is None:
            return
        for placement in self.object["placements"]:
            self.controls.placements = [p for p in self.controls.placements if p is not placement]
        self.objects = [o for o in self.objects if o is not self.object]
        self.object["placements"] = []

    # GridEditor hooks --------------------------------------------------------------------------------------------
    def source_features(self) -> torch.Tensor:
        self._need_sources()
        return self.source_feats

    def generate(self, num_frames: Optional[int] = None, **generate_kwargs) -> torch.Tensor:
        """Generate from the controls alone (initial_frames=None): [1, num_frames, 3, H, W] in [-1, 1]."""
        self._need_sources()
        return super().generate(num_frames, **generate_kwargs)

    def _need_sources(self) -> None:
        if self.source_images is None:
            raise RuntimeError("no sources loaded: call run(...) first")

    def canvas(self, frame: int = 0) -> np.ndarray:
        """uint8 [H W 3]: a white canvas with the source pixels of the cells placed in control frame `frame`."""
        self._need_sources()
        canvas = np.full((self.im_res, self.im_res, 3), 255, dtype=np.uint8)
        pixels = to_video(self.source_images).transpose(0, 2, 3, 1)  # [S H W 3]
        ch, cw = self.cell_size
        for placement in self.controls.placements:
            for f, (r, c), (dr, dc) in placement.destinations():
                if f == frame:
                    src = pixels[placement.source, round(r * ch):round((r + 1) * ch), round(c * cw):round((c + 1) * cw)]
                    canvas[round(dr * ch):round((dr + 1) * ch), round(dc * cw):round((dc + 1) * cw)] = src
        return canvas

    def _on_drag(self, axes_name: str, from_xy, to_xy) -> None:
        if axes_name == "source" and self.mode == "select":
            self.select(rect=(*from_xy, *to_xy), add=True)
        elif axes_name == "canvas" and self.mode == "paste":
            self.paste(xy=to_xy)
        elif axes_name == "canvas" and self.mode == "move":
            self.move(from_xy, to_xy)

    def _figsize(self) -> tuple:
        return (9, 4.8)

    def _draw(self, figure) -> dict:
        source_ax, canvas_ax = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
        if self.source_images is None:
            for ax in (source_ax, canvas_ax):
                ax.set_axis_off()
            source_ax.set_title("call run(...) to load the sources", fontsize=9)
            return {"source": source_ax, "canvas": canvas_ax}
        k = self.current_source
        self._show_image(source_ax, self.source_images[k], f"source {k + 1}/{len(self.sources)}: {self.sources[k]}")
        self._mark_cells(source_ax, self.selected, "yellow", fill=True)
        self._show_image(canvas_ax, self.canvas(0), "canvas (control frame 0)")
        self._draw_controls(canvas_ax, first_frame=1)
        if self.object is not None and self.object["offset"] is not None:
            dr, dc = self.object["offset"]
            self._mark_cells(canvas_ax, [(r + dr, c + dc) for r, c in self.object["cells"]
                                         if 0 <= r + dr < self.grid[0] and 0 <= c + dc < self.grid[1]], "yellow")
        self._status(figure, self.HELP)
        return {"source": source_ax, "canvas": canvas_ax}
