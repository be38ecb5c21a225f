"""Scale-out: share a list of work items among processes with Hugging Face ``accelerate``.

The same script runs unchanged on one process or on many::

    python scripts/shard_demo.py --out results/demo.json                                   # one process
    accelerate launch --num_processes 4 scripts/shard_demo.py --out results/demo.json      # 4 GPUs
    accelerate launch --multi_gpu --num_processes 2 scripts/shard_demo.py --out ...        # 2 CPU processes (gloo)

Each process takes a contiguous share of the items
(``PartialState().split_between_processes``), computes its results, and the results
are gathered (``accelerate.utils.gather_object``) back into the items' original order.
Process 0 writes the file, which is therefore identical to the one a single-process
run writes -- provided the work function is deterministic per item: derive every seed
from the item itself (:class:`WorkItem` carries one), never from the process rank.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import torch

T = TypeVar("T")
R = TypeVar("R")
#: File formats :func:`save_results` writes, by suffix.
FORMATS = (".json", ".npy", ".pt")


class ShardingError(ValueError):
    """Work items or their results cannot be sharded, gathered or written as asked."""


@dataclasses.dataclass(frozen=True)
class WorkItem:
    """One unit of generation work: a prompt (and its index in the prompt set), a seed, a method."""

    index: int
    prompt: str
    seed: int
    method: str


def work_items(prompts: Sequence[str], seeds: Sequence[int], methods: Sequence[str] = ("stock",)) -> list[WorkItem]:
    """Every (prompt, seed, method) combination, prompt-major, as :class:`WorkItem` s."""
    if isinstance(prompts, str) or isinstance(methods, str):
        raise ShardingError("prompts and methods must be sequences of strings, not a single string")
    return [
        WorkItem(index=i, prompt=p, seed=int(s), method=m)
        for (i, p), s, m in itertools.product(enumerate(prompts), seeds, methods)
    ]


def state():
    """The process group of this run (``accelerate.PartialState``; one process when not launched).

    Launched processes without a GPU form a CPU group (gloo), so the same launch
    command works on a laptop, in CI and on a multi-GPU node.
    """
    import os

    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    launched = int(os.environ.get("LOCAL_RANK", -1)) != -1 or int(os.environ.get("WORLD_SIZE", 1)) > 1
    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or (launched and not torch.cuda.is_available())
    return PartialState(cpu=cpu)


def process_device() -> torch.device:
    """The device this process should load its pipeline on (its own GPU under ``accelerate launch``)."""
    return state().device


def is_main_process() -> bool:
    """True on the process that writes files (rank 0), and always on a single-process run."""
    return state().is_main_process


def run_sharded(
    items: Sequence[T],
    fn: Callable[[Any], Any],
    out_path: str | Path | None = None,
    *,
    batch_size: int | None = None,
    writer: Callable[[list, Path], None] | None = None,
) -> list:
    """Compute ``fn`` over ``items`` shared among all processes; every process gets all results.

    Args:
        items: the work, in the order the results should have (e.g. :func:`work_items`).
        fn: called with one item and returning its result; with ``batch_size``, called with
            a list of up to ``batch_size`` consecutive items and returning a list of as many
            results (to batch pipeline calls).
        out_path: when given, process 0 writes the gathered results there with ``writer``
            (default :func:`save_results`, format by suffix: .json, .npy, .pt); the other
            processes wait until the file exists.
        batch_size: see ``fn``; ``None`` calls ``fn`` item by item.
        writer: ``writer(results, path)`` for other formats.

    Returns:
        The results of all items, in the order of ``items``, on every process.

    Raises:
        ShardingError: bad ``batch_size``, an ``fn`` returning the wrong number of results,
            or results the chosen format cannot hold.
    """
    items = list(items)
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ShardingError(f"batch_size must be a positive integer or None, not {batch_size!r}")
    if out_path is not None and writer is None and Path(out_path).suffix not in FORMATS:
        raise ShardingError(f"cannot write {out_path}: choose a suffix among {', '.join(FORMATS)} or pass writer=")
    st = state()
    with st.split_between_processes(list(range(len(items)))) as mine:
        local = list(zip(mine, _compute([items[i] for i in mine], fn, batch_size)))
    gathered = sorted(_gather(local, st), key=lambda pair: pair[0])
    if [i for i, _ in gathered] != list(range(len(items))):
        raise ShardingError("the gathered results do not cover every work item exactly once")
    results = [r for _, r in gathered]
    if out_path is not None:
        if st.is_main_process:
            path = Path(out_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            (writer or save_results)(results, path)
        st.wait_for_everyone()
    return results


def _compute(mine: list, fn: Callable, batch_size: int | None) -> list:
    if batch_size is None:
        return [fn(item) for item in mine]
    out: list = []
    for start in range(0, len(mine), batch_size):
        chunk = mine[start:start + batch_size]
        results = list(fn(chunk))
        if len(results) != len(chunk):
            raise ShardingError(f"fn returned {len(results)} results for a batch of {len(chunk)} items")
        out.extend(results)
    return out


def _gather(local: list, st) -> list:
    """All processes' (index, result) pairs; tensors travel on CPU (pickled by ``gather_object``)."""
    if st.num_processes == 1:
        return local
    from accelerate.utils import gather_object

    local = [(i, _to_cpu(r)) for i, r in local]
    return gather_object(local)


def _to_cpu(result):
    if isinstance(result, torch.Tensor):
        return result.detach().cpu()
    if isinstance(result, dict):
        return {k: _to_cpu(v) for k, v in result.items()}
    if isinstance(result, (list, tuple)):
        return type(result)(_to_cpu(v) for v in result)
    return result


def save_results(results: list, path: str | Path) -> None:
    """Write results by suffix: ``.json`` (JSON values, numpy scalars/arrays allowed),
    ``.npy`` (equal-shape arrays, stacked), ``.pt`` (anything ``torch.save`` takes)."""
    path = Path(path)
    if path.suffix == ".json":
        try:
            text = json.dumps(results, indent=1, default=_jsonable)
        except TypeError as err:
            raise ShardingError(f"results cannot be written as JSON ({err}); use .npy or .pt") from None
        path.write_text(text + "\n")
    elif path.suffix == ".npy":
        arrays = [np.asarray(r.cpu() if isinstance(r, torch.Tensor) else r) for r in results]
        if len({a.shape for a in arrays}) > 1:
            raise ShardingError("results of different shapes cannot be stacked into .npy; use .pt or .json")
        np.save(path, np.stack(arrays) if arrays else np.empty((0,)))
    elif path.suffix == ".pt":
        torch.save(_to_cpu(list(results)), path)
    else:
        raise ShardingError(f"cannot write {path}: choose a suffix among {', '.join(FORMATS)}")


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
