"""Notebook 05's study: when the text acts during sampling (the paper's section 5, Figs 5-8).

One :class:`TextEarlyStudy` holds what every section shares (the pipeline, :class:`Settings`, the scorer,
the seed, where the sweeps keep their chunks); each section is one function:

* :func:`causal_switch` -- the headline: prompt A for the first k steps, then B, and B then A, on
  S-PromptSet pairs whose shapes differ (:func:`helpers.analysis.influence.differing_pairs`); the
  evaluator reads each final image (:mod:`helpers.analysis.switch_test`), the rule
  :func:`helpers.verdicts.text_conveyed_early` decides;
* :func:`eos_switch` -- Figs 5-6: A against its switched-[EOS] prompt (A's words, B's [EOS]), both orders;
* :func:`text_removal` -- Figs 7-8a/c: full CFG for k steps, then the text removed (uncond / cond);
* :func:`x0_norms` -- Fig 8b's norms also in x̂0 space, where they act on the image: times
  sqrt((1 - ᾱ_t) / ᾱ_t) (x̂0 = (x_t - sqrt(1 - ᾱ_t) ε) / sqrt(ᾱ_t));
* :func:`removal_rule_table`, :func:`summary` (the numbers of ``summary.json``) and :func:`verdict`.

Every image of prompt or pair ``i`` starts from the noise of ``seed + i``; every generation goes through
:func:`helpers.sweeps.sample_sweep` under ``sweep_dir(name)``, so a crashed run resumes.

>>> study = TextEarlyStudy.build(ctx.pipe, ctx.model_id, ctx.profile, seed=0, sweep_dir=ctx.sweep_dir)
>>> test = causal_switch(study); verdicts.text_conveyed_early(test.table)
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .. import guidance, promptsets, sweeps, verdicts
from ..loading import uses_toy_world
from ..bench.timing import x0_guidance_scale
from ..profile import Profile, count_setting as _count
from ..text import surgery
from . import alignment, metrics, switch_test
from .influence import differing_pairs

#: The [EOS] switch's orders (Fig 6): S = A's words + B's [EOS].
EOS_ORDERS = {"first->second": "S → A (B's [EOS] first)", "second->first": "A → S (A first)"}
#: The causal switch test's orders: sweeps.switch_jobs(A, B, ...) keys -> switch_test.ORDERS.
CAUSAL_ORDERS = {"first->second": "A->B", "second->first": "B->A"}
REMOVE_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
SWITCH_FRACTIONS = (0.0, 0.1, 0.2, 0.4, 0.7, 1.0)
#: k / N of the causal switch test: dense early, and up to 0.9 N so that a late crossover is found too.
CAUSAL_FRACTIONS = (0.04, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)


def ks_of(fractions: Sequence[float], steps: int) -> list[int]:
    """Step counts k for fractions of N (0 and N included, duplicates dropped)."""
    return sorted({int(round(f * steps)) for f in fractions} | {0, steps})


@dataclasses.dataclass(frozen=True)
class Settings:
    """How much notebook 05 measures (:meth:`for_run`).

    Attributes:
        steps, guidance: the profile's sampling settings.
        n_prompts: prompts of the text-removal sweep (quick 8, full 24: exploration).
        n_rule_prompts: prompts of the text-removal rule's setting (full profile; quick: ``n_prompts``).
        n_pairs: pairs of the [EOS] switch (quick 4, full 8).
        n_switch_pairs: pairs whose shapes differ, for the causal switch test (quick 4, full 60).
        remove_ks, switch_ks, causal_ks: the k of each sweep (0 and N included).
        use_evaluator: the toy world's attribute evaluator applies; pair_set, prompt_set: which sets.
    """

    steps: int
    guidance: float
    quick: bool
    n_prompts: int
    n_rule_prompts: int
    n_pairs: int
    n_switch_pairs: int
    remove_ks: tuple[int, ...]
    switch_ks: tuple[int, ...]
    causal_ks: tuple[int, ...]
    use_evaluator: bool
    pair_set: str
    prompt_set: str

    @classmethod
    def for_run(cls, model_id: str | None, profile: Profile, n_prompts: int | None = None,
                n_rule_prompts: int = 200, n_pairs: int | None = None, n_switch_pairs: int | None = None,
                remove_fractions: Sequence[float] = REMOVE_FRACTIONS,
                switch_fractions: Sequence[float] = SWITCH_FRACTIONS,
                causal_fractions: Sequence[float] = CAUSAL_FRACTIONS) -> "Settings":
        """The notebook's parameters (``None``: the profile's default)."""
        quick, steps = profile.is_quick, profile.num_inference_steps
        for name, fractions in (("remove", remove_fractions), ("switch", switch_fractions),
                                ("causal", causal_fractions)):
            if not fractions or any(not 0 <= f <= 1 for f in fractions):
                raise ValueError(f"the {name} fractions must be k / N values in [0, 1], got {fractions!r}.")
        return cls(steps=steps, guidance=profile.guidance_scale, quick=quick,
                   n_prompts=_count(n_prompts, "N_PROMPTS", 8 if quick else 24),
                   n_rule_prompts=_count(n_rule_prompts, "N_RULE_PROMPTS", 200),
                   n_pairs=_count(n_pairs, "N_PAIRS", 4 if quick else 8),
                   n_switch_pairs=_count(n_switch_pairs, "N_SWITCH_PAIRS", 4 if quick else 60),
                   remove_ks=tuple(ks_of(remove_fractions, steps)), switch_ks=tuple(ks_of(switch_fractions, steps)),
                   causal_ks=tuple(ks_of(causal_fractions, steps)), use_evaluator=uses_toy_world(model_id),
                   pair_set="toy" if uses_toy_world(model_id) else "natural",
                   prompt_set=promptsets.default_prompt_set_name(model_id))

    def __str__(self) -> str:
        return (f"N={self.steps}, w={self.guidance}; text-removal k: {list(self.remove_ks)}; "
                f"[EOS]-switch k: {list(self.switch_ks)}; causal switch test k: {list(self.causal_ks)} "
                f"on {self.n_switch_pairs} pairs")


@dataclasses.dataclass
class TextEarlyStudy:
    """What the sections share; ``sweep_dir(name)`` gives a sweep's chunk folder (``None``: in memory)."""

    pipe: Any
    settings: Settings
    scorer: metrics.Scorer
    seed: int = 0
    batch_size: int | None = None
    sweep_dir: Callable[[str], Path] | None = None

    @classmethod
    def build(cls, pipe, model_id: str | None, profile: Profile, *, seed: int = 0, batch_size: int | None = None,
              sweep_dir: Callable[[str], Path] | None = None, **settings) -> "TextEarlyStudy":
        """The study of a notebook run; ``settings`` go to :meth:`Settings.for_run`."""
        return cls(pipe, Settings.for_run(model_id, profile, **settings), alignment.scorer_for(model_id), seed,
                   batch_size, sweep_dir)

    @property
    def common(self) -> dict:
        """The sampling arguments every sweep shares."""
        s = self.settings
        return dict(num_inference_steps=s.steps, guidance_scale=s.guidance, seed=self.seed, batch_size=self.batch_size)

    def folder(self, name: str) -> Path | None:
        return None if self.sweep_dir is None else self.sweep_dir(name)


