"""Pre-registered verdict rules: one pure function per claim, fed the table a notebook measured.

Every threshold, margin and setting that counts lives in :data:`RULES` (read-only) and is a
keyword parameter of its rule, defaulting to that value. Each rule returns a :class:`Verdict`
with a headline :class:`~helpers.stats.Estimate` (n and 95% interval), the rule as one line and a
closing sentence. Verdicts are ``"SUPPORTED"``, ``"NOT SUPPORTED"`` or ``"INCONCLUSIVE"``.

Intervals: Wilson for proportions, Student t for means, paired t for same-seed differences
(:mod:`helpers.stats`). No torch: this module and :mod:`helpers.stats` load without the package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from . import stats

Estimate = stats.Estimate
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "SUPPORTED", "NOT SUPPORTED", "INCONCLUSIVE"


def _freeze(d: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only copy of a nested dict."""
    return MappingProxyType({k: _freeze(v) if isinstance(v, Mapping) else v for k, v in d.items()})


#: Every pre-registered value of every rule, in one place (read-only).
RULES: Mapping[str, Mapping[str, Any]] = _freeze({
    "model_quality": {  # 00: mirrors helpers.toy.quality's bar (point estimates, >=)
        "seen_bar": {"shape": 0.95, "color": 0.90, "size": 0.90, "position": 0.90, "pattern": 0.70},
        "held_out_bar": {"shape": 0.80, "color": 0.80},
        "evaluator_min": 0.98, "level": 0.95},
    "frequency": {  # 02: mirrors the notebook's closing cell
        "later_min": 0.9, "images_above_min": 0.9, "delta": 0.05, "level": 0.95},
    "shape_first": {  # 01: all object tokens, chance = random masks of the object's area
        "early_fraction": 0.2, "ratio_min": 0.9, "level": 0.95, "n_boot": 10000, "seed": 0},
    "sos": {  # 03: the paper reports > 0.9 on SD; the rule asks for a majority (> 0.5)
        "threshold": 0.5, "paper_threshold": 0.9, "sos_position": 0, "level": 0.95},
    "eos_switch": {  # 04
        "threshold": 0.5, "primary": "images", "attribute": "shape", "level": 0.95},
    "text_removal": {  # 05 and 06: one intervention, one rule
        "k_fraction": 0.5, "n_steps": 50, "sampler": "ddim", "margin": 3.0, "variant": "uncond",
        "value": "attribute accuracy %", "unit_column": "prompt", "level": 0.95},
    "composition": {  # 06, issue 24: DeepCache + text off after k = N/2 at the text_removal setting, vs DeepCache
        "kind": "deepcache+uncond", "k_fraction": 0.5, "cache_interval": 3, "level": 0.95},
    "text_early": {  # 05's headline: the causal switch test (A for k steps then B, and B then A)
        "early_fraction": 0.2, "threshold": 0.5, "attribute": "shape", "against": "images", "level": 0.95,
        "n_boot": 10000, "seed": 0},
})
_Q, _F, _S, _O, _E, _T, _X = (RULES[k] for k in ("model_quality", "frequency", "shape_first", "sos", "eos_switch",
                                                "text_removal", "text_early"))


@dataclass(frozen=True, eq=False)
class Verdict:
    """The outcome of one rule: ``claim``; ``verdict`` (SUPPORTED / NOT SUPPORTED / INCONCLUSIVE);
    ``estimate``, the headline number with n and interval; ``rule``, one line with its parameters;
    ``sentence``, the closing sentence (claim, number, rule, verdict); ``details``, further numbers
    (reported only); ``related``, companion claims on the same table; ``exploration``, rows outside
    the pre-registered setting (never used for the verdict).
    """

    claim: str
    verdict: str
    estimate: Estimate
    rule: str
    sentence: str
    details: Mapping[str, Any] = field(default_factory=dict)
    related: tuple["Verdict", ...] = ()
    exploration: pd.DataFrame | None = None

    @property
    def supported(self) -> bool | None:
        """True / False / None, the flag ``helpers.notebook.Context.verdict`` takes."""
        return {SUPPORTED: True, NOT_SUPPORTED: False, INCONCLUSIVE: None}[self.verdict]

    def to_text(self) -> str:
        """One line for ``verdict.txt``: ``[VERDICT] sentence`` (the sentence carries n and the interval)."""
        return f"[{self.verdict}] {self.sentence}"


