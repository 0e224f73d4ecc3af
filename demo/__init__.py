"""Interactive demos: the animation editor `Demo` and the composition editor `DemoCompose`, as in the original
(`from demo import Demo`, `from demo import DemoCompose as Demo`).

- demo/loading.py: the checkpoint registry (CHECKPOINTS), where relative paths are looked up, load_model_and_data
- demo/display.py: show_video
- demo/common.py: the original's module, re-exporting the names above
- demo/editor.py: the editors' display-free core (state, gestures as calls, controls, generation, saving, scene)
- demo/demo.py, demo/demo_compose.py: the animation and composition editors
- demo/grid.py: pointer geometry (which cell a pointer selects, where a group lands)
- demo/view.py: the matplotlib figure (events to the core's calls, drawing its scene)
"""
from demo.demo import Demo
from demo.demo_compose import DemoCompose

__all__ = ["Demo", "DemoCompose"]