# ------------------------------------------------------------------------ the causal switch test
@dataclasses.dataclass
class CausalSwitch:
    """The causal switch test: ``table`` (:func:`switch_test.readings_table`, the rule's input), ``readings``
    (per image: pair, order, k and what the reader read), the first ``n_show`` pairs' images per (order, k)."""

    pairs: list
    ks: tuple[int, ...]
    steps: int
    table: pd.DataFrame
    readings: pd.DataFrame
    examples: dict[tuple[str, int], np.ndarray]

    @property
    def k_rule(self) -> int:
        """The rule's switch step k* = round(early_fraction · N) (:data:`helpers.verdicts.RULES`)."""
        return int(round(verdicts.RULES["text_early"]["early_fraction"] * self.steps))

    @functools.cached_property
    def curve(self) -> pd.DataFrame:
        """:func:`switch_test.rate_curve`: rates of following the early / late prompt per attribute, order and k."""
        return switch_test.rate_curve(self.table, verdicts.RULES["text_early"]["level"])

    @functools.cached_property
    def crossover(self) -> pd.DataFrame:
        """:func:`switch_test.crossover_table` with the rule's threshold, level and bootstrap."""
        r = verdicts.RULES["text_early"]
        return switch_test.crossover_table(self.table, r["threshold"], r["level"], r["n_boot"], r["seed"])

    def tables(self) -> dict[str, pd.DataFrame]:
        """File stem -> table: per-image readings, the rate curve, the crossover k per attribute and reference."""
        return {"switch_test_readings": self.readings, "switch_test_curve": self.curve,
                "switch_test_crossover": self.crossover}