def _make(claim: str, verdict: str, est: Estimate, label: str, rule: str, reason: str, extra: str = "",
          **kwargs: Any) -> Verdict:
    sentence = f"{claim}: {label} = {est}{extra}. Rule: {rule}. Verdict: {verdict} — {reason}."
    return Verdict(claim, verdict, est, rule, sentence, **kwargs)


def _count(fraction: float, n: int, what: str) -> int:
    k = fraction * n
    if abs(k - round(k)) > 1e-6:
        raise ValueError(f"{what} = {fraction} is not a whole count out of n={n}: pass the right n.")
    return int(round(k))


# ----------------------------------------------------------------------------------------- 00
def model_quality_bar(report: Mapping[str, Any], *, seen_bar: Mapping[str, float] = _Q["seen_bar"],
                      held_out_bar: Mapping[str, float] = _Q["held_out_bar"],
                      evaluator_min: float = _Q["evaluator_min"], level: float = _Q["level"]) -> Verdict:
    """Notebook 00: does the embedded model meet its quality bar? (mirrors ``helpers.toy.quality``).

    ``report`` is the JSON of ``quality.evaluate`` (``n_prompts``, ``n_held_out_prompts``,
    ``guidance_7.5``, ``guidance_1.0``, ``held_out_pairs_guidance_7.5``, ``evaluator_clean``).
    SUPPORTED when every seen-pair accuracy at w=7.5 is ``>=`` its bar, every held-out one ``>=``
    its bar, the mean accuracy at w=1.0 is ``<`` the mean at w=7.5, and the evaluator's lowest
    accuracy on clean renders is ``>= evaluator_min``; otherwise NOT SUPPORTED. As in the current
    notebook the bar is read on point estimates; the headline is the seen-pair attribute closest
    to its bar with its Wilson interval, and ``details["below_bar_at_lower_bound"]`` lists the
    attributes whose Wilson lower bound is under the bar.
    """
    n = int(report["n_prompts"])
    g75, g1, held = report["guidance_7.5"], report["guidance_1.0"], report["held_out_pairs_guidance_7.5"]
    passes = {"seen_pairs": all(g75[a] >= b for a, b in seen_bar.items()),
              "held_out_pairs": all(held[a] >= b for a, b in held_out_bar.items()),
              "guidance_1_lower": float(np.mean(list(g1.values()))) < float(np.mean(list(g75.values()))),
              "evaluator": min(report["evaluator_clean"].values()) >= evaluator_min}
    seen = {a: stats.wilson(_count(g75[a], n, f"accuracy of {a}"), n, level) for a in seen_bar}
    worst = min(seen_bar, key=lambda a: g75[a] - seen_bar[a])
    low = [a for a, e in seen.items() if e.lo < seen_bar[a]]
    ok = all(passes.values())
    rule = (f"every seen-pair accuracy (w=7.5) >= its bar {dict(seen_bar)}, held-out >= {dict(held_out_bar)}, "
            f"mean accuracy at w=1.0 < at w=7.5, evaluator on renders >= {evaluator_min} (point estimates)")
    reason = ("all parts of the bar pass" if ok else
              "fails: " + ", ".join(k for k, v in passes.items() if not v))
    if low:
        reason += f"; the Wilson lower bound is under the bar for {', '.join(low)}"
    return _make("The embedded model meets its quality bar", SUPPORTED if ok else NOT_SUPPORTED, seen[worst],
                 f"closest to its bar ({seen_bar[worst]:g}): {worst} accuracy at w=7.5", rule, reason,
                 details={"passes": passes, "seen": seen, "below_bar_at_lower_bound": low})


