"""The pre-registered setting of the rule shared by notebooks 05 and 06, measured by the benchmark.

:func:`rule_quality` scores full CFG and the text removed at ``helpers.verdicts.RULES["text_removal"]``
prompt by prompt; :func:`run_rule_only` writes only that table into a run's results folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from ..analysis import metrics
from ..loading import scheduler_set
from .acceleration import BenchConfig, Method, _generate_sharded, results_dir


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
            if toy:
                values = 100 * metrics.attribute_alignment(scorer.attributes(images), [r.attributes for r in records])
            else:
                values = scorer.clip_score(images, prompts)
            rows += [{"sampler": rule["sampler"], "steps": steps, "k": kk, "variant": rule["variant"], "prompt": i,
                      column: float(v)} for i, v in enumerate(values)]
            log(f"  [rule {rule['sampler']} N={steps}] {method.label}: {len(prompts)} prompts scored")
    return pd.DataFrame(rows)


def run_rule_only(config: BenchConfig, model_id: str | None = None, out: Path | None = None, scorer="auto") -> Path:
    """Write only ``rule_per_prompt.csv`` (:func:`rule_quality`) into a run's results folder."""
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
    return out
