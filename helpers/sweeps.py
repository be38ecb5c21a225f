"""Resumable sweeps: work items computed chunk by chunk, each chunk saved as soon as it is done.

>>> results = run_sweep(items, fn, "results/.../sweeps/k4", chunk_size=16)   # a rerun skips finished chunks
>>> runs = sample_sweep(pipe, text_window_jobs(prompts, [0, 10, 50]), out_dir, num_inference_steps=50)

* ``fn(chunk_items)`` returns one result per item: JSON values (``None``, bools, numbers, strings;
  lists, tuples, dicts with string keys) and numpy arrays or scalars. They come back exactly
  (dtypes, tuples, scalar types), whether computed now or read from disk.
* Per chunk, ``out_dir/chunk_00000.json`` (fingerprint, item indices, results) is written last and,
  when results hold arrays, ``chunk_00000.<fingerprint>.npz`` first; both atomically (temporary file,
  then ``os.replace``), so a killed run leaves whole chunks only.
* A chunk's fingerprint hashes ``key`` (model, settings, code: :func:`pipeline_key`), its indices and
  its items (arrays and tensors by their bytes). A chunk on disk with another fingerprint (other
  items, batch size, model, settings or code) is **recomputed and overwritten**, with one warning per
  sweep; a matching chunk is read, never recomputed.
* Results must not depend on the chunking: each item carries its own seed (as
  :class:`helpers.bench.sharding.WorkItem` does); nothing is derived from a chunk's position.
* Under ``accelerate launch`` every process lists the unfinished chunks, waits for the others, computes
  its contiguous share (``split_between_processes`` of :func:`helpers.bench.sharding.state`), waits,
  then reads every chunk: ``out_dir`` must be on a filesystem all processes see.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)
_PACKAGE = Path(__file__).resolve().parent


class SweepError(ValueError):
    """A sweep cannot be chunked, stored or read back as asked; the message says why."""


def run_sweep(items: Sequence, fn: Callable[[list], Sequence], out_dir: str | Path | None = None, *,
              chunk_size: int | None = None, chunks: Sequence[Sequence[int]] | None = None, key: Any = None,
              desc: str = "sweep", progress: bool = True) -> list:
    """``fn`` over ``items`` chunk by chunk; the results in the order of ``items``.

    Args:
        items: the work; each item says everything its result depends on (its seed included).
        fn: called with the items of one chunk, returns as many results (see the module docstring).
        out_dir: where chunks are saved and found again; ``None``: in memory only (no resuming; under
            ``accelerate launch`` every process then computes everything).
        chunk_size: items per chunk (default 1); or ``chunks``: index lists that split
            ``range(len(items))`` (e.g. the batches of a pipeline call).
        key: what else the results depend on (model, settings), for the fingerprint.
        desc: label of the tqdm bar (ETA; it counts items and starts at the finished ones).

    Raises:
        SweepError: bad chunks, an ``fn`` returning the wrong number of results or values that cannot
            be stored, items that cannot be fingerprinted, or a chunk missing after the run.
    """
    items = list(items)
    chunks = _chunks(len(items), chunk_size, chunks)
    out: list = [None] * len(items)
    if out_dir is None:
        with tqdm(total=len(items), desc=desc, unit="item", disable=not progress) as bar:
            for idx in chunks:
                for i, r in zip(idx, _call(fn, [items[i] for i in idx])):
                    out[i] = r
                bar.update(len(idx))
        return out
    from .bench.sharding import state

    out_dir, st, salt = Path(out_dir), state(), fingerprint(key)
    prints = [fingerprint({"key": salt, "indices": idx, "items": [items[i] for i in idx]}) for idx in chunks]
    found = [_stored_fingerprint(out_dir, c) for c in range(len(chunks))]
    pending = [c for c, fp in enumerate(prints) if found[c] != fp]
    stale = sum(found[c] is not None for c in pending)
    if stale and st.is_main_process:
        logger.warning("%d of %d chunks in %s were written by another sweep (other items, batch size, model, "
                       "settings or code): they are recomputed.", stale, len(chunks), out_dir)
    st.wait_for_everyone()  # every process has listed the unfinished chunks before any process writes one
    with st.split_between_processes(pending) as mine:
        mine = list(mine)
    done = len(items) - sum(len(chunks[c]) for c in pending)
    label = desc if st.num_processes == 1 else f"{desc} [process {st.process_index}/{st.num_processes}]"
    with tqdm(total=done + sum(len(chunks[c]) for c in mine), initial=done, desc=label, unit="item",
              disable=not progress) as bar:
        for c in mine:
            _write(out_dir, c, prints[c], chunks[c], _call(fn, [items[i] for i in chunks[c]]))
            bar.update(len(chunks[c]))
    st.wait_for_everyone()
    for c, idx in enumerate(chunks):
        for i, r in zip(idx, _read(out_dir, c, prints[c])):
            out[i] = r
    return out


def _chunks(n: int, chunk_size: int | None, chunks) -> list[list[int]]:
    if chunks is not None:
        if chunk_size is not None:
            raise SweepError("give chunk_size or chunks, not both")
        chunks = [[int(i) for i in c] for c in chunks]
        if any(not c for c in chunks) or sorted(i for c in chunks for i in c) != list(range(n)):
            raise SweepError(f"chunks must split the {n} items: every index 0..{n - 1} exactly once, no empty chunk")
        return chunks
    size = 1 if chunk_size is None else chunk_size
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise SweepError(f"chunk_size must be a positive integer, not {chunk_size!r}")
    return [list(range(s, min(n, s + size))) for s in range(0, n, size)]


def _call(fn: Callable, chunk: list) -> list:
    results = list(fn(chunk))
    if len(results) != len(chunk):
        raise SweepError(f"fn returned {len(results)} results for a chunk of {len(chunk)} items")
    return results


def _plain(x: Any) -> bool:
    """A JSON scalar (numpy scalars excluded: ``np.float64`` is a ``float``)."""
    return x is None or isinstance(x, (bool, int, float, str)) and not isinstance(x, np.generic)


def fingerprint(value: Any) -> str:
    """sha256 hex digest of JSON values, tuples, dicts, dataclasses, paths, numpy arrays and tensors
    (dtype, shape and bytes). Equal values give equal digests."""
    h = hashlib.sha256()
    _feed(h, value)
    return h.hexdigest()


def _feed(h, x: Any) -> None:
    if _plain(x):
        h.update(f"{type(x).__name__}:{x!r};".encode())
    elif isinstance(x, os.PathLike):
        _feed(h, os.fspath(x))
    elif isinstance(x, (list, tuple)):
        h.update(f"{type(x).__name__}[{len(x)}]".encode())
        for v in x:
            _feed(h, v)
    elif isinstance(x, Mapping):
        h.update(f"dict[{len(x)}]".encode())
        for k in sorted(x, key=str):
            _feed(h, str(k))
            _feed(h, x[k])
    elif dataclasses.is_dataclass(x) and not isinstance(x, type):
        h.update(f"{type(x).__qualname__}(".encode())
        for f in dataclasses.fields(x):
            _feed(h, f.name)
            _feed(h, getattr(x, f.name))
    elif isinstance(x, (np.ndarray, np.generic)) or hasattr(x, "detach"):
        a = x.detach().cpu() if hasattr(x, "detach") else np.asarray(x)
        header = f"array:{a.dtype}:{tuple(a.shape)};"
        if hasattr(a, "numpy"):  # a tensor; bfloat16 has no numpy type, its float32 copy holds the same values
            a = a.float().numpy() if str(a.dtype) == "torch.bfloat16" else a.numpy()
        if a.dtype.hasobject:
            raise SweepError("cannot fingerprint an array of Python objects")
        h.update(header.encode() + np.ascontiguousarray(a).tobytes())
    else:
        raise SweepError(f"cannot fingerprint a {type(x).__name__} for a resumable sweep: describe items and keys "
                         "with JSON values, dataclasses, numpy arrays or tensors")


def _encode(x: Any, arrays: dict) -> Any:
    if _plain(x):
        return x
    if isinstance(x, (np.ndarray, np.generic)):
        a = np.asarray(x)
        if a.dtype.hasobject:
            raise SweepError("sweep results cannot hold arrays of Python objects")
        name = f"a{len(arrays)}"
        arrays[name] = a
        return {"__array__": name, "scalar": isinstance(x, np.generic)}
    if isinstance(x, (list, tuple)):
        values = [_encode(v, arrays) for v in x]
        return {"__tuple__": values} if isinstance(x, tuple) else values
    if isinstance(x, dict):
        if not all(isinstance(k, str) for k in x) or "__array__" in x or "__tuple__" in x:
            raise SweepError("dicts in sweep results need string keys other than '__array__' and '__tuple__'")
        return {k: _encode(v, arrays) for k, v in x.items()}
    raise SweepError(f"fn returned a {type(x).__name__}: sweep results must be JSON values (numbers, strings, "
                     "lists, tuples, dicts with string keys) or numpy arrays (tensors: .cpu().numpy())")


def _decode(x: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if isinstance(x, list):
        return [_decode(v, arrays) for v in x]
    if isinstance(x, dict):
        if "__array__" in x:
            a = arrays[x["__array__"]]
            return a[()] if x["scalar"] else a
        if "__tuple__" in x:
            return tuple(_decode(v, arrays) for v in x["__tuple__"])
        return {k: _decode(v, arrays) for k, v in x.items()}
    return x


def _chunk_path(out_dir: Path, c: int) -> Path:
    return out_dir / f"chunk_{c:05d}.json"


def _atomic(path: Path, write: Callable) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _write(out_dir: Path, c: int, fp: str, idx: list[int], results: list) -> None:
    arrays: dict[str, np.ndarray] = {}
    encoded = [_encode(r, arrays) for r in results]
    out_dir.mkdir(parents=True, exist_ok=True)
    npz = f"chunk_{c:05d}.{fp[:16]}.npz" if arrays else None
    if npz is not None:
        _atomic(out_dir / npz, lambda fh: np.savez(fh, **arrays))
    text = json.dumps({"fingerprint": fp, "indices": idx, "arrays": npz, "results": encoded})
    _atomic(_chunk_path(out_dir, c), lambda fh: fh.write(text.encode()))
    for old in out_dir.glob(f"chunk_{c:05d}.*.npz"):  # the arrays of an earlier sweep's chunk c
        if old.name != npz:
            old.unlink(missing_ok=True)


def _stored_fingerprint(out_dir: Path, c: int) -> str | None:
    """The fingerprint of chunk ``c`` on disk when it is complete (its arrays present), else ``None``."""
    try:
        record = json.loads(_chunk_path(out_dir, c).read_text())
        arrays = record["arrays"]
        return record["fingerprint"] if arrays is None or (out_dir / arrays).is_file() else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _read(out_dir: Path, c: int, fp: str) -> list:
    path = _chunk_path(out_dir, c)
    try:
        record = json.loads(path.read_text())
    except OSError:
        raise SweepError(f"{path} is missing after every process finished: is {out_dir} on a filesystem "
                         "all processes see?") from None
    if record["fingerprint"] != fp:
        raise SweepError(f"{path} was overwritten by another sweep during this run: give each sweep its own out_dir")
    arrays = {}
    if record["arrays"] is not None:
        with np.load(out_dir / record["arrays"], allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    return [_decode(r, arrays) for r in record["results"]]


def code_version() -> str:
    """A hash of the ``helpers`` package's source: chunks written by other code are recomputed."""
    h = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        h.update(str(path.relative_to(_PACKAGE)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


@functools.lru_cache(maxsize=256)
def _file_hash(path: str, size: int, mtime_ns: int) -> str | int:
    """Content hash of a file up to 256 MiB; larger files are known by size and mtime only."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if size <= 2**28 else mtime_ns


def _weights_version(name: str | None) -> Any:
    """A local pipeline folder: its files and their hashes; a hub id: the commit of its cached snapshot."""
    if not name:
        return None
    path = Path(name)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return [(str(p.relative_to(path)), _file_hash(str(p), p.stat().st_size, p.stat().st_mtime_ns)) for p in files]
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "model_index.json")
    except Exception:  # no hub client, or an id it refuses: the id alone keys the chunks
        return None
    return Path(cached).parent.name if isinstance(cached, str) else None


def pipeline_key(pipe) -> dict:
    """What a sweep of pipeline calls depends on besides its items: model and weights, dtype, device
    type, scheduler and its config, and the code (:func:`code_version`)."""
    from .loading import denoiser

    model, name = denoiser(pipe), getattr(pipe, "name_or_path", None)
    return {"pipeline": type(pipe).__name__, "model": name, "weights": _weights_version(name),
            "dtype": str(model.dtype), "device": model.device.type, "scheduler": type(pipe.scheduler).__name__,
            "scheduler_config": dict(pipe.scheduler.config), "code": code_version()}


def text_window_jobs(prompts, text_steps: Sequence[int], variants: Sequence[str] | None = None) -> dict:
    """The runs of :func:`helpers.guidance.sweep_text_window` as :func:`sample_sweep` jobs, keys ``(variant, k)``."""
    from .guidance import VARIANTS, TextWindow

    ks = sorted({int(k) for k in text_steps})
    return {(v, k): (prompts, TextWindow(k, v)) for v in (VARIANTS if variants is None else variants) for k in ks}


def switch_jobs(first, second, text_steps: Sequence[int]) -> dict:
    """The runs of :func:`helpers.guidance.sweep_switch`, keys ``("first->second" | "second->first", k)``."""
    from .guidance import Switch

    orders = {"first->second": (first, second), "second->first": (second, first)}
    return {(o, k): (a, Switch(k, b)) for o, (a, b) in orders.items() for k in sorted({int(k) for k in text_steps})}


def sample_sweep(pipe, jobs: Mapping[Any, tuple], out_dir: str | Path | None = None, *, seed: int = 0,
                 batch_size: int | None = None, num_inference_steps: int = 50, guidance_scale: float = 7.5,
                 desc: str = "sample", progress: bool = True, **sample_kwargs) -> dict:
    """:func:`helpers.guidance.sample` for every job ``name -> (prompts, schedule)``, as one resumable sweep.

    A job gives what ``sample(pipe, prompts, schedule, seed=seed, batch_size=batch_size, ...)`` gives: the
    same batches (one chunk each), prompt ``i`` from the noise of ``seed + i``, its prompts encoded in one
    batch as ``sample`` does. Jobs doing the same work run once and share their ``GuidanceRun``:
    ``TextWindow(N)`` and ``Switch(N, b)`` are full CFG, ``Switch(0, b)`` is full CFG on ``b``.
    ``batch_size=None``: ``sample``'s default.
    """
    from . import guidance

    steps = num_inference_steps
    if batch_size is None:
        batch_size = inspect.signature(guidance.sample).parameters["batch_size"].default
    work: dict[str, tuple] = {}  # fingerprint of (prompts, schedule) -> (prompts, schedule, first item)
    alias, items, chunks = {}, [], []
    for name, (prompts, schedule) in jobs.items():
        prompts = [prompts] if isinstance(prompts, str) or dataclasses.is_dataclass(prompts) else list(prompts)
        if isinstance(schedule, guidance.Switch) and schedule.text_steps == 0 and isinstance(schedule.second, (list, tuple)):
            prompts, schedule = list(schedule.second), None
        elif isinstance(schedule, (guidance.Switch, guidance.TextWindow)) and schedule.text_steps == steps:
            schedule = None
        if not prompts:
            raise SweepError(f"job {name!r} has no prompts")
        job = alias[name] = fingerprint((prompts, schedule))
        if job in work:
            continue
        work[job] = (prompts, schedule, len(items))
        second = schedule.second if isinstance(schedule, guidance.Switch) else None
        bare = schedule if second is None else dataclasses.replace(schedule, second=None)
        start, n = len(items), len(prompts)
        items += [(job, r, p, None if second is None else second[r], bare, seed + r) for r, p in enumerate(prompts)]
        chunks += [list(range(start + s, start + min(n, s + batch_size))) for s in range(0, n, batch_size)]
    encoded: dict[str, tuple] = {}

    def fn(chunk: list) -> list:
        job, rows = chunk[0][0], slice(chunk[0][1], chunk[-1][1] + 1)
        prompts, schedule, _ = work[job]
        if job not in encoded:  # all of a job's prompts in one batch, as sample() encodes them
            cond = guidance._as_batch(pipe, prompts)
            switch = isinstance(schedule, guidance.Switch)
            encoded[job] = cond, guidance._as_conditioning(pipe, schedule.second, cond) if switch else None
        cond, second = encoded[job]
        part = schedule if second is None else dataclasses.replace(schedule, second=second[rows])
        run = guidance.sample(pipe, cond[rows], part, seed=chunk[0][5], batch_size=len(chunk),
                              num_inference_steps=steps, guidance_scale=guidance_scale, **sample_kwargs)
        norms = np.stack([run.eps_uncond_norm, run.eps_cond_norm, run.diff_norm])
        return [{"image": run.images[j], "norms": norms[:, j], "text_steps": int(run.text_steps[j]),
                 "calls": run.denoiser_calls if j == 0 else 0, "rows": run.denoiser_rows if j == 0 else 0}
                for j in range(len(chunk))]

    key = None if out_dir is None else {"helper": "sample_sweep", "pipeline": pipeline_key(pipe), "steps": steps,
                                        "guidance": guidance_scale, "kwargs": sample_kwargs}
    results = run_sweep(items, fn, out_dir, chunks=chunks, key=key, desc=desc, progress=progress)
    runs = {}
    for job, (prompts, _, start) in work.items():
        part = results[start:start + len(prompts)]
        norms = np.stack([r["norms"] for r in part], axis=1)
        runs[job] = guidance.GuidanceRun(
            images=np.stack([r["image"] for r in part]), eps_uncond_norm=norms[0], eps_cond_norm=norms[1],
            diff_norm=norms[2], text_steps=np.array([r["text_steps"] for r in part]).astype(int),
            denoiser_calls=sum(r["calls"] for r in part), denoiser_rows=sum(r["rows"] for r in part),
            num_inference_steps=steps)
    return {name: runs[alias[name]] for name in jobs}
