"""The editors' matplotlib view: the pyplot figure of an editor (demo/editor.py), its mouse and key events turned
into the editor's gesture calls, and the drawing of the editor's `scene()`, on screen or off screen (snapshots).

The image is drawn as the original's plain imshow draws it (pixel i centred on coordinate i, the image spanning
-0.5 .. size - 0.5), so that a pointer reports the coordinates, and selects the cells, it did there.
"""
from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

FIGSIZE = (9.5, 4)


class EditorFigure:
    """An editor's pyplot figure: draws `editor.scene()` after every change and sends the editor the presses, drags
    and releases over the image and the keys."""

    def __init__(self, editor):
        import matplotlib.pyplot as plt

        self.editor = editor
        self.fig = plt.figure(figsize=FIGSIZE)
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
        editor.add_listener(self.refresh)
        self.refresh()

    def close(self) -> None:
        """Stop following the editor, disconnect the events and close the figure."""
        import matplotlib.pyplot as plt

        self.editor.remove_listener(self.refresh)
        for cid in self._cids:
            self.fig.canvas.mpl_disconnect(cid)
        self._cids = []
        plt.close(self.fig)

    def _on_image(self, event) -> bool:
        return event.inaxes is self.ax and event.xdata is not None

    def on_press(self, event) -> None:
        toolbar = getattr(event.canvas, "toolbar", None)
        if self._on_image(event) and not getattr(toolbar, "mode", ""):  # not while zooming or panning
            self.editor.pointer_press((event.xdata, event.ydata))

    def on_motion(self, event) -> None:
        if self._on_image(event):
            self.editor.pointer_move((event.xdata, event.ydata))

    def on_release(self, event) -> None:
        self.editor.pointer_release()

    def on_key(self, event) -> None:
        self.editor.key_press(event.key)

    def refresh(self) -> None:
        self.ax.clear()
        draw_scene(self.fig, self.ax, self.editor.scene())
        self.fig.canvas.draw_idle()


def draw_scene(figure, ax, scene) -> None:
    """Draw a demo.editor.Scene: the image with its cell grid and marks in `ax`, the caption as the figure's title."""
    if scene.image is None:
        ax.set_axis_off()
        ax.set_title(scene.placeholder, fontsize=9)
    else:
        _show_image(ax, scene)
        for marks in scene.marks:
            _mark_cells(ax, marks, scene.cell_size)
    if scene.mode:
        ax.annotate(scene.mode, (scene.size - 20, 20), fontsize=16, color="black")
    figure.suptitle(scene.caption, fontsize=8)


def render_scene(scene) -> Figure:
    """A scene drawn in a new off-screen Agg figure (no display needed)."""
    figure = Figure(figsize=FIGSIZE)
    FigureCanvasAgg(figure)
    draw_scene(figure, figure.add_subplot(1, 1, 1), scene)
    return figure


def scene_image(scene) -> Image.Image:
    """A scene drawn off screen, as a PIL image."""
    figure = render_scene(scene)
    figure.canvas.draw()
    return Image.fromarray(np.asarray(figure.canvas.buffer_rgba())[..., :3].copy())


def _show_image(ax, scene) -> None:
    """The scene's image [H W 3] placed as the original's imshow places it, with the cell grid."""
    edge = scene.size - 0.5
    ax.imshow(scene.image, extent=(-0.5, edge, edge, -0.5), interpolation="nearest")
    ch, cw = scene.cell_size
    for r in range(1, scene.grid[0]):
        ax.axhline(r * ch, color="white", linewidth=0.3, alpha=0.5)
    for c in range(1, scene.grid[1]):
        ax.axvline(c * cw, color="white", linewidth=0.3, alpha=0.5)
    ax.set_xlim(-0.5, edge)
    ax.set_ylim(edge, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])


def _mark_cells(ax, marks, cell_size) -> None:
    """One CellMarks: each cell outlined (or filled), the label at the first cell."""
    ch, cw = cell_size
    for r, c in marks.cells:
        ax.add_patch(Rectangle((c * cw, r * ch), cw, ch, facecolor=marks.colour if marks.fill else "none",
                               edgecolor=marks.colour, alpha=0.35 if marks.fill else 0.9, linewidth=1.2))
    if marks.label is not None and marks.cells:
        r, c = min(marks.cells)
        ax.text(c * cw + 1, r * ch + 1, marks.label, color=marks.colour, fontsize=7, va="top", ha="left",
                fontweight="bold")
