"""Resumable sweeps (helpers.sweeps): chunked = unchunked, reruns skip finished chunks, a killed run
resumes to the same results, stale chunks are recomputed; the pipeline sweeps of notebooks 04/05 equal
the helpers they replace, bit for bit, also after a resume."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.sweeps import SweepError, fingerprint, run_sweep

ROOT = Path(__file__).resolve().parent.parent

# The work of the number sweeps, shared with the child process of the kill test: each item carries its seed.
WORK = '''
import numpy as np

ITEMS = [{"index": i, "seed": 100 + i} for i in range(10)]


def work(item):
    rng = np.random.default_rng(item["seed"])
    return {"index": item["index"], "value": rng.normal(size=3).astype(np.float32), "mean": np.float64(rng.random()),
            "pair": (item["index"], "x"), "n": int(rng.integers(10)), "none": None}
'''
_ns: dict = {}
exec(WORK, _ns)
ITEMS, work = _ns["ITEMS"], _ns["work"]


def same(a, b) -> bool:
    """Equal values of equal types (arrays: dtype, shape and values)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


class Counted:
    """The sweep function, counting its calls (one per computed chunk)."""

    def __init__(self):
        self.chunks: list[list[int]] = []

    def __call__(self, chunk):
        self.chunks.append([it["index"] for it in chunk])
        return [work(it) for it in chunk]


