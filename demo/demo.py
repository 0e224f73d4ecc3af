"""Animate an image by moving its parts (the original demo/demo.py, as a display-free editor plus a thin
matplotlib layer).

    demo = Demo.from_config("clevrer", device="cuda", num_frames=12)   # or Demo(model, config, dataset)
    demo.run(index=47)                    # frame 0 of clip 47 (or run(image="picture.png"))
    demo.select(rect=(40, 40, 60, 60))    # pixels x0, y0, x1, y1 (or cells=[(row, col), ...])
    demo.move((50, 50), (58, 50))         # each move writes the next control frame
    demo.move((50, 50), (66, 50))
    video = demo.generate()               # [1 1+N 3 H W] in [-1, 1], also demo.generated_frames
    demo.save("out.gif")

Interactive (a notebook with `%matplotlib widget`, or any GUI backend): `demo.connect()` shows the image; keys
  c      select mode: drag over the cells of a part (drags add cells; c again starts a new selection)
  m      move mode: each drag (from the part to where it should be) writes the next control frame
  enter  generate (the result goes to demo.generated_frames)
  x      snapshot the figure into demo.out_images
Each new selection restarts at control frame 0, so several parts can move in the same frames.
Control frame j drives generated frame j, i.e. frame j+1 of the returned video (frame 0 is the input image).
"""
from __future__ import annotations

from typing import Optional

import torch

from demo.common import GridEditor


class Demo(GridEditor):
    """The animation editor. State: `source_image` [3 H W], `source_feats` [1 F h w], `selected` cells,
    `controls` (model.controls.Controls; one placement per move), `next_frame`, `mode`, `generated_frames`,
    `out_images`."""

    KEYS = {"c": "start_selection", "m": "move_mode", "enter": "generate", "x": "snapshot"}
    video_offset = 1
    HELP = "c: select   m: move   enter: generate   x: snapshot"

    def __init__(self, model, config, dataset=None, **kwargs):
        super().__init__(model, config, dataset, **kwargs)
        self.source = None
        self.source_image: Optional[torch.Tensor] = None
        self.source_feats: Optional[torch.Tensor] = None

    # Actions -----------------------------------------------------------------------------------------------------
    def run(self, index: Optional[int] = None, image=None, frame: Optional[int] = None) -> torch.Tensor:
        """Load the image to animate, compute its features and clear the controls; returns the image [3 H W].

        index: a dataset clip (its first frame, or frame `frame` of the video); image: an image file, an HDF5 spec
        "PATH[:video[:frame]]" or a tensor [3 H W] in [-1, 1]. Neither: dataset clip 0.
        """
        if index is not None and image is not None:
            raise ValueError("give index or image, not both")
        spec = image if image is not None else (0 if index is None else index)
        self.source_image = self.load_source(spec, frame)
        self.source = spec if not isinstance(spec, torch.Tensor) else "tensor"
        self.source_feats = self.features(self.source_image[None])
        self.reset()
        return self.source_image

    def reset(self) -> None:
        """Forget the selection, the controls and the generated video (snapshots are kept)."""
        self.controls = self._controls_class(self.grid, self.num_frames)
        self.selected, self.next_frame, self.mode = [], 0, "select"
        self.generated_frames, self.message = None, ""
        self._refresh()

    def start_selection(self) -> None:
        """The 'c' key: select mode with an empty selection, back at control frame 0."""
        self.selected, self.next_frame, self.mode = [], 0, "select"

    def move_mode(self) -> None:
        """The 'm' key."""
        self.mode = "move"

    def select(self, cells=None, *, rect=None, add: bool = False) -> list:
        """Select cells [(row, col), ...] or those under the pixel rectangle rect=(x0, y0, x1, y1); `add` keeps
        the previous selection. Restarts the moves at control frame 0. Returns the selection."""
        self._need_source()
        new = self._cells(cells, rect)
        self.selected = sorted(set(self.selected if add else []) | set(new))
        self.next_frame = 0
        self.message = f"{len(self.selected)} cell(s) selected"
        self._refresh()
        return list(self.selected)

    def move(self, from_xy=None, to_xy=None, *, offset=None) -> int:
        """Write the next control frame: the selected cells' features (of the input image) at the cells moved by
        the drag from_xy -> to_xy (pixels), or by offset=(rows, cols). Cells moved off the grid are dropped.
        Returns the control frame written."""
        self._need_source()
        if not self.selected:
            raise RuntimeError("select cells before moving them")
        shift = self._offset(from_xy, to_xy, offset)
        frame = self.next_frame
        self._place(0, self.selected, frame, shift, f"move {frame}")
        self.next_frame += 1
        self.message = f"control frame {frame}: moved by {shift[0]:+d}, {shift[1]:+d} cells"
        self._refresh()
        return frame

    # GridEditor hooks --------------------------------------------------------------------------------------------
    def source_features(self) -> torch.Tensor:
        self._need_source()
        return self.source_feats

    def _initial_frames(self) -> torch.Tensor:
        self._need_source()
        return self.source_image[None, None]

    def generate(self, num_frames: Optional[int] = None, **generate_kwargs) -> torch.Tensor:
        """Animate the input image: [1, 1 + num_frames, 3, H, W] in [-1, 1] (frame 0 is the input)."""
        self._need_source()
        return super().generate(num_frames, **generate_kwargs)

    def _need_source(self) -> None:
        if self.source_image is None:
            raise RuntimeError("no image loaded: call run(index=...) or run(image=...) first")

    def _on_drag(self, axes_name: str, from_xy, to_xy) -> None:
        if self.mode == "select":
            self.select(rect=(*from_xy, *to_xy), add=True)
        elif self.mode == "move":
            self.move(from_xy, to_xy)

    def _draw(self, figure) -> dict:
        ax = figure.add_subplot(1, 1, 1)
        if self.source_image is None:
            ax.set_axis_off()
            ax.set_title("call run(...) to load an image", fontsize=9)
            return {"image": ax}
        self._show_image(ax, self.source_image, f"input: {self.source}")
        self._draw_controls(ax)
        self._mark_cells(ax, self.selected, "yellow", fill=True)
        self._status(figure, self.HELP)
        return {"image": ax}
