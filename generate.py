"""Generate a controlled video from a trained CAGE model.

    python generate.py --config configs/clevrer.yaml --ckpt model.pth --input image.png \
        --controls controls.json --num-frames 12 --out video.mp4

--input is the first frame (an image, or HDF5 data as PATH[:video[:frame]]); leave it out to compose from an empty
canvas. The controls file (docs/controls.md) says which cells of which source go where in which generated frame.
Writes the video (.mp4 or .gif) and a PNG strip of its frames with the control cells outlined.
Exit status: 0 done, 1 bad config, controls, input or checkpoint (one `error:` line), 2 bad command line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lutils.configuration import Configuration
from lutils.errors import CageError, report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--ckpt", required=True, help="CAGE checkpoint (original or ours)")
    parser.add_argument("--input", help="first frame: IMAGE or H5PATH[:video_index[:frame]]; omit for an empty canvas")
    parser.add_argument("--controls", help="controls file (JSON or YAML); omit for no controls")
    parser.add_argument("--num-frames", type=int, required=True, help="frames to generate")
    parser.add_argument("--out", required=True, help="output video, .mp4 or .gif")
    parser.add_argument("--steps", type=int, default=20, help="ODE steps per window (fixed-step solvers)")
    parser.add_argument("--gamma", type=float, default=0.0, help="guidance strength")
    parser.add_argument("--method", choices=("joint", "rollout"), default="joint")
    parser.add_argument("--solver", default="euler", help="euler, midpoint, rk4, dopri5, ...")
    parser.add_argument("--past-horizon", type=int, default=-1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="bf16 autocast or fp32 (default auto: bf16 on CUDA and on CPUs with native bf16)")
    parser.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True,
                        help="use the checkpoint's EMA weights when it has them (default: yes)")
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--trust-checkpoint", action="store_true", help="allow checkpoints that need full unpickling")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.suffix.lower() not in (".mp4", ".gif"):
        parser.error(f"--out must end in .mp4 or .gif, got {out}")
    if args.num_frames < 1:
        parser.error(f"--num-frames must be at least 1, got {args.num_frames}")
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    if not args.fps > 0:
        parser.error(f"--fps must be positive, got {args.fps}")
    from dataset.frames import FrameNotFoundError, load_frame
    from model.controls import Controls, ControlsError, load_controls, pixel_boxes

    try:
        config = Configuration(args.config, args.overrides)
        grid = tuple(config.model.vector_field_regressor.state_res)
        # Everything about the controls is checked before the model is built.
        if args.controls:
            controls, sources = load_controls(args.controls, grid, args.num_frames)
            base_dir = Path(args.controls).parent
        else:
            controls, sources, base_dir = Controls(grid, args.num_frames), [], None
        size = (int(config.data.input_size), int(config.data.crop_size))
        if "input" in sources and not args.input:
            raise ControlsError(f"{args.controls}: uses source 'input' but no --input was given")
        # Every frame is read once, here, so a missing or unreadable source fails before the model is built.
        initial = load_frame(args.input, *size)[None, None] if args.input else None
        frames = []
        for spec in sources:
            if spec == "input":
                frames.append(initial[0, 0])
                continue
            try:
                frames.append(load_frame(spec, *size, base_dir))
            except FrameNotFoundError as error:
                raise FrameNotFoundError(f"source not found: {spec} ({error})") from error

        import torch

        from lutils.media import save_contact_sheet, write_video
        from lutils.precision import resolve_precision
        from model.generation import ADAPTIVE_SOLVERS, FIXED_GRID_SOLVERS, generate_from_controls
        from model.model import Model

        if args.solver not in FIXED_GRID_SOLVERS + ADAPTIVE_SOLVERS:
            parser.error(f"--solver must be one of {', '.join(FIXED_GRID_SOLVERS + ADAPTIVE_SOLVERS)}, got {args.solver}")
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = Model.from_config(config, args.ckpt, trust=args.trust_checkpoint, use_ema=args.ema)
        model = model.to(device).eval()
        precision = resolve_precision(args.precision, device)
        print(f"generating {args.num_frames} frames ({args.method}, {args.solver}, {args.steps} steps, gamma "
              f"{args.gamma}, {len(controls.placements)} placement(s)) on {device}, {precision}", file=sys.stderr)
        video = generate_from_controls(model, controls, frames, args.num_frames, device, initial_frames=initial,
                                       precision=precision, method=args.method, odesolver=args.solver,
                                       num_steps=args.steps, gamma=args.gamma, past_horizon=args.past_horizon,
                                       seed=args.seed, verbose=True)
    except CageError as error:  # ConfigurationError, ControlsError, CheckpointError, FrameSourceError, ...
        return report(error)
    video_path = write_video(out, video[0].clamp(-1, 1), fps=args.fps)
    boxes = pixel_boxes(controls, video.shape[-2:], leading_frames=1 if args.input else 0)
    strip = save_contact_sheet(out.with_suffix(".png"), video[:1].clamp(-1, 1), boxes=[boxes])
    print(f"wrote {video_path} ({video.shape[1]} frames) and {strip} (control cells outlined in red)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
