"""The evaluation protocol: every choice that changes the numbers, in one record that goes into results.json.

FVD values from different papers rarely agree because of small protocol differences (which clips, how many, how
frames are resized, whether the conditioning frames are compared, how the real set is subsampled, how covariances
are normalised). Here each of them is an explicit field. The sampling fields (SAMPLING_FIELDS) decide the generated
samples, so a resumed generation refuses samples made under other values of them; the others (fvd_*) only decide how
the samples are compared. The choice of clips is `dataset.clips.evenly_spaced`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

FVD_FRAMES = ("all", "generated")
FVD_COVARIANCES = ("population",)  # the one computed (evaluation/fvd.py); recorded so results say which it was
# The fields that decide the generated samples (the rest only decide how they are compared): a resumed generation
# needs these to match.
SAMPLING_FIELDS = ("split", "num_videos", "cond_frames", "gen_frames", "skip_frames", "frame_size", "steps", "gamma",
                   "seed", "batch_size", "controls_prob", "method", "solver", "precision")
# Fields of older protocols that no longer exist, with the only value they ever had: older samples that carry them
# are still the same samples.
RETIRED_FIELDS = {"clip_start": 0}


@dataclass(frozen=True)
class Protocol:
    """What is generated and how it is compared."""

    split: str
    num_videos: int  # clips generated (evenly spaced over the split, in order)
    cond_frames: int  # K real frames given to the model
    gen_frames: int  # F frames generated after them
    skip_frames: int  # stride between clip frames - 1 (from the config's data section)
    frame_size: int  # frames are resized (shorter side) to data.input_size and centre-cropped to this
    steps: int
    gamma: float
    seed: int
    batch_size: int  # clips per generate() call; with the seed, it fixes every random draw
    controls_prob: float  # probability that a cell of a generated frame reveals the real frame's DINO features
    method: str = "joint"
    solver: str = "euler"
    fvd_resolution: int = 224  # I3D input: shorter side resized bilinearly (no antialias), centre crop
    fvd_frames: str = "all"  # "all": the K real + F generated frames against K+F real; "generated": F against F
    fvd_real_videos: int = 0  # real clips for the real statistics (evenly spaced over the split); 0: the same clips
    precision: str = "fp32"
    fvd_covariance: str = "population"  # feature covariances divided by N (StyleGAN-V, cd-fvd), not N - 1

    def __post_init__(self):
        if self.num_videos < 1 or self.cond_frames < 0 or self.gen_frames < 1:
            raise ValueError(f"need num_videos >= 1, cond_frames >= 0 and gen_frames >= 1, got {self.num_videos}, "
                             f"{self.cond_frames}, {self.gen_frames}")
        if not 0.0 <= self.controls_prob <= 1.0:
            raise ValueError(f"controls_prob must lie in [0, 1], got {self.controls_prob}")
        if self.fvd_frames not in FVD_FRAMES:
            raise ValueError(f"fvd_frames must be one of {FVD_FRAMES}, got {self.fvd_frames!r}")
        if self.batch_size < 1 or self.steps < 1:
            raise ValueError(f"need batch_size >= 1 and steps >= 1, got {self.batch_size}, {self.steps}")
        if self.fvd_covariance not in FVD_COVARIANCES:
            raise ValueError(f"fvd_covariance must be one of {FVD_COVARIANCES}, got {self.fvd_covariance!r}")

    @property
    def clip_frames(self) -> int:
        return self.cond_frames + self.gen_frames

    @property
    def num_batches(self) -> int:
        return -(-self.num_videos // self.batch_size)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def sampling_dict(self) -> dict:
        """The fields that decide the generated samples (SAMPLING_FIELDS)."""
        ours = self.to_dict()
        return {key: ours[key] for key in SAMPLING_FIELDS}


def sampling_differences(saved: dict, sampling: dict) -> list:
    """'field: saved -> ours' for each sampling field where a saved protocol dict differs from `sampling`
    (Protocol.sampling_dict()), and for a retired field that held another value than its only one. Fields that do
    not decide samples (fvd_*) are not compared: a saved whole protocol compares as its sampling fields."""
    changed = [f"{key}: {saved.get(key)!r} -> {sampling.get(key)!r}" for key in SAMPLING_FIELDS
               if saved.get(key) != sampling.get(key)]
    return changed + [f"{key}: {saved[key]!r} -> (retired; it was always {value!r})"
                      for key, value in RETIRED_FIELDS.items() if key in saved and saved[key] != value]