def _clip_reading(scorer: metrics.Scorer, images: np.ndarray, pairs: Sequence) -> list[dict]:
    """Real models: which prompt's text CLIPScore prefers, "A" or "B" (the stand-in for the evaluator)."""
    a = scorer.clip_score(images, [p.source.prompt for p in pairs])
    b = scorer.clip_score(images, [p.target.prompt for p in pairs])
    return [{"CLIPScore": "A" if x > y else "B"} for x, y in zip(a, b)]


def causal_switch(study: TextEarlyStudy, n_show: int = 2) -> CausalSwitch:
    """Prompt A for the first k steps then B, and B then A, for every k of ``settings.causal_ks``; read every image.

    The toy world reads every attribute with the evaluator; a real model reads which prompt CLIPScore prefers.
    Pure A and pure B (k = N and k = 0) are generated once and shared by the two orders (sweep ``causal_switch``).
    """
    s = study.settings
    pairs = differing_pairs(s.pair_set, n=s.n_switch_pairs)
    if len(pairs) < s.n_switch_pairs:
        raise ValueError(f"the {s.pair_set} S-PromptSet has only {len(pairs)} pairs whose objects differ, "
                         f"fewer than the {s.n_switch_pairs} asked for.")
    first, second = [p.source.prompt for p in pairs], [p.target.prompt for p in pairs]
    jobs = sweeps.switch_jobs(first, second, s.causal_ks)
    runs = sweeps.sample_sweep(study.pipe, jobs, study.folder("causal_switch"), record=False, desc="causal switch test",
                               **study.common)
    read, cache, rows = {}, {}, []
    for (order, k), run in runs.items():
        if id(run) not in cache:  # pure A and pure B are one run each
            cache[id(run)] = (study.scorer.attributes(run.images) if s.use_evaluator
                              else _clip_reading(study.scorer, run.images, pairs))
        read[CAUSAL_ORDERS[order], k] = cache[id(run)]
        rows += [{"pair": i, "order": CAUSAL_ORDERS[order], "k": k, **r} for i, r in enumerate(cache[id(run)])]
    truth = ([p.source.attributes for p in pairs], [p.target.attributes for p in pairs]) if s.use_evaluator else \
        ([{"CLIPScore": "A"}] * len(pairs), [{"CLIPScore": "B"}] * len(pairs))
    attributes = alignment.ATTRIBUTES if s.use_evaluator else ("CLIPScore",)
    table = switch_test.readings_table(read, *truth, steps=s.steps, attributes=attributes)
    examples = {(CAUSAL_ORDERS[o], k): run.images[:n_show].copy() for (o, k), run in runs.items()}
    return CausalSwitch(pairs, s.causal_ks, s.steps, table, pd.DataFrame(rows), examples)


# ----------------------------------------------------------------------- the [EOS] switch (Fig 6)
@dataclasses.dataclass
class EOSSwitch:
    """Figs 5-6: ``images`` per (order, k), ``table`` (``fig6_switch_alignment``), the metrics shown."""

    pairs: list
    images: dict[tuple[str, int], np.ndarray]
    table: pd.DataFrame
    metrics_shown: list[str]


def eos_switch(study: TextEarlyStudy) -> EOSSwitch:
    """Switch at step k between A and S (A's words + B's [EOS]), both orders (sweep ``switch``)."""
    s, pipe = study.settings, study.pipe
    pairs = alignment.load_s_prompt_set(s.pair_set, n=s.n_pairs)
    A = [surgery.encode(pipe, p.source.prompt) for p in pairs]
    S = [surgery.switch_eos(a, surgery.encode(pipe, p.target.prompt)) for a, p in zip(A, pairs)]
    switch_runs = sweeps.sample_sweep(pipe, sweeps.switch_jobs(S, A, s.switch_ks), study.folder("switch"),
                                      record=False, desc="switch sweep", **study.common)
    switch_images = {name: run.images for name, run in switch_runs.items()}
    rows = []
    for (order, k), images in switch_images.items():
        df = alignment.score_source_target(study.scorer, images, [p.source for p in pairs], [p.target for p in pairs],
                                           evaluator=s.use_evaluator)
        for metric, (src, tgt) in alignment.metric_columns(df).items():
            rows.append({"order": EOS_ORDERS[order], "k": k, "metric": metric,
                         "A (source)": df[src].mean(), "B (target)": df[tgt].mean()})
    switch_table = pd.DataFrame(rows)
    shown = [m for m in ("evaluator: shape", "CLIPScore") if m in set(switch_table["metric"])]
    return EOSSwitch(pairs, switch_images, switch_table, shown)


