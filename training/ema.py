"""Exponential moving average of trainable weights, for sampling and evaluation."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


class EMA:
    """Shadow copies of the trainable parameters of a module, updated after every optimizer step.

    The decay ramps up as min(decay, (1 + n) / (10 + n)) over the first updates, so short runs get a useful average.
    Keys are the module's own parameter names (e.g. `vector_field_regressor.main_blocks.0...` for a Model).
    """

    def __init__(self, module: nn.Module, decay: float = 0.9999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.num_updates = 0
        self.shadow = {name: p.detach().clone() for name, p in module.named_parameters() if p.requires_grad}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        decay = self.current_decay()
        parameters = dict(module.named_parameters())
        for name, shadow in self.shadow.items():
            shadow.lerp_(parameters[name].detach(), 1.0 - decay)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        parameters = dict(module.named_parameters())
        for name, shadow in self.shadow.items():
            parameters[name].copy_(shadow)

    @contextlib.contextmanager
    def swapped_in(self, module: nn.Module) -> Iterator[nn.Module]:
        """Temporarily put the EMA weights into `module` (e.g. for validation)."""
        parameters = dict(module.named_parameters())
        backup = {name: parameters[name].detach().clone() for name in self.shadow}
        self.copy_to(module)
        try:
            yield module
        finally:
            with torch.no_grad():
                for name, value in backup.items():
                    parameters[name].copy_(value)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise KeyError(f"EMA state does not match the model's trainable parameters: {sorted(missing)[:5]}")
        self.decay, self.num_updates = float(state["decay"]), int(state["num_updates"])
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
