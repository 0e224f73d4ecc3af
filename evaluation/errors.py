"""The evaluation's error type, and the errors its command lines report as failures.

EvaluationError is a problem with the evaluation's inputs or with the samples it reads, told in one message; the
detector and LPIPS weights errors (evaluation/fvd.py, evaluation/frame_metrics.py) derive from it. Like every error
of the project it is a CageError (lutils/errors.py). The command lines (evaluate.py, evaluation/control.py) print the
EXPECTED_ERRORS in one line and exit with 1; any other exception (a KeyError from a bug, say) keeps its traceback.
"""
from lutils.errors import CageError

# CageError: the project's own errors (config, checkpoint, data, weights, evaluation); FileNotFoundError: a path
# given on the command line that is not there.
EXPECTED_ERRORS = (CageError, FileNotFoundError)


class EvaluationError(CageError, ValueError):
    """A problem with the evaluation's inputs or its partial results."""
