"""The original's `demo.common`, kept for its importers: `show_video` (demo/display.py), and the checkpoint registry
and loading (demo/loading.py). Names only; nothing is defined here.

`CHECKPOINTS` is demo.loading's dict itself, so `demo.common.CHECKPOINTS["mine"] = "path/to/model.pth"` registers a
model for `Demo("mine")` as in the original.
"""
from demo.display import show_video, video_frames
from demo.loading import (CHECKPOINTS, WEIGHTS_ROOT_ENV, checkpoint_path, checkpoint_roots, load_model_and_data,
                          resolve_config, search_roots)

__all__ = ["CHECKPOINTS", "WEIGHTS_ROOT_ENV", "checkpoint_path", "checkpoint_roots",
           "load_model_and_data", "resolve_config", "search_roots", "show_video", "video_frames"]