# ----------------------------------------------------------------------------------------- 02
def frequency_low_band_first(numbers: Mapping[str, Any], *, n_generated: int, n_ground_truth: int, n_noise: int,
                             later_min: float = _F["later_min"], images_above_min: float = _F["images_above_min"],
                             delta: float = _F["delta"], level: float = _F["level"]) -> Verdict:
    """Notebook 02: the low band survives the noise longer (Fig. 2, Proposition 1); mirrors its closing cell.

    ``numbers``: the notebook's ``verdict_numbers`` dict; ``n_generated`` / ``n_ground_truth`` /
    ``n_noise``: samples and noise planes behind its fractions (for the Wilson intervals). SUPPORTED
    when, for generated and ground-truth latents, low-band SNR crosses 1 at a larger t (``>``) in the
    mean curve and in ``>= later_min`` of samples, the low band settles no later (``<=``), and
    Proposition 1's coverage is ``>= 1 - delta`` with ``>= images_above_min`` of clean samples above the
    noise's interval (point estimates, as now). Else NOT SUPPORTED.
    """
    cross, later = numbers["t_cross"], numbers["samples_low_later"]
    settled, coverage = numbers["denoising_settled_fraction"], float(numbers["prop1_min_coverage"])
    above = float(numbers["prop1_images_above_noise"])
    ns = {"generated latents": n_generated, "ground-truth latents": n_ground_truth}
    parts = {f"low band later ({s})": cross[s]["low"] > cross[s]["high"] and later[s] >= later_min for s in ns}
    parts["low band settles first"] = settled["low"] <= settled["high"]
    parts["Proposition 1"] = coverage >= 1 - delta and above >= images_above_min
    est = {s: stats.wilson(_count(later[s], n, f"samples_low_later[{s}]"), n, level) for s, n in ns.items()}
    cov = stats.wilson(int(round(coverage * n_noise)), n_noise, level)
    ok = all(parts.values())
    rule = (f"low-band SNR crosses 1 later than high-band (mean curve) and in >= {later_min:g} of samples, for "
            f"generated and ground-truth latents; low band settles first (<=); Prop. 1 coverage >= {1 - delta:g} and "
            f">= {images_above_min:g} of clean samples above the noise interval (point estimates)")
    reason = "every part holds" if ok else "fails: " + ", ".join(k for k, v in parts.items() if not v)
    return _make("Low frequencies survive the noise longer (shape first, details later)",
                 SUPPORTED if ok else NOT_SUPPORTED, est["generated latents"],
                 "share of generated samples whose low band crosses later", rule, reason,
                 f"; Proposition 1 coverage {cov}", details={"parts": parts, "per_source": est, "coverage": cov})