# --------------------------------------------------------------------- text removal (Figs 7-8)
@dataclasses.dataclass
class Removal:
    """Figs 7-8a/c: the runs per (variant, k), one row per prompt and setting (``table``), its summary."""

    prompts: list[str]
    runs: dict
    table: pd.DataFrame
    summary: pd.DataFrame
    align: str
    attribute_columns: list[str]

    @property
    def full(self) -> guidance.GuidanceRun:
        """The full-CFG run (k = N), which recorded the norms."""
        return self.runs["uncond", max(k for _, k in self.runs)]


def text_removal(study: TextEarlyStudy) -> Removal:
    """CFG for the first k steps, then ε(x_t, ∅) (uncond) or ε(x_t, C) (cond) (sweep ``text_removal``)."""
    s, scorer = study.settings, study.scorer
    records = promptsets.load_prompt_set(s.prompt_set, n=s.n_prompts)
    prompts = [r.prompt for r in records]
    truths = [r.attributes for r in records]
    runs = sweeps.sample_sweep(study.pipe, sweeps.text_window_jobs(prompts, s.remove_ks),
                               study.folder("text_removal"), desc="text-removal sweep", **study.common)
    full = runs["uncond", s.steps]

    def alignment_scores(images):
        """Per image: attribute accuracy in % (toy world) and CLIPScore with its own prompt."""
        out = {"CLIPScore": scorer.clip_score(images, prompts)}
        if s.use_evaluator:
            predicted = scorer.attributes(images)
            out["attribute accuracy %"] = 100 * metrics.attribute_alignment(predicted, truths)
            out.update({f"{name} %": 100 * hits for name, hits in metrics.attribute_hits(predicted, truths).items()})
        return out

    rows = []
    for (variant, k), run in runs.items():
        scores = alignment_scores(run.images)
        l1 = metrics.l1_distance(run.images, full.images)
        for i in range(len(prompts)):
            rows.append({"variant": variant, "k": k, "a": s.steps - k, "prompt": i, "L1 to full CFG": l1[i],
                         **{name: values[i] for name, values in scores.items()}})
    removal = pd.DataFrame(rows)
    removal_summary = removal.groupby(["variant", "k"]).agg(["mean", "sem"]).drop(columns=["prompt", "a"])
    align = "attribute accuracy %" if s.use_evaluator else "CLIPScore"
    columns = [c for c in removal.columns if c.endswith(" %") and c != "attribute accuracy %"]
    return Removal(prompts, runs, removal, removal_summary, align, columns)


