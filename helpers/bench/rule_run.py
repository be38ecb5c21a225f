"""The pre-registered setting of the rule shared by notebooks 05 and 06, measured by the benchmark.

:func:`rule_quality` scores full CFG and the text removed at ``helpers.verdicts.RULES["text_removal"]``
prompt by prompt; :func:`composition_quality` scores DeepCache alone and composed with the text windows
on the same prompts and seeds (the equivalence test of the composition,
:func:`helpers.bench.summaries.composition_verdict`); :func:`run_rule_only` writes only those tables
into a run's results folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from ..analysis import metrics
from ..loading import scheduler_set
from .acceleration import BenchConfig, Method, _generate_sharded, methods_for, results_dir
from .peers import peer_status


def rule_quality(pipe, config: BenchConfig, records: Sequence, toy: bool, scorer,
                 log: Callable[[str], None] = print) -> pd.DataFrame | None:
    """Per-prompt quality of full CFG and of the pre-registered text removal (the shared rule of 05 and 06).

    The setting is ``helpers.verdicts.RULES["text_removal"]`` (DDIM, N = 50, k = N/2, uncond): measured
    here on ``config.rule_prompts`` prompts, the same prompts and seeds as notebook 05's rule run, so the
    two notebooks judge one intervention on one table. ``None`` when the profile does not measure it.
    """
    from ..verdicts import RULES

    rule = RULES["text_removal"]
    if not records or scorer is None or rule["sampler"] not in config.samplers or rule["n_steps"] not in config.steps:
        return None
    steps, k = rule["n_steps"], int(round(rule["k_fraction"] * rule["n_steps"]))
    prompts = [r.prompt for r in records]
    column = rule["value"] if toy else "CLIPScore"
    rows = []
    with scheduler_set(pipe, rule["sampler"]):
        for kk, method in ((steps, Method("full CFG", "baseline", steps)),
                           (k, Method(f"text off after k={k} ({rule['variant']})", rule["variant"], k))):
            images, _, _ = _generate_sharded(pipe, method, prompts, steps, config.guidance_scale, config.seed,
                                             config.batch_size)
            values = _scores(scorer, images, records, toy)
            rows += [{"sampler": rule["sampler"], "steps": steps, "k": kk, "variant": rule["variant"], "prompt": i,
                      column: float(v)} for i, v in enumerate(values)]
            log(f"  [rule {rule['sampler']} N={steps}] {method.label}: {len(prompts)} prompts scored")
    return pd.DataFrame(rows)


def _scores(scorer, images, records, toy: bool):
    if toy:
        return 100 * metrics.attribute_alignment(scorer.attributes(images), [r.attributes for r in records])
    return scorer.clip_score(images, [r.prompt for r in records])


def composition_quality(pipe, config: BenchConfig, records: Sequence, toy: bool, scorer,
                        log: Callable[[str], None] = print) -> pd.DataFrame | None:
    """Per-prompt quality of DeepCache alone and of its compositions with the text windows, at the rule's
    sampler and N, on the prompts and seeds of :func:`rule_quality` (whose full-CFG rows they pair with).

    The methods are the benchmark's own (:func:`helpers.bench.acceleration.methods_for`: every
    ``deepcache_intervals``, composed at every ``compose_fractions``). Columns ``sampler, steps, k, kind,
    cache_interval, method, prompt`` and the rule's value (CLIPScore without attribute ground truth).
    ``None`` when the profile does not measure the rule's setting or DeepCache does not run here.
    """
    from ..verdicts import RULES

    rule = RULES["text_removal"]
    if not records or scorer is None or rule["sampler"] not in config.samplers or rule["n_steps"] not in config.steps:
        return None
    peers = peer_status(pipe)
    if peers.get("deepcache") is not None:
        log(f"  [composition] not measured: DeepCache {peers['deepcache']}")
        return None
    steps, column = rule["n_steps"], rule["value"] if toy else "CLIPScore"
    methods = [m for m in methods_for(steps, config, {}, {"tgate": "not here", "deepcache": None})
               if m.kind.startswith("deepcache")]
    rows = []
    with scheduler_set(pipe, rule["sampler"]):
        for method in methods:
            images, _, _ = _generate_sharded(pipe, method, [r.prompt for r in records], steps, config.guidance_scale,
                                             config.seed, config.batch_size)
            k = steps if method.kind == "deepcache" else method.text_steps
            rows += [{"sampler": rule["sampler"], "steps": steps, "k": k, "kind": method.kind,
                      "cache_interval": method.cache_interval, "method": method.label, "prompt": i, column: float(v)}
                     for i, v in enumerate(_scores(scorer, images, records, toy))]
            log(f"  [composition {rule['sampler']} N={steps}] {method.label}: {len(records)} prompts scored")
    return pd.DataFrame(rows)


def run_rule_only(config: BenchConfig, model_id: str | None = None, out: Path | None = None, scorer="auto",
                  compose: bool = True) -> Path:
    """Write only ``rule_per_prompt.csv`` (:func:`rule_quality`) and, with ``compose``,
    ``compose_per_prompt.csv`` (:func:`composition_quality`) into a run's results folder."""
    from .. import promptsets
    from ..analysis import alignment
    from ..loading import load_pipeline, uses_toy_world

    out = Path(out) if out is not None else results_dir(config.name, model_id)
    out.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(model_id)
    records = promptsets.load_prompt_set(promptsets.default_prompt_set_name(model_id))[:config.rule_prompts]
    scorer = alignment.scorer_for(model_id) if scorer == "auto" else scorer
    rule = rule_quality(pipe, config, records, uses_toy_world(model_id), scorer)
    if rule is None:
        raise ValueError(f"profile {config.name!r} measures no rule setting (rule_prompts={config.rule_prompts}, "
                         f"samplers {config.samplers}, steps {config.steps})")
    rule.to_csv(out / "rule_per_prompt.csv", index=False)
    print(f"wrote {out / 'rule_per_prompt.csv'} ({len(rule)} rows)")
    if compose:
        composed = composition_quality(pipe, config, records, uses_toy_world(model_id), scorer)
        if composed is not None:
            composed.to_csv(out / "compose_per_prompt.csv", index=False)
            print(f"wrote {out / 'compose_per_prompt.csv'} ({len(composed)} rows)")
    return out