# ----------------------------------------------------------------------------------------- 01
def shape_first(f1: pd.DataFrame, chance: pd.Series | Mapping[Any, float] | Sequence[float] | np.ndarray, *,
                early_fraction: float = _S["early_fraction"], ratio_min: float = _S["ratio_min"],
                level: float = _S["level"], n_boot: int = _S["n_boot"], seed: int = _S["seed"]) -> Verdict:
    """Notebook 01: object-token attention maps outline the final object early (Fig. 1b).

    Args:
        f1: long table with columns ``sample, word, step, f1`` (``trajectory.relative_f1_table``),
            one row per object token and step, for ALL object tokens: a token may not be left out
            because of its last-step F1 (NaN F1 raises).
        chance: per-sample chance F1 — the F1 of random masks of the object's area
            (``stats.random_mask_f1``) — as a Series/Mapping keyed by ``sample`` or an array
            aligned with the sorted sample ids.

    With N the number of steps and s = ceil(early_fraction · N): chance = mean over samples (t
    interval), F1_s and F1_N = means over all tokens, relative F1 = F1_s / F1_N (ratio of means,
    bootstrap interval over tokens). INCONCLUSIVE when F1_N ``<=`` chance's upper bound (the ratio
    is then meaningless); SUPPORTED when F1_s ``>`` chance's upper bound and the ratio ``>= ratio_min``
    at step s itself; otherwise NOT SUPPORTED.
    """
    missing = {"sample", "word", "step", "f1"} - set(f1.columns)
    if missing:
        raise ValueError(f"The F1 table lacks the columns {sorted(missing)}.")
    if f1["f1"].isna().any():
        raise ValueError("The F1 table has NaN F1 values: the rule needs every object token at every step.")
    wide = f1.pivot(index=["sample", "word"], columns="step", values="f1").sort_index(axis=1)
    if wide.isna().any().any():
        raise ValueError("Some object tokens lack an F1 at some step: the rule needs every token at every step.")
    steps = list(wide.columns)
    s_early = steps[max(1, math.ceil(early_fraction * len(steps))) - 1]
    e, last = wide[s_early].to_numpy(float), wide[steps[-1]].to_numpy(float)
    samples = sorted(wide.index.get_level_values("sample").unique())
    keyed = isinstance(chance, (pd.Series, Mapping))
    if keyed and any(s not in chance for s in samples):
        raise ValueError(f"No chance F1 is given for samples {[s for s in samples if s not in chance][:5]}.")
    c = np.array([float(chance[s]) for s in samples]) if keyed else np.asarray(chance, dtype=float).ravel()
    if c.size != len(samples):
        raise ValueError(f"{c.size} chance values were given for {len(samples)} samples.")
    ch, e_est, l_est = stats.mean_ci(c, level), stats.mean_ci(e, level), stats.mean_ci(last, level)
    n_tok = len(wide)
    rule = (f"over all {n_tok} object tokens: INCONCLUSIVE if last-step F1 <= chance upper bound; SUPPORTED if "
            f"F1 at step {s_early} (ceil({early_fraction:g}N), N={len(steps)}) > chance upper bound and "
            f"F1_{s_early}/F1_last >= {ratio_min:g}; else NOT SUPPORTED")
    extra = f"; F1 at step {s_early} {e_est}, last-step F1 {l_est}, chance F1 {ch}"
    details = {"f1_early": e_est, "f1_last": l_est, "chance": ch, "early_step": s_early, "tokens": n_tok}
    claim = "Object-token attention outlines the final shape in the first steps"
    if l_est.value <= ch.hi:
        return _make(claim, INCONCLUSIVE, l_est, "last-step F1 of object-token maps", rule,
                     "the maps do not beat random masks of the object's area even at the last step, so a "
                     "relative F1 says nothing here", f"; chance F1 {ch}", details=details)
    ratio = stats.ratio_bootstrap(e, last, level, n_boot, seed)
    details["relative_f1"] = ratio
    ok = e_est.value > ch.hi and ratio.value >= ratio_min
    reason = (f"the maps beat chance at step {s_early} and reach {ratio.value:.0%} of their last-step F1" if ok else
              f"at step {s_early} the maps {'beat' if e_est.value > ch.hi else 'do not beat'} chance and reach "
              f"{ratio.value:.0%} of their last-step F1 (needs {ratio_min:.0%})")
    return _make(claim, SUPPORTED if ok else NOT_SUPPORTED, ratio, f"relative F1 at step {s_early}", rule, reason,
                 extra, details=details)


# ----------------------------------------------------------------------------------------- 03
def _token_mass(token_mass: np.ndarray) -> np.ndarray:
    m = np.asarray(token_mass, dtype=float)
    if m.ndim != 3 or m.shape[1] < 2:
        raise ValueError(f"token_mass must be (steps, prompts >= 2, tokens), got shape {m.shape}.")
    return m


def sos_most_attended(token_mass: np.ndarray, *, sos_position: int = _O["sos_position"],
                      level: float = _O["level"]) -> Verdict:
    """Notebook 03, claim 2: [SOS] is the most attended single token, at every step.

    ``token_mass``: ``rec.token_mass()`` as an array (steps, prompts, tokens). Margin per step and
    prompt: [SOS]'s mass minus the largest other single token's; paired t over prompts per step.
    SUPPORTED when every step's lower bound is ``> 0``; NOT SUPPORTED when some step's upper bound is
    ``< 0``; else INCONCLUSIVE. Also reported: [SOS]'s mass over uniform attention (1/77 on SD).
    """
    m = _token_mass(token_mass)
    sos = m[:, :, sos_position]
    other = np.delete(m, sos_position, axis=2).max(axis=2)
    per_step = [stats.paired_t(sos[s], other[s], level) for s in range(m.shape[0])]
    worst = int(np.argmin([e.value for e in per_step]))
    uniform = stats.mean_ci(sos.mean(axis=0) * m.shape[2], level)
    verdict = (SUPPORTED if all(e.lo > 0 for e in per_step) else
               NOT_SUPPORTED if any(e.hi < 0 for e in per_step) else INCONCLUSIVE)
    rule = "[SOS] mass minus the largest other single token's, per prompt: paired-t lower bound > 0 at every step"
    reason = {SUPPORTED: "[SOS] beats every other single token at every step",
              NOT_SUPPORTED: f"another token gets more attention at step {worst + 1}",
              INCONCLUSIVE: "the margin is not resolved at every step"}[verdict]
    return _make("[SOS] is the most attended single token", verdict, per_step[worst],
                 f"smallest margin over the runner-up token (step {worst + 1})", rule, reason,
                 f"; [SOS] mass is {uniform} times uniform (1/{m.shape[2]})",
                 details={"per_step": per_step, "times_uniform": uniform})