@pytest.mark.parametrize("chunk_size", [1, 3, 100])
def test_chunked_equals_unchunked(tmp_path, chunk_size):
    expected = [work(it) for it in ITEMS]
    on_disk = run_sweep(ITEMS, Counted(), tmp_path / "s", chunk_size=chunk_size, progress=False)
    in_memory = run_sweep(ITEMS, Counted(), None, chunk_size=chunk_size, progress=False)
    assert same(on_disk, expected) and same(in_memory, expected)
    assert len(list((tmp_path / "s").glob("chunk_*.json"))) == -(-len(ITEMS) // chunk_size)


def test_a_rerun_skips_finished_chunks(tmp_path):
    first, again, partial = Counted(), Counted(), Counted()
    results = run_sweep(ITEMS, first, tmp_path, chunk_size=4, progress=False)
    assert first.chunks == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert same(run_sweep(ITEMS, again, tmp_path, chunk_size=4, progress=False), results) and again.chunks == []
    (tmp_path / "chunk_00001.json").unlink()
    assert same(run_sweep(ITEMS, partial, tmp_path, chunk_size=4, progress=False), results)
    assert partial.chunks == [[4, 5, 6, 7]]


def test_killed_run_resumes_to_the_same_results(tmp_path):
    """A child process dies (os._exit) while computing its third chunk; the rerun computes only the rest."""
    child = WORK + '''
import os, sys
from helpers.sweeps import run_sweep
calls = []
def fn(chunk):
    calls.append(1)
    if len(calls) == 3:
        os._exit(1)  # killed half-way: two chunks are on disk
    return [work(it) for it in chunk]
run_sweep(ITEMS, fn, sys.argv[1], chunk_size=3, key="demo", progress=False)
'''
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", child, str(tmp_path / "killed")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "killed").glob("chunk_*.json")) == ["chunk_00000.json", "chunk_00001.json"]
    resumed = Counted()
    results = run_sweep(ITEMS, resumed, tmp_path / "killed", chunk_size=3, key="demo", progress=False)
    assert resumed.chunks == [[6, 7, 8], [9]]
    assert same(results, run_sweep(ITEMS, Counted(), tmp_path / "whole", chunk_size=3, key="demo", progress=False))
    assert same(results, [work(it) for it in ITEMS])


@pytest.mark.slow
def test_two_processes_share_one_sweep(tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo): each computes its share of the chunks into the same
    folder; a later single-process run finds every chunk there and gets the results of a plain run."""
    import socket

    script = tmp_path / "sweep_demo.py"
    script.write_text(WORK + '''
import sys
from helpers.bench.sharding import state
from helpers.sweeps import run_sweep
calls = []
def fn(chunk):
    calls.append(len(chunk))
    return [work(it) for it in chunk]
assert len(run_sweep(ITEMS, fn, sys.argv[1], chunk_size=2, key="demo", progress=False)) == len(ITEMS)
print(f"process {state().process_index}: computed {len(calls)} chunks", flush=True)
''')
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([*launch, str(script), str(tmp_path / "shared")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "process 0: computed 3 chunks" in done.stdout and "process 1: computed 2 chunks" in done.stdout
    again = Counted()
    results = run_sweep(ITEMS, again, tmp_path / "shared", chunk_size=2, key="demo", progress=False)
    assert again.chunks == [] and same(results, [work(it) for it in ITEMS])


def test_stale_chunks_are_recomputed_with_a_warning(tmp_path, caplog):
    run_sweep(ITEMS, Counted(), tmp_path, chunk_size=4, key={"model": "a"}, progress=False)
    changed = [dict(it, seed=7) if it["index"] == 5 else it for it in ITEMS]
    again = Counted()
    with caplog.at_level(logging.WARNING, logger="helpers.sweeps"):
        results = run_sweep(changed, again, tmp_path, chunk_size=4, key={"model": "a"}, progress=False)
    assert again.chunks == [[4, 5, 6, 7]] and same(results, [work(it) for it in changed])
    assert "1 of 3 chunks" in caplog.text and "recomputed" in caplog.text
    other_key = Counted()
    run_sweep(changed, other_key, tmp_path, chunk_size=4, key={"model": "b"}, progress=False)
    assert len(other_key.chunks) == 3
    regrouped = Counted()  # other chunk boundaries: other fingerprints
    assert same(run_sweep(changed, regrouped, tmp_path, chunk_size=5, key={"model": "b"}, progress=False), results)
    assert len(regrouped.chunks) == 2


def test_damaged_chunks_count_as_unfinished(tmp_path):
    run_sweep(ITEMS, Counted(), tmp_path, chunk_size=5, progress=False)
    (tmp_path / "chunk_00000.json").write_text('{"fingerprint": ')  # e.g. a hand-edited file
    for npz in tmp_path.glob("chunk_00001.*.npz"):
        npz.unlink()
    (tmp_path / ".chunk_00002.json.123.tmp").write_text("half a file")  # a killed writer's temporary file
    again = Counted()
    assert same(run_sweep(ITEMS, again, tmp_path, chunk_size=5, progress=False), [work(it) for it in ITEMS])
    assert again.chunks == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert json.loads((tmp_path / "chunk_00000.json").read_text())["indices"] == [0, 1, 2, 3, 4]


def test_results_come_back_with_their_types(tmp_path):
    values = [{"t": (1, (2.5, "a")), "f32": np.float32(1.5), "f64": np.float64(0.1), "i64": np.int64(3),
               "zero_d": np.array(2.0), "b": True, "nan": float("nan"), "nested": [[1, 2], {"x": np.arange(3)}]}]
    out = run_sweep([0], lambda chunk: values, tmp_path, progress=False)[0]
    assert same({k: v for k, v in out.items() if k != "nan"}, {k: v for k, v in values[0].items() if k != "nan"})
    assert np.isnan(out["nan"]) and type(out["f64"]) is np.float64 and type(out["zero_d"]) is np.ndarray


def test_explicit_chunks_and_bad_input(tmp_path):
    seen = Counted()
    results = run_sweep(ITEMS[:5], seen, tmp_path, chunks=[[0, 1], [2], [3, 4]], progress=False)
    assert seen.chunks == [[0, 1], [2], [3, 4]] and same(results, [work(it) for it in ITEMS[:5]])
    cases = [
        (dict(chunk_size=0), "chunk_size must be a positive integer"),
        (dict(chunks=[[0, 1], [1, 2, 3, 4]]), "exactly once"),
        (dict(chunks=[[0, 1, 2, 3, 4], []]), "no empty chunk"),
        (dict(chunks=[[0, 1, 2, 3, 4]], chunk_size=2), "not both"),
    ]
    for kwargs, message in cases:
        with pytest.raises(SweepError, match=message):
            run_sweep(ITEMS[:5], Counted(), tmp_path / "bad", progress=False, **kwargs)
    with pytest.raises(SweepError, match="returned 1 results for a chunk of 2"):
        run_sweep([1, 2], lambda chunk: [0], tmp_path / "bad", chunk_size=2, progress=False)
    with pytest.raises(SweepError, match="JSON values"):
        run_sweep([1], lambda chunk: [object()], tmp_path / "bad", progress=False)
    with pytest.raises(SweepError, match="string keys"):
        run_sweep([1], lambda chunk: [{1: "a"}], tmp_path / "bad", progress=False)
    with pytest.raises(SweepError, match="cannot fingerprint a function"):
        run_sweep([lambda: 0], lambda chunk: [0], tmp_path / "bad", progress=False)
    assert run_sweep([], Counted(), tmp_path / "empty", progress=False) == []


def test_fingerprints_see_values_not_identity():
    a, b = np.arange(4, dtype=np.float32), np.arange(4, dtype=np.float32)
    assert fingerprint({"x": a, "k": (1, "s")}) == fingerprint({"k": (1, "s"), "x": b})
    assert fingerprint(a) != fingerprint(a.astype(np.float64)) != fingerprint(a.reshape(2, 2))
    assert fingerprint([1, 2]) != fingerprint((1, 2)) and fingerprint(1) != fingerprint(1.0) != fingerprint(True)


# ------------------------------------------------------------------ the pipeline sweeps of notebooks 04 and 05


@pytest.fixture(scope="module")
def embeddings(tiny_pipe):
    from helpers.text import surgery

    a, b, c = (surgery.encode(tiny_pipe, p) for p in ("a red circle on the left", "a blue striped star",
                                                      "a large green heart"))
    return a, b, surgery.switch_eos(a, b), surgery.switch_eos(c, a)


def test_generate_from_embeddings_resumes_bit_identical(tiny_pipe, embeddings, tmp_path):
    from helpers.text import surgery

    kw = dict(num_inference_steps=2, batch_size=2, seed=5, progress=False)
    reference = surgery.generate_from_embeddings(tiny_pipe, embeddings, **kw)
    first = surgery.generate_from_embeddings(tiny_pipe, embeddings, out_dir=tmp_path, **kw)
    assert first.dtype == reference.dtype and np.array_equal(first, reference)
    assert len(list(tmp_path.glob("chunk_*.json"))) == 2  # one chunk per batch
    (tmp_path / "chunk_00001.json").unlink()
    assert np.array_equal(surgery.generate_from_embeddings(tiny_pipe, embeddings, out_dir=tmp_path, **kw), reference)


def test_kl_of_a_resumed_substitution_equals_an_uninterrupted_one(tiny_pipe, embeddings, tmp_path):
    from helpers.hooks import kv

    a, b, s, t = embeddings
    kw = dict(keys=[s, t, b], measure_kl=True, num_inference_steps=2, batch_size=2, progress=False)
    images, kl = kv.generate_substituted(tiny_pipe, [a, b, a], **kw)
    for attempt in range(2):
        if attempt:
            (tmp_path / "chunk_00000.json").unlink()
        again, resumed = kv.generate_substituted(tiny_pipe, [a, b, a], out_dir=tmp_path, **kw)
        assert np.array_equal(again, images)
        assert (resumed.sums, resumed.count, resumed.per_layer) == (kl.sums, kl.count, kl.per_layer)


def test_sample_sweep_equals_the_guidance_sweeps(tiny_pipe, embeddings, tmp_path):
    from helpers import guidance, sweeps

    prompts = ["a red circle on the left", "a blue striped star", "a large green heart"]
    kw = dict(num_inference_steps=3, guidance_scale=7.5, seed=2, batch_size=2)
    reference = guidance.sweep_text_window(tiny_pipe, prompts, [0, 1, 3], **kw)
    for attempt in range(2):  # computed, then resumed after losing a chunk
        runs = sweeps.sample_sweep(tiny_pipe, sweeps.text_window_jobs(prompts, [0, 1, 3]), tmp_path / "tw",
                                   progress=False, **kw)
        assert list(runs) == list(reference) and runs["uncond", 3] is runs["cond", 3]
        for name, run in runs.items():
            ref = reference[name]
            assert np.array_equal(run.images, ref.images), name
            assert (run.text_steps == ref.text_steps).all() and run.denoiser_rows == ref.denoiser_rows
        assert np.array_equal(runs["uncond", 3].diff_norm, reference["uncond", 3].diff_norm, equal_nan=True)
        (tmp_path / "tw" / "chunk_00003.json").unlink()
    a, b, s, t = embeddings
    switched = guidance.sweep_switch(tiny_pipe, [s, t], [a, b], [0, 1, 3], **kw)
    runs = sweeps.sample_sweep(tiny_pipe, sweeps.switch_jobs([s, t], [a, b], [0, 1, 3]), tmp_path / "sw",
                               record=False, progress=False, **kw)
    assert list(runs) == list(switched)
    assert all(np.array_equal(runs[name].images, images) for name, images in switched.items())


def test_notebook_sweep_folders_and_batch_size(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from helpers import notebook

    monkeypatch.setattr(notebook, "RESULTS_DIR", tmp_path)
    ctx = notebook.start("quick", None, 0, name="sweep_nb", load=False)
    assert ctx.batch_size is None
    folder = ctx.sweep_dir("[EOS] class -> random")
    assert folder == tmp_path / "embedded" / "quick" / "sweep_nb" / "sweeps" / "EOS_class_-_random"
    run_sweep(ITEMS[:2], Counted(), folder, progress=False)
    ctx.verdict(None, "done")  # a finished run keeps its tables only
    assert not (folder.parent).exists() and (folder.parent.parent / "verdict.txt").exists()
    with pytest.raises(ValueError, match="BATCH_SIZE must be a positive integer"):
        notebook.start("quick", None, 0, name="sweep_nb", load=False, batch_size=0)
