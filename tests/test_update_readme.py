"""scripts/update_readme_results.py rewrites only the marked blocks, from result files."""

from __future__ import annotations

from conftest import load_script

script = load_script("update_readme_results")


def test_blocks_are_rewritten_from_files(tmp_path, monkeypatch):
    nb = tmp_path / "embedded" / "full" / "01_x"
    nb.mkdir(parents=True)
    (nb / "verdict.txt").write_text("[SUPPORTED] measured 0.9 | 0.8\n")
    monkeypatch.setattr(script, "RESULTS", tmp_path)
    text = "intro\n<!-- verdicts:start -->\nold\n<!-- verdicts:end -->\n<!-- quality:start -->\nkeep\n<!-- quality:end -->\n"
    out = script.update(text)
    assert "| `01_x` | [SUPPORTED] measured 0.9 / 0.8 |" in out and "old" not in out
    assert "keep" in out  # results/model_quality.md is missing here: the block stays as it was
    assert out.startswith("intro\n") and script.update(out) == out
    empty = script.update("<!-- verdicts:start -->\n<!-- verdicts:end -->")
    assert empty == "<!-- verdicts:start -->\n" + script.verdicts() + "\n<!-- verdicts:end -->"
