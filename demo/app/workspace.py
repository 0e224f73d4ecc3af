"""What the web editor serves, without HTTP: the model it loaded (or why it could not), the dataset, the editing
sessions (one editor core each), uploads checked and decoded in memory, and the request a generation needs.

Every problem a user can cause is an `AppError` (an HTTP status and a message the page shows); the server goes on.
Files are only written under the workspace's temporary folder (`root`), which `close()` removes.
"""
from __future__ import annotations

import io
import json
import logging
import secrets
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from lutils.errors import CageError

log = logging.getLogger(__name__)

#: image types an upload may be (Pillow's format names)
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
EDITOR_KINDS = ("animate", "compose")


class AppError(CageError):
    """A request the editor cannot serve: `status` is its HTTP status, the message says why and what to do."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Limits:
    """What an upload may be: its size in bytes, its pixels, and the size of a controls file."""

    upload_bytes: int = 20 * 2 ** 20
    image_pixels: int = 40_000_000
    controls_bytes: int = 2 * 2 ** 20


@dataclass
class Settings:
    """How a generation runs; the page sets num_frames, steps, gamma and seed."""

    num_frames: int = 8
    steps: int = 20
    gamma: float = 0.0
    seed: int = 0
    method: str = "joint"
    solver: str = "euler"
    past_horizon: int = -1

    @classmethod
    def parse(cls, data: dict) -> "Settings":
        """Settings from the page's JSON, each field checked (AppError names the field)."""
        settings = cls()
        for name, kind, low in (("num_frames", int, 1), ("steps", int, 1), ("gamma", float, None),
                                ("seed", int, 0)):
            if name not in data or data[name] in (None, ""):
                continue
            try:
                value = kind(data[name])
            except (TypeError, ValueError):
                raise AppError(f"{name} must be a number, got {data[name]!r}") from None
            if low is not None and value < low:
                raise AppError(f"{name} must be at least {low}, got {value}")
            if kind is float and not np.isfinite(value):
                raise AppError(f"{name} must be finite, got {value}")
            setattr(settings, name, value)
        if settings.num_frames > 256 or settings.steps > 1000:
            raise AppError("num_frames is at most 256 and steps at most 1000")
        return settings


@dataclass
class Source:
    """An image of a session: how the controls file names it, and the frame [3 H W] in [-1, 1]."""

    name: str
    frame: torch.Tensor
    command_input: str  # what generate.py's --input (or a controls file's source) is given for it


@dataclass
class Session:
    """One editor in one browser tab: its kind, the editor core, and the images it was given."""

    id: str
    kind: str
    editor: object
    folder: Path
    sources: list = field(default_factory=list)  # Source of each image of the editor, in the editor's order
    lock: threading.Lock = field(default_factory=threading.Lock)

    def source_names(self) -> list:
        if self.kind == "animate":
            return ["input"]
        return [source.command_input for source in self.sources]


