"""Synthetic videos of coloured shapes: a small bouncing-shapes generator and a CLEVRER-like world with ground truth.

`render_video` (the small generator): shapes move with constant velocity and bounce off the walls, overlapping
freely. Used by the pipeline demo, benchmarks and tests.

`generate_world` (the CLEVRER-like world, written by `python -m dataset.make_synthetic`): shapes of a few sizes
bounce off the walls and collide elastically with each other, optionally on two depth layers that pass over each
other (occlusion), on a plain or softly textured background, with per-frame ground truth for every object
(`write_ground_truth` / `read_ground_truth`, format in docs/data-format.md, "Ground truth").

Everything is deterministic from a seed (same seed -> identical frames and ground truth).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence, Union

import numpy as np

from lutils.errors import CageError

SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 210, 40),
    "purple": (150, 60, 200),
    "cyan": (40, 200, 210),
}


@dataclass
class ShapeState:
    """One object: shape, colour, radius (pixels), centre and velocity (pixels per frame)."""

    shape: str
    colour: str
    radius: float
    x: float
    y: float
    vx: float
    vy: float


def shape_mask(shape: str, radius: float, x: float, y: float, grid_y: np.ndarray, grid_x: np.ndarray) -> np.ndarray:
    """Boolean [H W] mask of a shape centred at (x, y) in pixel-centre coordinates."""
    dx, dy = grid_x - x, grid_y - y
    if shape == "circle":
        return dx * dx + dy * dy <= radius * radius
    if shape == "square":
        return (np.abs(dx) <= radius) & (np.abs(dy) <= radius)
    if shape == "triangle":  # upward triangle inscribed in the square of side 2r
        return (dy <= radius) & (dy >= -radius) & (np.abs(dx) <= (dy + radius) / 2)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def random_objects(rng: np.random.Generator, size: int, num_objects: int, max_speed: float) -> list:
    objects = []
    for _ in range(num_objects):
        radius = float(rng.uniform(0.06, 0.12) * size)
        speed = rng.uniform(0.3, 1.0) * max_speed
        angle = rng.uniform(0, 2 * np.pi)
        objects.append(ShapeState(
            shape=str(rng.choice(SHAPES)),
            colour=str(rng.choice(list(COLOURS))),
            radius=radius,
            x=float(rng.uniform(radius, size - radius)),
            y=float(rng.uniform(radius, size - radius)),
            vx=float(speed * np.cos(angle)),
            vy=float(speed * np.sin(angle)),
        ))
    return objects


def step(obj: ShapeState, size: int) -> None:
    """Advance one frame, reflecting off the walls."""
    obj.x += obj.vx
    obj.y += obj.vy
    for pos, vel in (("x", "vx"), ("y", "vy")):
        value = getattr(obj, pos)
        if value < obj.radius:
            setattr(obj, pos, 2 * obj.radius - value)
            setattr(obj, vel, abs(getattr(obj, vel)))
        elif value > size - obj.radius:
            setattr(obj, pos, 2 * (size - obj.radius) - value)
            setattr(obj, vel, -abs(getattr(obj, vel)))


def render_video(
    num_frames: int,
    size: int = 64,
    num_objects: int = 3,
    seed: int = 0,
    max_speed: float = 0.04,
    background: tuple = (235, 235, 235),
) -> np.ndarray:
    """uint8 [num_frames size size 3]; max_speed is in image sizes per frame."""
    rng = np.random.default_rng(seed)
    objects = random_objects(rng, size, num_objects, max_speed * size)
    grid_y, grid_x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for t in range(num_frames):
        frame = np.empty((size, size, 3), dtype=np.uint8)
        frame[:] = background
        for obj in objects:
            frame[shape_mask(obj.shape, obj.radius, obj.x, obj.y, grid_y, grid_x)] = COLOURS[obj.colour]
        frames[t] = frame
        for obj in objects:
            step(obj, size)
    return frames


def write_frame_dataset(root, counts: dict, num_frames: int = 24, size: int = 64, seed: int = 0) -> None:
    """Write {split: number of videos} as PNG frame folders root/<split>/video_<i>/<t>.png (the converter's input)."""
    from pathlib import Path

    from PIL import Image

    for split_index, (split, count) in enumerate(counts.items()):
        for i in range(count):
            folder = Path(root) / split / f"video_{i:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            video = render_video(num_frames, size, num_objects=int(1 + (i % 3)), seed=seed + 1000 * split_index + i)
            for t, frame in enumerate(video):
                Image.fromarray(frame).save(folder / f"{t:04d}.png")


# ---------------------------------------------------------------------------------------------------------------------
# The CLEVRER-like world: collisions, depth layers, textured backgrounds and per-frame ground truth.
#
# Coordinates: pixel (row i, column j) covers [j, j+1) x [i, i+1) and its centre is (j + 0.5, i + 0.5), so an object
# centred at (x, y) covers pixel (floor(y), floor(x)). "radius" is the shape's half-extent: the circle's radius, the
# square's half side, the half side of the square the (upward) triangle is inscribed in; the centre is the centre of
# that square (for the triangle, not its centroid).
#
# Collision model: every shape collides as the disc of its radius (a square's or triangle's corners may overlap
# another shape by a pixel or two at contact). Collisions are elastic and frictionless: the velocity components
# along the line of centres are exchanged as for two discs of the objects' masses (shape area, or all equal), so
# momentum and kinetic energy are conserved. Walls reflect the velocity component normal to them. Speeds change only
# at collisions; min_speed/max_speed bound the initial speeds.
#
# Occlusion: objects live on depth layers (0 = bottom). Objects collide only with objects on their own layer and pass
# over/under the others; drawing order is (layer, id), so higher layers cover lower ones.

COLOUR_NAMES = tuple(COLOURS)
COLOUR_RGB = np.asarray([COLOURS[name] for name in COLOUR_NAMES], dtype=np.uint8)
SIZE_CLASSES = ("small", "medium", "large")
SIZE_FRACTIONS = (0.05, 0.075, 0.10)  # radius / image size of each size class
SHAPE_AREA = {"circle": math.pi, "square": 4.0, "triangle": 2.0}  # area of each shape's mask / radius^2
MIN_RADIUS = 2.0  # pixels: a smaller triangle would not cover its own centre pixel
MIN_IMAGE_SIZE = 16
MAX_OBJECTS = 10
MAX_PACKING = 0.4  # max_objects large discs may cover at most this fraction of the area their centres can reach
PLAIN_BACKGROUND = (235, 235, 235)
BACKGROUNDS = ("plain", "textured")
MASS_MODELS = ("area", "equal")
GROUND_TRUTH_GROUP = "ground_truth"
GROUND_TRUTH_VERSION = 1
# Per-video ground-truth arrays as stored: name -> dtype.
GROUND_TRUTH_ARRAYS = {
    "ids": np.int32,             # [K] object id = index
    "shape": np.int32,           # [K] index into SHAPES
    "colour": np.int32,          # [K] index into COLOUR_NAMES
    "size_class": np.int32,      # [K] index into SIZE_CLASSES
    "radius": np.float32,        # [K] pixels
    "mass": np.float32,          # [K]
    "layer": np.int32,           # [K] depth layer (collide only within a layer)
    "depth": np.int32,           # [K] rank in drawing order (0 drawn first; higher covers lower)
    "centers": np.float32,       # [T K 2] (x, y) pixels
    "velocities": np.float32,    # [T K 2] (vx, vy) pixels per frame, at frame t
    "visible_pixels": np.int32,  # [T K] pixels showing the object's colour in frame t
    "collisions": np.int32,      # [E 3] (frame, i, j), i < j: collision between frames frame-1 and frame
}


class WorldError(CageError, ValueError):
    """Impossible world settings (too many objects for the image, bad ranges, ...)."""


def object_radius(size_class: int, size: int) -> float:
    """Radius in pixels of a size class in a size x size image (at least MIN_RADIUS)."""
    return max(MIN_RADIUS, SIZE_FRACTIONS[size_class] * size)


def max_objects_that_fit(size: int) -> int:
    """The largest max_objects accepted for a size x size image (see MAX_PACKING)."""
    r = object_radius(len(SIZE_CLASSES) - 1, size)
    reach = size - 2 * r
    return int(min(MAX_OBJECTS, MAX_PACKING * reach * reach / (math.pi * r * r))) if reach > 0 else 0


@dataclass
class WorldConfig:
    """Settings of the world; speeds are in image sizes per frame (as render_video's max_speed)."""

    num_frames: int = 32
    size: int = 64
    min_objects: int = 2
    max_objects: int = 5
    min_speed: float = 0.01
    max_speed: float = 0.04
    background: str = "plain"  # plain | textured
    occlusion: bool = False  # put a fraction of the objects of every video on an upper layer
    occluder_fraction: float = 0.4  # with occlusion: fraction of objects on the upper layer (at least one, not all)
    mass: str = "area"  # area (mass = shape area) | equal

    def validate(self) -> "WorldConfig":
        """Raise WorldError naming every bad setting; returns self."""
        problems = []
        if self.num_frames < 1:
            problems.append(f"frames must be >= 1, got {self.num_frames}")
        if self.size < MIN_IMAGE_SIZE:
            problems.append(f"size must be >= {MIN_IMAGE_SIZE} pixels, got {self.size}")
        if self.min_objects < 1:
            problems.append(f"min_objects must be >= 1, got {self.min_objects}")
        if self.min_objects > self.max_objects:
            problems.append(f"min_objects ({self.min_objects}) > max_objects ({self.max_objects})")
        elif self.size >= MIN_IMAGE_SIZE and self.max_objects > max_objects_that_fit(self.size):
            problems.append(f"max_objects ({self.max_objects}) does not fit in a {self.size}x{self.size} image "
                            f"(at most {max_objects_that_fit(self.size)}; use a larger --size or fewer objects)")
        if not 0 <= self.min_speed <= self.max_speed:
            problems.append(f"need 0 <= min_speed <= max_speed, got {self.min_speed}, {self.max_speed}")
        if self.max_speed > 0.25:
            problems.append(f"max_speed must be <= 0.25 image sizes per frame, got {self.max_speed}")
        if self.background not in BACKGROUNDS:
            problems.append(f"background must be one of {BACKGROUNDS}, got {self.background!r}")
        if not 0 < self.occluder_fraction < 1:
            problems.append(f"occluder_fraction must be in (0, 1), got {self.occluder_fraction}")
        if self.mass not in MASS_MODELS:
            problems.append(f"mass must be one of {MASS_MODELS}, got {self.mass!r}")
        if problems:
            raise WorldError("; ".join(problems))
        return self


@dataclass
class WorldState:
    """The objects of one world as arrays over K objects (index = object id)."""

    shape: np.ndarray  # int [K], index into SHAPES
    colour: np.ndarray  # int [K], index into COLOUR_NAMES
    size_class: np.ndarray  # int [K], index into SIZE_CLASSES
    radius: np.ndarray  # float [K], pixels
    mass: np.ndarray  # float [K]
    layer: np.ndarray  # int [K], depth layer
    position: np.ndarray  # float [K 2], (x, y) pixels
    velocity: np.ndarray  # float [K 2], pixels per frame

    @property
    def num_objects(self) -> int:
        return len(self.radius)


def _entropy(seed: Union[int, Sequence[int]]) -> list:
    values = [int(seed)] if np.isscalar(seed) else [int(s) for s in seed]
    if not values or min(values) < 0:
        raise ValueError(f"seed must be a non-negative int or a sequence of them, got {seed!r}")
    return values


def _place(rng: np.random.Generator, radius: np.ndarray, layer: np.ndarray, size: int) -> np.ndarray:
    """Random centres inside the image, at least 1 pixel apart from the discs on the same layer."""
    count = len(radius)
    for _ in range(50):
        position = np.zeros((count, 2))
        for k in range(count):
            same = np.flatnonzero(layer[:k] == layer[k])
            for _ in range(200):
                p = rng.uniform(radius[k], size - radius[k], 2)
                gaps = np.hypot(*(position[same] - p).T) - radius[same] - radius[k]
                if not len(same) or gaps.min() >= 1.0:
                    position[k] = p
                    break
            else:
                break
        else:
            return position
    raise WorldError(f"cannot place {count} objects without overlap in a {size}x{size} image; use fewer objects")


def sample_world(rng: np.random.Generator, config: WorldConfig) -> WorldState:
    """Random objects: distinct (shape, colour) pairs where possible, random sizes, non-overlapping placement."""
    size = config.size
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    combos = len(SHAPES) * len(COLOUR_NAMES)
    pick = rng.choice(combos, size=count, replace=count > combos)
    shape, colour = pick // len(COLOUR_NAMES), pick % len(COLOUR_NAMES)
    size_class = rng.integers(0, len(SIZE_CLASSES), count)
    radius = np.asarray([object_radius(int(c), size) for c in size_class], dtype=np.float64)
    layer = np.zeros(count, dtype=np.int64)
    if config.occlusion and count >= 2:
        top = min(count - 1, max(1, round(config.occluder_fraction * count)))
        layer[rng.choice(count, size=top, replace=False)] = 1
    position = _place(rng, radius, layer, size)
    speed = rng.uniform(config.min_speed, config.max_speed, count) * size
    angle = rng.uniform(0, 2 * np.pi, count)
    if config.mass == "area":
        mass = np.asarray([SHAPE_AREA[SHAPES[s]] for s in shape]) * radius ** 2
    else:
        mass = np.ones(count)
    return WorldState(
        shape=shape.astype(np.int64), colour=colour.astype(np.int64), size_class=size_class.astype(np.int64),
        radius=radius, mass=mass, layer=layer, position=position,
        velocity=np.stack([speed * np.cos(angle), speed * np.sin(angle)], axis=1),
    )


def elastic_collision(v1: np.ndarray, v2: np.ndarray, m1: float, m2: float, normal: np.ndarray) -> tuple:
    """Velocities after an elastic, frictionless collision of two discs touching along `normal` (any length/sign).

    Only the components along the normal change; momentum m1 v1 + m2 v2 and energy (m1 |v1|^2 + m2 |v2|^2)/2 are
    conserved. Equal masses exchange their normal components.
    """
    v1, v2, n = np.asarray(v1, float), np.asarray(v2, float), np.asarray(normal, float)
    n = n / np.linalg.norm(n)
    k = float(np.dot(v1 - v2, n))
    total = m1 + m2
    return v1 - (2 * m2 / total) * k * n, v2 + (2 * m1 / total) * k * n


def _advance(state: WorldState, size: int, frame: int, events: set) -> None:
    """Move the objects from one frame to the next, in sub-steps short enough that nothing passes through anything."""
    pos, vel, radius, mass = state.position, state.velocity, state.radius, state.mass
    lo = np.broadcast_to(radius[:, None], pos.shape)
    hi = size - lo
    same_layer = np.triu(state.layer[:, None] == state.layer[None, :], 1)
    speed = float(np.hypot(vel[:, 0], vel[:, 1]).max()) if len(vel) else 0.0
    substeps = max(1, math.ceil(speed / (0.25 * radius.min()))) if len(vel) else 1
    for _ in range(substeps):
        pos += vel / substeps
        below, above = pos < lo, pos > hi
        pos[below], vel[below] = 2 * lo[below] - pos[below], np.abs(vel[below])
        pos[above], vel[above] = 2 * hi[above] - pos[above], -np.abs(vel[above])
        offset = pos[None, :, :] - pos[:, None, :]  # [i j] = pos[j] - pos[i]
        touching = same_layer & (np.hypot(offset[..., 0], offset[..., 1]) < radius[:, None] + radius[None, :])
        for i, j in zip(*np.nonzero(touching)):
            d = pos[j] - pos[i]
            dist = float(np.hypot(*d))
            overlap = radius[i] + radius[j] - dist
            if overlap <= 0:
                continue
            n = d / dist if dist > 1e-9 else np.array([1.0, 0.0])
            if np.dot(vel[i] - vel[j], n) > 0:  # approaching
                vel[i], vel[j] = elastic_collision(vel[i], vel[j], mass[i], mass[j], n)
                events.add((frame, int(i), int(j)))
            total = mass[i] + mass[j]  # separate the discs, the lighter one moving more
            pos[i] -= n * overlap * mass[j] / total
            pos[j] += n * overlap * mass[i] / total
            pos[[i, j]] = np.clip(pos[[i, j]], lo[[i, j]], hi[[i, j]])


def simulate(state: WorldState, size: int, num_frames: int) -> dict:
    """Positions and velocities at every frame (the state itself is not changed).

    Returns {"centers": float64 [T K 2], "velocities": float64 [T K 2], "collisions": int32 [E 3] (frame, i, j)}.
    """
    state = WorldState(**{k: np.array(v, dtype=np.float64 if k in ("radius", "mass", "position", "velocity") else None)
                          for k, v in asdict(state).items()})
    count = state.num_objects
    centers = np.empty((num_frames, count, 2))
    velocities = np.empty((num_frames, count, 2))
    events: set = set()
    for t in range(num_frames):
        centers[t], velocities[t] = state.position, state.velocity
        if t + 1 < num_frames:
            _advance(state, size, t + 1, events)
    collisions = np.asarray(sorted(events), dtype=np.int32).reshape(-1, 3)
    return {"centers": centers, "velocities": velocities, "collisions": collisions}


def pixel_grid(size: int) -> tuple:
    """(grid_y, grid_x) float64 [size size]: the pixel-centre coordinates the world is rendered with."""
    grid_y, grid_x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    return grid_y, grid_x


def background_image(size: int, kind: str = "plain", rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """uint8 [size size 3]: plain light grey, or a soft texture (a few low-frequency waves, a tint, fine grain)."""
    if kind == "plain":
        return np.broadcast_to(np.asarray(PLAIN_BACKGROUND, dtype=np.uint8), (size, size, 3)).copy()
    if kind != "textured":
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {kind!r}")
    rng = rng if rng is not None else np.random.default_rng(0)
    grid_y, grid_x = pixel_grid(size)
    u, v = grid_x / size, grid_y / size
    texture = np.zeros((size, size))
    for _ in range(3):
        frequency, theta, phase = rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi), rng.uniform(0, 2 * np.pi)
        texture += rng.uniform(3.0, 7.0) * np.sin(2 * np.pi * frequency * (np.cos(theta) * u + np.sin(theta) * v) + phase)
    texture += rng.normal(0.0, 1.5, (size, size))
    image = 222.0 + rng.uniform(-8.0, 8.0, 3) + texture[..., None]
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def drawing_order(layer: np.ndarray) -> np.ndarray:
    """Object ids in drawing order: by layer, then id (later ones cover earlier ones)."""
    layer = np.asarray(layer)
    return np.lexsort((np.arange(len(layer)), layer))


def render_world(shape: np.ndarray, colour: np.ndarray, radius: np.ndarray, layer: np.ndarray, centers: np.ndarray,
                 background: np.ndarray) -> tuple:
    """Draw every frame: (uint8 frames [T H W 3], int32 visible pixel counts [T K]). Flat colours, hard edges."""
    num_frames, count = centers.shape[:2]
    size = background.shape[0]
    grid_y, grid_x = pixel_grid(size)
    order = drawing_order(layer)
    frames = np.empty((num_frames,) + background.shape, dtype=np.uint8)
    visible = np.zeros((num_frames, count), dtype=np.int32)
    for t in range(num_frames):
        ids = np.full((size, size), -1, dtype=np.int32)
        for k in order:
            x, y, r = float(centers[t, k, 0]), float(centers[t, k, 1]), float(radius[k])
            rows = slice(max(0, math.floor(y - r - 1)), min(size, math.ceil(y + r) + 1))
            cols = slice(max(0, math.floor(x - r - 1)), min(size, math.ceil(x + r) + 1))
            mask = shape_mask(SHAPES[int(shape[k])], r, x, y, grid_y[rows, cols], grid_x[rows, cols])
            ids[rows, cols][mask] = k
        frame = background.copy()
        covered = ids >= 0
        frame[covered] = COLOUR_RGB[np.asarray(colour)[ids[covered]]]
        frames[t] = frame
        visible[t] = np.bincount(ids[covered], minlength=count)
    return frames, visible


def generate_world(config: WorldConfig, seed: Union[int, Sequence[int]] = 0) -> tuple:
    """One video of the world and its ground truth: (uint8 frames [T H W 3], ground-truth dict).

    `seed` is an int or a sequence of ints (the entropy of a numpy SeedSequence; make_synthetic uses
    (seed, split index, video index)). The dict holds the GROUND_TRUTH_ARRAYS and the metadata that
    read_ground_truth returns (seed, num_frames, size, num_objects, background, occlusion, world, name lists).
    """
    config.validate()
    entropy = _entropy(seed)
    objects_seed, background_seed = np.random.SeedSequence(entropy).spawn(2)
    state = sample_world(np.random.default_rng(objects_seed), config)
    background = background_image(config.size, config.background, np.random.default_rng(background_seed))
    motion = simulate(state, config.size, config.num_frames)
    centers = motion["centers"].astype(np.float32)  # rendered from the stored values, so the two agree exactly
    frames, visible = render_world(state.shape, state.colour, state.radius, state.layer, centers, background)
    depth = np.empty(state.num_objects, dtype=np.int32)
    depth[drawing_order(state.layer)] = np.arange(state.num_objects)
    arrays = {
        "ids": np.arange(state.num_objects), "shape": state.shape, "colour": state.colour,
        "size_class": state.size_class, "radius": state.radius, "mass": state.mass, "layer": state.layer,
        "depth": depth, "centers": centers, "velocities": motion["velocities"], "visible_pixels": visible,
        "collisions": motion["collisions"],
    }
    ground_truth = {name: np.asarray(arrays[name], dtype=dtype) for name, dtype in GROUND_TRUTH_ARRAYS.items()}
    ground_truth.update(_names())
    ground_truth.update(
        seed=entropy, num_frames=config.num_frames, size=config.size, num_objects=state.num_objects,
        background=config.background, occlusion=bool(config.occlusion), world=asdict(config),
    )
    return frames, ground_truth


def _names() -> dict:
    return {"shape_names": list(SHAPES), "colour_names": list(COLOUR_NAMES), "size_class_names": list(SIZE_CLASSES),
            "colour_rgb": COLOUR_RGB.copy()}


# Ground truth in the shards -----------------------------------------------------------------------------------------
def _open(shard, mode: str):
    import contextlib

    import h5py

    if isinstance(shard, h5py.File):
        return contextlib.nullcontext(shard)
    return h5py.File(shard, mode)


def write_ground_truth(shard, video_index: int, ground_truth: dict) -> None:
    """Add one video's ground truth to a chunked shard (a path or an h5py.File open for writing).

    Post-processes a complete shard: /videos/<video_index> must exist with ground_truth["num_frames"] frames.
    Writes /ground_truth/<video_index>/<array> (GROUND_TRUTH_ARRAYS) with the per-video attributes, and the name lists
    as attributes of /ground_truth. Readers that do not know ground truth never look there.
    """
    key = str(int(video_index))
    with _open(shard, "a") as f:
        if "videos" not in f or key not in f["videos"]:
            raise KeyError(f"{f.filename}: no /videos/{key} to attach ground truth to")
        if f["videos"][key].shape[0] != ground_truth["num_frames"]:
            raise ValueError(f"{f.filename}: /videos/{key} has {f['videos'][key].shape[0]} frames, "
                             f"the ground truth {ground_truth['num_frames']}")
        root = f.require_group(GROUND_TRUTH_GROUP)
        root.attrs["ground_truth_version"] = GROUND_TRUTH_VERSION
        for name, value in _names().items():
            root.attrs[name] = value
        if key in root:
            raise ValueError(f"{f.filename}: /{GROUND_TRUTH_GROUP}/{key} already exists")
        group = root.create_group(key)
        for name, dtype in GROUND_TRUTH_ARRAYS.items():
            group.create_dataset(name, data=np.asarray(ground_truth[name], dtype=dtype))
        group.attrs["seed"] = np.asarray(ground_truth["seed"], dtype=np.int64)
        for name in ("num_frames", "size", "num_objects"):
            group.attrs[name] = int(ground_truth[name])
        group.attrs["background"] = str(ground_truth["background"])
        group.attrs["occlusion"] = bool(ground_truth["occlusion"])
        group.attrs["world"] = json.dumps(ground_truth["world"], sort_keys=True)


def read_ground_truth(shard_path, video_index: int) -> dict:
    """The ground truth of video `video_index` of a shard, as generate_world returns it (same keys and dtypes)."""
    key = str(int(video_index))
    with _open(shard_path, "r") as f:
        if GROUND_TRUTH_GROUP not in f:
            raise KeyError(f"{f.filename}: no ground truth (/{GROUND_TRUTH_GROUP}); not written by dataset.make_synthetic?")
        root = f[GROUND_TRUTH_GROUP]
        if key not in root:
            raise KeyError(f"{f.filename}: no ground truth for video {key} ({len(root)} videos have some)")
        group = root[key]
        result = {name: group[name][()] for name in GROUND_TRUTH_ARRAYS}
        result.update(
            shape_names=[_text(n) for n in root.attrs["shape_names"]],
            colour_names=[_text(n) for n in root.attrs["colour_names"]],
            size_class_names=[_text(n) for n in root.attrs["size_class_names"]],
            colour_rgb=np.asarray(root.attrs["colour_rgb"], dtype=np.uint8),
            seed=[int(s) for s in group.attrs["seed"]],
            num_frames=int(group.attrs["num_frames"]), size=int(group.attrs["size"]),
            num_objects=int(group.attrs["num_objects"]), background=_text(group.attrs["background"]),
            occlusion=bool(group.attrs["occlusion"]), world=json.loads(_text(group.attrs["world"])),
        )
    return result


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
