"""Pointer geometry of the editors: which latent cell a pointer selects, and where a group of cells lands when it is
placed at a pointer. These are the original demos' rules, so the same mouse events give the same cells.

Coordinates: pixel (x, y) with x to the right and y down, as matplotlib reports them over an image; cells
(row, col) of the latent grid, each `cell_size` = (height, width) pixels.

- A pointer selects the cell that contains it: with the original's integer arithmetic, column int(x) // cell width
  (int truncates toward zero, so x in (-1, 0) is column 0, as in the original).
- Placing a group at a pointer moves the mean of its cells' top-left pixel corners onto the pointer; each cell's
  shifted corner, (corner + pointer) - mean evaluated in that order as the original does, then falls in the cell
  that contains it. Cells that land off the grid are dropped (the original indexed them modulo the grid or failed).

The editors draw the image as matplotlib's plain imshow does (pixel i centred on coordinate i), so a pointer over
the same pixel reports the same coordinates, and selects the same cells, as in the original.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

Cell = tuple  # (row, col)


def _index(value: float, size: float) -> int:
    """The cell index of coordinate `value` along an axis of cells `size` pixels wide (the original's int(v) // ts)."""
    if float(size).is_integer():
        return math.trunc(value) // int(size)
    return math.floor(value / size)  # cells of fractional width: no original to follow


def cell_under(xy: Sequence[float], cell_size: Sequence[float], grid: Sequence[int]) -> Optional[Cell]:
    """The (row, col) cell containing pixel (x, y), or None when it lies off the grid."""
    row, col = _index(float(xy[1]), cell_size[0]), _index(float(xy[0]), cell_size[1])
    if 0 <= row < grid[0] and 0 <= col < grid[1]:
        return row, col
    return None


def cell_corner(cell: Cell, cell_size: Sequence[float]) -> tuple:
    """Pixel (x, y) of the top-left corner of a cell."""
    return cell[1] * cell_size[1], cell[0] * cell_size[0]


def place_group(cells: Sequence[Cell], pointer: Sequence[float], cell_size: Sequence[float],
                grid: Sequence[int]) -> tuple:
    """Place `cells` at `pointer`: ([(source cell, destination cell)], [source cells dropped off the grid]).

    The mean of the cells' top-left corners goes to the pointer; each shifted corner lands in the cell under it.
    """
    if not cells:
        return [], []
    corners = [cell_corner(c, cell_size) for c in cells]
    mean_x = sum(x for x, _ in corners) / len(corners)
    mean_y = sum(y for _, y in corners) / len(corners)
    px, py = float(pointer[0]), float(pointer[1])
    pairs, dropped = [], []
    for cell, (x, y) in zip(cells, corners):
        destination = cell_under((x + px - mean_x, y + py - mean_y), cell_size, grid)
        if destination is None:
            dropped.append(cell)
        else:
            pairs.append((cell, destination))
    return pairs, dropped


def shift_group(cells: Sequence[Cell], offset: Sequence[int], grid: Sequence[int]) -> tuple:
    """Move `cells` by offset = (rows, cols): ([(source, destination)], [source cells dropped off the grid])."""
    pairs, dropped = [], []
    for r, c in cells:
        destination = (r + int(offset[0]), c + int(offset[1]))
        if 0 <= destination[0] < grid[0] and 0 <= destination[1] < grid[1]:
            pairs.append(((r, c), destination))
        else:
            dropped.append((r, c))
    return pairs, dropped


def cells_in_rect(rect: Sequence[float], cell_size: Sequence[float], grid: Sequence[int]) -> list:
    """Cells touched by the pixel rectangle (x0, y0, x1, y1), corners in any order, clipped to the grid."""
    x0, y0, x1, y1 = (float(v) for v in rect)
    r0 = max(math.floor(min(y0, y1) / cell_size[0]), 0)
    r1 = min(math.floor(max(y0, y1) / cell_size[0]), grid[0] - 1)
    c0 = max(math.floor(min(x0, x1) / cell_size[1]), 0)
    c1 = min(math.floor(max(x0, x1) / cell_size[1]), grid[1] - 1)
    return [(r, c) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]


def at_top_left(cells: Sequence[Cell], at: Sequence[int]) -> tuple:
    """The offset (rows, cols) that puts the top-left of the cells' bounding box at cell `at`."""
    return int(at[0]) - min(r for r, _ in cells), int(at[1]) - min(c for _, c in cells)
