"""The GPU suite: one command that measures the project on a CUDA machine and writes gpu_suite.md and gpu_suite.json.

    python benchmarks/gpu_suite.py --out DIR [--budget SECONDS] [--smoke] [--golden DIR] [--device cpu|cuda]

Parts, in order, each with a time budget (a part that would not fit in what is left is skipped, saying so; a part
that fails is reported with its traceback and the suite goes on):
  (a) environment: GPU name, torch / CUDA versions, the TF32 switches, and the measured bf16 matmul peak (8192^3 on
      CUDA), the denominator of every MFU figure;
  (b) parity: the golden set tiny_ldm on the device, fp32 (within 1e-4) and bf16 autocast (within BF16_TOLERANCE),
      and generate() replaying the recorded traces (same noise and context draws: a CPU generator seeded as the trace);
  (c) regressor: fused vs math attention, forward+backward, bf16, per forced SDPA kernel (benchmarks/regressor.py);
  (d) training step: steps/s, clips/s, peak memory, MFU (benchmarks/train_step.py); torch.compile if offered;
  (e) generation: 20 Euler steps, gamma 0 and 1, fused+batched vs math+sequential (benchmarks/generation.py);
  (f) end to end: scripts/toy_pipeline.py at QUICK size, ending in its control-accuracy figures.
--smoke runs every part on the CPU at tiny sizes (configs/toy.yaml, batch 2, few iterations) in under two minutes and
writes the same files with the same table rows (tests/test_gpu_suite.py). This file owns the suite's parts, budget and
report; the measurements themselves are the benchmarks' own functions.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import time_steps  # noqa: E402

FP32_TOLERANCE = 1e-4
BF16_TOLERANCE = 0.1  # bf16 keeps 8 mantissa bits: ~4e-3 relative per op, over a few layers of O(1) values
GOLDEN_SET = "tiny_ldm"
SDPA_KERNELS = ("default", "flash", "efficient", "cudnn", "math")
PARITY_KEYS = ("encode_out", "decode_out", "feats", "vf_out", "vf_out_nomask", "reg_masked_out")


class Budget:
    """The suite's wall-clock budget: what is left, and whether a part needing `seconds` still fits."""

    def __init__(self, seconds: float):
        self.total, self.start = seconds, time.perf_counter()

    def left(self) -> float:
        return self.total - (time.perf_counter() - self.start)

    def fits(self, seconds: float) -> bool:
        return self.left() >= seconds


def sizes(smoke: bool, device) -> dict:
    """What each part runs: the real configs at batch 16 on CUDA, configs/toy.yaml at batch 2 in --smoke."""
    if smoke:
        return {"configs": ["toy"], "batch": 2, "reg_iters": 2, "reg_warmup": 1, "train_iters": 2, "train_warmup": 1,
                "gen_steps": 2, "gen_frames": 3, "matmul_n": 256, "matmul_iters": 3}
    cuda = device.type == "cuda"
    return {"configs": ["clevrer", "bair"], "batch": 16 if cuda else 2, "reg_iters": 20 if cuda else 2,
            "reg_warmup": 5 if cuda else 1, "train_iters": 10 if cuda else 2, "train_warmup": 3 if cuda else 1,
            "gen_steps": 20, "gen_frames": 3, "matmul_n": 8192 if cuda else 1024, "matmul_iters": 20 if cuda else 3}


