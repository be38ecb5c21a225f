"""The composition's rule (issue 24's ★), decided and tested on synthetic tables before any run reads it:
DeepCache + text off after k = N/2 against DeepCache alone (speed, same rounds) and full CFG (quality,
paired per prompt, the shared rule's margin)."""

import numpy as np
import pandas as pd
import pytest

from helpers import verdicts
from helpers.bench import summaries

DC = "DeepCache (interval 3)"
COMP = "DeepCache (interval 3) + text off after k=25 (uncond)"


def _write(folder, speedup: float = 0.8, quality_shift: float = 0.0, alternate: float = 0.0, rounds: int = 10,
           n_prompts: int = 200, compose: bool = True):
    """A finished DDIM 50 block: full CFG 10 s, DeepCache 4 s, the composed method ``speedup`` x DeepCache;
    per prompt full CFG scores 0/100 and the composed method the same scores minus ``quality_shift``."""
    rng = np.random.default_rng(0)
    times = []
    for r in range(rounds):
        jitter = 1 + 0.01 * rng.standard_normal()
        swing = 1 + (alternate if r % 2 else -alternate)  # the composed method's time swings round to round
        for method, secs in (("full CFG", 10.0), (DC, 4.0), (COMP, 4.0 * speedup * swing)):
            times.append({"round": r, "method": method, "seconds": secs * jitter, "sampler": "ddim", "steps": 50})
    times = pd.DataFrame(times)
    times.to_csv(folder / "times.csv", index=False)
    from helpers.bench import latency

    table = pd.DataFrame({"method": ["full CFG", DC, COMP], "kind": ["baseline", "deepcache", "deepcache+uncond"],
                          "k": [50, 50, 25], "a": [0, 0, 25], "evals_per_image": [100, 100, 75],
                          "cache_interval": [np.nan, 3, 3], "sampler": "ddim", "steps": 50})
    table = latency.timing_columns(table, times)
    full = (rng.random(n_prompts) < 0.95) * 100.0
    rule = pd.DataFrame({"sampler": "ddim", "steps": 50, "k": 50, "variant": "uncond", "prompt": range(n_prompts),
                         "attribute accuracy %": full})
    rule.to_csv(folder / "rule_per_prompt.csv", index=False)
    if compose:
        flip = np.zeros(n_prompts)
        flip[: int(round(quality_shift / 100 * n_prompts))] = 100.0  # the first prompts lose their attribute
        comp = pd.DataFrame({"sampler": "ddim", "steps": 50, "k": [50, 25], "kind": ["deepcache", "deepcache+uncond"],
                             "cache_interval": 3, "method": [DC, COMP]}).merge(
            pd.DataFrame({"prompt": range(n_prompts)}), how="cross")
        comp["attribute accuracy %"] = np.concatenate([full, np.clip(full - flip, 0, 100)])
        comp.to_csv(folder / "compose_per_prompt.csv", index=False)
    return table


def test_rule_is_registered():
    rule = verdicts.RULES["composition"]
    assert rule["kind"] == "deepcache+uncond" and rule["k_fraction"] == 0.5 and rule["cache_interval"] == 3
    with pytest.raises(TypeError):
        rule["k_fraction"] = 0.3  # read-only


def test_equivalence_table(tmp_path):
    _write(tmp_path, quality_shift=0.0)
    eq = summaries.composition_equivalence(tmp_path).set_index("method")
    assert eq.loc[DC, "difference"] == 0 and eq.loc[DC, "equivalent"] and not eq.loc[DC, "worse"]
    assert eq.loc[COMP, "n"] == 200 and eq.loc[COMP, "k"] == 25 and eq.loc[COMP, "cache_interval"] == 3


def test_equivalence_table_without_files_and_mismatched_prompts(tmp_path):
    assert summaries.composition_equivalence(tmp_path).empty
    _write(tmp_path)
    comp = pd.read_csv(tmp_path / "compose_per_prompt.csv")
    comp[comp["prompt"] < 150].to_csv(tmp_path / "compose_per_prompt.csv", index=False)
    with pytest.raises(ValueError, match="cannot be paired"):
        summaries.composition_equivalence(tmp_path)


