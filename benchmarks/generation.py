"""Seconds per generated frame: fused vs math attention, batched vs sequential guidance, in one run.

    python benchmarks/generation.py [--configs clevrer bair] [--frames N] [--steps 20] [--batch B] [--device cpu|cuda]

Random weights (the frozen parts allowed to be random), one initial frame and random controls; Euler with 20 steps;
gamma 0 and gamma 1. Decoding is included. `--precision fp32 bf16` (the default) times both, in one run (bf16 =
torch.autocast around generate), and prints the fp32/bf16 time ratio of the fused, batched path. The headline ratio is
the fused path with batched guidance against the math path with sequential guidance (the original's way), at gamma 1.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["clevrer", "bair"])
    parser.add_argument("--frames", type=int, default=3, help="generated frames (3 = one joint window)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default=None)
    parser.add_argument("--precision", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    args = parser.parse_args()

    import torch

    from lutils.configuration import Configuration
    from model.attention import set_attention_backend
    from model.generation import generate
    from model.model import Model

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    print(f"# seconds per generated frame: {args.frames} frames after 1 initial frame, batch {args.batch}, Euler "
          f"{args.steps} steps, decoding included")
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({os.cpu_count()} CPUs)"
    print(f"# device: {name}, torch {torch.__version__}")
    print("| config | precision | gamma | fused + batched | fused + sequential | math + batched | math + sequential | "
          "speed-up (math+sequential / fused+batched) | fp32 / this (fused + batched) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for config_name in args.configs:
        config = Configuration(ROOT / "configs" / f"{config_name}.yaml", [
            "model.autoencoder.ckpt_path=", "+model.autoencoder.random_init=true", "+model.dino_random_init=true"])
        torch.manual_seed(0)
        model = Model(config["model"]).to(device).eval()
        size = int(config["data"]["crop_size"])
        h, w = model.state_res
        initial = torch.rand(args.batch, 1, 3, size, size) * 2 - 1
        feats = torch.randn(args.batch, args.frames, model.feats_dim, h, w)
        masks = (torch.rand(args.batch, args.frames, 1, h, w) < 0.1).float()

        def seconds_per_frame(gamma: float, backend: str, batched: bool, autocast) -> float:
            set_attention_backend(model, backend)
            start = time.perf_counter()
            with autocast:
                generate(model, args.frames, device, initial_frames=initial, feats=feats, feats_masks=masks,
                         num_steps=args.steps, gamma=gamma, batched_guidance=batched, seed=0)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return (time.perf_counter() - start) / args.frames

        fp32_fused = {}
        for precision in args.precision:
            autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
            with autocast:  # warm-up (kernels, allocator)
                generate(model, args.frames, device, initial_frames=initial, num_steps=1, seed=0)
            for gamma in (0.0, 1.0):
                cells = {(backend, batched): seconds_per_frame(gamma, backend, batched, autocast)
                         for backend in ("sdpa", "math") for batched in ((True, False) if gamma else (True,))}
                if gamma == 0:  # without guidance there is only one pass: batched and sequential are the same
                    cells[("sdpa", False)], cells[("math", False)] = cells[("sdpa", True)], cells[("math", True)]
                ratio = cells[("math", False)] / cells[("sdpa", True)]
                if precision == "fp32":
                    fp32_fused[gamma] = cells[("sdpa", True)]
                versus = f"{fp32_fused[gamma] / cells[('sdpa', True)]:.2f}" if gamma in fp32_fused else "n/a"
                print(f"| {config_name} | {precision} | {gamma:g} | {cells[('sdpa', True)]:.3f} | "
                      f"{cells[('sdpa', False)]:.3f} | {cells[('math', True)]:.3f} | {cells[('math', False)]:.3f} | "
                      f"{ratio:.2f}x | {versus} |")


if __name__ == "__main__":
    main()
