"""The embedded default end to end on a CPU: synthetic world -> our VQVAE -> CAGE -> controlled animation,
composition, control accuracy and sample quality. Finished stages are reused; --fresh starts over; --quick is the
reduced form the test suite runs. Wall times per stage go to outputs/<run>/timings.json.

    python scripts/toy_pipeline.py [--root DIR] [--quick] [--fresh] [--run-name NAME --cage-steps N] [--gamma G]
                                   [key=value ...]

Trailing key=value pairs override configs/toy.yaml for the CAGE stage (e.g. model.feats_select_prob=0.5); give such a
variant its own --run-name, so that its run (runs/toy_run-NAME) and outputs (outputs/NAME) stay apart.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from lutils.io import write_json  # noqa: E402

FULL = {"train": 300, "val": 16, "test": 64, "ae_steps": 1200, "ae_batch": 16, "cage_steps": 4000, "cage_batch": 8,
        "eval_clips": 48, "eval_steps": 10, "frames": 6, "quality_clips": 32, "gamma": 2.0}
QUICK = {"train": 6, "val": 2, "test": 6, "ae_steps": 4, "ae_batch": 4, "cage_steps": 4, "cage_batch": 2,
         "eval_clips": 2, "eval_steps": 2, "frames": 3, "quality_clips": 2, "gamma": 2.0}
# Guidance gamma of the animation, composition and control-accuracy stages, (1+gamma) v(controls) - gamma v(none):
# chosen on the val split (docs/results.md, run 4). The sample-quality stage is issue 12's command, at gamma 0.


TIMINGS: dict = {}  # stage -> wall seconds, written to outputs/<run>/timings.json
_current: list = []


def stage(name: str, text: str = "") -> None:
    """Start stage `name` (announcing `text`) and close the timing of the previous one; stage("") closes the last."""
    now = time.time()
    if _current:
        TIMINGS[_current[0]] = round(now - _current[1], 1)
        _current.clear()
    if name:
        _current.extend([name, now])
        print(f"\n== {text}", flush=True)


def train_stage(kind: str, config: str, root: Path, steps: int, batch: int, extra: list, run_name: str = "toy",
                device: str = "cpu") -> Path:
    """Run train.py / train_autoencoder.py in this process unless the final snapshot exists; returns it (the
    inference file: what generation, evaluation and the next stage's `ckpt_path` load)."""
    from train import main as train_main

    name = {"autoencoder": "toy_autoencoder", "cage": "toy"}[kind]
    final = root / "runs" / f"{name}_run-{run_name}" / "snapshots" / f"final_step_{steps}.pth"
    if final.is_file():
        print(f"reusing {final}")
        return final
    overrides = [f"data.data_root={root / 'data' / 'toy_h5'}", f"+training.runs_dir={root / 'runs'}",
                 f"training.optimizer.num_training_steps={steps}", f"training.batching.batch_size={batch}", *extra]
    code = train_main(["--config", str(ROOT / "configs" / config), "--run-name", run_name, "--device", device,
                       *overrides], kind=kind)
    if code != 0 or not final.is_file():
        raise SystemExit(f"{kind} training failed (exit {code}); see {final.parent.parent / 'log.txt'}")
    return final


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(ROOT), help="where data/, runs/ and outputs/ go")
    parser.add_argument("--quick", action="store_true", help="a few steps per stage (tests)")
    parser.add_argument("--fresh", action="store_true", help="delete earlier toy data, runs and outputs first")
    parser.add_argument("--run-name", default="toy", help="name of the CAGE run and of the outputs folder")
    parser.add_argument("--cage-steps", type=int, help=f"CAGE training steps (default: {FULL['cage_steps']}; --quick: 4)")
    parser.add_argument("--gamma", type=float, help=f"guidance of the demos and the control accuracy (default "
                                                   f"{FULL['gamma']})")
    parser.add_argument("--device", default="cpu", help="where every stage runs: cpu (the default, the figures of "
                        "the README) or cuda")
    parser.add_argument("overrides", nargs="*", help="configs/toy.yaml overrides for the CAGE stage, key=value")
    args = parser.parse_args()
    root, p = Path(args.root), dict(QUICK if args.quick else FULL)
    if args.cage_steps:
        p["cage_steps"] = args.cage_steps
    if args.gamma is not None:
        p["gamma"] = args.gamma
    out = root / "outputs" / args.run_name
    if args.fresh:
        for path in (root / "data" / "toy_h5", root / "runs" / "toy_autoencoder_run-toy",
                     root / "runs" / f"toy_run-{args.run_name}", out):
            shutil.rmtree(path, ignore_errors=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.time()

    stage("world", "1/6 synthetic world -> data/toy_h5 (train/val/test with ground truth)")
    data = root / "data" / "toy_h5"
    if (data / "test" / "manifest.json").is_file():
        print("reusing existing data")
    else:
        from dataset.make_synthetic import main as make_synthetic

        code = make_synthetic(["--out-dir", str(data), "--train", str(p["train"]), "--val", str(p["val"]), "--test",
                               str(p["test"]), "--frames", "32", "--size", "64", "--min-objects", "2",
                               "--max-objects", "4", "--seed", "0", "--force", "--quiet"])
        if code != 0:
            return code

    stage("autoencoder", "2/6 our VQVAE (train_autoencoder.py, configs/toy_autoencoder.yaml)")
    ae_ckpt = train_stage("autoencoder", "toy_autoencoder.yaml", root, p["ae_steps"], p["ae_batch"],
                          ["training.validate_every=200", f"training.sample_every={p['ae_steps']}"],
                          device=args.device)

    stage("cage", "3/6 CAGE (train.py, configs/toy.yaml)")
    cage_ckpt = train_stage("cage", "toy.yaml", root, p["cage_steps"], p["cage_batch"],
                            # validation twice (it has its own random stream, so the training is the same)
                            [f"model.autoencoder.ckpt_path={ae_ckpt}", f"training.sample_every={p['cage_steps']}",
                             f"training.validate_every={max(1, p['cage_steps'] // 2)}",
                             *args.overrides], args.run_name, args.device)

    from lutils.configuration import Configuration
    from model.model import Model

    config = Configuration(ROOT / "configs" / "toy.yaml", [f"model.autoencoder.ckpt_path={ae_ckpt}", *args.overrides])
    model = Model.from_config(config, cage_ckpt).to(args.device).eval()

    stage("demos", "4/6 animation and composition")
    from scripts.toy_demos import animation, composition

    for path in animation(model, data / "test", out, p["frames"], p["eval_steps"], gamma=p["gamma"], device=args.device) + \
            composition(model, data / "test", out, p["frames"], p["eval_steps"], gamma=p["gamma"], device=args.device):
        print(f"wrote {path}")

    stage("control_accuracy", f"5/6 control accuracy on {p['eval_clips']} test clips (evaluation/control.py)")
    from evaluation.control import control_accuracy, format_result

    result = control_accuracy(model, data / "test", p["eval_clips"], p["frames"], shift=2, steps=p["eval_steps"],
                              gamma=p["gamma"], device=args.device, progress=False, precision="auto")

    stage("sample_quality", f"6/6 sample quality on {p['quality_clips']} test clips (evaluate.py)")
    result["sample_quality"] = sample_quality(config, cage_ckpt, ae_ckpt, data, out, p, args.overrides, args.device)
    stage("")
    TIMINGS["total"] = round(time.time() - start, 1)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "control_accuracy.json", result)
    write_json(out / "timings.json", TIMINGS)
    print(format_result(result))
    quality = result["sample_quality"]
    print(f"sample quality (controls revealed with p={quality['controls_prob']}, gamma 0): PSNR {quality['psnr']:.2f} dB, "
          f"SSIM {quality['ssim']:.3f} over {quality['clips']} clips")
    print("\nwall time per stage (s): " + ", ".join(f"{k} {v}" for k, v in TIMINGS.items()))
    print(f"wrote {out / 'control_accuracy.json'} and timings.json; total {time.time() - start:.0f} s")
    return 0


