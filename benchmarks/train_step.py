"""Full training steps (frozen AE + DINOv2 features + regressor forward/backward + AdamW) per second, peak memory,
and model FLOPs utilisation.

    python benchmarks/train_step.py [--configs clevrer bair] [--batch B] [--iters N] [--device cpu|cuda]

Weights are random (the frozen parts allowed to be random); inputs are random clips of the config's size and
num_observations. FLOPs per step are counted once with torch.utils.flop_counter (matmuls, convolutions, attention);
MFU = FLOPs per step / seconds per step / the GPU's dense bf16 peak. `--precision fp32 bf16` (the default) times
each config in both, in one run, and prints the fp32/bf16 time ratio (bf16 = torch.autocast around the forward).
Each config runs in its own subprocess so peak memory is its own.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import time_steps  # noqa: E402

# Dense bf16 peak FLOP/s by device name (datasheet numbers, no sparsity).
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "RTX 4090": 165e12}


def peak_for(name: str) -> float | None:
    for key, value in PEAK_BF16.items():
        if key in name:
            return value
    return None


def child(config_name: str, batch: int, iters: int, warmup: int, device_name: str, precision: str) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from lutils.configuration import Configuration
    from model.flow_matching import masked_loss
    from model.model import Model

    config = Configuration(ROOT / "configs" / f"{config_name}.yaml", [
        "model.autoencoder.ckpt_path=", "+model.autoencoder.random_init=true", "+model.dino_random_init=true"])
    device = torch.device(device_name)
    torch.manual_seed(0)
    model = Model(config["model"]).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    size = int(config["data"]["crop_size"])
    observations = torch.rand(batch, int(config["training"]["num_observations"]), 3, size, size, device=device) * 2 - 1
    generator = torch.Generator(device).manual_seed(0)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step() -> None:
        with autocast:
            out = model(observations, generator=generator)
            loss = masked_loss(out["reconstructed_vectors"], out["target_vectors"], out["selected_masks"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    timing = time_steps(step, iters, warmup, device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    return {"seconds": timing["seconds"], "flops": flops, "peak_mb": timing["peak_mb"], "device": name,
            "torch": torch.__version__, "trainable": sum(p.numel() for p in params)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["clevrer", "bair"])
    parser.add_argument("--device", default=None)
    parser.add_argument("--batch", type=int, default=None, help="default: 16 on CUDA, 1 on CPU")
    parser.add_argument("--iters", type=int, default=None, help="default: 10 on CUDA, 2 on CPU")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--precision", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, batch, iters, warmup, device, precision = args.child
        print(json.dumps(child(name, int(batch), int(iters), int(warmup), device, precision)))
        return
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.batch or (16 if device == "cuda" else 1)
    iters = args.iters or (10 if device == "cuda" else 2)
    warmup = args.warmup if args.warmup is not None else (3 if device == "cuda" else 1)
    rows = []
    for name in args.configs:
        for precision in args.precision:
            done = subprocess.run([sys.executable, __file__, "--child", name, str(batch), str(iters), str(warmup), device,
                                   precision], capture_output=True, text=True, env=os.environ.copy())
            if done.returncode != 0:
                rows.append((name, precision, {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}))
            else:
                rows.append((name, precision, json.loads(done.stdout.strip().splitlines()[-1])))
    info = next((r for _, _, r in rows if "error" not in r), {})
    print(f"# training step (frozen AE + DINO forward, regressor forward+backward, AdamW); batch {batch}; "
          f"{iters} timed steps after {warmup} warm-up")
    print(f"# device: {info.get('device', device)}, torch {info.get('torch', '?')}, {os.cpu_count()} CPUs")
    print("| config | precision | trainable | s/step | steps/s | clips/s | TFLOP/step | achieved TFLOP/s | MFU | peak MB "
          "| fp32 time / this |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    fp32_seconds = {name: r["seconds"] for name, precision, r in rows if precision == "fp32" and "error" not in r}
    for name, precision, r in rows:
        if "error" in r:
            print(f"| {name} | {precision} | error: {r['error']} |")
            continue
        achieved = r["flops"] / r["seconds"]
        peak = peak_for(r["device"])
        mfu = f"{100 * achieved / peak:.1f} %" if peak else "n/a (CPU)" if r["device"] == "cpu" else "unknown peak"
        ratio = f"{fp32_seconds[name] / r['seconds']:.2f}" if name in fp32_seconds else "n/a"
        print(f"| {name} | {precision} | {r['trainable'] / 1e6:.1f}M | {r['seconds']:.3f} | {1 / r['seconds']:.3f} | "
              f"{batch / r['seconds']:.2f} | {r['flops'] / 1e12:.3f} | {achieved / 1e12:.3f} | {mfu} | {r['peak_mb']:.0f} "
              f"| {ratio} |")


if __name__ == "__main__":
    main()