def free_memory(device) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# (a) ------------------------------------------------------------------------------------------------------------
def part_environment(ctx: dict) -> dict:
    import torch

    device, n, iters = ctx["device"], ctx["sizes"]["matmul_n"], ctx["sizes"]["matmul_iters"]
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    seconds = time_steps(lambda: torch.mm(a, b), iters, 2, device)["seconds"]
    peak = 2 * n ** 3 / seconds
    ctx["peak_flops"] = peak
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or 'unknown'})"
    figures = {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda,
               "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
               "python": platform.python_version(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
               "matmul_n": n, "bf16_matmul_tflops": peak / 1e12,
               "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
               "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
               "float32_matmul_precision": torch.get_float32_matmul_precision()}
    rows = [[key, str(value if not isinstance(value, float) else f"{value:.2f}")] for key, value in figures.items()]
    return {"columns": ["item", "value"], "rows": rows, "figures": figures,
            "notes": [f"bf16 matmul peak: torch.mm of two {n}x{n} bf16 matrices, {iters} timed calls; MFU below "
                      f"divides by this measured figure, not a datasheet's"]}


# (b) ------------------------------------------------------------------------------------------------------------
def part_parity(ctx: dict) -> dict:
    import torch

    from lutils.configuration import Configuration
    from model.generation import generate
    from model.model import Model

    device, folder = ctx["device"], ctx["golden"] / GOLDEN_SET
    if not folder.is_dir():
        raise FileNotFoundError(f"golden set {folder} not found (--golden, $CAGE_GOLDEN_DIR or .gpu_bundle/golden)")
    config = Configuration(folder / "config.yaml", [f"model.autoencoder.ckpt_path={folder / 'ae.pth'}"])
    model = Model(config["model"]).load_from_ckpt(folder / "model.pth").to(device).eval()
    recorded = torch.load(folder / "io.pt", weights_only=True)
    io = {k: v.to(device) if torch.is_tensor(v) else v for k, v in recorded.items()}
    seeded = [torch.Generator().manual_seed(int(s)) for s in io["seeds"].tolist()]  # CPU draws, as recorded

    def outputs(bf16: bool) -> dict:
        seeded = [torch.Generator().manual_seed(int(s)) for s in io["seeds"].tolist()]
        with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            return {
                "encode_out": model.encode(io["frames"]),
                "decode_out": model.decode(io["encode_out"]),
                "feats": model.get_features(io["frames"]),
                "vf_out": model.predict_vector_field(io["x"], io["t"], io["indices"], io["vf_feats"], io["vf_masks"],
                                                     generator=seeded[0]),
                "vf_out_nomask": model.predict_vector_field(io["x"], io["t"], io["indices"], io["vf_feats"],
                                                            torch.zeros_like(io["vf_masks"]), generator=seeded[1]),
                "reg_masked_out": model.vector_field_regressor(io["x"], io["indices"], io["t"], io["vf_feats"],
                                                               io["vf_masks"], generator=seeded[2])[0],
            }

    del seeded
    diffs = {}
    for precision in ("fp32", "bf16"):
        got = outputs(precision == "bf16")
        diffs[precision] = {k: float((got[k].float() - io[k]).abs().max()) for k in PARITY_KEYS}
    def verdict(diff: float, tolerance: float, quantised: bool) -> str:
        if quantised:  # under bf16 the nearest codebook entry changes for some latents: a whole code's difference
            return "report only (VQ decoding)"
        return "yes" if diff <= tolerance else "NO"

    rows = [[key, f"{diffs['fp32'][key]:.2e}", verdict(diffs["fp32"][key], FP32_TOLERANCE, False),
             f"{diffs['bf16'][key]:.2e}", verdict(diffs["bf16"][key], BF16_TOLERANCE, key == "decode_out")]
            for key in PARITY_KEYS]

    trace = json.loads((folder / "trace.json").read_text())
    replay = {}
    for index, run in enumerate(trace["runs"][:2]):
        for precision in ("fp32", "bf16"):
            calls = []
            with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                                                 enabled=precision == "bf16"):
                out = generate(model, 5, device, initial_frames=io["gen_initial_frames"], feats=io["gen_feats"],
                               feats_masks=io["gen_feats_masks"], batch_size=2, num_steps=3, gamma=run["gamma"],
                               batched_guidance=False, generator=torch.Generator().manual_seed(run["torch_seed"]),
                               on_call=calls.append)
            traced = [c["selected_frame_indices"] for c in run["calls"]]
            same_draws = [c["indices"].tolist() for c in calls] == traced
            diff = float((out.float().cpu() - io[f"gen_g{index}_out"].cpu()).abs().max())
            tolerance = FP32_TOLERANCE if precision == "fp32" else BF16_TOLERANCE
            replay[f"generate_g{index}_{precision}"] = {"max_abs": diff, "same_context_draws": same_draws, "gamma":
                                                         run["gamma"], "pass": same_draws and diff <= tolerance}
        a, b = replay[f"generate_g{index}_fp32"], replay[f"generate_g{index}_bf16"]
        rows.append([f"generate() gamma {run['gamma']:g} (context draws as traced: fp32 {a['same_context_draws']}, "
                     f"bf16 {b['same_context_draws']})", f"{a['max_abs']:.2e}", "yes" if a["pass"] else "NO",
                     f"{b['max_abs']:.2e}", verdict(b["max_abs"], BF16_TOLERANCE, True)])
    fp32_pass = all(v <= FP32_TOLERANCE for v in diffs["fp32"].values()) and all(
        r["pass"] for k, r in replay.items() if k.endswith("fp32"))
    figures = {"fp32_max_abs": max(diffs["fp32"].values()), "bf16_max_abs": max(diffs["bf16"].values()),
               "per_output": diffs, "generate": replay, "fp32_tolerance": FP32_TOLERANCE,
               "bf16_tolerance": BF16_TOLERANCE, "fp32_pass": fp32_pass}
    result = {"columns": ["output", "fp32 max abs diff", f"fp32 <= {FP32_TOLERANCE:g}", "bf16 max abs diff",
                          f"bf16 <= {BF16_TOLERANCE:g}"], "rows": rows, "figures": figures,
              "notes": [f"golden set {GOLDEN_SET} from {ctx['golden']}; recorded on the CPU in fp32 by the original",
                        "random draws (token masking, noise, context frames) come from a CPU generator seeded as "
                        "recorded, so the device replays the recorded streams; generate: batch 2, 5 frames, Euler 3",
                        f"bf16 autocast: continuous outputs must stay within {BF16_TOLERANCE:g}; outputs that go "
                        "through VQ decoding (decode_out, generate()) are reported only: bf16 moves some latents to "
                        "another codebook entry"]}
    if not fp32_pass:
        result["failed"] = "fp32 outputs differ from the recorded ones by more than the tolerance"
    return result