def sample_quality(config, cage_ckpt: Path, ae_ckpt: Path, data: Path, out: Path, p: dict, overrides: list,
                   device: str = "cpu") -> dict:
    """evaluate.py on test clips: 1 real frame, 6 generated, the real future's features revealed at the training
    probability, PSNR and SSIM against the real frames (no FVD: it needs the I3D detector's weights)."""
    from evaluate import main as evaluate_main

    prob = float(config["model"]["feats_select_prob"])
    report = out / "sample_quality.json"
    argv = ["--config", str(ROOT / "configs" / "toy.yaml"), "--ckpt", str(cage_ckpt), "--data", str(data), "--split",
            "test", "--out", str(report), "--restart", "--num-videos", str(p["quality_clips"]), "--controls-prob",
            str(prob), "--cond-frames", "1", "--gen-frames", str(p["frames"]), "--steps", str(p["eval_steps"]),
            "--no-fvd", "--control-clips", "0", "--device", device, f"model.autoencoder.ckpt_path={ae_ckpt}", *overrides]
    code = evaluate_main(argv)
    if code != 0:
        raise SystemExit(f"evaluate.py failed (exit {code}): python evaluate.py {' '.join(argv)}")
    metrics = json.loads(report.read_text())["metrics"]
    return {"psnr": metrics["psnr"]["mean"], "ssim": metrics["ssim"]["mean"], "clips": p["quality_clips"],
            "controls_prob": prob, "report": str(report), "command": "python evaluate.py " + " ".join(argv)}


if __name__ == "__main__":
    sys.exit(main())
