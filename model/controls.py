"""Controls as data: which source features go to which latent cells of which generated frame.

A placement takes the features of some cells of a source image and puts them at other cells of one or more
generated frames. Animation moves a selection along a path over the frames; composition pastes selections from
several images onto an empty canvas. `build` turns placements into the (feats, feats_masks) that generate() takes.
The file format (JSON or YAML) is described in docs/controls.md.

This module owns:
- `Placement` (source cells -> destination cells per frame) and `Controls`, the placements on a latent grid;
- the placement kinds, `PLACEMENT_KINDS`: a controls file's field (offset, at, path, move_to) -> the handler that
  makes its Placement. A new kind (say "scale") is one Placement subclass, if its cells move other than by a
  shift, plus one entry here; the file parser, `Controls.add_kind` and the checks take it from the registry;
- `pad_controls`, which fits control tensors to a number of frames (as generate() does);
- `mask_cells` and `pixel_boxes`, the control cells of each frame as cells and as pixel rectangles (drawing);
- the file format: `controls_from_dict`, `load_controls`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import torch

from lutils.errors import CageError

Cell = tuple  # (row, col) on the latent grid


class ControlsError(CageError, ValueError):
    """Controls that do not fit the grid, the frames or the sources; the message says which placement."""


def box(row0: int, col0: int, row1: int, col1: int) -> list:
    """Cells of the rectangle rows row0..row1-1, cols col0..col1-1."""
    if row1 <= row0 or col1 <= col0:
        raise ControlsError(f"empty box [{row0}, {col0}, {row1}, {col1}] (needs row1 > row0 and col1 > col0)")
    return [(r, c) for r in range(row0, row1) for c in range(col0, col1)]


def linear_path(num_frames: int, end_offset: Sequence[int], start_offset: Sequence[int] = (0, 0)) -> list:
    """Offsets moving linearly from start_offset (first frame) to end_offset (last frame), rounded to cells."""
    if num_frames == 1:
        return [tuple(int(v) for v in end_offset)]
    return [tuple(round(s + (e - s) * k / (num_frames - 1)) for s, e in zip(start_offset, end_offset))
            for k in range(num_frames)]


@dataclass
class Placement:
    """Source cells -> destination cells (cell + offset) in each listed frame (one offset per frame).

    This is the shift every built-in kind makes. A kind whose cells move otherwise (scaled, mirrored, ...) subclasses
    it and overrides `destinations`; checking, building and drawing only use `destinations`.
    """

    source: int
    cells: list
    frames: list
    offsets: list
    label: str = ""

    def destinations(self) -> Iterable[tuple]:
        """(frame, (src_row, src_col), (dst_row, dst_col)) for every cell in every frame."""
        for frame, (dr, dc) in zip(self.frames, self.offsets):
            for r, c in self.cells:
                yield frame, (r, c), (r + dr, c + dc)


# Placement kinds --------------------------------------------------------------------------------------------------
#: handler(value of the kind's field, source=, cells=, frames=, label=) -> Placement
PlacementHandler = Callable[..., Placement]


def _shift(value, *, source: int, cells: list, frames: list, label: str) -> Placement:
    """offset: [drow, dcol], the same shift in every frame."""
    return Placement(source, cells, frames, [tuple(value)] * len(frames), label)


def _paste_at(value, *, source: int, cells: list, frames: list, label: str) -> Placement:
    """at: [row, col], where the selection's top-left cell goes."""
    top = (min(r for r, _ in cells), min(c for _, c in cells)) if cells else (0, 0)
    return _shift((value[0] - top[0], value[1] - top[1]), source=source, cells=cells, frames=frames,
                  label=label)


def _follow_path(value, *, source: int, cells: list, frames: list, label: str) -> Placement:
    """path: [[drow, dcol], ...], one shift per listed frame."""
    offsets = [tuple(offset) for offset in value]
    if len(offsets) != len(frames):
        raise ControlsError(f"{label or 'path'}: {len(offsets)} path offsets for {len(frames)} frames")
    return Placement(source, cells, frames, offsets, label)


def _move_to(value, *, source: int, cells: list, frames: list, label: str) -> Placement:
    """move_to: [drow, dcol], reached linearly from no shift in the first listed frame to this one in the last."""
    return Placement(source, cells, frames, linear_path(len(frames), value), label)


#: The placement kinds: field of a controls file -> its handler. Every placement uses at most one; the first is the
#: default (with value DEFAULT_KIND_VALUE). Register a kind by adding an entry (see docs/controls.md).
PLACEMENT_KINDS: dict = {"offset": _shift, "at": _paste_at, "path": _follow_path, "move_to": _move_to}
DEFAULT_KIND_VALUE = (0, 0)


