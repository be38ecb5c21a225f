"""scripts/runtime_estimates.py: measured evaluation counts -> expected runtimes on real models."""

from __future__ import annotations

import json

import pytest

from conftest import load_script

script = load_script("runtime_estimates")


def test_table_from_run_summaries(tmp_path):
    for name, n, s in (("01_a", 60_000, 120.0), ("02_b", 1_000, 30.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run_summary.json").write_text(json.dumps({"denoiser_evaluations": n, "seconds": s}))
    text = script.main(["--results", str(tmp_path), "--out", str(tmp_path / "est.md"), "--ms", "sd15=10"])
    row = next(line for line in text.splitlines() if line.startswith("| 01_a"))
    assert "60,000" in row and "10 min / 75 min" in row  # 60k x 10 ms = 10 min; x 75 ms (T4) = 75 min
    assert "**61,000**" in text and (tmp_path / "est.md").read_text() == text


def test_clear_errors(tmp_path):
    with pytest.raises(SystemExit, match="run `make notebooks`"):
        script.main(["--results", str(tmp_path), "--out", str(tmp_path / "x.md")])
    with pytest.raises(SystemExit, match="MODEL=MS"):
        script.main(["--results", str(tmp_path), "--ms", "sd9=3"])