def sos_sink(token_mass: np.ndarray, *, threshold: float = _O["threshold"],
             paper_threshold: float = _O["paper_threshold"], sos_position: int = _O["sos_position"],
             level: float = _O["level"]) -> Verdict:
    """Notebook 03, claim 1: [SOS] is an attention sink — its mass ``> threshold`` at every step.

    ``token_mass``: (steps, prompts, tokens); t interval over prompts per step. SUPPORTED when every
    step's lower bound is ``> threshold``; NOT SUPPORTED when some step's upper bound is ``< threshold``;
    else INCONCLUSIVE. ``paper_threshold`` (SD's level) is reported only. :func:`sos_most_attended` is
    attached as ``related`` and the sentence says which of the two claims holds.
    """
    m = _token_mass(token_mass)
    per_step = [stats.mean_ci(m[s, :, sos_position], level) for s in range(m.shape[0])]
    worst = int(np.argmin([e.value for e in per_step]))
    verdict = (SUPPORTED if all(e.lo > threshold for e in per_step) else
               NOT_SUPPORTED if any(e.hi < threshold for e in per_step) else INCONCLUSIVE)
    most = sos_most_attended(m, sos_position=sos_position, level=level)
    at_paper = sum(e.value > paper_threshold for e in per_step)
    rule = f"[SOS] mass (mean over prompts, t interval) lower bound > {threshold:g} at every step"
    reason = ({SUPPORTED: "[SOS] is a sink", NOT_SUPPORTED: "[SOS] is not a sink",
               INCONCLUSIVE: "the sink test is not resolved"}[verdict]
              + f"; [SOS] is the most attended single token: {most.verdict} (smallest margin {most.estimate}, "
              f"{most.details['times_uniform'].value:.3g} × uniform)")
    return _make("[SOS] is an attention sink", verdict, per_step[worst],
                 f"lowest [SOS] mass over {m.shape[0]} steps (step {worst + 1})", rule, reason,
                 f"; above the paper's {paper_threshold:g} at {at_paper} of {m.shape[0]} steps",
                 details={"per_step": per_step}, related=(most,))


# ----------------------------------------------------------------------------------------- 04
def _follow(table: pd.DataFrame, against: str, attribute: str, level: float) -> tuple[Estimate, Estimate] | None:
    from .analysis.follow import follow_masks

    masks = follow_masks(table, against, attribute)
    if masks is None:
        return None
    b, a = masks
    if len(b) == 0:
        raise ValueError(f"No switched image is usable for the {against!r} comparison.")
    return stats.wilson(int(b.sum()), len(b), level), stats.wilson(int(a.sum()), len(b), level)