@dataclass
class Controls:
    """Placements on a latent grid of `grid` = (h, w) cells for `num_frames` generated frames."""

    grid: tuple
    num_frames: int
    placements: list = field(default_factory=list)

    def place(self, source: int, cells: Sequence[Cell], frames: Sequence[int], offset: Sequence[int] = (0, 0),
              label: str = "") -> "Controls":
        """The same offset in every listed frame (offset (0, 0): keep the cells where they are)."""
        return self.add_kind("offset", offset, source, cells, frames, label)

    def paste(self, source: int, cells: Sequence[Cell], at: Sequence[int], frames: Sequence[int], label: str = "") -> "Controls":
        """Place the selection with its top-left cell at `at` (composition)."""
        return self.add_kind("at", at, source, cells, frames, label)

    def move(self, source: int, cells: Sequence[Cell], frames: Sequence[int], path: Optional[Sequence] = None,
             to: Optional[Sequence[int]] = None, label: str = "") -> "Controls":
        """Move a selection along `path` (one offset per frame) or linearly from where it is to offset `to` (animation)."""
        if (path is None) == (to is None):
            raise ControlsError(f"move '{label}': give exactly one of path or to")
        if path is not None:
            return self.add_kind("path", path, source, cells, frames, label)
        return self.add_kind("move_to", to, source, cells, frames, label)

    def add_kind(self, kind: str, value, source: int, cells: Sequence[Cell], frames: Sequence[int],
                 label: str = "") -> "Controls":
        """Add the placement that kind `kind` of PLACEMENT_KINDS makes of `value` (e.g. "at", (2, 3))."""
        if kind not in PLACEMENT_KINDS:
            raise ControlsError(f"{label or 'placement'}: unknown placement kind '{kind}' (known: "
                                f"{', '.join(PLACEMENT_KINDS)})")
        placement = PLACEMENT_KINDS[kind](value, source=source, cells=[tuple(c) for c in cells], frames=list(frames),
                                          label=label)
        return self.add(placement)

    def add(self, placement: Placement) -> "Controls":
        """Check a placement against the grid and the frames, then add it."""
        name = placement.label or f"placement {len(self.placements)}"
        h, w = self.grid
        if not placement.cells:
            raise ControlsError(f"{name}: no cells selected")
        for r, c in placement.cells:
            if not (0 <= r < h and 0 <= c < w):
                raise ControlsError(f"{name}: source cell ({r}, {c}) is outside the {h}x{w} latent grid")
        for frame, _, (r, c) in placement.destinations():
            if not 0 <= frame < self.num_frames:
                raise ControlsError(f"{name}: frame {frame} is outside the generated frames 0..{self.num_frames - 1}")
            if not (0 <= r < h and 0 <= c < w):
                raise ControlsError(f"{name}: destination cell ({r}, {c}) in frame {frame} is outside the {h}x{w} grid")
        self.placements.append(placement)
        return self

    def check_sources(self, num_sources: int) -> None:
        for k, p in enumerate(self.placements):
            if not 0 <= p.source < num_sources:
                raise ControlsError(f"{p.label or f'placement {k}'}: source {p.source} does not exist "
                                    f"({num_sources} source(s) given)")

    def build(self, source_feats: torch.Tensor) -> tuple:
        """source_feats [S F h w] -> (feats [1 N F h w], feats_masks [1 N 1 h w]); later placements win on overlaps."""
        num_sources, dim, h, w = source_feats.shape
        if (h, w) != tuple(self.grid):
            raise ControlsError(f"source features are {h}x{w}, the controls' grid is {self.grid[0]}x{self.grid[1]}")
        self.check_sources(num_sources)
        feats = source_feats.new_zeros(1, self.num_frames, dim, h, w)
        masks = source_feats.new_zeros(1, self.num_frames, 1, h, w)
        for p in self.placements:
            for frame, (r, c), (dr, dc) in p.destinations():
                feats[0, frame, :, dr, dc] = source_feats[p.source, :, r, c]
                masks[0, frame, 0, dr, dc] = 1.0
        return feats, masks

    def cells_by_frame(self) -> list:
        """For drawing: the destination cells of each frame."""
        cells = [set() for _ in range(self.num_frames)]
        for p in self.placements:
            for frame, _, dst in p.destinations():
                cells[frame].add(dst)
        return [sorted(c) for c in cells]


# Control tensors --------------------------------------------------------------------------------------------------
def pad_controls(feats: torch.Tensor, masks: torch.Tensor, length: int) -> tuple:
    """(feats [b K F h w], masks [b K 1 h w]) fitted to `length` frames: frames without controls (zero features, zero
    masks) appended at the end when K < length, the frames beyond `length` cut when K > length, as given otherwise.

    Frame k of the controls drives generated frame k, so padding at the end keeps every control on its frame.
    """
    if feats.shape[1] != masks.shape[1]:
        raise ValueError(f"feats has {feats.shape[1]} frames but feats_masks {masks.shape[1]}")
    if feats.shape[1] > length:
        return feats[:, :length], masks[:, :length]
    if feats.shape[1] < length:
        pad = length - feats.shape[1]
        feats = torch.cat([feats, feats.new_zeros(feats.shape[0], pad, *feats.shape[2:])], dim=1)
        masks = torch.cat([masks, masks.new_zeros(masks.shape[0], pad, *masks.shape[2:])], dim=1)
    return feats, masks


def mask_cells(mask: torch.Tensor) -> list:
    """The (row, col) cells set (> 0) in a mask [h w], sorted."""
    return [tuple(c) for c in torch.nonzero(mask > 0).tolist()]


