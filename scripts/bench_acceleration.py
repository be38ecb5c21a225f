"""Benchmark: training-free acceleration by removing text guidance, against T-GATE and DeepCache.

    python scripts/bench_acceleration.py                   # quick profile, embedded model (~2 min, 2 cores)
    python scripts/bench_acceleration.py --profile full    # 50/25/20 steps, DDIM + DPM-Solver++, 32 prompts
    python scripts/bench_acceleration.py --model-id stable-diffusion-v1-5/stable-diffusion-v1-5 --inception-fid
    accelerate launch --num_processes 4 scripts/bench_acceleration.py --profile full --model-id <id>   # 4 GPUs

Under ``accelerate launch`` the quality pass (every method on every prompt) is shared
among the processes (``helpers.bench.sharding``) and gathered into the files a single-process
run writes; every process times the same first batch on its own device, and process 0
writes its timings.

Writes ``results/acceleration/<profile>/`` (embedded model) or
``results/acceleration/<model>/<profile>/``: ``bench.csv`` (every number), ``bench.md``
(the table and how it was measured), ``times.csv`` (every timed call), ``parts.csv`` (each timed
call's denoiser calls at B and 2B rows, text encoder, VAE decode, scheduler), ``profile.csv`` (where the
full-CFG run's time goes), ``pareto.png``, ``examples_<sampler>_<N>.png`` (image rows per method) and
``meta.json`` (machine, load, model fingerprint). The methods
and the measurement protocol are documented in ``helpers/bench/acceleration.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", choices=("quick", "full"), default=None, help="default: $T2I_PROFILE or quick")
    p.add_argument("--model-id", default=None, help="default: $T2I_MODEL_ID or the embedded model")
    p.add_argument("--samplers", nargs="+", choices=("ddim", "dpm"), default=None)
    p.add_argument("--steps", nargs="+", type=int, default=None)
    p.add_argument("--n-prompts", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--focus-repeats", type=int, default=None,
                   help="timing rounds of full CFG, the pre-registered setting and DeepCache (+ compositions)")
    p.add_argument("--rule-prompts", type=int, default=None, help="prompts of the shared rule's setting (0: skip it)")
    p.add_argument("--batch-size", type=int, default=None, help="prompts per pipeline call (and per shard item)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--clip-model", default=None, help="CLIP for CLIPScore (default: the model's own / openai's)")
    p.add_argument("--inception-fid", action="store_true", help="also Inception FID (needs torch-fidelity)")
    p.add_argument("--no-metrics", action="store_true", help="timing and L1 only")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--rule-only", action="store_true",
                   help="only the shared rule's per-prompt table (rule_per_prompt.csv) of the pre-registered setting, "
                        "added to an existing results folder (the profile's rule_prompts prompts)")
    return p.parse_args(argv)


def main(argv=None) -> Path:
    args = parse_args(argv)
    import torch

    from helpers.bench import acceleration as acc
    from helpers import profile
    from helpers.bench import sharding
    from helpers.analysis.metrics import Scorer

    if args.threads:
        torch.set_num_threads(args.threads)
    config = acc.PROFILES[args.profile or os.environ.get(profile.ENV_VAR) or "quick"]
    changes = {"samplers": args.samplers, "steps": args.steps, "n_prompts": args.n_prompts, "repeats": args.repeats,
               "batch_size": args.batch_size, "focus_repeats": args.focus_repeats, "rule_prompts": args.rule_prompts}
    config = dataclasses.replace(config, **{k: tuple(v) if isinstance(v, list) else v
                                            for k, v in changes.items() if v is not None})
    scorer = None if args.no_metrics else Scorer(args.clip_model) if args.clip_model else "auto"
    if args.rule_only:
        return acc.run_rule_only(config, profile.get_model_id(args.model_id), args.out, scorer)
    out = acc.run_benchmark(config, profile.get_model_id(args.model_id), args.out, scorer, args.inception_fid)
    if (out / "bench.md").exists() and sharding.is_main_process():
        print((out / "bench.md").read_text())
    return out


if __name__ == "__main__":
    main()