def eos_switch_follows_b(table: pd.DataFrame, *, threshold: float = _E["threshold"], primary: str = _E["primary"],
                         attribute: str = _E["attribute"], level: float = _E["level"]) -> Verdict:
    """Notebook 04: with A's words and B's [EOS] class, the image shows B's object.

    ``table``: one row per switched image, as ``alignment.score_source_target`` writes it —
    ``source_img_<attr>`` / ``target_img_<attr>`` (1 when the evaluator reads what it reads in A's /
    B's same-seed image, NaN where those agree), ``source_<attr>`` / ``target_<attr>`` (against the
    prompts' ground truth), and optionally ``clip_source`` / ``clip_target``. The rate of following B
    and of following A get Wilson intervals for every comparison present; ``primary``
    (``"images"``, ``"prompts"`` or ``"clip"``) decides. SUPPORTED when B's lower bound is
    ``> threshold``; NOT SUPPORTED when its upper bound is ``< threshold``; else INCONCLUSIVE.

    Why 0.5: following B in more than half of the images means B's [EOS] wins more often than A's
    words and every other shape together — "the image shows B's object" is then the typical outcome,
    not an occasional one — and it implies B beats A (A's rate is at most 1 − B's). Chance (a random
    shape of the world) is far below it, and it stays below the paper's near-totality so the rule
    tests the direction of the mechanism, not an exact rate. Using the lower bound makes n count:
    14 of 20 (0.70, Wilson [0.48, 0.86]) is inconclusive.
    """
    found = {c: r for c in ("images", "prompts", "clip") if (r := _follow(table, c, attribute, level)) is not None}
    if primary not in found:
        raise ValueError(f"The table has no columns for the primary comparison {primary!r} of {attribute!r}.")
    b = found[primary][0]
    verdict = SUPPORTED if b.lo > threshold else NOT_SUPPORTED if b.hi < threshold else INCONCLUSIVE
    names = {"images": "vs the same-seed A/B images", "prompts": "vs the prompts' ground truth",
             "clip": "by CLIPScore with A's vs B's text"}
    extra = f"; following A {found[primary][1]}" + "".join(
        f"; {names[c]}: B {fb}, A {fa}" for c, (fb, fa) in found.items() if c != primary)
    rule = f"Wilson lower bound of the rate of following B ({names[primary]}, {attribute}) > {threshold:g}"
    reason = {SUPPORTED: f"the {attribute} follows B's [EOS]",
              NOT_SUPPORTED: f"the {attribute} follows B's [EOS] in fewer than {threshold:.0%} of the images",
              INCONCLUSIVE: f"the interval contains {threshold:g}: too few images to decide"}[verdict]
    return _make("The switched [EOS] decides the object", verdict, b,
                 f"rate of following B's {attribute} ({names[primary]})", rule, reason, extra,
                 details={"rates": found})


# ------------------------------------------------------------------------------------ 05 / 06
def _paired(table: pd.DataFrame, sampler: str, steps: int, k: int, variant: str, value: str, unit: str,
            vcol: str | None, level: float) -> Estimate:
    block = table[(table["sampler"].astype(str).str.lower() == sampler.lower()) & (table["steps"] == steps)]
    base, treated = block[block["k"] == steps], block[block["k"] == k]
    if vcol is not None:
        base = base[base[vcol] == "baseline"] if (base[vcol] == "baseline").any() else base[base[vcol] == variant]
        treated = treated[treated[vcol] == variant]
    if base.empty or treated.empty:
        raise LookupError(f"no rows for {sampler}, N={steps}, k={k}")
    b, t = base.set_index(unit)[value], treated.set_index(unit)[value]
    if b.index.duplicated().any() or t.index.duplicated().any() or set(b.index) != set(t.index):
        raise ValueError(f"At {sampler}, N={steps}, k={k} the full-CFG and text-removed rows are not one row per "
                         f"{unit} on the same {unit}s, so they cannot be paired.")
    est = stats.paired_t(b.sort_index().to_numpy(float), t.sort_index().to_numpy(float), level)
    return Estimate(est.value, est.lo, est.hi, est.n, est.method, level, " pp")


