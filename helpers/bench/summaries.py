"""Summaries of an acceleration benchmark run (:mod:`helpers.bench.acceleration`): tables and the front."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .acceleration import PAPER_A_FRACTION


COLUMNS = {
    "sampler": "sampler", "steps": "N", "method": "method", "k": "k", "a": "a = N-k",
    "saved_latency": "saved latency %", "limit": "limit %", "evals_per_image": "UNet evals/img",
    "l1": "L1 ↓", "image_clip_score": "Image-CLIPScore ↑", "clip_score": "CLIPScore ↑",
    "attribute_accuracy": "attribute acc. % ↑", "clip_fid": "CLIP-FID ↓ (not Inception)",
    "inception_fid": "Inception FID ↓", "median_s": "median s/batch",
}


def paper_table(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The benchmark table with readable column names and rounded numbers."""
    cols = [c for c in COLUMNS if c in table.columns]
    out = table[cols].rename(columns=COLUMNS)
    return out.round(digits)


def to_markdown(table: pd.DataFrame) -> str:
    """A pipe table (no ``tabulate`` needed)."""
    def cell(v) -> str:
        if isinstance(v, float):
            return "–" if np.isnan(v) else f"{v:.4g}"
        return str(v)

    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def at_paper_a(table: pd.DataFrame, fraction: float = PAPER_A_FRACTION) -> pd.DataFrame:
    """Per (sampler, N), the ``uncond`` row whose ``a`` is nearest to ``fraction * N``, beside the baseline."""
    rows = []
    for (sampler, steps), block in table.groupby(["sampler", "steps"]):
        paper = block[block["kind"] == "uncond"]
        if paper.empty:
            continue
        row = paper.iloc[(paper["a"] - fraction * steps).abs().argmin()]
        base = block[block["kind"] == "baseline"].iloc[0]
        rows.append({
            "sampler": sampler, "N": steps, "k": row["k"], "a": row["a"],
            "saved latency %": row["saved_latency"], "limit %": row["limit"],
            "attribute acc. % (full CFG)": base.get("attribute_accuracy", np.nan),
            "attribute acc. %": row.get("attribute_accuracy", np.nan), "L1": row["l1"],
            "Image-CLIPScore": row.get("image_clip_score", np.nan),
        })
    return pd.DataFrame(rows)


def best_tradeoff(table: pd.DataFrame, max_drop: float = 2.0, quality_col: str = "attribute_accuracy"
                  ) -> pd.DataFrame:
    """Per (sampler, N), the fastest method whose ``quality_col`` is within ``max_drop`` points of full CFG."""
    if quality_col not in table.columns:
        return pd.DataFrame()
    rows = []
    for _, block in table.groupby(["sampler", "steps"]):
        base = block.loc[block["kind"] == "baseline", quality_col].iloc[0]
        ok = block[(block["kind"] != "baseline") & (block[quality_col] >= base - max_drop)]
        if not ok.empty:
            rows.append(ok.loc[ok["saved_latency"].idxmax()])
    return pd.DataFrame(rows)


def pareto_front(points: pd.DataFrame, x: str, y: str, higher_y_is_better: bool = True) -> pd.DataFrame:
    """The points not dominated in (higher ``x``, better ``y``), sorted by ``x``."""
    pts = points.dropna(subset=[x, y]).sort_values(x, ascending=False)
    front, best = [], -np.inf
    for _, p in pts.iterrows():
        value = p[y] if higher_y_is_better else -p[y]
        if value > best:
            front.append(p)
            best = value
    return pd.DataFrame(front).sort_values(x) if front else pts.iloc[:0]


def load_results(folder: Path) -> tuple[pd.DataFrame, dict]:
    """``bench.csv`` and ``meta.json`` of a finished run."""
    folder = Path(folder)
    if not (folder / "bench.csv").exists():
        raise FileNotFoundError(f"no benchmark results in {folder}; run scripts/bench_acceleration.py")
    return pd.read_csv(folder / "bench.csv"), json.loads((folder / "meta.json").read_text())