def x0_scale(pipe, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """ᾱ_t and sqrt((1 - ᾱ_t) / ᾱ_t) at the ``steps`` timesteps the pipeline's scheduler samples, in sampling
    order (a copy of the scheduler is set up: the pipeline's own is not touched)."""
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    t = np.asarray(scheduler.timesteps).astype(np.int64)
    if len(t) != steps:
        raise ValueError(f"{type(scheduler).__name__} samples {len(t)} timesteps for {steps} steps: no x̂0 scale.")
    abar = np.asarray(scheduler.alphas_cumprod, dtype=np.float64)[t]
    return abar, x0_guidance_scale(abar)


def x0_norms(run: guidance.GuidanceRun, pipe) -> pd.DataFrame:
    """The recorded ||ε_u|| and ||ε_c − ε_u|| in x̂0 space (times sqrt((1 - ᾱ_t) / ᾱ_t)), per step: mean and
    standard deviation over prompts (the pipeline applies the guidance term times w, a constant)."""
    abar, scale = x0_scale(pipe, run.num_inference_steps)
    rows = []
    for name, values in (("||eps_u||", run.eps_uncond_norm), ("||eps_c - eps_u||", run.diff_norm)):
        for step in range(values.shape[1]):
            column = values[:, step] * scale[step]
            column = column[np.isfinite(column)]
            if column.size:
                rows.append({"step": step, "a": run.num_inference_steps - step, "quantity": f"{name} in x0 space",
                             "alpha_bar": float(abar[step]), "scale": float(scale[step]),
                             "mean": float(column.mean()), "std": float(column.std()), "n": int(column.size)})
    return pd.DataFrame(rows)


def norms_text(norms: pd.DataFrame, x0: pd.DataFrame, early_fraction: float = 0.2) -> str:
    """The guidance ratio at the first, middle and last step, and the share of the x̂0-space guidance norm
    (summed over the steps) in the first ``early_fraction`` of them."""
    ratio = norms[norms["quantity"] == "||eps_c - eps_u|| / ||eps_u||"].set_index("step")["mean"]
    g = x0[x0["quantity"] == "||eps_c - eps_u|| in x0 space"].set_index("step")["mean"]
    early = int(round(early_fraction * len(g)))
    return (f"guidance ratio: {ratio.iloc[0]:.3f} at the first step, {ratio.iloc[len(ratio) // 2]:.3f} at "
            f"mid-sampling, {ratio.iloc[-1]:.3f} at the last step\n||eps_c - eps_u|| in x0 space: {g.iloc[0]:.3g} "
            f"at the first step, {g.iloc[-1]:.3g} at the last; the first {early} of {len(g)} steps carry "
            f"{g.iloc[:early].sum() / g.sum():.0%} of its sum over the steps")


# ------------------------------------------------------------------- summary, rules and verdict
def removal_rule_table(study: TextEarlyStudy, removal: Removal) -> tuple[pd.DataFrame, dict, list[str]]:
    """The text-removal rule's table (``text_removal_per_prompt``: full profile, ``n_rule_prompts`` prompts at
    the pre-registered k = N/2, sweep ``rule``), the rule's arguments and the caveats of this run."""
    s = study.settings
    STEPS, ALIGN, scorer = s.steps, removal.align, study.scorer
    SAMPLER = {"DDIMScheduler": "ddim", "DPMSolverMultistepScheduler": "dpm"}.get(
        type(study.pipe.scheduler).__name__, type(study.pipe.scheduler).__name__)
    R = verdicts.RULES["text_removal"]
    rule_table = removal.table.assign(sampler=SAMPLER, steps=STEPS)[["sampler", "steps", "k", "variant", "prompt",
                                                                     ALIGN]]
    N_RULE = len(removal.prompts) if s.quick else max(len(removal.prompts), s.n_rule_prompts)
    if N_RULE > len(removal.prompts):  # the pre-registered setting on enough prompts for the +-margin interval
        rule_records = promptsets.load_prompt_set(s.prompt_set, n=N_RULE)
        rule_prompts, rule_truths = [r.prompt for r in rule_records], [r.attributes for r in rule_records]
        k_rule = int(round(R["k_fraction"] * STEPS))
        jobs = {STEPS: (rule_prompts, None), k_rule: (rule_prompts, guidance.TextWindow(k_rule, R["variant"]))}
        rows = []
        for k, run in sweeps.sample_sweep(study.pipe, jobs, study.folder("rule"), record=False, desc="verdict run",
                                          **study.common).items():
            if s.use_evaluator:
                values = 100 * metrics.attribute_alignment(scorer.attributes(run.images), rule_truths)
            else:
                values = scorer.clip_score(run.images, rule_prompts)
            rows += [{"sampler": SAMPLER, "steps": STEPS, "k": k, "variant": R["variant"], "prompt": i, ALIGN: x}
                     for i, x in enumerate(values)]
        rule_table = pd.DataFrame(rows)
    rule_args, caveats = {}, []
    if s.quick:  # the pre-registered N is 50: the quick profile's N stands in, exploratory only
        rule_args["n_steps"] = STEPS
        caveats.append(f"quick profile (exploratory): N={STEPS}, not the pre-registered "
                       f"{R['sampler'].upper()} {R['n_steps']}")
    if ALIGN != R["value"]:  # real models: no attribute ground truth
        rule_args["value"] = ALIGN
        caveats.append(f"no attribute ground truth on this model: {ALIGN} stands in for the pre-registered "
                       f"{R['value']}")
    return rule_table, rule_args, caveats


def summary(study: TextEarlyStudy, removal: Removal, switch: EOSSwitch, norms: pd.DataFrame, max_drop: float,
            claim_fraction: float, model: str, started: float) -> dict:
    """``summary.json``: the text-removal and [EOS]-switch numbers (exploration beside the verdict); ``started``:
    the run's start (``time.time()``, e.g. ``ctx.started``) for its seconds."""
    s, data, ALIGN, STEPS = study.settings, removal.table, removal.align, study.settings.steps
    means = data.groupby(["variant", "k"])[ALIGN].mean()
    full_level = means["uncond", STEPS]
    smallest = {v: min(k for k in s.remove_ks if means[v, k] >= full_level - max_drop) for v in guidance.VARIANTS}
    k_min = smallest["uncond"]
    k_claim = max(k for k in s.remove_ks if k <= claim_fraction * STEPS)
    l1_at = data[(data["variant"] == "uncond") & (data["k"] == k_claim)]["L1 to full CFG"].mean()
    uncond_means = data[data["variant"] == "uncond"].groupby("k")[removal.attribute_columns].mean()
    attribute_change = (uncond_means.loc[k_claim] - uncond_means.loc[STEPS]).sort_values()
    sw_metric = "CLIPScore" if "CLIPScore" in switch.metrics_shown else switch.metrics_shown[0]
    sw = switch.table[(switch.table["metric"] == sw_metric) & (switch.table["order"] == EOS_ORDERS["first->second"])]
    sw = sw.set_index("k")
    follows_b = [k for k in s.switch_ks if sw.loc[k, "B (target)"] > sw.loc[k, "A (source)"]]
    k_cross = min(follows_b) if follows_b else None
    ratio = norms[norms["quantity"] == "||eps_c - eps_u|| / ||eps_u||"].set_index("step")["mean"]
    return {"steps": STEPS, "prompts": len(removal.prompts), "pairs": len(switch.pairs), "alignment metric": ALIGN,
            "full CFG": float(full_level), "smallest k (uncond)": k_min, "smallest k (cond)": smallest["cond"],
            "paper a at that k": STEPS - k_min, "k at the claim": k_claim, "L1 at k_claim": float(l1_at),
            "S->A follows B from k": k_cross,
            "change at k_claim by attribute": {c.removesuffix(" %"): float(v) for c, v in attribute_change.items()},
            "first-step ratio": float(ratio.iloc[0]), "last-step ratio": float(ratio.iloc[-1]),
            "model": model, "seconds": round(time.time() - started, 1)}


def verdict(study: TextEarlyStudy, test: CausalSwitch, rule_table: pd.DataFrame, rule_args: Mapping[str, Any],
            caveats: Sequence[str], random_weights: bool = False) -> tuple[verdicts.Verdict | None, str | None]:
    """The headline (:func:`helpers.verdicts.text_conveyed_early` on the causal switch test) with the text-removal
    rule (:func:`helpers.verdicts.text_removal_keeps_quality`, 06's verdict) attached as ``related``: a second
    measurement, with its caveats and its exploration in its details (``verdict.json``). Returns the verdict (``None`` when random weights
    leave a rule nothing to read) and why the run can only be INCONCLUSIVE (``None``: it can be decided)."""
    s = study.settings
    try:
        removal = verdicts.text_removal_keeps_quality(rule_table, **rule_args)
        removal = dataclasses.replace(removal, details={**removal.details, "caveats": list(caveats),
                                                        "exploration": removal.exploration})
    except ValueError as err:
        if not random_weights:
            raise
        removal = None
        print(f"Random weights (mechanics check only): the text-removal rule cannot be applied ({err}).")
    why = []
    if s.quick:
        why.append(f"quick profile (exploratory): N={s.steps} and {len(test.pairs)} pairs")
    if not s.use_evaluator:
        why.append("no attribute evaluator on this model: which prompt CLIPScore prefers stands in for the shape")
    try:
        v = verdicts.text_conveyed_early(test.table, **({} if s.use_evaluator else {"attribute": "CLIPScore"}))
    except ValueError as err:
        if not random_weights:
            raise
        return None, f"Random weights (mechanics check only): the rule cannot be applied ({err})."
    return (v if removal is None else dataclasses.replace(v, related=(removal,))), "; ".join(why) or None


def related_text(v: verdicts.Verdict) -> str:
    """The second measurement's reading (the text-removal rule) with its exploration table."""
    out = []
    for r in v.related:
        out.append(f"second measurement (06's verdict, reported here): [{r.verdict}] {r.sentence}")
        if r.details.get("caveats"):
            out.append("  caveats: " + "; ".join(r.details["caveats"]))
        if r.exploration is not None and len(r.exploration):
            out.append("  exploration, not the verdict (paired t per setting):\n"
                       + r.exploration.round(2).to_string(index=False))
    return "\n".join(out)
