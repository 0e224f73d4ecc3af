"""Learning-rate schedule of the original: linear warm-up, then polynomial decay (power 0.5) to lr_end."""
from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

POWER = 0.5
LR_END = 1e-7


def learning_rate(step: int, peak_lr: float, warmup_steps: int, total_steps: int,
                  power: float = POWER, lr_end: float = LR_END) -> float:
    """lr at `step`: peak*step/W while warming up, (peak - end)(1 - (step-W)/(N-W))^power + end, then end."""
    if step < warmup_steps:
        return peak_lr * step / max(1, warmup_steps)
    if step > total_steps:
        return lr_end
    if peak_lr <= lr_end:
        raise ValueError(f"peak learning rate {peak_lr} must exceed lr_end {lr_end}")
    remaining = 1 - (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return (peak_lr - lr_end) * remaining ** power + lr_end


def build_scheduler(optimizer: Optimizer, warmup_steps: int, total_steps: int,
                    power: float = POWER, lr_end: float = LR_END) -> LambdaLR:
    """LambdaLR over `learning_rate`; the first step uses lr 0, as in the original."""
    peak = optimizer.defaults["lr"]
    return LambdaLR(optimizer, lambda step: learning_rate(step, peak, warmup_steps, total_steps, power, lr_end) / peak)
