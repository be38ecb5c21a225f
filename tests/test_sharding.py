"""Sharding with accelerate: one process in-process, and two CPU processes (gloo) that write the same file."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.bench.sharding import FORMATS, ShardingError, WorkItem, run_sharded, save_results, work_items

ROOT = Path(__file__).resolve().parent.parent


def test_work_items_are_prompt_major_products():
    items = work_items(["a", "b"], [0, 1], ["cfg", "nocfg"])
    assert len(items) == 8
    assert items[0] == WorkItem(0, "a", 0, "cfg") and items[1] == WorkItem(0, "a", 0, "nocfg")
    assert items[-1] == WorkItem(1, "b", 1, "nocfg")
    with pytest.raises(ShardingError, match="not a single string"):
        work_items("a red circle", [0])


def test_single_process_keeps_order_and_writes_json(tmp_path):
    items = list(range(7))
    out = tmp_path / "sub" / "squares.json"
    assert run_sharded(items, lambda x: {"x": x, "sq": np.int64(x * x)}, out) == [{"x": x, "sq": x * x} for x in items]
    assert json.loads(out.read_text()) == [{"x": x, "sq": x * x} for x in items]


def test_batches_are_consecutive_and_complete():
    seen = []

    def fn(batch):
        seen.append(list(batch))
        return [x * 10 for x in batch]

    assert run_sharded(range(5), fn, batch_size=2) == [0, 10, 20, 30, 40]
    assert seen == [[0, 1], [2, 3], [4]]


def test_empty_work():
    assert run_sharded([], lambda x: x) == []


@pytest.mark.parametrize("suffix", [".npy", ".pt"])
def test_array_formats_round_trip(tmp_path, suffix):
    arrays = [np.full((2, 3), i, dtype=np.float32) for i in range(3)]
    path = tmp_path / f"a{suffix}"
    run_sharded(arrays, lambda a: a + 1, path)
    loaded = np.load(path) if suffix == ".npy" else np.stack(torch.load(path, weights_only=False))
    assert np.array_equal(loaded, np.stack(arrays) + 1)


def test_bad_input_gives_clear_errors(tmp_path):
    with pytest.raises(ShardingError, match="batch_size must be a positive integer"):
        run_sharded([1], lambda b: b, batch_size=0)
    with pytest.raises(ShardingError, match="returned 1 results for a batch of 2"):
        run_sharded([1, 2], lambda b: [0], batch_size=2)
    with pytest.raises(ShardingError, match=f"choose a suffix among {', '.join(FORMATS)}"):
        run_sharded([1], lambda x: x, tmp_path / "out.csv")
    with pytest.raises(ShardingError, match="cannot be written as JSON"):
        save_results([object()], tmp_path / "x.json")
    with pytest.raises(ShardingError, match="different shapes"):
        save_results([np.zeros(2), np.zeros(3)], tmp_path / "x.npy")


def test_custom_writer(tmp_path):
    path = tmp_path / "rows.txt"
    run_sharded(["a", "b"], str.upper, path, writer=lambda rows, p: p.write_text(",".join(rows)))
    assert path.read_text() == "A,B"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str]) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_two_cpu_processes_write_the_single_process_file(tmp_path):
    """`accelerate launch` with 2 processes on CPU (gloo): each computes half, the file is identical."""
    demo = [str(ROOT / "scripts" / "shard_demo.py"), "--model", "random:sd21", "--prompts", "2", "--seeds", "2", "--steps", "2"]
    single = _run([sys.executable, *demo, "--out", str(tmp_path / "single.json")])
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()),
    ]
    sharded = _run([*launch, *demo, "--out", str(tmp_path / "sharded.json")])
    assert "process 0/1: computed 8 of 8 items" in single
    assert "process 0/2: computed 4 of 8 items" in sharded and "process 1/2: computed 4 of 8 items" in sharded
    assert (tmp_path / "sharded.json").read_bytes() == (tmp_path / "single.json").read_bytes()
    rows = json.loads((tmp_path / "single.json").read_text())
    assert [(r["index"], r["seed"], r["method"]) for r in rows] == [
        (i, s, m) for i in range(2) for s in range(2) for m in ("cfg", "nocfg")
    ]


@pytest.mark.slow
def test_benchmark_sharded_over_two_cpu_processes_matches_one_process(tmp_path):
    """The acceleration benchmark under `accelerate launch`: same methods, k, UNet calls and images (L1)."""
    import pandas as pd

    bench = [str(ROOT / "scripts" / "bench_acceleration.py"), "--model-id", "random-tiny", "--samplers", "ddim",
             "--steps", "4", "--n-prompts", "4", "--batch-size", "2", "--repeats", "1", "--no-metrics", "--threads", "1"]
    _run([sys.executable, *bench, "--out", str(tmp_path / "single")])
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()),
    ]
    _run([*launch, *bench, "--out", str(tmp_path / "sharded")])
    single, sharded = (pd.read_csv(tmp_path / name / "bench.csv") for name in ("single", "sharded"))
    same = ["method", "kind", "k", "evals_per_image", "limit", "l1"]
    pd.testing.assert_frame_equal(single[same], sharded[same])
    assert (tmp_path / "sharded" / "pareto.png").exists()