# (c) ------------------------------------------------------------------------------------------------------------
def sdpa_kernels_seen(fn) -> list:
    """The aten scaled-dot-product kernels that ran inside fn() (from the profiler's operator names)."""
    import torch

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    names = {event.key for event in prof.key_averages()}
    prefix = "aten::_scaled_dot_product_"
    return sorted(n.replace(prefix, "") for n in names if n.startswith(prefix))


def short(error: Exception) -> str:
    """An exception in one table cell: its type and first line."""
    text = str(error).splitlines()[0][:160] if str(error) else ""
    return f"{type(error).__name__}: {text}"


def part_regressor(ctx: dict) -> dict:
    import contextlib

    from torch.nn.attention import SDPBackend, sdpa_kernel

    from benchmarks import regressor

    s, device, budget = ctx["sizes"], ctx["device"], ctx["budget"]
    forced = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
              "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
    bf16 = device.type == "cuda"  # on the CPU, bf16 takes the written-out path (model/attention.py): no SDPA to force
    rows, figures = [], {}
    for name in s["configs"]:
        def measure(backend: str, kernel: str) -> dict:
            scope = sdpa_kernel(forced[kernel]) if kernel in forced else contextlib.nullcontext()
            with scope:
                result = regressor.child(name, backend, s["batch"], s["reg_iters"], s["reg_warmup"], device.type, bf16)
                if backend == "sdpa":
                    result["kernels"] = sdpa_kernels_seen(
                        lambda: regressor.child(name, backend, s["batch"], 1, 0, device.type, bf16))
            free_memory(device)
            return result

        cells = {}
        for backend, kernel in [("math", "-"), *(("sdpa", k) for k in SDPA_KERNELS)]:
            key = f"{backend}/{kernel}"
            if not budget.fits(ctx["reserve"]):
                cells[key] = {"error": "skipped: budget"}
                continue
            try:
                cells[key] = measure(backend, kernel)
            except Exception as error:  # a kernel that cannot run these shapes on this device
                cells[key] = {"error": short(error)}
        figures[name] = cells
        math_ms = cells["math/-"].get("ms")
        for key, r in cells.items():
            backend, kernel = key.split("/")
            label = "math (written out)" if backend == "math" else "fused (SDPA)"
            if "error" in r:
                rows.append([name, label, kernel, "", "", "", "", r["error"]])
                continue
            ratio = f"{math_ms / r['ms']:.2f}x" if math_ms else "n/a"
            ran = ", ".join(r.get("kernels", [])) or "none (no SDPA call)"
            rows.append([name, label, kernel, ran, f"{r['ms']:.1f}", f"{r['peak_mb']:.0f}", ratio, "ok"])
    return {"columns": ["config", "attention", "forced SDPA kernel", "aten kernel that ran", "ms/step", "peak MB",
                        "speed-up (math/this)", "status"], "rows": rows, "figures": figures,
            "notes": [f"forward+backward, training mode, {'bf16 autocast' if bf16 else 'fp32 (CPU)'}, batch "
                      f"{s['batch']}, 5 frames, "
                      f"{s['reg_iters']} timed steps after {s['reg_warmup']} warm-up (benchmarks/regressor.py child)",
                      "peak MB: torch.cuda.max_memory_allocated on CUDA; on the CPU the growth of the process's peak "
                      "RSS, which only the first measurement of a process shows"]}


