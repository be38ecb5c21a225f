"""Generate prompts x seeds x methods, sharded over processes with ``accelerate``; one result file.

One process (any machine)::

    python scripts/shard_demo.py --out results/shard_demo.json

Several GPUs (or machines: add --num_machines/--machine_rank/--main_process_ip)::

    accelerate launch --num_processes 4 scripts/shard_demo.py --model stable-diffusion-v1-5/stable-diffusion-v1-5 --out results/shard_demo.json

Two CPU processes (gloo), as the test does::

    accelerate launch --multi_gpu --num_processes 2 scripts/shard_demo.py --model random:sd21 --out /tmp/demo.json

Every run writes the same file: one JSON row per (prompt, seed, method) with the
image's mean colour and a hash of its pixels. ``--model random:<kind>`` uses a
random-weight pipeline of :mod:`helpers.toy.random_pipelines` (mechanics only).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.bench import sharding

#: Method name -> classifier-free guidance scale.
METHODS = {"cfg": 7.5, "nocfg": 1.0}
DEFAULT_PROMPTS = ("a red circle", "a blue star on the left", "a small green heart", "two pink squares")


def load(model: str | None):
    """The pipeline for ``--model`` on this process's device."""
    if model and model.startswith("random:"):
        from helpers.toy.random_pipelines import random_pipeline

        return random_pipeline(model.split(":", 1)[1]).to(sharding.process_device())
    from helpers.loading import load_pipeline

    return load_pipeline(model, device=sharding.process_device())


def make_fn(pipe, steps: int):
    """The per-item work: generate one image and summarise it (seed from the item, never the rank)."""
    from helpers.generation import generate

    def fn(item: sharding.WorkItem) -> dict:
        fn.calls += 1
        image = generate(
            pipe, item.prompt, seed=item.seed, num_inference_steps=steps,
            guidance_scale=METHODS[item.method], progress=False,
        )[0]
        return {
            "index": item.index,
            "prompt": item.prompt,
            "seed": item.seed,
            "method": item.method,
            "mean_rgb": [round(float(v), 6) for v in image.reshape(-1, 3).mean(0)],
            "sha1": hashlib.sha1(image.astype("float32").tobytes()).hexdigest(),
        }

    fn.calls = 0
    return fn


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model id, local folder, or random:<kind> (default: embedded model)")
    parser.add_argument("--prompts", type=int, default=len(DEFAULT_PROMPTS), help="how many of the demo prompts")
    parser.add_argument("--seeds", type=int, default=2, help="seeds 0 .. N-1 per prompt")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    items = sharding.work_items(DEFAULT_PROMPTS[: args.prompts], range(args.seeds), args.methods)
    pipe = load(args.model)
    fn = make_fn(pipe, args.steps)
    results = sharding.run_sharded(items, fn, args.out)
    st = sharding.state()
    print(f"process {st.process_index}/{st.num_processes}: computed {fn.calls} of {len(items)} items", flush=True)
    if st.is_main_process:
        print(f"{len(results)} results from {st.num_processes} process(es) written to {args.out}")
    return results


if __name__ == "__main__":
    main()
