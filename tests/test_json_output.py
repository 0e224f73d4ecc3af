"""lutils.io's JSON convention (json_safe, dumps_json, write_json): standard JSON that a strict parser reads, NaN and
inf as null. The files written through it are tested where they are made (test_evaluate: results.json and
identity.json; test_control_eval: control accuracy; test_logging_media: metrics.jsonl)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lutils.io import dumps_json, json_safe, write_json


def strict_json(text: str):
    """json.loads that refuses the non-standard NaN/Infinity tokens."""
    def reject(token):
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=reject)


def test_the_strict_parser_refuses_what_python_writes_by_default():
    """The check used on every file: Python's default json.dumps writes bare NaN, which it refuses."""
    with pytest.raises(ValueError, match="NaN"):
        strict_json(json.dumps({"a": float("nan")}))
    with pytest.raises(ValueError, match="Infinity"):
        strict_json(json.dumps([float("-inf")]))


def test_json_safe_converts_numbers_containers_and_non_finite_values():
    value = {
        "nan": float("nan"), "inf": float("inf"), "ninf": -math.inf, "finite": 0.25, "int": 3, "bool": True,
        "none": None, "text": "nan",  # a string stays a string
        "np": [np.float32(1.5), np.int64(7), np.bool_(False), np.float64("nan")],
        "array": np.array([[1.0, np.inf], [2.0, 3.0]]),
        "tensor": torch.tensor(2.5), "tensor_bf16": torch.tensor([1.5, float("nan")], dtype=torch.bfloat16),
        "grad": torch.tensor(0.5, requires_grad=True) * 2, "tuple": (1, (2.0, float("nan"))), 4: "int key",
    }
    safe = json_safe(value)
    assert safe == {
        "nan": None, "inf": None, "ninf": None, "finite": 0.25, "int": 3, "bool": True, "none": None, "text": "nan",
        "np": [1.5, 7, False, None], "array": [[1.0, None], [2.0, 3.0]], "tensor": 2.5, "tensor_bf16": [1.5, None],
        "grad": 1.0, "tuple": [1, [2.0, None]], "4": "int key",
    }
    assert type(safe["np"][1]) is int and type(safe["np"][2]) is bool and type(safe["bool"]) is bool
    assert strict_json(json.dumps(safe, allow_nan=False)) == safe
    assert value["finite"] == 0.25 and math.isnan(value["nan"])  # the input is not modified


def test_dumps_json_is_strict_and_write_json_writes_it_atomically(tmp_path):
    value = {"metric": {"mean": float("nan"), "per_frame": [1.0, float("inf")]}, "b": 2}
    text = dumps_json(value)
    assert strict_json(text) == {"metric": {"mean": None, "per_frame": [1.0, None]}, "b": 2}
    assert "\n" not in dumps_json(value, indent=None)  # one line, as in metrics.jsonl
    path = write_json(tmp_path / "sub" / "r.json", value, sort_keys=True)
    written = path.read_text()
    assert written.endswith("}\n") and written.index('"b"') < written.index('"metric"')
    assert strict_json(written) == strict_json(text)
    with pytest.raises(TypeError):  # not JSON data: nothing replaces the old file, no temporary is left
        write_json(path, {"a": object()})
    assert path.read_text() == written and sorted(p.name for p in path.parent.iterdir()) == ["r.json"]