def test_supported_when_faster_and_equivalent(tmp_path):
    table = _write(tmp_path, speedup=0.8, quality_shift=0.0)
    v = summaries.composition_verdict(table, tmp_path)
    assert v.verdict == verdicts.SUPPORTED, v.sentence
    assert v.estimate.value == pytest.approx(20.0, abs=0.5) and v.estimate.lo > 0 and v.estimate.n == 10
    assert "Verdict: SUPPORTED" in v.sentence and COMP in v.sentence


def test_not_supported_when_slower(tmp_path):
    table = _write(tmp_path, speedup=1.2)
    v = summaries.composition_verdict(table, tmp_path)
    assert v.verdict == verdicts.NOT_SUPPORTED and "slower" in v.sentence


def test_not_supported_when_quality_is_lost(tmp_path):
    table = _write(tmp_path, speedup=0.8, quality_shift=15.0)  # 15 of 100 points lost: beyond ±3 pp
    v = summaries.composition_verdict(table, tmp_path)
    assert v.verdict == verdicts.NOT_SUPPORTED and v.details["quality_difference"].lo > 3


def test_inconclusive_when_quality_interval_crosses_the_margin(tmp_path):
    table = _write(tmp_path, speedup=0.8, quality_shift=3.0)  # about 3 points lost: the interval crosses +3
    v = summaries.composition_verdict(table, tmp_path)
    assert v.verdict == verdicts.INCONCLUSIVE and "crosses" in v.sentence


def test_inconclusive_when_speed_interval_includes_zero(tmp_path):
    table = _write(tmp_path, speedup=1.0, alternate=0.05)  # ratios 0.95 and 1.05 in turn: the interval holds 0
    v = summaries.composition_verdict(table, tmp_path)
    assert v.verdict == verdicts.INCONCLUSIVE and v.estimate.lo < 0 < v.estimate.hi
    assert "speed interval includes 0" in v.sentence


def test_not_supported_when_slower_even_without_per_prompt_quality(tmp_path):
    table = _write(tmp_path, speedup=1.2, compose=False)
    assert summaries.composition_verdict(table, tmp_path).verdict == verdicts.NOT_SUPPORTED


def test_not_supported_when_far_better_than_full_cfg(tmp_path):
    """Two-sided like the shared rule: a composed method far *above* full CFG is not equivalent either."""
    table = _write(tmp_path, speedup=0.8)
    comp = pd.read_csv(tmp_path / "compose_per_prompt.csv")
    rule = pd.read_csv(tmp_path / "rule_per_prompt.csv")
    rule["attribute accuracy %"] = np.where(rule["prompt"] < 40, 0.0, rule["attribute accuracy %"])
    rule.to_csv(tmp_path / "rule_per_prompt.csv", index=False)
    comp.to_csv(tmp_path / "compose_per_prompt.csv", index=False)
    v = summaries.composition_verdict(table, tmp_path)
    assert v.verdict == verdicts.NOT_SUPPORTED and v.details["quality_difference"].hi < -3


def test_older_tables_pair_by_label(tmp_path):
    table = _write(tmp_path).drop(columns=["cache_interval"])
    assert summaries.composition_verdict(table, tmp_path).verdict == verdicts.SUPPORTED
    assert "ahead" in summaries.composition_summary(table.assign(attribute_accuracy=90.0))[0]


def test_inconclusive_without_per_prompt_quality_or_rows(tmp_path):
    table = _write(tmp_path, compose=False)
    v = summaries.composition_verdict(table, tmp_path)
    assert v.verdict == verdicts.INCONCLUSIVE and "compose_per_prompt.csv" in v.sentence
    v = summaries.composition_verdict(table[table["kind"] != "deepcache+uncond"], tmp_path)
    assert v.verdict == verdicts.INCONCLUSIVE and "not measured" in v.sentence
