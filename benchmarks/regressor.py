"""Forward+backward time and peak memory of the vector-field regressor: fused (SDPA) vs math attention.

    python benchmarks/regressor.py [--configs clevrer bair] [--batch B] [--iters N] [--device cpu|cuda]

Builds the regressor of each config (random weights; training mode with token masking and dropout, as in training),
runs forward+backward on random inputs of one training step (Cc+1+T = 5 frames, the config's latent grid), and
reports ms per step and peak memory for both attention paths, and their ratios, in one run. Each measurement runs
in its own subprocess, so peak memory is not shared: on CUDA torch.cuda.max_memory_allocated, on CPU the growth of
the peak resident set over the process after building the model. `--precision auto` (the default) is bf16 autocast
on CUDA and fp32 on the CPU; `--precision bf16` on the CPU compares the explicit bf16 path that "sdpa" takes there
(model/attention.py) with the written-out formula of "math".
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import time_steps  # noqa: E402


def child(config_name: str, backend: str, batch: int, iters: int, warmup: int, device_name: str, bf16: bool) -> dict:
    import torch

    from lutils.configuration import Configuration
    from model.regressor import VectorFieldRegressor

    config = Configuration(ROOT / "configs" / f"{config_name}.yaml")["model"]
    vfr = config["vector_field_regressor"]
    dino_width = {"dinov2_vits14": 384, "dinov2_vitb14": 768, "dinov2_vitl14": 1024, "dinov2_vitg14": 1536}
    feats_dim = dino_width[config["dino_version"]] * int(config["num_dino_layers"])
    device = torch.device(device_name)
    torch.manual_seed(0)
    keys = ("state_size", "state_res", "inner_dim", "depth", "mid_depth", "fc_dim", "num_heads", "dropout",
            "max_relative_position", "masking_ratio", "causal")
    net = VectorFieldRegressor(**{k: vfr[k] for k in keys}, feats_dim=feats_dim, attention=backend).to(device).train()
    frames = int(config["num_context_frames"]) + 1 + int(config["num_target_frames"])
    h, w = vfr["state_res"]
    x = torch.randn(batch, frames, vfr["state_size"], h, w, device=device)
    indices = torch.arange(frames, device=device).expand(batch, -1) + torch.tensor([0, 2, 2, 2, 2][:frames], device=device)
    t = torch.rand(batch, frames, device=device)
    feats = torch.randn(batch, int(config["num_target_frames"]), feats_dim, h, w, device=device)
    masks = (torch.rand(batch, int(config["num_target_frames"]), 1, h, w, device=device) < 0.1).float()
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)

    def step() -> None:
        with autocast:
            out, kept = net(x, indices, t, feats, masks)
            loss = (out.float() * kept).square().mean()
        loss.backward()
        net.zero_grad(set_to_none=True)

    timing = time_steps(step, iters, warmup, device)
    seconds, peak_mb = timing["seconds"], timing["growth_mb"]
    return {"ms": seconds * 1000, "peak_mb": peak_mb, "params": sum(p.numel() for p in net.parameters()),
            "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def attention_only(config_name: str, batch: int, iters: int, device_name: str, bf16: bool, rounds: int = 5) -> dict:
    """ms per call of the temporal attention alone (where the two paths differ): eval (all tokens) and train. The
    two backends alternate in `rounds` rounds of `iters` calls (drift of the machine hits both alike); the median
    round counts."""
    import statistics

    import torch

    from lutils.configuration import Configuration
    from model.attention import RelativeAttention

    vfr = Configuration(ROOT / "configs" / f"{config_name}.yaml")["model"]["vector_field_regressor"]
    device = torch.device(device_name)
    h, w = vfr["state_res"]
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)
    results = {}
    for mode, tokens in (("eval", h * w), ("train", int(h * w * (1 - vfr["masking_ratio"])))):
        calls = {}
        for backend in ("sdpa", "math"):
            torch.manual_seed(0)
            layer = RelativeAttention(vfr["inner_dim"], vfr["num_heads"], vfr["max_relative_position"], vfr["dropout"],
                                      vfr["causal"], backend).to(device).train(mode == "train")
            x = torch.randn(batch, 5, tokens, vfr["inner_dim"], device=device, requires_grad=mode == "train")
            time_emb = torch.randn(batch, 5, vfr["inner_dim"], device=device)
            indices = torch.tensor([0, 2, 3, 4, 5], device=device).expand(batch, -1)

            def call(layer=layer, x=x, time_emb=time_emb, indices=indices) -> None:
                with autocast:
                    out = layer(x, time_emb, indices)
                if mode == "train":
                    out.float().square().mean().backward()

            calls[backend] = call
        times = {backend: [] for backend in calls}
        for _ in range(rounds):
            for backend, call in calls.items():
                times[backend].append(time_steps(call, iters, 1, device)["seconds"] * 1000)
        for backend, values in times.items():
            results[(mode, backend)] = statistics.median(values)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["clevrer", "bair"])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--batch", type=int, default=None, help="default: 16 on CUDA, 1 on CPU")
    parser.add_argument("--iters", type=int, default=None, help="default: 20 on CUDA, 3 on CPU")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="auto: bf16 autocast on CUDA, fp32 on the CPU")
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, backend, batch, iters, warmup, device, bf16 = args.child
        print(json.dumps(child(name, backend, int(batch), int(iters), int(warmup), device, bf16 == "bf16")))
        return

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.batch or (16 if device == "cuda" else 1)
    iters = args.iters or (20 if device == "cuda" else 3)
    warmup = args.warmup if args.warmup is not None else (5 if device == "cuda" else 1)
    precision = args.precision if args.precision != "auto" else ("bf16" if device == "cuda" else "fp32")
    results = {}
    for name in args.configs:
        for backend in ("sdpa", "math"):
            command = [sys.executable, __file__, "--child", name, backend, str(batch), str(iters), str(warmup), device,
                       precision]
            done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
            if done.returncode != 0:
                results[(name, backend)] = {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
            else:
                results[(name, backend)] = json.loads(done.stdout.strip().splitlines()[-1])
    info = next((r for r in results.values() if "error" not in r), {})
    print(f"# regressor forward+backward, training mode (masking, dropout); batch {batch}, 5 frames; "
          f"{'bf16 autocast' if precision == 'bf16' else 'fp32'}; "
          f"{iters} timed steps after {warmup} warm-up")
    print(f"# device: {info.get('device', device)}, torch {info.get('torch', '?')}, {info.get('threads', '?')} threads, "
          f"{os.cpu_count()} CPUs")
    print("| config | params | fused ms/step | math ms/step | speed-up (math/fused) | fused peak MB | math peak MB | memory ratio (math/fused) |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.configs:
        fused, plain = results[(name, "sdpa")], results[(name, "math")]
        if "error" in fused or "error" in plain:
            print(f"| {name} | error: {fused.get('error') or plain.get('error')} |")
            continue
        print(f"| {name} | {fused['params'] / 1e6:.1f}M | {fused['ms']:.0f} | {plain['ms']:.0f} | {plain['ms'] / fused['ms']:.2f}x "
              f"| {fused['peak_mb']:.0f} | {plain['peak_mb']:.0f} | {plain['peak_mb'] / max(fused['peak_mb'], 1e-9):.2f}x |")
    print(f"\n# temporal attention layer alone (batch {batch}, 5 frames): eval = all tokens, forward only; "
          f"train = masked tokens, forward+backward, dropout on; median of 5 alternating rounds")
    print("| config | mode | fused ms | math ms | speed-up (math/fused) |")
    print("|---|---|---|---|---|")
    for name in args.configs:
        timings = attention_only(name, batch, max(iters, 5), device, precision == "bf16")
        for mode in ("eval", "train"):
            fused_ms, math_ms = timings[(mode, "sdpa")], timings[(mode, "math")]
            print(f"| {name} | {mode} | {fused_ms:.1f} | {math_ms:.1f} | {math_ms / fused_ms:.2f}x |")


if __name__ == "__main__":
    main()
