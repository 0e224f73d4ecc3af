"""Export a training checkpoint to a file the original CAGE code loads:
`python -m training.export runs/<run>/checkpoints/latest.pth --out model.pth [--no-ema]`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model.checkpoint import CheckpointError, save_file
from training.checkpointing import export_for_original, load_training_checkpoint


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a checkpoint written by train.py")
    parser.add_argument("--out", required=True, help="output file, e.g. model.pth")
    parser.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA weights")
    args = parser.parse_args(argv)
    try:
        state = load_training_checkpoint(Path(args.checkpoint))
        inner_dim = int(state["config"]["model"]["vector_field_regressor"]["inner_dim"])
        ema = None if args.no_ema else state["ema"]["shadow"]
        out = save_file(export_for_original(state["model"], inner_dim, ema), args.out)
    except (CheckpointError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({'EMA' if ema is not None else 'raw'} weights, step {state['global_step']}): "
          f"{{'model': state_dict}} with the original's key names")
    return 0


if __name__ == "__main__":
    sys.exit(main())