class Workspace:
    """The model, the dataset and the sessions of one web editor server (see the module docstring)."""

    def __init__(self, config: Optional[str] = None, ckpt: Optional[str] = None, data: Optional[str] = None,
                 device: Optional[str] = None, precision: str = "auto", overrides=(), limits: Limits = Limits(),
                 trust: bool = False, fps: float = 8.0, public: bool = False):
        self.public = public  # served beyond loopback: no server files named by the page (models, controls sources)
        self.root = temporary_folder()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.precision_choice, self.overrides, self.limits = precision, list(overrides), limits
        self.trust, self.fps = trust, float(fps)
        self.sessions: dict = {}
        self.lock = threading.Lock()
        self.model = self.config = self.dataset = None
        self.model_error = self.data_error = None
        self.config_path, self.ckpt_path, self.data_path = config, ckpt, data
        if config is not None:
            try:
                self.load(config, ckpt, data)
            except AppError:  # kept in model_error: the page shows it and offers to load another
                pass

    # The model ---------------------------------------------------------------------------------------------------
    def load(self, config: str, ckpt: Optional[str], data: Optional[str] = None) -> None:
        """Load the model (and the dataset, when there is one); a failure is kept in `model_error` and raised as an
        AppError, and the model loaded before stays in use."""
        from demo.loading import load_dataset, load_model_and_data
        from lutils.precision import resolve_precision

        try:
            if not ckpt:
                raise AppError("no checkpoint given: start with --ckpt PATH, or enter one in the model panel")
            model, _, loaded_config = load_model_and_data(config, ckpt, device=self.device, load_data=False,
                                                          overrides=self.overrides, trust=self.trust)
        except AppError as error:
            self.model_error = str(error)
            raise
        except (CageError, OSError, ValueError, KeyError, RuntimeError) as error:
            self.model_error = f"cannot load the model ({config}, {ckpt}): {error}"
            log.error("%s", self.model_error)
            raise AppError(self.model_error) from error
        dataset, data_error = None, None
        if data is not None or loaded_config.select("data.data_root") is not None:
            try:
                dataset = load_dataset(loaded_config, data)
            except (CageError, OSError) as error:
                data_error = f"no dataset clips ({error}); upload images instead"
                log.warning("%s", data_error)
        with self.lock:
            self.model, self.config, self.dataset = model, loaded_config, dataset
            self.model_error, self.data_error = None, data_error
            self.config_path, self.ckpt_path, self.data_path = str(config), str(ckpt), data
            self.precision = resolve_precision(self.precision_choice, self.device)
            self.sessions.clear()  # their editors hold the old model
        log.info("web editor: model %s (%s) on %s, %s", ckpt, config, self.device, self.precision)

    def need_model(self):
        if self.model is None:
            raise AppError(self.model_error or "no model loaded: enter a config and a checkpoint", status=409)
        return self.model

    @property
    def size(self) -> tuple:
        """(input_size, crop_size) of the loaded config's frames."""
        return int(self.config["data"]["input_size"]), int(self.config["data"]["crop_size"])

    def status(self) -> dict:
        model = self.model
        info = {"loaded": model is not None, "error": self.model_error, "config": self.config_path,
                "ckpt": self.ckpt_path, "data": self.data_path, "device": self.device,
                "data_error": self.data_error, "num_videos": None}
        if model is not None:
            info.update(grid=list(model.state_res), size=self.size[1], precision=self.precision,
                        max_frames=int(model.num_target_frames) * 32)
            if self.dataset is not None:
                info["num_videos"] = int(self.dataset.num_videos)
                info["data"] = str(self.dataset.data_path)
        return info

    # Sessions ----------------------------------------------------------------------------------------------------
    def new_session(self, kind: str) -> Session:
        from demo.demo import Demo
        from demo.demo_compose import DemoCompose

        if kind not in EDITOR_KINDS:
            raise AppError(f"editor must be one of {', '.join(EDITOR_KINDS)}, got {kind!r}")
        model = self.need_model()
        editor_class = Demo if kind == "animate" else DemoCompose
        editor = editor_class.from_model(model, self.config, None, device=self.device, fps=self.fps)
        session_id = secrets.token_hex(8)
        folder = self.root / session_id
        folder.mkdir()
        session = Session(session_id, kind, editor, folder)
        with self.lock:
            self.sessions[session_id] = session
        return session

    def session(self, session_id: str) -> Session:
        session = self.sessions.get(session_id)
        if session is None:
            raise AppError(f"no editing session {session_id!r} (the model was reloaded, or the server restarted): "
                           f"reload the page", status=404)
        return session

    # Images ------------------------------------------------------------------------------------------------------
    def decode_upload(self, filename: str, data: bytes) -> Source:
        """An uploaded image, checked (size, type, pixels) and decoded in memory as generate.py reads its file."""
        from dataset.frames import frame_from_image

        self.need_model()
        name = Path(filename or "image.png").name or "image.png"
        if len(data) > self.limits.upload_bytes:
            raise AppError(f"{name}: {mib(len(data))} is over the upload limit of {mib(self.limits.upload_bytes)}",
                           status=413)
        if not data:
            raise AppError(f"{name}: the file is empty")
        try:
            with Image.open(io.BytesIO(data)) as image:
                if image.format not in IMAGE_FORMATS:
                    raise AppError(f"{name}: {image.format} images are not accepted (use "
                                   f"{', '.join(IMAGE_FORMATS)})", status=415)
                if image.width * image.height > self.limits.image_pixels:
                    raise AppError(f"{name}: {image.width}x{image.height} pixels is over the limit of "
                                   f"{self.limits.image_pixels} pixels", status=413)
                frame = frame_from_image(image, *self.size)
        except AppError:
            raise
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            raise AppError(f"{name}: cannot read the image ({error})", status=415) from error
        return Source(name, frame, name)

    def clip_frame(self, index, frame=0) -> Source:
        """Frame `frame` of dataset video `index`, read as generate.py reads "DATA:index:frame"."""
        from dataset.frames import load_frame

        self.need_model()
        if self.dataset is None:
            raise AppError(self.data_error or "no dataset: start with --data PATH (an HDF5 split folder or shard)")
        try:
            index, frame = int(index), int(frame)
        except (TypeError, ValueError):
            raise AppError(f"clip index and frame must be whole numbers, got {index!r}, {frame!r}") from None
        if not 0 <= index < self.dataset.num_videos:
            raise AppError(f"clip {index} does not exist: the dataset has {self.dataset.num_videos} videos "
                           f"(0 to {self.dataset.num_videos - 1})")
        spec = f"{self.dataset.data_path}:{index}:{frame}"
        try:
            image = load_frame(spec, *self.size)
        except CageError as error:
            raise AppError(str(error)) from error
        return Source(f"clip {index}" + (f" frame {frame}" if frame else ""), image, spec)

    @staticmethod
    def distinct(session: Session, source: Source) -> Source:
        """`source`, renamed "NAME-2.png", "NAME-3.png", ... when another image of the session has its name but other
        pixels (two uploads called image.png): a controls file must tell its sources apart."""
        taken = {s.name: s for s in session.sources}
        same = taken.get(source.name)
        if same is None or torch.equal(same.frame, source.frame):
            return source
        stem, suffix = Path(source.name).stem, Path(source.name).suffix
        number = 2
        while f"{stem}-{number}{suffix}" in taken:
            number += 1
        name = f"{stem}-{number}{suffix}"
        return Source(name, source.frame, name)

    # Controls files ----------------------------------------------------------------------------------------------
    def parse_controls(self, session: Session, data: bytes, filename: str, num_frames: int):
        """(Controls, [Source]) of an uploaded controls file for `session` and `num_frames` generated frames (a
        frame beyond them is an error that says so): "input" is the animated image, any other source an image of this
        session (by name), or else an image file or HDF5 spec readable here."""
        from dataset.frames import load_frame
        from model.controls import controls_from_text

        if len(data) > self.limits.controls_bytes:
            raise AppError(f"{filename}: {mib(len(data))} is over the limit of {mib(self.limits.controls_bytes)} "
                           f"for a controls file", status=413)
        try:
            controls, names = controls_from_text(data.decode("utf-8"), filename, session.editor.grid, num_frames)
        except UnicodeDecodeError as error:
            raise AppError(f"{filename}: cannot parse ({error})") from error
        except CageError as error:
            raise AppError(str(error)) from error
        known = {key: source for source in session.sources for key in (source.name, source.command_input)}
        sources = []
        for name in names:
            if name == "input":
                if session.kind != "animate" or not session.sources:
                    raise AppError(f"{filename}: source 'input' needs an image loaded in the animation editor")
                sources.append(session.sources[0])
            elif name in known:
                sources.append(known[name])
            elif self.public and not (self.dataset is not None and name.startswith(f"{self.dataset.data_path}:")):
                raise AppError(f"{filename}: source {name!r} is not an image of this session or a dataset clip (upload "
                               f"it first; this server reads no other files, as it is open beyond this machine)")
            else:
                try:
                    sources.append(Source(name, load_frame(name, *self.size), name))
                except CageError as error:
                    raise AppError(f"{filename}: source {name!r}: {error} (upload the image first)") from error
        return controls, sources

    # Generation --------------------------------------------------------------------------------------------------
    def prepare_generation(self, session: Session, settings: Settings) -> tuple:
        """(work, request) of a generation of `session` with `settings`: work(progress) runs it as generate.py would
        with the session's controls file, writing video.mp4 (with PyAV), video.gif and controls.json into a new
        folder of the session; request has the controls file and the generate.py command that reproduces it."""
        from model.controls import controls_from_dict
        from model.generation import generate_from_controls, stages

        editor, model = session.editor, self.need_model()
        if not session.sources:
            raise AppError("load an image first (upload one, or pick a dataset clip)")
        animate = session.kind == "animate"
        content = editor.controls_file(session.source_names())
        try:
            controls, _ = controls_from_dict(content, editor.grid, settings.num_frames, "the editor's controls")
        except CageError as error:
            written = editor.num_control_frames
            raise AppError(f"{error}: {written} control frame(s) are written, so generate at least {written} frames "
                           f"(or clear the controls)") from error
        frames = [session.sources[0].frame] if animate else [source.frame for source in session.sources]
        initial = frames[0][None, None] if animate else None
        num_initial, init_id = 2, (0 if animate else 2)  # a fake context frame before the input, or two from noise
        plan = stages(settings.method, settings.num_frames, num_initial, model.num_target_frames, init_id,
                      settings.past_horizon)
        total = len(plan) * settings.steps * {"midpoint": 2, "rk4": 4}.get(settings.solver, 1)
        folder = session.folder / f"generation-{secrets.token_hex(4)}"
        command = self.command(session, settings)

        def work(progress) -> dict:
            from lutils.media import save_contact_sheet, write_video
            from model.controls import pixel_boxes

            calls = [0]

            def on_call(_record) -> None:
                calls[0] += 1
                progress(min(calls[0], total), total)

            progress(0, total)
            video = generate_from_controls(
                model, controls, frames, settings.num_frames, self.device, initial_frames=initial,
                precision=self.precision, method=settings.method, odesolver=settings.solver,
                num_steps=settings.steps, gamma=settings.gamma, past_horizon=settings.past_horizon,
                seed=settings.seed, on_call=on_call)
            folder.mkdir()
            clip = video[0].clamp(-1, 1)
            files = {"gif": write_video(folder / "video.gif", clip, fps=self.fps).name}
            try:
                files["mp4"] = write_video(folder / "video.mp4", clip, fps=self.fps).name
            except ImportError as error:  # PyAV missing: the gif is shown instead
                log.warning("no mp4 (%s); the gif is shown", error)
            boxes = pixel_boxes(controls, video.shape[-2:], leading_frames=1 if animate else 0)
            files["strip"] = save_contact_sheet(folder / "strip.png", video[:1].clamp(-1, 1), boxes=[boxes]).name
            (folder / "controls.json").write_text(json.dumps(content, indent=1))
            editor.generated_frames = video
            return {"files": files, "folder": folder.name, "num_frames": int(video.shape[1])}

        return work, {"controls": content, "command": command}

    def command(self, session: Session, settings: Settings) -> str:
        """The generate.py command line that makes the same video from the controls file (saved as controls.json)."""
        import shlex

        parts = ["python", "generate.py", "--config", self.config_path, "--ckpt", self.ckpt_path]
        if session.kind == "animate" and session.sources:
            parts += ["--input", session.sources[0].command_input]
        parts += ["--controls", "controls.json", "--num-frames", str(settings.num_frames), "--steps",
                  str(settings.steps), "--gamma", repr(settings.gamma), "--seed", str(settings.seed), "--method",
                  settings.method, "--solver", settings.solver, "--past-horizon", str(settings.past_horizon),
                  "--device", self.device, "--precision", self.precision, "--fps", repr(self.fps),
                  "--out", "video.mp4", *self.overrides]
        if self.trust:
            parts.insert(-len(self.overrides) or len(parts), "--trust-checkpoint")
        return " ".join(shlex.quote(str(part)) for part in parts)

    # Output ------------------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Remove the temporary folder and everything in it."""
        shutil.rmtree(self.root, ignore_errors=True)


