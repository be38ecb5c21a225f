"""Summaries of an acceleration benchmark run (:mod:`helpers.bench.acceleration`): tables, the front, the verdict.

>>> folder, full = finished_run(model_id)            # the full profile's results, else a quick run now
>>> table, meta = load_results(folder)
>>> head = registered_row(table, folder)             # the pre-registered row of the rule shared with notebook 05
>>> summary = benchmark_summary(table, at_paper_a(table), quality_column(table), 2.0, full=full) | head.summary()
>>> v, reason = acceleration_verdict(head, table, folder, meta, quality_column(table), 2.0)
>>> composed = composition_verdict(table, folder)    # DeepCache + the paper's window, against DeepCache alone
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from .. import verdicts
from ..stats import Estimate, paired_t, saved_latency
from . import timing
from .acceleration import PAPER_A_FRACTION


COLUMNS = {
    "sampler": "sampler", "steps": "N", "method": "method", "k": "k", "a": "a = N-k",
    "saved_latency": "saved latency %", "saved_lo": "saved lo", "saved_hi": "saved hi", "n_rounds": "rounds",
    "monotone": "monotone in k", "limit": "limit % (calls)", "limit_hw": "limit_hw %", "gap": "gap (pts)",
    "gap_lo": "gap lo", "gap_hi": "gap hi", "evals_per_image": "UNet evals/img",
    "l1": "L1 ↓", "image_clip_score": "Image-CLIPScore ↑", "clip_score": "CLIPScore ↑",
    "attribute_accuracy": "attribute acc. % ↑", "clip_fid": "CLIP-FID ↓ (not Inception)",
    "inception_fid": "Inception FID ↓", "median_s": "median s/batch",
}


def paper_table(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The benchmark table with readable column names and rounded numbers."""
    cols = [c for c in COLUMNS if c in table.columns]
    out = table[cols].rename(columns=COLUMNS)
    return out.round(digits)


def to_markdown(table: pd.DataFrame) -> str:
    """A pipe table (no ``tabulate`` needed)."""
    def cell(v) -> str:
        if isinstance(v, float):
            return "–" if np.isnan(v) else f"{v:.4g}"
        return str(v)

    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def at_paper_a(table: pd.DataFrame, fraction: float = PAPER_A_FRACTION) -> pd.DataFrame:
    """Per (sampler, N), the ``uncond`` row whose ``a`` is nearest to ``fraction * N``, beside the baseline."""
    rows = []
    for (sampler, steps), block in table.groupby(["sampler", "steps"]):
        paper = block[block["kind"] == "uncond"]
        if paper.empty:
            continue
        row = paper.iloc[(paper["a"] - fraction * steps).abs().argmin()]
        base = block[block["kind"] == "baseline"].iloc[0]
        rows.append({
            "sampler": sampler, "N": steps, "k": row["k"], "a": row["a"],
            "saved latency %": row["saved_latency"], "limit %": row["limit"],
            "attribute acc. % (full CFG)": base.get("attribute_accuracy", np.nan),
            "attribute acc. %": row.get("attribute_accuracy", np.nan), "L1": row["l1"],
            "Image-CLIPScore": row.get("image_clip_score", np.nan),
        })
    return pd.DataFrame(rows)


def best_tradeoff(table: pd.DataFrame, max_drop: float = 2.0, quality_col: str = "attribute_accuracy"
                  ) -> pd.DataFrame:
    """Per (sampler, N), the fastest method whose ``quality_col`` is within ``max_drop`` points of full CFG."""
    if quality_col not in table.columns:
        return pd.DataFrame()
    rows = []
    for _, block in table.groupby(["sampler", "steps"]):
        base = block.loc[block["kind"] == "baseline", quality_col].iloc[0]
        ok = block[(block["kind"] != "baseline") & (block[quality_col] >= base - max_drop)]
        if not ok.empty:
            rows.append(ok.loc[ok["saved_latency"].idxmax()])
    return pd.DataFrame(rows)


