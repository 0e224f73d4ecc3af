"""Export a training checkpoint to a file the original CAGE code loads:
`python -m training.export runs/<run>/checkpoints/latest.pth --out model.pth [--no-ema]`.

Exit status: 0 done, 1 a checkpoint that cannot be exported (one `error:` line), 2 bad command line."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lutils.errors import CageError, report
from model.checkpoint import CheckpointError, export_for_original, save_file
from training.checkpointing import load_training_checkpoint


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a checkpoint written by train.py")
    parser.add_argument("--out", required=True, help="output file, e.g. model.pth")
    parser.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA weights")
    args = parser.parse_args(argv)
    try:
        state = load_training_checkpoint(Path(args.checkpoint))
        try:
            inner_dim = int(state["config"]["model"]["vector_field_regressor"]["inner_dim"])
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{args.checkpoint}: no model.vector_field_regressor.inner_dim in the config it "
                                  f"stores ({type(error).__name__}: {error}); not written by train.py?") from error
        ema = None
        if not args.no_ema:
            if not isinstance(state.get("ema"), dict) or "shadow" not in state["ema"]:
                raise CheckpointError(f"{args.checkpoint}: holds no EMA weights; export the raw ones with --no-ema")
            ema = state["ema"]["shadow"]
        out = save_file(export_for_original(state["model"], inner_dim, ema), args.out)
    except CageError as error:
        return report(error)
    print(f"wrote {out} ({'EMA' if ema is not None else 'raw'} weights, step {state['global_step']}): "
          f"{{'model': state_dict}} with the original's key names")
    return 0


if __name__ == "__main__":
    sys.exit(main())
