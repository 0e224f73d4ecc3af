"""Training step of our VQVAE (autoencoder type "ours"): each conv + avgpool pair as one strided convolution (ours,
`model.autoencoder.pooled_conv`) against the convolution followed by the pooling layer (the original's formulation).

    python benchmarks/autoencoder_step.py [--config toy_autoencoder] [--batch 16] [--rounds 5] [--iters 10]
                                          [--precision fp32 bf16] [--device cpu|cuda]

One process, random weights and random frames of the config's crop size; forward with the losses, backward, fused
AdamW. The two formulations alternate in rounds (so drift of the machine hits both alike); each round times `iters`
steps. Prints the median ms/step over the rounds with its spread (min–max), and the ratio of the medians.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import time_steps  # noqa: E402


def conv_then_pool(conv, x, factor):
    """The original's formulation: the convolution at full resolution, then the average pooling."""
    import torch.nn.functional as F

    return F.avg_pool2d(conv(x), factor) if factor != 1 else conv(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="toy_autoencoder", help="a config under configs/ with an `autoencoder` section")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--precision", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    import model.autoencoder as autoencoder
    from lutils.configuration import Configuration

    config = Configuration(ROOT / "configs" / f"{args.config}.yaml")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    size = int(config["data"]["crop_size"])
    formulations = {"strided (ours)": autoencoder.pooled_conv, "conv then pool": conv_then_pool}

    print(f"# VQVAE training step ({args.config}: {size}x{size} frames, batch {args.batch}); median ms/step over "
          f"{args.rounds} alternating rounds of {args.iters} steps, [min, max]")
    print(f"# device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    print("| precision | strided (ours) ms/step | conv then pool ms/step | conv-then-pool time / ours |")
    print("|---|---|---|---|")
    for precision in args.precision:
        torch.manual_seed(0)
        vqvae = autoencoder.VQVAE.from_config(config["autoencoder"]).to(device).train()
        optimizer = torch.optim.AdamW(vqvae.parameters(), lr=1e-4, fused=True)
        frames = torch.rand(args.batch, 3, size, size, device=device) * 2 - 1
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

        def step() -> None:
            with autocast:
                out = vqvae(frames, with_loss=True)
                loss = F.mse_loss(out.reconstructions.float(), frames) + out.vq_loss.float()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        times = {name: [] for name in formulations}
        for round_index in range(args.rounds):
            for name, function in formulations.items():
                autoencoder.pooled_conv = function
                warmup = 3 if round_index == 0 else 0
                times[name].append(time_steps(step, args.iters, warmup, device)["seconds"] * 1000)
        autoencoder.pooled_conv = formulations["strided (ours)"]
        ours, reference = (statistics.median(times[name]) for name in formulations)
        cells = [f"{statistics.median(t):.1f} [{min(t):.1f}, {max(t):.1f}]" for t in times.values()]
        print(f"| {precision} | {cells[0]} | {cells[1]} | {reference / ours:.2f} |")


if __name__ == "__main__":
    main()
