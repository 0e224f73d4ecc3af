"""The metric stage of an evaluation: the metric registry, and the scores of the samples in a SampleStore.

Owns `METRICS`, one entry per metric: its name, how its values accumulate over the stored batches (the function),
and the weights file it needs, if any (the evaluate.py option that names the file, its loader, and whether a
missing file skips the metric or is an error). evaluate.py builds its weights options, its skip reasons, the
per-frame plot and its printed summary from this registry, so adding a metric means adding an entry here (and its
tests). Also here: the real-data FVD statistics of a separate real set (protocol.fvd_real_videos).

Metrics read the samples that evaluation/sampling.py wrote; they generate nothing. Control accuracy is not a
registry metric: it generates its own videos (evaluation/control.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional

import numpy as np
import torch
from torch import Tensor

from evaluation import frame_metrics, fvd
from evaluation.errors import EvaluationError
from evaluation.protocol import Protocol

SAMPLE_VIDEOS = 8  # clips kept for the report's sample grid
FVD_RELIABLE_VIDEOS = 256  # below this many videos per set, results carry a note: FVD is strongly biased upward


# Registry --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Weights:
    """A metric's weights file: the evaluate.py option that names it, and how to load it.

    `load(path, device)` returns the network, or raises an error that names the file to obtain. `required`: without
    the file the metric is an error unless it is skipped with --no-<metric>, and `missing` says where to obtain it;
    otherwise the metric is skipped, and `missing` is the reason the results give."""

    option: str
    load: Callable[[Optional[str], Any], Any]
    help: str
    required: bool = False
    missing: str = ""

    @property
    def dest(self) -> str:
        """The argparse attribute of `option`."""
        return self.option.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Metric:
    """One metric. `accumulator(context, network)` makes the object that reads the batches (`update(batch)`) and
    gives the metric's JSON result (`result()`); `network` is the loaded weights (None without `weights`).
    `per_frame`: its result holds `per_frame_mean` over the generated frames (plotted)."""

    name: str
    accumulator: Callable[["MetricContext", Any], Any]
    weights: Optional[Weights] = None
    per_frame: bool = False


@dataclass
class MetricContext:
    """What accumulators may need besides the batches: the protocol, the device, and the clips of a separate real
    set (`real_videos()` yields uint8 [b K+F 3 H W] batches; used when protocol.fvd_real_videos is set)."""

    protocol: Protocol
    device: Any = "cpu"
    real_videos: Optional[Callable[[], Iterator[Tensor]]] = None


class Batch:
    """One stored batch: the arrays of a batch file, and its generated frames as float videos in [0, 1]."""

    def __init__(self, arrays: Mapping[str, np.ndarray], cond_frames: int):
        self.arrays, self.cond_frames = arrays, cond_frames

    @property
    def real(self) -> np.ndarray:
        """uint8 [b K+F 3 H W]."""
        return self.arrays["real"]

    @property
    def generated(self) -> np.ndarray:
        """uint8 [b K+F 3 H W] (the first K frames are the real ones)."""
        return self.arrays["generated"]

    @cached_property
    def real_future(self) -> Tensor:
        """The real frames at the generated positions, float [b F 3 H W] in [0, 1]."""
        return frame_metrics.to_unit(torch.from_numpy(self.real[:, self.cond_frames:]), "uint8")

    @cached_property
    def generated_future(self) -> Tensor:
        """The generated frames, float [b F 3 H W] in [0, 1]."""
        return frame_metrics.to_unit(torch.from_numpy(self.generated[:, self.cond_frames:]), "uint8")


class PerFrame:
    """Accumulates a per-frame metric `function(real, generated, network) -> [b F]` over the generated frames
    (float videos in [0, 1] at the clips' resolution); the result is frame_metrics.summarise of all values."""

    def __init__(self, function: Callable[[Tensor, Tensor, Any], Tensor], network: Any = None):
        self.function, self.network, self.values = function, network, []

    def update(self, batch: Batch) -> None:
        self.values.append(self.function(batch.real_future, batch.generated_future, self.network).cpu())

    def result(self) -> dict:
        if not self.values:
            raise EvaluationError("no batches were scored")
        return frame_metrics.summarise(torch.cat(self.values))


def per_frame(function: Callable[[Tensor, Tensor, Any], Tensor]) -> Callable[[MetricContext, Any], PerFrame]:
    """The accumulator factory of a per-frame metric."""
    return lambda context, network: PerFrame(function, network)


def fvd_slice(protocol: Protocol) -> slice:
    """The frames FVD compares: the whole clip (fvd_frames "all") or the generated frames."""
    return slice(0, None) if protocol.fvd_frames == "all" else slice(protocol.cond_frames, None)


def feature_stats(detector, batches: Iterable, protocol: Protocol, device):
    """FeatureStats of the I3D features of uint8 [b K+F 3 H W] clip batches, on the frames FVD compares."""
    stats = fvd.FeatureStats()
    for clips in batches:
        stats.update(fvd.extract_features(detector, torch.as_tensor(clips)[:, fvd_slice(protocol)],
                                          protocol.batch_size, device))
    return stats


def real_clip_batches(dataset, indices: list, batch_size: int, progress: bool = True) -> Iterator[Tensor]:
    """The real clips `indices` of the dataset, uint8 [b K+F 3 H W], `batch_size` at a time (the real FVD set)."""
    from tqdm import tqdm

    for start in tqdm(range(0, len(indices), batch_size), desc="real statistics", disable=not progress,
                      dynamic_ncols=True):
        yield torch.stack([dataset[i] for i in indices[start:start + batch_size]])


class FVDAccumulator:
    """Generated features from every batch; real features from the batches' real clips, or (protocol.fvd_real_videos)
    from the context's separate real set. The result: the distance, the set sizes, and a note below 256 videos."""

    def __init__(self, context: MetricContext, detector):
        self.context, self.detector = context, detector
        self.real, self.generated = fvd.FeatureStats(), fvd.FeatureStats()

    def update(self, batch: Batch) -> None:
        protocol, device = self.context.protocol, self.context.device
        self.generated.merge(feature_stats(self.detector, [batch.generated], protocol, device))
        if not protocol.fvd_real_videos:
            self.real.merge(feature_stats(self.detector, [batch.real], protocol, device))

    def result(self) -> dict:
        protocol = self.context.protocol
        if protocol.fvd_real_videos:
            if self.context.real_videos is None:
                raise EvaluationError("protocol.fvd_real_videos is set, but no real clips were given")
            self.real = feature_stats(self.detector, self.context.real_videos(), protocol, self.context.device)
        result = {"value": fvd.fvd_from_stats(self.real, self.generated), "real_videos": self.real.count,
                  "generated_videos": self.generated.count}
        if min(self.real.count, self.generated.count) < FVD_RELIABLE_VIDEOS:
            result["note"] = (f"fewer than {FVD_RELIABLE_VIDEOS} videos per set: FVD is strongly biased upward at "
                              f"this size")
        return result


def _psnr(real: Tensor, generated: Tensor, network) -> Tensor:
    return frame_metrics.psnr_per_frame(real, generated)


def _ssim(real: Tensor, generated: Tensor, network) -> Tensor:
    return frame_metrics.ssim_per_frame(real, generated)


def _lpips(real: Tensor, generated: Tensor, network) -> Tensor:
    return frame_metrics.lpips_per_frame(network, real, generated)


METRICS = {metric.name: metric for metric in (
    Metric("psnr", per_frame(_psnr), per_frame=True),
    Metric("ssim", per_frame(_ssim), per_frame=True),
    Metric("lpips", per_frame(_lpips), per_frame=True,
           weights=Weights("--lpips-weights", frame_metrics.load_lpips,
                           "local AlexNet weights for LPIPS (alexnet-owt-7be5be79.pth)",
                           missing="no --lpips-weights given: LPIPS needs a local AlexNet file "
                                   "(alexnet-owt-7be5be79.pth); nothing is downloaded")),
    Metric("fvd", FVDAccumulator,
           weights=Weights("--i3d", fvd.load_detector,
                           "FVD detector: i3d_torchscript.pt (TorchScript) or an I3D state dict",
                           required=True, missing=fvd.missing_detector_message(None))),
)}


# Planning and loading --------------------------------------------------------------------------------------------
@dataclass
class Plan:
    """Which metrics run (with their weights files) and why the others are skipped."""

    paths: dict = field(default_factory=dict)  # name -> weights file (None for metrics without weights)
    skipped: dict = field(default_factory=dict)  # name -> reason

    @property
    def names(self) -> list:
        return list(self.paths)


def plan(weight_paths: Mapping[str, Optional[str]], disabled: Iterable[str] = ()) -> Plan:
    """The metrics to compute: `weight_paths` maps a metric's name to its weights file (or None), `disabled` names
    metrics skipped on request (--no-<name>). A required weights file that is missing raises EvaluationError (the
    CLI checks this first, as a usage error)."""
    disabled = set(disabled)
    unknown = disabled - set(METRICS)
    if unknown:
        raise EvaluationError(f"unknown metrics {sorted(unknown)}; known: {list(METRICS)}")
    result = Plan()
    for name, metric in METRICS.items():
        path = weight_paths.get(name)
        if name in disabled:
            result.skipped[name] = f"--no-{name}"
        elif metric.weights is not None and not path:
            if metric.weights.required:
                raise EvaluationError(metric.weights.missing)
            result.skipped[name] = metric.weights.missing
        else:
            result.paths[name] = path
    return result


def load_networks(chosen: Plan, device, is_main: bool = True) -> dict:
    """{name: network} of the planned metrics with weights, loaded on `device` (on other ranks than the main one,
    only checked to exist: they compute no metric). Run before generation, so that a bad file stops the evaluation
    before hours of sampling."""
    networks = {}
    for name, path in chosen.paths.items():
        weights = METRICS[name].weights
        if weights is None:
            continue
        if is_main:
            networks[name] = weights.load(path, device)
        elif not Path(path).is_file():
            weights.load(path, "cpu")  # raises the loader's error, which names the file to obtain
            raise EvaluationError(f"{weights.option} {path}: no such file")
    return networks


# Scoring ---------------------------------------------------------------------------------------------------------
@dataclass
class Scores:
    """The metric stage's output: each metric's result (registry order; skipped ones say why), the first clips for
    the sample grid, and the generation time the batches recorded."""

    metrics: dict
    samples: dict  # {"real", "generated"}: uint8 [n K+F 3 H W], the first SAMPLE_VIDEOS clips
    generation_seconds: float

    def per_frame_curves(self) -> dict:
        """{name: per_frame_mean} of the per-frame metrics that ran."""
        return {name: self.metrics[name]["per_frame_mean"] for name, metric in METRICS.items()
                if metric.per_frame and "per_frame_mean" in self.metrics.get(name, {})}


def score(store, context: MetricContext, chosen: Plan, networks: Mapping, indices: Optional[list] = None,
          progress: bool = True) -> Scores:
    """Every planned metric over the samples of `store` (a SampleStore), read once in order. `indices`: the clips
    the protocol chooses; a batch that holds other clips (the data changed since it was generated) is an error."""
    from tqdm import tqdm

    protocol = context.protocol
    accumulators = {name: METRICS[name].accumulator(context, networks.get(name)) for name in chosen.names}
    samples, seconds = {"real": [], "generated": []}, 0.0
    for b, arrays in enumerate(tqdm(store.batches(), total=store.num_batches, desc="metrics", disable=not progress,
                                    dynamic_ncols=True)):
        if indices is not None:
            expected = indices[b * protocol.batch_size:(b + 1) * protocol.batch_size]
            if arrays["indices"].tolist() != list(expected):
                raise EvaluationError(f"{store.batch_path(b)} holds clips {arrays['indices'].tolist()}, but the "
                                      f"evaluation chooses {list(expected)}: the data changed since it was generated; "
                                      f"use --restart")
        batch = Batch(arrays, protocol.cond_frames)
        for key in samples:
            samples[key].extend(arrays[key][:SAMPLE_VIDEOS - len(samples[key])])
        seconds += float(arrays["seconds"])
        for accumulator in accumulators.values():
            accumulator.update(batch)
    metrics = {}
    for name in METRICS:
        if name in accumulators:
            metrics[name] = accumulators[name].result()
        elif name in chosen.skipped:
            metrics[name] = {"skipped": chosen.skipped[name]}
    return Scores(metrics, {key: np.stack(clips) for key, clips in samples.items()}, seconds)