# (d) ------------------------------------------------------------------------------------------------------------
class _compiled_models:
    """While active, model.model.Model compiles its regressor in place after construction, as training.compile makes
    the trainer do (training/trainer.py): so benchmarks/train_step.py's own step is timed compiled."""

    def __enter__(self):
        import model.model as module

        self.module, self.original = module, module.Model

        class CompiledModel(module.Model):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.vector_field_regressor.compile()

        module.Model = CompiledModel

    def __exit__(self, *exc):
        self.module.Model = self.original


def compile_offered() -> bool:
    """Whether the trainer offers torch.compile (a `compile` key in lutils/schema.py, training.compile)."""
    import dataclasses

    from lutils import schema

    return any(dataclasses.is_dataclass(c) and "compile" in {f.name for f in dataclasses.fields(c)}
               for c in vars(schema).values() if isinstance(c, type))


def part_train_step(ctx: dict) -> dict:
    from benchmarks import train_step

    s, device, budget, peak = ctx["sizes"], ctx["device"], ctx["budget"], ctx.get("peak_flops")
    rows, figures = [], {}
    empty = [""] * 7

    def measure(name: str, compiled: bool) -> list:
        if compiled:
            with _compiled_models():
                r = train_step.child(name, s["batch"], s["train_iters"], s["train_warmup"], device.type, "bf16")
        else:
            r = train_step.child(name, s["batch"], s["train_iters"], s["train_warmup"], device.type, "bf16")
        free_memory(device)
        achieved = r["flops"] / r["seconds"]
        mfu = achieved / peak if peak and device.type == "cuda" else None
        figures[name + (" compiled" if compiled else "")] = {
            **r, "steps_per_s": 1 / r["seconds"], "clips_per_s": s["batch"] / r["seconds"],
            "achieved_tflops": achieved / 1e12, "mfu": mfu}
        mfu_cell = f"{100 * mfu:.1f} %" if mfu is not None else "n/a (CPU)" if device.type == "cpu" else "n/a (no peak)"
        return [f"{r['seconds']:.3f}", f"{1 / r['seconds']:.2f}", f"{s['batch'] / r['seconds']:.1f}",
                f"{r['flops'] / 1e12:.3f}", f"{achieved / 1e12:.2f}", mfu_cell, f"{r['peak_mb']:.0f}", "ok"]

    for name in s["configs"]:
        if not budget.fits(ctx["reserve"]):
            rows.append([name, "bf16", "no", *empty, "skipped: budget"])
            continue
        rows.append([name, "bf16", "no", *measure(name, False)])
    offered = compile_offered()
    for name in s["configs"]:
        if not offered:
            rows.append([name, "bf16", "torch.compile", *empty, "not offered by the trainer"])
        elif ctx["smoke"]:
            rows.append([name, "bf16", "torch.compile", *empty, "skipped in --smoke (compiling takes minutes)"])
        elif not budget.fits(ctx["compile_need"]):
            rows.append([name, "bf16", "torch.compile", *empty, f"skipped: needs {ctx['compile_need']:.0f} s, "
                                                                f"{budget.left():.0f} s left"])
        else:
            try:
                rows.append([name, "bf16", "torch.compile", *measure(name, True)])
            except Exception as error:
                rows.append([name, "bf16", "torch.compile", *empty, f"failed: {short(error)}"])
    return {"columns": ["config", "precision", "compile", "s/step", "steps/s", "clips/s", "TFLOP/step",
                        "achieved TFLOP/s", "MFU (of measured bf16 peak)", "peak MB", "status"],
            "rows": rows, "figures": figures,
            "notes": [f"frozen AE + DINOv2 forward, regressor forward+backward, AdamW; random weights; batch "
                      f"{s['batch']}; {s['train_iters']} timed steps after {s['train_warmup']} warm-up "
                      "(benchmarks/train_step.py child); FLOPs per step from torch.utils.flop_counter over one step",
                      "torch.compile: the regressor compiled in place, as training.compile=true does; the compile "
                      "happens in the first (FLOP-counted) step and the warm-up, outside the timed steps"]}


