"""benchmarks/gpu_suite.py: the --smoke run writes both reports with every part ok and every table's rows; the
budget skips what does not fit, saying so; a failing part is reported with its traceback and the suite goes on."""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import GOLDEN_ENV, ROOT


def suite(out, golden_dir, *args, timeout=600):
    env = dict(os.environ, **{GOLDEN_ENV: str(golden_dir)})
    done = subprocess.run([sys.executable, "benchmarks/gpu_suite.py", "--out", str(out), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, json.loads((out / "gpu_suite.json").read_text()), (out / "gpu_suite.md").read_text()


def table(md, title):
    """The rows of the table under the section whose heading starts with `title` (header and rule excluded)."""
    section = md.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[2:]]


@pytest.mark.slow
def test_smoke_run_reports_every_part(tmp_path, golden_dir):
    done, report, md = suite(tmp_path, golden_dir, "--smoke", "--budget", "900")
    assert {k: p["status"] for k, p in report["parts"].items()} == {k: "ok" for k in (
        "environment", "parity", "regressor", "train_step", "generation", "end_to_end")}
    assert "s of the budget left" in done.stdout

    env = report["parts"]["environment"]["figures"]
    assert env["bf16_matmul_tflops"] > 0 and env["torch"] and isinstance(env["matmul_allow_tf32"], bool)
    assert {row[0] for row in table(md, "(a)")} >= {"device", "torch", "cuda", "bf16_matmul_tflops",
                                                     "matmul_allow_tf32", "cudnn_allow_tf32"}

    parity = report["parts"]["parity"]["figures"]
    assert parity["fp32_pass"] and parity["fp32_max_abs"] <= 1e-4  # the CPU replays the golden set exactly
    assert all(r["same_context_draws"] for r in parity["generate"].values())
    rows = table(md, "(b)")
    assert [r[0] for r in rows[:6]] == ["encode_out", "decode_out", "feats", "vf_out", "vf_out_nomask",
                                        "reg_masked_out"]
    assert len(rows) == 8 and all(r[2] == "yes" for r in rows)

    rows = table(md, "(c)")
    assert [(r[1], r[2]) for r in rows] == [("math (written out)", "-")] + [
        ("fused (SDPA)", k) for k in ("default", "flash", "efficient", "cudnn", "math")]
    assert rows[0][-1] == "ok" and float(rows[0][4]) > 0 and rows[-1][-1] == "ok"
    assert "attention_math" in rows[-1][3]  # forcing the math kernel runs it

    rows = table(md, "(d)")
    assert [r[2] for r in rows] == ["no", "torch.compile"] and float(rows[0][4]) > 0
    assert rows[1][-1] == "skipped in --smoke (compiling takes minutes)"  # lutils/schema.py has training.compile
    assert report["parts"]["train_step"]["figures"]["toy"]["flops"] > 0

    rows = table(md, "(e)")
    assert [r[2] for r in rows] == ["0", "1"] and all(float(r[3]) > 0 and float(r[4]) > 0 for r in rows)

    rows = table(md, "(f)")
    assert [r[0] for r in rows] == ["controlled", "baseline"]
    assert report["parts"]["end_to_end"]["figures"]["control_accuracy"]["controlled"]["clips"] == 2


def test_budget_skips_and_failures_are_reported(tmp_path, golden_dir):
    """A budget too small for part (f) skips it, saying so; a missing golden set fails
    part (b) with its traceback and the suite still writes both files."""
    _, report, md = suite(tmp_path, tmp_path / "no_golden", "--smoke", "--budget", "14",
                          "--parts", "environment", "parity", "end_to_end", timeout=300)
    parts = report["parts"]
    assert parts["environment"]["status"] == "ok"
    assert parts["parity"]["status"] == "failed" and "FileNotFoundError" in parts["parity"]["traceback"]
    assert "```" in md.split("## (b)", 1)[1].split("## (c)", 1)[0]
    assert parts["end_to_end"]["status"] == "skipped" and "needs 15 s" in parts["end_to_end"]["reason"]  # of 14
    assert parts["generation"]["status"] == "skipped" and parts["generation"]["reason"] == "not in --parts"
