#!/usr/bin/env python
"""Rewrite the README's generated blocks from the result files (no number typed by hand).

Blocks, between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` markers:

- ``verdicts``: the closing verdict of each notebook (``results/embedded/full/*/verdict.txt``)
- ``measurements``: notebook 01's decision steps and AUROC, 03's causal influence by token class
- ``quality``: the embedded model's quality table (``results/model_quality.md``)
- ``bench``: the acceleration benchmark table (``results/acceleration/full/bench.md`` when the
  full profile was run, else the quick one, saying which)
- ``bench_focus``: the latency columns of issue 24 (intervals, ``limit_hw``, gap, monotonicity, the
  composition with DeepCache and its rule, where the time goes) from ``results/acceleration/full/`` when
  that run has them (``parts.csv``, the full profile since issue 24), else from
  ``results/acceleration/full_ddim50/`` (its DDIM 50 block alone: ``scripts/bench_acceleration.py
  --profile full --samplers ddim --steps 50 --rule-prompts 0 --out results/acceleration/full_ddim50``)
- ``real_latency``: saved latency on the real architectures, per machine (``results/real_latency/*.md``,
  from ``scripts/real_latency.py``)
- ``objectives``: the text-encoder objectives compared (``results/text_encoder_objectives.md``, from
  ``scripts/text_encoder_objectives.py``)
- ``memory``: GPU memory estimates per family and setting (``results/dry_runs/memory_estimates.md``,
  from ``scripts/memory_estimates.py``)
- ``runtimes``: expected runtimes on real models (``results/real_model_runtime_estimates.md``,
  from ``scripts/runtime_estimates.py``)

Run after ``make notebooks`` (and the benchmark): ``python scripts/update_readme_results.py``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"


def verdicts() -> str:
    rows = ["| notebook | verdict |", "|---|---|"]
    for path in sorted((RESULTS / "embedded" / "full").glob("*/verdict.txt")):
        for line in path.read_text().strip().splitlines():
            rows.append(f"| `{path.parent.name}` | {line.replace('|', '/')} |")
    return "\n".join(rows)


def quality() -> str:
    return (RESULTS / "model_quality.md").read_text().strip()


def bench() -> str:
    full = RESULTS / "acceleration" / "full" / "bench.md"
    if full.exists():
        return "Full profile (`--profile full`):\n\n" + full.read_text().strip()
    quick = RESULTS / "acceleration" / "quick" / "bench.md"
    return ("The full profile (`--profile full`, about 30 minutes on 2 cores) has not been run on the current "
            "model; this is the quick profile as notebook 06 ran it:\n\n" + quick.read_text().strip())


def bench_focus() -> str:
    import json

    import pandas as pd

    sys.path.insert(0, str(ROOT))
    from helpers.bench.summaries import (composition_equivalence, composition_summary, composition_verdict,
                                         latency_table, pareto_front, to_markdown)

    folder = RESULTS / "acceleration" / "full"
    if not (folder / "parts.csv").exists():
        folder = RESULTS / "acceleration" / "full_ddim50"
    if not (folder / "bench.csv").exists():
        return "Not measured yet (see the command in `scripts/update_readme_results.py`)."
    table, meta = pd.read_csv(folder / "bench.csv"), json.loads((folder / "meta.json").read_text())
    prof = pd.read_csv(folder / "profile.csv")
    load = meta.get("machine_load", {}).get("start", {})
    head = (f"Measured {meta['date']} on {meta['machine']} ({meta['cpu_count']} CPUs, {meta['torch_threads']} torch "
            f"threads, load {load.get('load_1m', float('nan')):.2f} at the start), model "
            f"`{meta.get('model_fingerprint', '?')[:19]}…`, {meta['config']['n_prompts']} prompts for quality, one "
            f"batch of {meta['config']['batch_size']} timed; {meta['config']['repeats']} rounds for every method, "
            f"{meta['config']['focus_repeats']} for full CFG, the pre-registered k = N/2 and DeepCache (+ compositions). "
            "Intervals: 95% bootstrap over rounds of the median same-round value.")
    where = "; ".join(f"{str(r['sampler']).upper()} N={r['steps']}: " + ", ".join(
        f"{c.removesuffix(' %').replace('_s', '')} {r[c]:.1f}%" for c in prof.columns if c.endswith(" %"))
        for _, r in prof.iterrows())
    lines = "\n".join(f"- {x}" for x in composition_summary(table))
    fronts = []
    for (sampler, steps), block in table.groupby(["sampler", "steps"], sort=False):
        front = pareto_front(block, "saved_latency", "attribute_accuracy")
        fronts.append(f"- {sampler.upper()} N={steps}: {'; '.join(front['method'])}"
                      + (" (the adaptive stop is on it)" if (front["kind"] == "adaptive").any() else ""))
    n_adaptive = sum("adaptive stop is on" in f for f in fronts)
    verdict = composition_verdict(table, folder)
    eq = composition_equivalence(folder)
    eq_text = "" if eq.empty else (
        f"\n\nQuality per prompt on the shared rule's {int(eq['n'].iloc[0])} prompts (full CFG minus the method, "
        "paired t, 95%; equivalent: inside ±3 pp):\n\n" + to_markdown(eq.assign(
            **{"full CFG − method (pp) [95%]": [f"{d:.2f} [{lo:.2f}, {hi:.2f}]" for d, lo, hi in
                                                 zip(eq["difference"], eq["lo"], eq["hi"])]})[
            ["sampler", "steps", "method", "full CFG − method (pp) [95%]", "n", "equivalent"]]))
    return (head + "\n\n" + to_markdown(latency_table(table)) + f"\n\nWhere the full-CFG run's time goes: {where}."
            + f"\n\n**Composition rule** (`summaries.composition_verdict`, decided before the run): {verdict.to_text()}"
            + eq_text + "\n\nComposition with DeepCache per block (quality: means over the block's prompts):\n" + lines
            + f"\n\nOn the front of saved latency against attribute accuracy (the adaptive stop, x̂0 criterion, in "
              f"{n_adaptive} of {len(fronts)} blocks):\n" + "\n".join(fronts))


def real_latency() -> str:
    files = sorted((RESULTS / "real_latency").glob("*.md"))
    if not files:
        return "Not measured yet: `python scripts/real_latency.py` (CPU) or `--device cuda` (GPU)."
    return "\n\n".join(f"`{f.stem}`: " + f.read_text().strip() for f in files)


def objectives() -> str:
    return (RESULTS / "text_encoder_objectives.md").read_text().strip()


def measurements() -> str:
    """Notebook 01's decision steps and AUROC, 03's influence by class, 04's controls, 05's crossover k (full)."""
    import pandas as pd

    full = RESULTS / "embedded" / "full"
    dec = pd.read_csv(full / "01_shape_first" / "decision_steps.csv")
    rows = ["| measurement (notebook) | value [95% interval] | n |", "|---|---|---|"]
    for r in dec.itertuples():
        rows.append(f"| step at which x̂0's {r.attribute} is decided for good, of 50 (01) | {r.decided_step:.1f} "
                    f"[{r.decided_step_lo:.1f}, {r.decided_step_hi:.1f}] (reader reads it from step "
                    f"{r.readable_from_step:.1f}) | {r.n} |")
    au = pd.read_csv(full / "01_shape_first" / "auroc_summary.csv")
    last = au[(au.step == au.step.max()) & (au.normalization == "none")]
    for r in last.itertuples():
        rows.append(f"| AUROC of the {r.kind} map vs the object mask, last step (01) | {r.mean:.3f} "
                    f"[{r.lo:.3f}, {r.hi:.3f}] | {r.n} |")
    inf = pd.read_csv(full / "03_token_attention" / "influence_by_class.csv")
    wanted = {("switch", "shape follows B"), ("zero", "shape stays A")}
    for r in inf.itertuples():
        if (r.test, r.measure) in wanted:
            rows.append(f"| {r.condition}: {r.measure} (03) | {100 * r.value:.1f}% [{100 * r.lo:.1f}, {100 * r.hi:.1f}] | {r.n} |")
    controls = full / "04_eos_switch" / "controls.csv"
    if controls.exists():  # 04's controls beside its verdict (vs the same-seed A/B images)
        c = pd.read_csv(controls)
        for r in c[(c.comparison == "images") & c.condition.isin(["[EOS] class (all)", "real [EOS] only", "padding only"])].itertuples():
            rows.append(f"| switch {r.condition}: shape follows B (04) | {100 * r.follows_B:.1f}% "
                        f"[{100 * r.follows_B_lo:.1f}, {100 * r.follows_B_hi:.1f}] | {r.n} |")
    crossover = full / "05_text_early" / "switch_test_crossover.csv"
    if crossover.exists():  # 05's causal switch test: first k at which the early prompt wins
        x = pd.read_csv(crossover)
        for r in x[x.against == "images"].itertuples():
            rows.append(f"| crossover k for {r.attribute}: the first k of 50 steps of A (then B, and reverse) after which "
                        f"the early prompt wins (05) | {r.crossover_k:g} [{r.lo:g}, {r.hi:g}] | {r.n} |")
    return "\n".join(rows)


def memory() -> str:
    return (RESULTS / "dry_runs" / "memory_estimates.md").read_text().strip()


def runtimes() -> str:
    return (RESULTS / "real_model_runtime_estimates.md").read_text().strip()


BLOCKS = {"verdicts": verdicts, "measurements": measurements, "quality": quality, "objectives": objectives, "bench": bench, "bench_focus": bench_focus, "real_latency": real_latency, "runtimes": runtimes, "memory": memory}


def update(text: str) -> str:
    for name, make in BLOCKS.items():
        pattern = re.compile(rf"(<!-- {name}:start -->).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            continue
        try:
            body = make()
        except FileNotFoundError as err:
            print(f"{name}: left as it was ({err.filename} is missing)")
            continue
        text = pattern.sub(lambda m: m.group(1) + "\n" + body + "\n" + m.group(2), text)
    return text


def main() -> int:
    readme = ROOT / "README.md"
    readme.write_text(update(readme.read_text()))
    print(f"updated {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
