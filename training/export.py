"""Export a training checkpoint to a file the original CAGE code loads:
`python -m training.export runs/<run>/checkpoints/latest.pth --out model.pth [--no-ema]`.

The snapshots a run writes (runs/<run>/snapshots/) already are such files, with the EMA weights; this exports any
resume state, with the raw weights if asked. A resume state holds the regressor (and frozen parts with random
weights); the frozen parts loaded from files are loaded again from the files its stored config names.

Exit status: 0 done, 1 a checkpoint that cannot be exported (one `error:` line), 2 bad command line."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lutils.errors import CageError, report
from model.checkpoint import CheckpointError, ema_weights, export_for_original, save_file
from training.checkpointing import load_training_checkpoint


def with_frozen_parts(state: dict, source: str) -> dict:
    """The resume state's model weights, completed with the frozen parts it leaves to the config's files."""
    from model.model import Model

    weights = dict(state["model"])
    missing = [name for name in ("ae", "dino") if not any(key.startswith(name + ".") for key in weights)]
    if not missing:  # checkpoints written before resume state and snapshots were apart hold everything
        return weights
    model = Model(state["config"]["model"])
    for name in missing:
        part = getattr(model, name)
        if not part.weights.loaded:
            raise CheckpointError(f"{source}: holds no {name}.* weights, and the config it stores does not load them "
                                  f"from a file ({part.weights.what}); export the run's snapshot instead")
        weights.update({key: value for key, value in model.state_dict().items() if key.startswith(name + ".")})
    return weights


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
            ema = ema_weights(state)
            if ema is None:
                raise CheckpointError(f"{args.checkpoint}: holds no EMA weights; export the raw ones with --no-ema")
        out = save_file(export_for_original(with_frozen_parts(state, args.checkpoint), inner_dim, ema), args.out)
    except CageError as error:
        return report(error)
    print(f"wrote {out} ({'EMA' if ema is not None else 'raw'} weights, step {state['global_step']}): "
          f"{{'model': state_dict}} with the original's key names")
    return 0


if __name__ == "__main__":
    sys.exit(main())