def text_removal_keeps_quality(table: pd.DataFrame, *, k: int | None = None, n_steps: int = _T["n_steps"],
                               sampler: str = _T["sampler"], margin: float = _T["margin"],
                               k_fraction: float = _T["k_fraction"], variant: str = _T["variant"],
                               value: str = _T["value"], unit_column: str = _T["unit_column"],
                               level: float = _T["level"], latency: Estimate | None = None) -> Verdict:
    """Notebooks 05 and 06: removing the text for the last N − k steps keeps attribute accuracy.

    ``table``: one row per prompt (``unit_column``), setting and method, with columns ``sampler,
    steps, k, <unit_column>, <value>`` (accuracy in %) and optionally ``variant`` (05) or ``kind``
    (06's benchmark). Full CFG is the row with k = steps (kind ``"baseline"`` where present). Only
    the pre-registered setting is judged: ``sampler``, ``n_steps`` and k = round(k_fraction · N)
    (the paper's a = N/2) unless ``k`` is given, for ``variant`` (``"uncond"``: only ε(x_t, ∅) is
    kept). The paired difference full CFG − text removed (same seeds, percentage points) gets a
    paired-t interval: SUPPORTED when it lies inside (−margin, +margin) (strict); NOT SUPPORTED when
    it lies entirely outside (lo > margin or hi < −margin); else INCONCLUSIVE (the sample is too
    small to decide). Every other (sampler, N, k, variant) of the sweep goes to ``exploration``
    and never into the verdict. ``latency`` (06: ``stats.saved_latency`` at that setting) is reported
    only.

    Raises:
        ValueError: when columns are missing or the pre-registered setting is not in the table.
    """
    missing = {"sampler", "steps", "k", unit_column, value} - set(table.columns)
    if missing:
        raise ValueError(f"The sweep table lacks the columns {sorted(missing)}, so the rule cannot find its setting.")
    vcol = "variant" if "variant" in table else "kind" if "kind" in table else None
    k_reg = int(round(k_fraction * n_steps)) if k is None else int(k)
    if not 0 <= k_reg < n_steps:
        raise ValueError(f"k must lie in [0, N) to remove the text for some steps, got k={k_reg} for N={n_steps}.")
    try:
        est = _paired(table, sampler, n_steps, k_reg, variant, value, unit_column, vcol, level)
    except LookupError:
        raise ValueError(f"The pre-registered setting ({sampler}, N={n_steps}, k={k_reg}, variant {variant!r}) "
                         "and its full-CFG rows are not in the table, and no other setting may stand in.") from None
    rows, cols = [], ["sampler", "steps", "k", "variant", "difference", "lo", "hi", "n", "inside_margin"]
    for key, _ in table[table["k"] != table["steps"]].groupby(["sampler", "steps", "k"] + ([vcol] if vcol else [])):
        s, n, kk, var = str(key[0]), int(key[1]), int(key[2]), key[3] if vcol else variant
        if (s.lower(), n, kk, var) != (sampler.lower(), n_steps, k_reg, variant):
            try:
                e = _paired(table, s, n, kk, var, value, unit_column, vcol, level)
            except (LookupError, ValueError):  # a setting without paired full-CFG rows is not explored
                continue
            rows.append(dict(zip(cols, (s, n, kk, var, e.value, e.lo, e.hi, e.n, -margin < e.lo and e.hi < margin))))
    exploration = pd.DataFrame(rows, columns=cols)
    if -margin < est.lo and est.hi < margin:
        verdict, reason = SUPPORTED, f"the whole interval lies within ±{margin:g} pp"
    elif est.lo > margin or est.hi < -margin:
        verdict, reason = NOT_SUPPORTED, f"the difference is significantly beyond ±{margin:g} pp"
    else:
        verdict, reason = INCONCLUSIVE, (f"the interval crosses ±{margin:g} pp: n={est.n} is too small to decide "
                                         f"(half-width {est.half_width:.2g} pp)")
    extra = "" if latency is None else f"; saved latency {latency} (reported, not part of the rule)"
    if len(exploration):
        extra += (f"; exploration, not the verdict: {int(exploration['inside_margin'].sum())} of "
                  f"{len(exploration)} other settings have their interval inside the margin")
    rule = (f"paired t (same seeds) of {value}, full CFG minus text removed after k={k_reg} of N={n_steps} "
            f"({sampler.upper()}, {variant}): interval inside ±{margin:g} pp")
    return _make("Removing the text for the final steps keeps the prompt's attributes", verdict, est,
                 f"accuracy lost at k={k_reg} (a={n_steps - k_reg})", rule, reason, extra,
                 details={"k": k_reg, "latency": latency}, exploration=exploration)


