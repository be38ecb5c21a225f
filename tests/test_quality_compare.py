"""Side-by-side quality reports (scripts/compare_quality.py, helpers.toy.quality.compare_markdown)."""

import json

import pytest

from helpers.toy.quality import BAR, compare_markdown, standard_error


def _report(shape: float, n: int = 200) -> dict:
    acc = {name: 0.9 for name in BAR} | {"shape": shape}
    return {"n_prompts": n, "n_held_out_prompts": n // 2, "steps": 50, "sampler": "DDIM", "seed": 1,
            "guidance_7.5": acc, "guidance_1.0": acc, "held_out_pairs_guidance_7.5": acc,
            "passes": {"seen_pairs": True}}


def test_standard_error():
    assert standard_error(0.5, 100) == pytest.approx(0.05)
    assert standard_error(1.0, 100) == 0.0


def test_compare_flags_only_differences_beyond_two_standard_errors():
    text = compare_markdown({"shipped": _report(0.95), "fresh": _report(0.94)})
    shape_row = next(line for line in text.splitlines() if line.startswith("| seen pairs, guidance 7.5 | shape |"))
    assert "-1.0 ±" in shape_row and shape_row.endswith("| no |")
    text = compare_markdown({"shipped": _report(0.95, 2000), "fresh": _report(0.80, 2000)})
    shape_row = next(line for line in text.splitlines() if line.startswith("| seen pairs, guidance 7.5 | shape |"))
    assert shape_row.endswith("| yes |")
    assert text.count("| color |") == 3  # three conditions


def test_compare_script(tmp_path):
    from conftest import load_script

    for name, shape in (("a", 0.95), ("b", 0.96)):
        (tmp_path / f"{name}.json").write_text(json.dumps(_report(shape)))
    out = tmp_path / "cmp.md"
    text = load_script("compare_quality").main([f"a={tmp_path / 'a.json'}", f"b={tmp_path / 'b.json'}", "--out", str(out)])
    assert out.read_text() == text and "| a | b |" in text
    with pytest.raises(SystemExit):
        load_script("compare_quality").main([f"a={tmp_path / 'missing.json'}"])