# (e) ------------------------------------------------------------------------------------------------------------
def part_generation(ctx: dict) -> dict:
    s, device, budget = ctx["sizes"], ctx["device"], ctx["budget"]
    precision = "bf16" if device.type == "cuda" else "fp32"
    rows, figures = [], {}
    for name in s["configs"]:
        if not budget.fits(ctx["reserve"]):
            rows.extend([[name, precision, g, "", "", "", "skipped: budget"] for g in ("0", "1")])
            continue
        command = [sys.executable, str(ROOT / "benchmarks" / "generation.py"), "--configs", name, "--frames",
                   str(s["gen_frames"]), "--steps", str(s["gen_steps"]), "--device", device.type, "--precision",
                   precision]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                              timeout=max(10.0, budget.left() - ctx["reserve"]))
        if done.returncode != 0:
            raise RuntimeError(f"benchmarks/generation.py failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        for line in done.stdout.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 9 and cells[0] == name:
                gamma, fused_batched, math_sequential = cells[2], float(cells[3]), float(cells[6])
                figures[f"{name}_gamma{gamma}"] = {"fused_batched_s_per_frame": fused_batched,
                                                   "fused_sequential_s_per_frame": float(cells[4]),
                                                   "math_batched_s_per_frame": float(cells[5]),
                                                   "math_sequential_s_per_frame": math_sequential}
                rows.append([name, precision, gamma, f"{fused_batched:.3f}", f"{math_sequential:.3f}",
                             f"{math_sequential / fused_batched:.2f}x", "ok"])
    return {"columns": ["config", "precision", "gamma", "fused + batched s/frame", "math + sequential s/frame",
                        "speed-up", "status"], "rows": rows, "figures": figures,
            "notes": [f"benchmarks/generation.py: Euler {s['gen_steps']} steps, {s['gen_frames']} frames after one "
                      "initial frame, batch 1, decoding included, random weights"]}


# (f) ------------------------------------------------------------------------------------------------------------
def part_end_to_end(ctx: dict) -> dict:
    device, budget = ctx["device"], ctx["budget"]
    script = ROOT / "scripts" / "toy_pipeline.py"
    root = Path(tempfile.mkdtemp(prefix="gpu_suite_e2e_"))  # data, runs and videos stay out of --out
    command = [sys.executable, str(script), "--root", str(root), "--quick", "--fresh"]
    help_text = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=ROOT).stdout
    notes = []
    if "--device" in help_text:
        command += ["--device", device.type]
    else:
        notes.append("scripts/toy_pipeline.py offers no --device option: it ran on the CPU")
    if not ctx["smoke"] and ctx["e2e_cage_steps"]:
        command += ["--cage-steps", str(ctx["e2e_cage_steps"])]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                          timeout=max(10.0, budget.left() - 5))
    seconds = time.perf_counter() - start
    (ctx["out"] / "end_to_end.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"toy_pipeline failed (exit {done.returncode}); log end_to_end.log:\n{done.stderr[-3000:]}")
    result = json.loads((root / "outputs" / "toy" / "control_accuracy.json").read_text())
    shutil.rmtree(root, ignore_errors=True)
    rows = []
    for arm in ("controlled", "baseline"):
        r = result[arm]
        rows.append([arm, str(r["clips"]), f"{r['mean_distance_px']:.2f}", f"{r['mean_distance_cells']:.3f}",
                     f"{r['within_one_cell']:.3f}", f"{r['lost']:.3f}"])
    quality = result.get("sample_quality", {})
    notes += [f"command: {' '.join(command[1:])} ({seconds:.0f} s)",
              f"QUICK size: tiny data and a few training steps, so the figures test the path, not the method; "
              f"sample quality PSNR {quality.get('psnr', float('nan')):.2f} dB, "
              f"SSIM {quality.get('ssim', float('nan')):.3f}"]
    return {"columns": ["arm", "clips", "mean distance px", "mean distance cells", "within one cell", "lost"],
            "rows": rows, "figures": {"control_accuracy": result, "seconds": seconds, "command": command},
            "notes": notes}


# (budget seconds on CUDA, in --smoke): what a part needs left to start
PARTS = [("environment", "(a) Environment", part_environment, 30, 5),
         ("parity", "(b) CUDA parity (golden tiny_ldm)", part_parity, 30, 10),
         ("regressor", "(c) Regressor: fused vs math attention", part_regressor, 90, 10),
         ("train_step", "(d) Training step", part_train_step, 90, 10),
         ("generation", "(e) Generation", part_generation, 60, 10),
         ("end_to_end", "(f) End to end (toy pipeline)", part_end_to_end, 60, 15)]


def markdown(report: dict) -> str:
    env = report["parts"].get("environment", {}).get("figures", {})
    lines = ["# GPU suite", "", f"device: {env.get('device', '?')}, torch {env.get('torch', '?')}, CUDA "
             f"{env.get('cuda', '-')}; mode: {'smoke (CPU, tiny sizes)' if report['smoke'] else 'full'}; budget "
             f"{report['budget_s']:.0f} s, used {report['seconds']:.0f} s", ""]
    for key, title, *_ in PARTS:
        part = report["parts"][key]
        lines += [f"## {title}", "", f"status: {part['status']} ({part['seconds']:.1f} s; budget left after: "
                  f"{part['budget_left_s']:.0f} s)", ""]
        if part.get("reason"):
            lines += [part["reason"], ""]
        lines += [f"- {note}" for note in part.get("notes", [])] + ([""] if part.get("notes") else [])
        if part.get("rows"):
            lines += ["| " + " | ".join(part["columns"]) + " |", "|" + "---|" * len(part["columns"])]
            lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in part["rows"]] + [""]
        if part.get("traceback"):
            lines += ["```", part["traceback"].rstrip(), "```", ""]
    return "\n".join(lines)