def pareto_front(points: pd.DataFrame, x: str, y: str, higher_y_is_better: bool = True) -> pd.DataFrame:
    """The points not dominated in (higher ``x``, better ``y``), sorted by ``x``."""
    pts = points.dropna(subset=[x, y]).sort_values(x, ascending=False)
    front, best = [], -np.inf
    for _, p in pts.iterrows():
        value = p[y] if higher_y_is_better else -p[y]
        if value > best:
            front.append(p)
            best = value
    return pd.DataFrame(front).sort_values(x) if front else pts.iloc[:0]


def load_results(folder: Path) -> tuple[pd.DataFrame, dict]:
    """``bench.csv`` and ``meta.json`` of a finished run."""
    folder = Path(folder)
    if not (folder / "bench.csv").exists():
        raise FileNotFoundError(f"no benchmark results in {folder}; run scripts/bench_acceleration.py")
    return pd.read_csv(folder / "bench.csv"), json.loads((folder / "meta.json").read_text())


def model_fingerprint(model_id: str | None) -> str:
    """What a benchmark was measured on: for the embedded model (``model_id`` None) ``sha256:`` of its
    weight files (every ``*.safetensors`` under the model folder, names and bytes); else the id itself."""
    import hashlib

    from ..loading import embedded_model_dir

    if model_id is not None:
        return str(model_id)
    folder, h = embedded_model_dir(), hashlib.sha256()
    for f in sorted(folder.rglob("*.safetensors")):
        h.update(str(f.relative_to(folder)).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return "sha256:" + h.hexdigest()


def finished_run(model_id: str | None, seed: int = 0, rerun: bool = False,
                 log: Callable[[str], None] = print) -> tuple[Path, bool]:
    """The run to summarise: ``(folder, True)`` when the full profile's results of ``model_id`` exist
    (written by ``scripts/bench_acceleration.py --profile full``) for this model and not ``rerun``; else
    the benchmark's quick profile with ``seed``, run now: ``(its folder, False)``. Results whose
    ``meta.json`` names another model (:func:`model_fingerprint`) are not shown; results of runs that
    recorded none are shown with a warning. ``log`` says which, before any run."""
    from . import acceleration as acc

    full_dir = acc.results_dir("full", model_id)
    if (full_dir / "bench.csv").exists() and not rerun:
        recorded = json.loads((full_dir / "meta.json").read_text()).get("model_fingerprint")
        current = model_fingerprint(model_id)
        if recorded is not None and recorded != current:
            log(f"The FULL-profile results in {full_dir} were measured on another model ({recorded[:19]}, this one "
                f"is {current[:19]}): not shown; rerun scripts/bench_acceleration.py --profile full.")
        else:
            log(f"Showing the FULL-profile results read from {full_dir} (not re-measured by this run)."
                + ("" if recorded else " WARNING: that run recorded no model fingerprint (older than this check): "
                   "it may have been measured on an earlier model."))
            return full_dir, True
    log("No full-profile results for this model: running the benchmark's QUICK profile now.")
    return acc.run_benchmark(dataclasses.replace(acc.PROFILES["quick"], seed=seed), model_id), False


def quality_column(table: pd.DataFrame) -> str:
    """The quality measure of a run: attribute accuracy where the evaluator applies (toy world), else
    Image-CLIPScore."""
    has_accuracy = table.get("attribute_accuracy", pd.Series(dtype=float)).notna().any()
    return "attribute_accuracy" if has_accuracy else "image_clip_score"


def paper_method_rows(table: pd.DataFrame, quality_col: str, max_drop: float = 2.0, min_saving: float = 25.0
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's method (kind ``uncond``, every k) with ``drop``, its quality below full CFG of its block,
    and those of its rows that save at least ``min_saving`` % within ``max_drop`` points (exploration)."""
    ours = table[table["kind"] == "uncond"]
    base = table[table["kind"] == "baseline"].set_index(["sampler", "steps"])[quality_col]
    ours = ours.assign(drop=[base[s, n] - q for s, n, q in zip(ours["sampler"], ours["steps"], ours[quality_col])])
    return ours, ours[(ours["saved_latency"] >= min_saving) & (ours["drop"] <= max_drop)]


def benchmark_summary(table: pd.DataFrame, paper: pd.DataFrame, quality_col: str, max_drop: float = 2.0, *,
                      full: bool) -> dict[str, Any]:
    """The exploration summary of a run (every text window, best of many: never the verdict).

    ``paper``: :func:`at_paper_a` of the largest N; ``full``: whether the run is the full profile's
    (read) or a quick one (run now). Keys: source, quality metric, saving and limit at the paper's a per
    sampler, the gap limit − measured of the paper's method (max and mean), the fastest method within
    ``max_drop`` points per block (:func:`best_tradeoff`), on how many blocks the adaptive stop is on the
    Pareto front, and how many of the paper's rows save >= 25% within ``max_drop``.
    """
    ours, paper_ok = paper_method_rows(table, quality_col, max_drop)
    gap = ours["limit"] - ours["saved_latency"]
    hw_gap = ours["gap"] if "gap" in ours else pd.Series(dtype=float)
    best = best_tradeoff(table, max_drop, quality_col)
    on_front = [bool((pareto_front(block, "saved_latency", quality_col)["kind"] == "adaptive").any())
                for _, block in table.groupby(["sampler", "steps"])]
    return {
        "source": "full profile (read)" if full else "quick profile (run now)",
        "quality metric": quality_col,
        "saving at paper's a (per sampler)": dict(zip(paper["sampler"], paper["saved latency %"].round(1))),
        "limit at paper's a": dict(zip(paper["sampler"], paper["limit %"].round(1))),
        "max gap limit - measured (points)": float(gap.max()), "mean gap": float(gap.mean()),
        "gap limit_hw - measured (points, max / mean)": (f"{hw_gap.max():.1f} / {hw_gap.mean():.1f}"
                                                         if hw_gap.notna().any() else "not measured"),
        "exploration: best within MAX_DROP": {f"{r['sampler']} N={r['steps']}":
                                              f"{r['method']}: {r['saved_latency']:.1f}%" for _, r in best.iterrows()},
        "adaptive on the Pareto front (blocks)": f"{sum(on_front)}/{len(on_front)}",
        "exploration: paper-method rows with >=25% saved and within MAX_DROP": f"{len(paper_ok)} of {len(ours)}",
    }


@dataclasses.dataclass(frozen=True)
class RegisteredRow:
    """The row of a run that the rule shared by notebooks 05 and 06 judges (:func:`registered_row`)."""

    rule: Mapping[str, Any]  # ``helpers.verdicts.RULES["text_removal"]``
    n_steps: int  # N of the row: the rule's, else the run's largest DDIM N (then exploratory)
    k: int  # text steps, round(k_fraction * N)
    row: pd.Series  # the method's row of the table
    baseline: pd.Series  # full CFG in the same block
    latency: Estimate  # saved latency, mean of same-round ratios with a t interval (times.csv)

    @property
    def stands_in(self) -> bool:
        """True when the run lacks the rule's N and the largest DDIM N stands in (exploratory)."""
        return self.n_steps != self.rule["n_steps"]

    def summary(self) -> dict[str, str]:
        """The row and its saved latency, as the last keys of the run's summary."""
        return {"pre-registered row": f"{self.row['method']} ({self.rule['sampler']}, N={self.n_steps})",
                "saved latency (t over rounds)": str(self.latency)}


def registered_row(table: pd.DataFrame, folder: Path) -> RegisteredRow:
    """The pre-registered row of ``helpers.verdicts.RULES["text_removal"]`` in a run: DDIM, N = 50,
    k = N/2, text removed (``uncond``); the run's largest DDIM N where it has no N = 50. Its saved latency
    is read from ``folder/times.csv`` (:func:`helpers.stats.saved_latency`). Raises ``ValueError`` without it."""
    rule = verdicts.RULES["text_removal"]
    ddim = table[table["sampler"].astype(str).str.lower() == rule["sampler"]]
    n_steps = rule["n_steps"] if (ddim["steps"] == rule["n_steps"]).any() else int(ddim["steps"].max())
    k = int(round(rule["k_fraction"] * n_steps))
    block = ddim[ddim["steps"] == n_steps]
    reg = block[(block["kind"] == rule["variant"]) & (block["k"] == k)]
    if reg.empty:
        raise ValueError(f"The benchmark has no {rule['sampler']} row with the text removed after k={k} "
                         f"of N={n_steps}.")
    row, baseline = reg.iloc[0], block[block["kind"] == "baseline"].iloc[0]
    latency = saved_latency(pd.read_csv(Path(folder) / "times.csv"), row["method"], sampler=rule["sampler"],
                            steps=n_steps)
    return RegisteredRow(rule=rule, n_steps=n_steps, k=k, row=row, baseline=baseline, latency=latency)


def acceleration_verdict(head: RegisteredRow, table: pd.DataFrame, folder: Path, meta: Mapping[str, Any],
                         quality_col: str, max_drop: float = 2.0) -> tuple[verdicts.Verdict, str | None]:
    """Notebook 06's verdict: ``(verdict, inconclusive reason or None)`` for ``NotebookContext.report``.

    Where the run has the rule's per-prompt scores (``rule_per_prompt.csv``, full profile) at the rule's N,
    the shared rule :func:`helpers.verdicts.text_removal_keeps_quality` on them (CLIPScore standing in,
    and the reason given, on a model without attribute ground truth); else an INCONCLUSIVE
    :class:`helpers.verdicts.Verdict` whose sentence reports the row's saving, quality and L1, and the
    exploration (paper-method rows saving >= 25% within ``max_drop``).
    """
    rule, row, base_row, n_reg, k_reg = head.rule, head.row, head.baseline, head.n_steps, head.k
    ours, paper_ok = paper_method_rows(table, quality_col, max_drop)
    rule_file = Path(folder) / "rule_per_prompt.csv"
    if rule_file.exists() and not head.stands_in:  # the shared rule on the benchmark's own per-prompt scores
        rule_table = pd.read_csv(rule_file)
        has_value = rule["value"] in rule_table
        v = verdicts.text_removal_keeps_quality(rule_table, latency=head.latency,
                                                **({} if has_value else {"value": "CLIPScore"}))
        return v, (None if has_value else
                   "no attribute ground truth on this model: CLIPScore stands in for the pre-registered measure")
    n_prompts = meta["config"]["n_prompts"]
    if quality_col == "attribute_accuracy":
        q_text = (f"attribute accuracy {row['attribute_accuracy']:.1f}% vs {base_row['attribute_accuracy']:.1f}% with "
                  f"full CFG ({row['attribute_accuracy'] - base_row['attribute_accuracy']:+.1f} points)")
    else:
        q_text = f"Image-CLIPScore {row['image_clip_score']:.1f} to the full-CFG images"
    note = ("" if not head.stands_in else f"; {rule['sampler'].upper()} {rule['n_steps']} is not in this run, so the "
            f"profile's N={n_reg} stands in (exploratory)")
    claim = "Removing the text for the final steps keeps the prompt's attributes"
    rule_text = (f"paired t (same seeds) of {rule['value']}, full CFG minus text removed after "
                 f"k = {rule['k_fraction']:g} N ({rule['sampler'].upper()} {rule['n_steps']}, {rule['variant']}): "
                 f"interval inside ±{rule['margin']:g} pp")
    sentence = (f"{claim} (the paper's acceleration): at the pre-registered setting ({rule['sampler'].upper()}, "
                f"N={n_reg}, k={k_reg}, a={n_reg - k_reg}{note}) removing the text saves {head.latency} of the "
                f"wall-clock time (mean of same-round ratios; median {row['saved_latency']:.1f}%, "
                f"UNet-call limit {row['limit']:.1f}%, paper: 25%+) with {q_text}, L1 {row['l1']:.3f} to the full-CFG "
                f"images (means over {n_prompts} prompts, no interval); exploration, not the verdict: "
                f"{len(paper_ok)} of {len(ours)} text windows save >= 25% within {max_drop:g} points (best of many). "
                f"Rule: {rule_text}. "
                "Verdict: INCONCLUSIVE — the shared rule needs the benchmark's per-prompt scores of the "
                "pre-registered setting (rule_per_prompt.csv, written by the full profile of "
                "scripts/bench_acceleration.py), which this run does not have.")
    details = {"sampler": rule["sampler"], "steps": n_reg, "k": k_reg, "method": row["method"],
               "quality_metric": quality_col, "quality": float(row[quality_col]),
               "quality_full_cfg": float(base_row[quality_col]), "n_prompts": n_prompts,
               "limit": float(row["limit"]), "l1": float(row["l1"])}
    return verdicts.Verdict(claim, verdicts.INCONCLUSIVE, head.latency, rule_text, sentence, details=details), None


def _interval(v: float, lo: float, hi: float) -> str:
    return "–" if not np.isfinite(v) else f"{v:.1f}" if not (np.isfinite(lo) and np.isfinite(hi)) \
        else f"{v:.1f} [{lo:.1f}, {hi:.1f}]"


def latency_table(table: pd.DataFrame, quality_col: str = "attribute_accuracy") -> pd.DataFrame:
    """One row per method: saved latency, the hardware limit and the gap with their 95% intervals over
    rounds, the call-count limit, the monotonicity flag, rounds and quality (columns of
    :func:`helpers.bench.latency.timing_columns`; a table without them gives their cells as "–")."""
    get = lambda row, c: float(row[c]) if c in row and pd.notna(row[c]) else np.nan  # noqa: E731
    rows = []
    for _, r in table.iterrows():
        rows.append({"sampler": r["sampler"], "N": int(r["steps"]), "method": r["method"],
                     "saved latency % [95%]": _interval(get(r, "saved_latency"), get(r, "saved_lo"), get(r, "saved_hi")),
                     "limit_hw % [95%]": _interval(get(r, "limit_hw"), get(r, "limit_hw_lo"), get(r, "limit_hw_hi")),
                     "gap pts [95%]": _interval(get(r, "gap"), get(r, "gap_lo"), get(r, "gap_hi")),
                     "limit % (calls)": _interval(get(r, "limit"), np.nan, np.nan),
                     "monotone in k": r.get("monotone", "–"), "rounds": r.get("n_rounds", "–"),
                     COLUMNS.get(quality_col, quality_col): _interval(get(r, quality_col), np.nan, np.nan)})
    return pd.DataFrame(rows)


def composition_summary(table: pd.DataFrame, quality_col: str = "attribute_accuracy") -> list[str]:
    """Per (sampler, N) and composed method: is it ahead of DeepCache alone on saved latency (its
    interval above DeepCache's) and how its quality compares with full CFG and DeepCache (means over the
    block's prompts; no equivalence test: exploratory)."""
    lines = []
    for (sampler, steps), block in table.groupby(["sampler", "steps"]):
        alone = block[block["kind"] == "deepcache"]
        base = block[block["kind"] == "baseline"]
        for _, c in block[block["kind"].astype(str).str.startswith("deepcache+")].iterrows():
            same = (alone[alone["cache_interval"] == c["cache_interval"]] if "cache_interval" in block
                    else alone[alone["method"] == c["method"].split(" + ")[0]])  # older runs: by label
            if same.empty or base.empty:
                continue
            d = same.iloc[0]
            ahead = ("ahead (intervals disjoint)" if c["saved_lo"] > d["saved_hi"] else
                     "not ahead (intervals overlap)" if c["saved_hi"] >= d["saved_lo"] else "behind")
            lines.append(f"{sampler.upper()} N={steps}: {c['method']} saves "
                         f"{_interval(c['saved_latency'], c['saved_lo'], c['saved_hi'])}% vs DeepCache alone "
                         f"{_interval(d['saved_latency'], d['saved_lo'], d['saved_hi'])}%: {ahead}; "
                         f"{quality_col} {c[quality_col]:.1f} vs {d[quality_col]:.1f} (DeepCache) and "
                         f"{base.iloc[0][quality_col]:.1f} (full CFG)")
    return lines


def composition_equivalence(folder: Path, margin: float | None = None, level: float = 0.95) -> pd.DataFrame:
    """Per-prompt quality of DeepCache and its compositions against full CFG (exploration beside the rule).

    Pairs ``compose_per_prompt.csv`` with the full-CFG rows of ``rule_per_prompt.csv`` (same prompts and
    seeds, the full profile) by prompt: one row per method with the paired-t difference full CFG − method
    (``difference, lo, hi, n``) and ``equivalent`` (the interval inside ±``margin``; default the shared
    rule's margin, ``RULES["text_removal"]["margin"]``), ``worse`` (``lo > margin``: significantly below full
    CFG; the verdict is two-sided, this column one-sided). Empty without the files.
    """
    rule = verdicts.RULES["text_removal"]
    margin = rule["margin"] if margin is None else margin
    cols = ["sampler", "steps", "method", "kind", "k", "cache_interval", "difference", "lo", "hi", "n",
            "equivalent", "worse"]
    folder = Path(folder)
    if not ((folder / "compose_per_prompt.csv").exists() and (folder / "rule_per_prompt.csv").exists()):
        return pd.DataFrame(columns=cols)
    composed, ruled = pd.read_csv(folder / "compose_per_prompt.csv"), pd.read_csv(folder / "rule_per_prompt.csv")
    value = rule["value"] if rule["value"] in composed else "CLIPScore"
    rows = []
    for (sampler, steps, method), group in composed.groupby(["sampler", "steps", "method"], sort=False):
        full = ruled[(ruled["sampler"] == sampler) & (ruled["steps"] == steps) & (ruled["k"] == steps)]
        pair = full.set_index("prompt")[value].to_frame("full").join(group.set_index("prompt")[value], how="inner")
        if len(pair) != len(group) or len(pair) != len(full):
            raise ValueError(f"{method}: its prompts and the full-CFG prompts of rule_per_prompt.csv differ, so they "
                             "cannot be paired.")
        e = paired_t(pair["full"].to_numpy(float), pair[value].to_numpy(float), level)
        first = group.iloc[0]
        rows.append(dict(zip(cols, (sampler, int(steps), method, first["kind"], int(first["k"]),
                                    first["cache_interval"], e.value, e.lo, e.hi, e.n,
                                    bool(-margin < e.lo and e.hi < margin), bool(e.lo > margin)))))
    return pd.DataFrame(rows, columns=cols)


def composition_verdict(table: pd.DataFrame, folder: Path, *, rule: Mapping[str, Any] | None = None,
                        margin: float | None = None) -> verdicts.Verdict:
    """Is the paper's method composed with DeepCache ahead of DeepCache alone at equal quality? (issue 24's ★)

    Decided before the run (``RULES["composition"]`` at the shared rule's setting, DDIM N = 50): the
    composed method (``kind``, k = round(k_fraction · N), DeepCache interval ``cache_interval``) against
    DeepCache alone with that interval. Speed: the composed method's wall clock divided by DeepCache's of the
    same round (``times.csv``; median over rounds, 95% bootstrap interval, as every latency ratio here),
    ``ahead`` when the saving relative to DeepCache has its whole interval above 0, ``behind`` when below.
    Quality: :func:`composition_equivalence`'s paired t of full CFG − composed (the shared rule's prompts,
    margin ±3 pp, two-sided as the shared rule). SUPPORTED: ahead and equivalent; NOT SUPPORTED: behind,
    or the quality difference significantly beyond ±margin (either side); else INCONCLUSIVE (also when the
    run lacks the per-prompt files and is not behind: the quick profile).
    """
    rule = verdicts.RULES["composition"] if rule is None else rule
    base_rule = verdicts.RULES["text_removal"]
    margin = base_rule["margin"] if margin is None else margin
    steps = base_rule["n_steps"]
    k = int(round(rule["k_fraction"] * steps))
    claim = "The paper's method composed with DeepCache is faster than DeepCache alone at full-CFG quality"
    rule_text = (f"{base_rule['sampler'].upper()} N={steps}: DeepCache (interval {rule['cache_interval']}) + "
                 f"{'text' if rule['kind'].endswith('uncond') else 'guidance'} off after k={k} against DeepCache alone: same-round time saved "
                 f"relative to DeepCache, 95% interval above 0, and paired t of {base_rule['value']} (full CFG minus "
                 f"composed) inside ±{margin:g} pp")
    block = table[(table["sampler"].astype(str).str.lower() == base_rule["sampler"]) & (table["steps"] == steps)]
    interval = (block["cache_interval"] if "cache_interval" in block else  # older runs: read from the label
                block["method"].str.extract(r"DeepCache \(interval (\d+)\)")[0].astype(float))
    comp = block[(block["kind"] == rule["kind"]) & (block["k"] == k) & (interval == rule["cache_interval"])]
    alone = block[(block["kind"] == "deepcache") & (interval == rule["cache_interval"])]
    if comp.empty or alone.empty:
        nothing = Estimate(np.nan, np.nan, np.nan, 0, "not measured", rule["level"], "%")
        return verdicts.Verdict(claim, verdicts.INCONCLUSIVE, nothing, rule_text,
                                f"{claim}: not measured in this run (no DeepCache or no {rule['kind']} row at "
                                f"k={k}). Rule: {rule_text}. Verdict: INCONCLUSIVE — not measured.")
    c, d = comp.iloc[0], alone.iloc[0]
    if not (Path(folder) / "times.csv").exists():
        raise FileNotFoundError(f"{folder} has no times.csv: the composition's speed is read from its rounds.")
    times = pd.read_csv(Path(folder) / "times.csv")
    times = times[(times["sampler"] == c["sampler"]) & (times["steps"] == steps)
                  & times["method"].isin([c["method"], d["method"]])]
    rel = timing.ratio_table(times, baseline=d["method"], level=rule["level"]).set_index("method").loc[c["method"]]
    speed = Estimate(float(rel["saved_latency"]), float(rel["saved_lo"]), float(rel["saved_hi"]),
                     int(rel["n_rounds"]), "median same-round ratio, bootstrap", rule["level"], "%")
    eq = composition_equivalence(folder, margin, rule["level"])
    eq = eq[(eq["method"] == c["method"]) & (eq["steps"] == steps)]
    quality = None if eq.empty else Estimate(float(eq["difference"].iloc[0]), float(eq["lo"].iloc[0]),
                                             float(eq["hi"].iloc[0]), int(eq["n"].iloc[0]), "paired t",
                                             rule["level"], " pp")
    ahead, behind = speed.lo > 0, speed.hi < 0
    if quality is None and not behind:
        verdict, reason = verdicts.INCONCLUSIVE, ("no per-prompt quality of the composition (compose_per_prompt.csv, "
                                                  "written by the full profile)")
    elif behind or quality.lo > margin or quality.hi < -margin:
        verdict, reason = verdicts.NOT_SUPPORTED, ("it is slower than DeepCache alone" if behind else
                                                   f"its quality differs from full CFG by more than ±{margin:g} pp")
    elif ahead and -margin < quality.lo and quality.hi < margin:
        verdict, reason = verdicts.SUPPORTED, (f"it is faster than DeepCache alone and its quality interval lies "
                                               f"within ±{margin:g} pp of full CFG")
    else:
        verdict, reason = verdicts.INCONCLUSIVE, ("the speed interval includes 0" if not ahead else
                                                  f"the quality interval crosses ±{margin:g} pp")
    q_text = "quality not measured per prompt" if quality is None else f"full CFG minus composed {quality}"
    g = lambda r, col: float(r.get(col, np.nan))  # noqa: E731  (older tables lack the interval columns)
    sentence = (f"{claim}: {c['method']} saves {_interval(g(c, 'saved_latency'), g(c, 'saved_lo'), g(c, 'saved_hi'))}% "
                f"of full CFG's time against DeepCache alone's "
                f"{_interval(g(d, 'saved_latency'), g(d, 'saved_lo'), g(d, 'saved_hi'))}%"
                f"; relative to DeepCache in the same rounds it saves {speed}; {q_text}. Rule: {rule_text}. "
                f"Verdict: {verdict} — {reason}.")
    return verdicts.Verdict(claim, verdict, speed, rule_text, sentence,
                            details={"method": c["method"], "deepcache": d["method"], "k": k,
                                     "quality_difference": quality})
