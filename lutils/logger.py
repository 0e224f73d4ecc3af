"""Run logger: console (tqdm-safe, rank 0), a local JSON-lines metrics file, and wandb online/offline/disabled."""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from tqdm import tqdm

from lutils.configuration import to_plain
from lutils.io import dumps_json

WANDB_MODES = ("online", "offline", "disabled")


class _TqdmHandler(logging.Handler):
    """Writes records through tqdm so progress bars are not broken."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # never let logging crash a run
            self.handleError(record)


def _scalar(value: Any) -> Any:
    """Tensors and numpy scalars become Python numbers; other values pass through."""
    if hasattr(value, "detach"):
        value = value.detach()
        if value.numel() != 1:
            raise ValueError(f"can only log scalar tensors, got shape {tuple(value.shape)}")
        return value.float().item()
    if hasattr(value, "item") and getattr(value, "size", 1) == 1:
        return value.item()
    return value


class Logger:
    """Logs on rank 0 only: `info`/`debug`/`warning` messages and buffered metrics written by `finalize_logs(step)`.

    Metrics go to `run_dir/metrics.jsonl` (one JSON object per finalized step) when `run_dir` is given, and to wandb
    when `use_wandb` is set. `wandb_mode` is "online", "offline" or "disabled"; it defaults to $WANDB_MODE, else online.
    """

    def __init__(
        self,
        project: str,
        run_name: str,
        use_wandb: bool = False,
        config: Optional[Mapping] = None,
        rank: int = 0,
        run_dir: Optional[str | Path] = None,
        wandb_mode: Optional[str] = None,
        console_level: int = logging.INFO,
    ):
        self.project = project
        self.run_name = run_name
        self.rank = rank
        self.is_main = rank == 0
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._buffer: dict[str, Any] = {}
        self._wandb_run = None

        self._logger = logging.getLogger(f"cage.{run_name}.{id(self)}")
        self._logger.propagate = False
        self._logger.setLevel(logging.DEBUG)
        if self.is_main:
            handler = _TqdmHandler(level=console_level)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
            self._logger.addHandler(handler)

        self.metrics_path: Optional[Path] = None
        self._metrics_file = None
        if self.is_main and self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            file_handler = logging.FileHandler(self.run_dir / "log.txt")
            file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            self._logger.addHandler(file_handler)
            self.metrics_path = self.run_dir / "metrics.jsonl"
            self._metrics_file = open(self.metrics_path, "a", buffering=1)

        mode = wandb_mode or os.environ.get("WANDB_MODE", "online")
        if not use_wandb:
            mode = "disabled"
        if mode not in WANDB_MODES:
            raise ValueError(f"wandb mode must be one of {WANDB_MODES}, got {mode!r}")
        self.wandb_mode = mode
        if self.is_main and mode != "disabled":
            import wandb

            self._wandb_run = wandb.init(
                project=project,
                name=run_name,
                config=None if config is None else to_plain(config),  # nested dicts, not OmegaConf nodes
                mode=mode,
                dir=str(self.run_dir) if self.run_dir is not None else None,
            )
            self.info(f"wandb {mode}: project '{project}', run '{run_name}'")

    # Messages ----------------------------------------------------------------------------------------------------
    def info(self, message: str) -> None:
        self._logger.info(message)

    def debug(self, message: str) -> None:
        self._logger.debug(message)

    def warning(self, message: str) -> None:
        self._logger.warning(message)

    def error(self, message: str) -> None:
        self._logger.error(message)

    # Metrics -----------------------------------------------------------------------------------------------------
    def log(self, field: str, value: Any) -> None:
        """Buffer one value; it is written with the next `finalize_logs(step)`."""
        if self.is_main:
            self._buffer[field] = _scalar(value)

    def finalize_logs(self, step: int) -> dict:
        """Write the buffered values for `step` to the metrics file and wandb, then clear the buffer."""
        logged = dict(self._buffer)
        self._buffer.clear()
        if not self.is_main or not logged:
            return logged
        if self._metrics_file is not None:
            record = {"step": int(step), "time": time.time()}
            record.update(logged)
            self._metrics_file.write(dumps_json(record, indent=None) + "\n")  # NaN and inf as null
        if self._wandb_run is not None:
            self._wandb_run.log(logged, step=int(step))
        return logged

    def close(self) -> None:
        if self._metrics_file is not None:
            self._metrics_file.close()
            self._metrics_file = None
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None
        for handler in list(self._logger.handlers):
            handler.close()
            self._logger.removeHandler(handler)

    def __enter__(self) -> "Logger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


LEGACY_NON_FINITE = ("nan", "inf", "-inf")  # how files written before lutils.io.json_safe spelled them


def read_metrics(path: str | Path) -> list:
    """Read a metrics.jsonl file back into a list of dicts. A null value (written for a NaN or infinite one, see
    lutils.io.json_safe) reads as NaN; the strings "nan", "inf" and "-inf" of older files read as those floats."""
    records = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            records.append({k: float("nan") if v is None else float(v) if v in LEGACY_NON_FINITE else v
                            for k, v in record.items()})
    return records