def default_golden() -> Path:
    if os.environ.get("CAGE_GOLDEN_DIR"):
        return Path(os.environ["CAGE_GOLDEN_DIR"])
    bundled = ROOT / ".gpu_bundle" / "golden"
    return bundled if bundled.is_dir() else ROOT.parent / "shared" / "golden"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for gpu_suite.md and gpu_suite.json")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole suite (default 480)")
    parser.add_argument("--smoke", action="store_true", help="every part on the CPU at tiny sizes (tests)")
    parser.add_argument("--device", default=None, help="default: cuda when available (cpu with --smoke)")
    parser.add_argument("--golden", default=None, help="folder holding tiny_ldm (default: $CAGE_GOLDEN_DIR, "
                                                       ".gpu_bundle/golden, ../shared/golden)")
    parser.add_argument("--e2e-cage-steps", type=int, default=200, help="CAGE steps of part (f) outside --smoke")
    parser.add_argument("--compile-need", type=float, default=150.0,
                        help="seconds that must be left to time a torch.compile training step (default 150)")
    parser.add_argument("--parts", nargs="+", choices=[p[0] for p in PARTS], help="run only these parts")
    args = parser.parse_args(argv)

    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device or ("cpu" if args.smoke or not torch.cuda.is_available() else "cuda"))
    budget = Budget(args.budget)
    ctx = {"device": device, "smoke": args.smoke, "sizes": sizes(args.smoke, device), "budget": budget, "out": out,
           "golden": Path(args.golden) if args.golden else default_golden(), "e2e_cage_steps": args.e2e_cage_steps,
           "reserve": 5.0 if args.smoke else 20.0,
           "compile_need": args.compile_need}
    report = {"smoke": args.smoke, "budget_s": args.budget, "device": str(device), "argv": sys.argv[1:] if argv is None
              else list(argv), "parts": {}}
    for key, title, run, need_full, need_smoke in PARTS:
        need = need_smoke if args.smoke else need_full
        start = time.perf_counter()
        part: dict = {"status": "ok"}
        if args.parts and key not in args.parts:
            part = {"status": "skipped", "reason": "not in --parts"}
        elif not budget.fits(need):
            part = {"status": "skipped", "reason": f"skipped: needs {need} s, {budget.left():.0f} s left"}
        else:
            print(f"== {title}: {budget.left():.0f} s of the budget left", flush=True)
            try:
                part.update(run(ctx))
                if part.get("failed"):
                    part["status"], part["reason"] = "failed", part.pop("failed")
                elif part.get("skipped"):
                    part["status"], part["reason"] = "skipped", part.pop("skipped")
            except Exception:
                part = {"status": "failed", "traceback": traceback.format_exc()}
                print(part["traceback"], file=sys.stderr, flush=True)
            free_memory(device)
        part["seconds"], part["budget_left_s"] = time.perf_counter() - start, budget.left()
        report["parts"][key] = part
        print(f"   {key}: {part['status']} in {part['seconds']:.1f} s; {budget.left():.0f} s left", flush=True)
        report["seconds"] = time.perf_counter() - budget.start
        write_report(out, report)
    print(f"wrote {out / 'gpu_suite.md'} and {out / 'gpu_suite.json'} in {report['seconds']:.0f} s")
    return 0


def write_report(out: Path, report: dict) -> None:
    """Both files after every part, so a suite cut short still leaves what it measured."""
    from lutils.io import write_json

    done = dict(report, parts={**{k: {"status": "pending", "seconds": 0.0, "budget_left_s": 0.0} for k, *_ in PARTS},
                               **report["parts"]})
    write_json(out / "gpu_suite.json", done)
    (out / "gpu_suite.md").write_text(markdown(done) + "\n")


if __name__ == "__main__":
    sys.exit(main())