def temporary_folder() -> Path:
    """A private folder for this server's videos: a staging folder named after this process in the system's temporary
    folder (dataset/staging.py), so that a server killed without cleaning up has its folder removed by the next one."""
    from dataset.staging import make_staging_dir, remove_stale

    target = Path(tempfile.gettempdir()) / "cage-app"
    remove_stale(target, log.info)
    path = make_staging_dir(target)
    path.chmod(0o700)  # the videos of whoever uses the editor: not for other users of the machine
    return path


def mib(size: int) -> str:
    """A size in bytes as MiB for messages ("0.3 MiB")."""
    return f"{size / 2 ** 20:.{1 if size < 10 * 2 ** 20 else 0}f} MiB"


def png_bytes(image: np.ndarray) -> bytes:
    """uint8 [H W 3] as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def hex_colour(name: str) -> str:
    """A matplotlib colour name ("tab:red") as CSS hex."""
    from matplotlib.colors import to_hex

    return to_hex(name)


def session_state(session: Session) -> dict:
    """What the page draws and says for a session: the picture's marks, the control frames, mode and message."""
    import zlib

    from model.controls import mask_cells

    editor = session.editor
    scene = editor.scene()
    marks = [{"cells": [list(cell) for cell in mark.cells], "colour": hex_colour(mark.colour), "fill": mark.fill,
              "label": mark.label} for mark in scene.marks]
    _, masks = editor.control_tensors()
    timeline = []
    if masks is not None:
        for k in range(masks.shape[1]):
            frame = k + editor.video_offset
            timeline.append({"frame": frame, "generated_frame": k, "cells": [list(c) for c in mask_cells(masks[0, k, 0])],
                             "colour": hex_colour(_frame_colour(frame))})
    image = scene.image
    state = {"session": session.id, "kind": session.kind, "mode": scene.mode, "mode_name": editor.MODE_NAMES.get(
        editor.mode, "none"), "message": editor.message, "title": editor.title(), "grid": list(scene.grid),
        "size": scene.size, "has_image": image is not None, "placeholder": scene.placeholder,
        "image_version": None if image is None else f"{zlib.crc32(np.ascontiguousarray(image).tobytes()):08x}",
        "marks": marks, "timeline": timeline, "sources": [s.name for s in session.sources],
        "num_control_frames": editor.num_control_frames}
    if session.kind == "compose":
        state.update(objects=len(editor.groups), current_object=editor.cur_object, view=editor.view)
    return state


def _frame_colour(frame: int) -> str:
    from demo.editor import FRAME_COLOURS

    return FRAME_COLOURS[frame % len(FRAME_COLOURS)]