# ----------------------------------------------------------------------------------------- 05
def text_conveyed_early(table: pd.DataFrame, *, early_fraction: float = _X["early_fraction"],
                        threshold: float = _X["threshold"], attribute: str = _X["attribute"],
                        against: str = _X["against"], level: float = _X["level"], n_boot: int = _X["n_boot"],
                        seed: int = _X["seed"]) -> Verdict:
    """Notebook 05: the conditioning of the first steps decides the shape (the causal switch test).

    ``table``: :func:`helpers.analysis.switch_test.readings_table` -- per pair (A, B), order (``"A->B"``: A
    for the first k steps, then B; ``"B->A"``) and k, whether the final image's ``attribute`` follows the
    early or the late prompt (``against`` the ``"images"`` of A alone and B alone from the same seed, or the
    ``"prompts"``). With N the table's steps and k* = round(early_fraction · N), a switch step of the table:
    per order, the rate of following the early prompt at k* gets a Wilson interval (n = usable pairs):
    SUPPORTED when its lower bound is ``> threshold`` in both orders; NOT SUPPORTED when some order's upper
    bound is ``< threshold``; else INCONCLUSIVE. Headline: the order with the lower rate. Reported only
    (``exploration``, never the verdict): both rates at every k, attribute and reference
    (``switch_test.rate_curve``); per attribute the crossover k, the first k at which more than
    ``threshold`` of the images (orders pooled) follow the early prompt, with a pair-bootstrap interval.
    Why: an image that keeps the early prompt's shape more often than not after N/5 steps of it and 4N/5
    of the other was decided by the first steps; both orders, so neither side wins by being easier to draw;
    the lower bound, so n counts (42 of 60 passes, 14 of 20 does not).
    """
    from .analysis import switch_test as sw

    if set(sw.COLUMNS) - set(table.columns) or table["steps"].nunique() != 1:
        raise ValueError(f"The switch table needs the columns {sw.COLUMNS} (switch_test.readings_table) and one N.")
    n_steps = int(table["steps"].iloc[0])
    k_reg = int(round(early_fraction * n_steps))  # k*
    at = table[(table["attribute"] == attribute) & (table["against"] == against) & (table["k"] == k_reg)].dropna()
    if not 0 < k_reg < n_steps or set(at["order"]) != set(sw.ORDERS):
        raise ValueError(f"The pre-registered switch step k={k_reg} (round({early_fraction:g} x N), N={n_steps}) "
                         f"needs usable {attribute!r} rows against the {against} in both orders {sw.ORDERS}.")
    rates = {o: tuple(stats.wilson(int(at.loc[at["order"] == o, c].sum()), int((at["order"] == o).sum()), level)
                      for c in ("early", "late")) for o in sw.ORDERS}
    worst = min(sw.ORDERS, key=lambda o: rates[o][0].value)
    failing = [o for o in sw.ORDERS if rates[o][0].hi < threshold]
    passing = all(r[0].lo > threshold for r in rates.values())
    verdict = SUPPORTED if passing else NOT_SUPPORTED if failing else INCONCLUSIVE
    cross = sw.crossover_table(table[table["against"] == against], threshold, level, n_boot, seed)
    crossing = {r.attribute: Estimate(r.crossover_k, r.lo, r.hi, r.n, r.method, level) for r in cross.itertuples()}
    other = sw.ORDERS[1 - sw.ORDERS.index(worst)]
    extra = (f"; {other}: {rates[other][0]}; following the late prompt at k={k_reg}: "
             + ", ".join(f"{o} {rates[o][1]}" for o in sw.ORDERS)
             + "; crossover k (early prompt wins), reported: "
             + ", ".join(f"{a} {e}" for a, e in crossing.items()))
    rule = (f"rate of following the early prompt's {attribute} (vs the {against}) at k={k_reg} "
            f"(round({early_fraction:g} x N), N={n_steps}): Wilson lower bound > {threshold:g} in both orders")
    reason = {SUPPORTED: f"in both orders the first {k_reg} of {n_steps} steps decide the {attribute}",
              NOT_SUPPORTED: f"in {' and '.join(failing)} fewer than {threshold:.0%} keep the early {attribute}",
              INCONCLUSIVE: f"an interval contains {threshold:g}: too few pairs to decide"}[verdict]
    return _make("The text is conveyed in the first steps (the early conditioning decides the shape)", verdict,
                 rates[worst][0], f"rate of following the early prompt's {attribute} at k={k_reg} ({worst})",
                 rule, reason, extra, details={"k": k_reg, "steps": n_steps, "rates": rates, "crossover": crossing},
                 exploration=sw.rate_curve(table, level))