def pixel_boxes(controls, image_size: Sequence[int], leading_frames: int = 0) -> list:
    """Pixel rectangles (x0, y0, x1, y1) of each frame's control cells, for lutils.media.contact_sheet(boxes=[...]).

    controls: a Controls, or control masks [1 K 1 h w] (or [K 1 h w], [K h w]) as generate() takes them.
    image_size is (H, W); `leading_frames` frames without controls (e.g. the input frame) come first.
    """
    if isinstance(controls, Controls):
        grid, frames = controls.grid, controls.cells_by_frame()
    else:
        masks = controls
        if masks.ndim not in (3, 4, 5) or (masks.ndim >= 4 and masks.shape[-3] != 1) or \
                (masks.ndim == 5 and masks.shape[0] != 1):
            raise ValueError(f"expected control masks [1 K 1 h w], [K 1 h w] or [K h w], got {tuple(masks.shape)}")
        masks = masks.reshape(-1, *masks.shape[-2:])
        grid, frames = tuple(masks.shape[-2:]), [mask_cells(m) for m in masks]
    height, width = image_size
    cell_h, cell_w = height / grid[0], width / grid[1]
    boxes = [[] for _ in range(leading_frames)]
    for cells in frames:
        boxes.append([(round(c * cell_w), round(r * cell_h), round((c + 1) * cell_w), round((r + 1) * cell_h))
                      for r, c in cells])
    return boxes


# The file format --------------------------------------------------------------------------------------------------

def parse_cells(spec, name: str) -> list:
    """{"box": [r0, c0, r1, c1]} or [[r, c], ...]."""
    if isinstance(spec, dict) and "box" in spec:
        return box(*spec["box"])
    if isinstance(spec, list) and all(isinstance(c, (list, tuple)) and len(c) == 2 for c in spec):
        return [tuple(int(v) for v in c) for c in spec]
    raise ControlsError(f"{name}: 'cells' must be {{\"box\": [r0, c0, r1, c1]}} or a list of [row, col], got {spec!r}")


def parse_frames(spec, num_frames: int, name: str) -> list:
    """"all", [f, ...] or {"from": a, "to": b} (inclusive)."""
    if spec == "all":
        return list(range(num_frames))
    if isinstance(spec, dict) and {"from", "to"} <= set(spec):
        return list(range(int(spec["from"]), int(spec["to"]) + 1))
    if isinstance(spec, list) and all(isinstance(f, int) for f in spec):
        return list(spec)
    raise ControlsError(f"{name}: 'frames' must be \"all\", a list of frame numbers or {{\"from\": a, \"to\": b}}, got {spec!r}")


def controls_from_dict(data: dict, grid: Sequence[int], num_frames: int, source: str = "<controls>") -> tuple:
    """(Controls, [source specs]) from the file format of docs/controls.md."""
    grid = tuple(int(v) for v in grid)
    if "grid" in data and tuple(data["grid"]) != grid:
        raise ControlsError(f"{source}: written for a {data['grid']} grid, the model's latent grid is {list(grid)}")
    sources = list(data.get("sources", ["input"]))
    controls = Controls(grid, num_frames)
    for k, item in enumerate(data.get("placements", [])):
        name = f"{source}: placement {k}" + (f" ('{item['label']}')" if "label" in item else "")
        unknown = set(item) - {"source", "cells", "frames", "label"} - set(PLACEMENT_KINDS)
        if unknown:
            raise ControlsError(f"{name}: unknown field(s) {sorted(unknown)}")
        cells = parse_cells(item.get("cells"), name)
        frames = parse_frames(item.get("frames", "all"), num_frames, name)
        kinds = [kind for kind in PLACEMENT_KINDS if kind in item]
        if len(kinds) > 1:
            raise ControlsError(f"{name}: use only one of {', '.join(PLACEMENT_KINDS)} (got {kinds})")
        kind = kinds[0] if kinds else next(iter(PLACEMENT_KINDS))
        value = item[kind] if kinds else DEFAULT_KIND_VALUE
        controls.add_kind(kind, value, int(item.get("source", 0)), cells, frames, name)
    controls.check_sources(len(sources))
    return controls, sources


def controls_from_text(text: str, name: str, grid: Sequence[int], num_frames: int) -> tuple:
    """(Controls, [source specs]) of a controls file's text; `name`, the file's, is named in errors, and its suffix
    .yaml / .yml says the text is YAML (else JSON)."""
    try:
        if Path(name).suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as error:
        raise ControlsError(f"{name}: cannot parse ({error})") from error
    if not isinstance(data, dict):
        raise ControlsError(f"{name}: expected an object with 'placements'")
    return controls_from_dict(data, grid, num_frames, name)


def load_controls(path: str | Path, grid: Sequence[int], num_frames: int) -> tuple:
    """Read a JSON or YAML controls file."""
    path = Path(path)
    if not path.is_file():
        raise ControlsError(f"controls file not found: {path}")
    return controls_from_text(path.read_text(), str(path), grid, num_frames)
