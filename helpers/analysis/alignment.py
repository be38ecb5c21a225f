"""Alignment of generated images with a source prompt A and a target prompt B.

Used for switched-[EOS] prompts (notebook 04) and for switching the conditioning
part-way through sampling (notebooks 05/06): an image is scored against both prompts
by two metrics,

* the **attribute evaluator** (toy world only): which shape / colour / pattern / size /
  position the image shows, compared with A's and with B's ground truth; an attribute
  is scored only where A and B name different values (else it cannot tell them apart);
* **CLIPScore** (``torchmetrics``, the embedded model's offline CLIP or a real CLIP)
  against A's and B's prompt text.

:func:`image_references` (or ``score_source_target(..., source_images=, target_images=)``)
asks the same question against the model's own images of A and B from the same seeds (evaluator readings, image-CLIPScore, L1), which stays
meaningful when the model draws its prompts imperfectly.

>>> pairs = load_s_prompt_set(n=8)
>>> df = score_source_target(scorer, images, [p.source for p in pairs], [p.target for p in pairs])
>>> summarize(df)                      # mean ± s.e. per metric, source vs target
>>> follow_fractions(df, "shape")      # fraction of images showing B's / A's / another shape
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..loading import RANDOM_TINY_ID, uses_toy_world
from .. import resources
from ..promptsets import PromptRecord
from .metrics import Scorer

#: Attributes the evaluator reads and the toy prompts name.
ATTRIBUTES: tuple[str, ...] = ("shape", "color", "pattern", "size", "position")
#: S-PromptSet name -> file in the prompt folder (helpers.resources.prompt_dir).
S_PROMPT_SETS = {"toy": "s_prompt_set.json", "natural": "natural_s_prompt_set.json"}
S_PROMPT_SET = S_PROMPT_SETS["toy"]
#: The script that writes each S-PromptSet.
_S_PROMPT_SCRIPTS = {"toy": "scripts/make_s_prompt_set.py", "natural": "scripts/make_natural_s_prompt_set.py"}
#: CLIP used for CLIPScore on real models (needs network or the Hugging Face cache).
REAL_CLIP = "openai/clip-vit-large-patch14"


@dataclasses.dataclass(frozen=True)
class PromptPair:
    """One S-PromptSet pair: the source A (semantic tokens) and the target B ([EOS] donor)."""

    source: PromptRecord
    target: PromptRecord
    differs: tuple[str, ...] = ()


def load_s_prompt_set(name: str = "toy", n: int | None = None, path: str | Path | None = None,
                      include_held_out: bool = True) -> list[PromptPair]:
    """An S-PromptSet by name: ``"toy"`` (``data/prompts/s_prompt_set.json``, made by
    ``scripts/make_s_prompt_set.py``) or ``"natural"`` (``data/prompts/natural_s_prompt_set.json``, made by
    ``scripts/make_natural_s_prompt_set.py``: natural prompts whose objects differ, for real models).

    Args:
        name: ``"toy"`` or ``"natural"``; ignored when ``path`` is given.
        n: first ``n`` pairs (the file's order is random, so any prefix is a random subset).
        path: another pair file in the same format.
        include_held_out: keep pairs where A or B names a shape x colour pair held out of training.
    """
    if path is None and name not in S_PROMPT_SETS:
        raise ValueError(f"unknown S-PromptSet {name!r}; known: {sorted(S_PROMPT_SETS)} (or pass path=)")
    path = Path(path) if path is not None else resources.prompt_dir() / S_PROMPT_SETS[name]
    if not path.exists():
        script = _S_PROMPT_SCRIPTS.get(name, "scripts/make_s_prompt_set.py")
        raise FileNotFoundError(f"no S-PromptSet at {path}; create it with `python {script}`")
    raw = json.loads(path.read_text())

    def record(d: Mapping) -> PromptRecord:
        return PromptRecord(prompt=d["prompt"], attributes=dict(d.get("attributes", {})),
                            held_out=bool(d.get("held_out", False)))

    pairs = [PromptPair(record(p["source"]), record(p["target"]), tuple(p.get("differs", ()))) for p in raw["pairs"]]
    if not include_held_out:
        pairs = [p for p in pairs if not (p.source.held_out or p.target.held_out)]
    return pairs[:n] if n is not None else pairs


def _as_record(r: PromptRecord | Mapping | str) -> PromptRecord:
    if isinstance(r, PromptRecord):
        return r
    if isinstance(r, str):
        return PromptRecord(prompt=r)
    return PromptRecord(prompt=r["prompt"], attributes=dict(r.get("attributes", {})))


def score_source_target(
    scorer: Scorer,
    images,
    source_records: Sequence[PromptRecord | Mapping | str],
    target_records: Sequence[PromptRecord | Mapping | str],
    attributes: Sequence[str] = ATTRIBUTES,
    evaluator: bool = True,
    clip: bool = True,
    source_images=None,
    target_images=None,
) -> pd.DataFrame:
    """Per image, alignment with its source A and its target B.

    Args:
        scorer: a :class:`helpers.analysis.metrics.Scorer` (see :func:`scorer_for`).
        images: ``(n, H, W, 3)`` images (arrays in [0, 1], uint8, PIL list or tensor).
        source_records, target_records: one record per image (records with ``attributes``
            for the evaluator; bare prompt strings are enough for CLIPScore).
        attributes: attributes to compare (only where A and B name different values).
        evaluator: use the attribute evaluator (toy-world images only).
        clip: compute CLIPScore against both prompts.
        source_images, target_images: optional images the model draws for A and for B from
            the same seeds; adds the comparisons of :func:`image_references`.

    Returns:
        One row per image with ``source_prompt``, ``target_prompt``; per attribute
        ``pred_<a>``, ``source_<a>`` and ``target_<a>`` (1.0 = the image shows A's / B's
        value, NaN where A and B agree or one does not name it); ``clip_source``,
        ``clip_target``; ``follows`` (``"target"``/``"source"``/``"neither"`` by shape);
        and, with reference images, the columns of :func:`image_references`.
    """
    sources = [_as_record(r) for r in source_records]
    targets = [_as_record(r) for r in target_records]
    n = len(images)
    if not (len(sources) == len(targets) == n):
        raise ValueError(f"{n} images but {len(sources)} source and {len(targets)} target records")
    df = pd.DataFrame({"source_prompt": [r.prompt for r in sources], "target_prompt": [r.prompt for r in targets]})
    if n == 0:
        return df
    predictions = scorer.attributes(images) if evaluator else None
    if evaluator:
        for a in attributes:
            df[f"pred_{a}"] = [p.get(a) for p in predictions]
            src = [s.attributes.get(a) for s in sources]
            tgt = [t.attributes.get(a) for t in targets]
            _add_matches(df, a, "", predictions, src, tgt)
        if "shape" in attributes:
            df["follows"] = _follows(df, "shape", "")
    if clip:
        df["clip_source"] = scorer.clip_score(images, [r.prompt for r in sources])
        df["clip_target"] = scorer.clip_score(images, [r.prompt for r in targets])
    if source_images is not None or target_images is not None:
        refs = image_references(scorer, images, source_images, target_images, attributes, evaluator, clip,
                                predictions=predictions)
        df = pd.concat([df, refs], axis=1)
    return df


def image_references(
    scorer: Scorer,
    images,
    source_images,
    target_images,
    attributes: Sequence[str] = ATTRIBUTES,
    evaluator: bool = True,
    clip: bool = True,
    predictions: Sequence[Mapping[str, str]] | None = None,
) -> pd.DataFrame:
    """Per image, similarity with the model's own images of A and of B (same seeds).

    Stays meaningful when the model draws its prompts imperfectly: the question becomes
    "does the image look like what the model draws for A, or for B?".

    Returns:
        Per attribute ``source_img_<a>`` / ``target_img_<a>`` (1.0 = the evaluator reads the
        same value as in A's / B's image; NaN where it reads the same value in both);
        ``follows_img`` by shape; ``imgclip_source`` / ``imgclip_target`` (image-CLIPScore
        with each reference image); ``l1_source`` / ``l1_target`` (mean absolute pixel
        difference, lower = closer).
    """
    from .metrics import l1_distance

    n = len(images)
    if source_images is None or target_images is None or not (len(source_images) == len(target_images) == n):
        raise ValueError(f"need one source and one target reference image for each of the {n} images")
    df = pd.DataFrame(index=range(n))
    if n == 0:
        return df
    if evaluator:
        pred = predictions if predictions is not None else scorer.attributes(images)
        src, tgt = scorer.attributes(source_images), scorer.attributes(target_images)
        for a in attributes:
            _add_matches(df, a, "img_", pred, [s.get(a) for s in src], [t.get(a) for t in tgt])
        if "shape" in attributes:
            df["follows_img"] = _follows(df, "shape", "img_")
    if clip:
        df["imgclip_source"] = scorer.image_clip_score(images, source_images)
        df["imgclip_target"] = scorer.image_clip_score(images, target_images)
    df["l1_source"] = l1_distance(images, source_images)
    df["l1_target"] = l1_distance(images, target_images)
    return df


def _add_matches(df: pd.DataFrame, attribute: str, tag: str, predictions, src, tgt) -> None:
    """``source_<tag><a>`` / ``target_<tag><a>``: 1.0 where the prediction equals A's / B's value."""
    usable = [x is not None and y is not None and x != y for x, y in zip(src, tgt)]
    df[f"source_{tag}{attribute}"] = [float(p.get(attribute) == x) if ok else np.nan
                                      for p, x, ok in zip(predictions, src, usable)]
    df[f"target_{tag}{attribute}"] = [float(p.get(attribute) == y) if ok else np.nan
                                      for p, y, ok in zip(predictions, tgt, usable)]


def _follows(df: pd.DataFrame, attribute: str, tag: str) -> np.ndarray:
    return np.select([df[f"target_{tag}{attribute}"] == 1, df[f"source_{tag}{attribute}"] == 1],
                     ["target", "source"], default="neither")


def mean_se(values) -> tuple[float, float, int]:
    """Mean, standard error of the mean and count of the non-NaN values."""
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return np.nan, np.nan, 0
    se = float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else np.nan
    return float(x.mean()), se, int(x.size)


def metric_columns(df: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """Metric name -> (source column, target column) present in a :func:`score_source_target` table."""
    out = {}
    for column, name in (("clip", "CLIPScore"), ("imgclip", "image-CLIPScore"), ("l1", "L1 distance")):
        if f"{column}_source" in df:
            out[name] = (f"{column}_source", f"{column}_target")
    for tag, prefix in (("", "evaluator"), ("img_", "evaluator vs images")):
        for a in ATTRIBUTES:
            if f"source_{tag}{a}" in df:
                out[f"{prefix}: {a}"] = (f"source_{tag}{a}", f"target_{tag}{a}")
    return out


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean ± s.e. over images of each metric against the source and the target.

    Rows: ``CLIPScore``, ``image-CLIPScore``, ``L1 distance``, ``evaluator: <attribute>`` and
    ``evaluator vs images: <attribute>``, those present in ``df``; columns ``source``, ``source_se``,
    ``target``, ``target_se``, ``n`` (images with a usable value).
    """
    rows = {}
    for name, (src, tgt) in metric_columns(df).items():
        m_s, se_s, n = mean_se(df[src])
        m_t, se_t, _ = mean_se(df[tgt])
        rows[name] = {"source": m_s, "source_se": se_s, "target": m_t, "target_se": se_t, "n": n}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["source", "source_se", "target", "target_se", "n"])


def summarize_conditions(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """:func:`summarize` of several conditions, stacked: index ``(condition, metric)``."""
    return pd.concat({name: summarize(df) for name, df in tables.items()}, names=["condition", "metric"])


def condition_table(stacked: pd.DataFrame, metrics: Sequence[str] | None = None, digits: int = 2) -> pd.DataFrame:
    """A :func:`summarize_conditions` table for display: one row per condition, ``"mean ± se"``
    against A and against B for each metric (default: CLIPScore, image-CLIPScore, shape vs
    the prompts and vs the reference images, colour, pattern; those present)."""
    metrics = list(metrics or ["CLIPScore", "image-CLIPScore", "evaluator: shape", "evaluator vs images: shape",
                               "evaluator: color", "evaluator: pattern"])
    present = [m for m in metrics if m in stacked.index.get_level_values("metric")]
    conditions = list(dict.fromkeys(stacked.index.get_level_values("condition")))
    out = {}
    for m in present:
        label = m.replace("evaluator: ", "").replace("evaluator vs images: ", "images: ")
        formatted = format_mean_se(stacked.xs(m, level="metric"), digits)
        out[(label, "A")] = formatted["source (A)"]
        out[(label, "B")] = formatted["target (B)"]
    table = pd.DataFrame(out).reindex(conditions)
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=["metric", "vs"])
    return table


def follow_fractions(df: pd.DataFrame, attribute: str = "shape", against: str = "prompts") -> dict[str, float]:
    """Fractions of images whose ``attribute`` is B's (``target``), A's (``source``) or another value.

    ``against="prompts"`` compares with the prompts' ground truth, ``"images"`` with what the
    evaluator reads in the model's own A and B images (pairs where those agree are left out).
    """
    if against not in ("prompts", "images"):
        raise ValueError(f"against must be 'prompts' or 'images', not {against!r}")
    tag = "img_" if against == "images" else ""
    if f"source_{tag}{attribute}" not in df:
        raise ValueError(f"no evaluator column for {attribute!r} against {against}: score with evaluator=True"
                         + (" and reference images" if tag else ""))
    src, tgt = df[f"source_{tag}{attribute}"], df[f"target_{tag}{attribute}"]
    usable = src.notna()
    n = int(usable.sum())
    if n == 0:
        return {"target": np.nan, "source": np.nan, "neither": np.nan, "n": 0}
    t, s = float((tgt[usable] == 1).mean()), float((src[usable] == 1).mean())
    return {"target": t, "source": s, "neither": 1.0 - t - s, "n": n}


def format_mean_se(summary: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """A :func:`summarize` table as ``"mean ± se"`` strings (for display)."""
    def fmt(m, se):
        if np.isnan(m):
            return "-"
        return f"{m:.{digits}f}" if np.isnan(se) else f"{m:.{digits}f} ± {se:.{digits}f}"

    return pd.DataFrame({
        "source (A)": [fmt(m, s) for m, s in zip(summary["source"], summary["source_se"])],
        "target (B)": [fmt(m, s) for m, s in zip(summary["target"], summary["target_se"])],
        "n": summary["n"].astype(int),
    }, index=summary.index)


def scorer_for(model_id: str | None) -> Scorer:
    """The metric bundle for a model.

    * embedded model: its offline CLIP and attribute evaluator;
    * ``"random-tiny"``: the same when the embedded model is present, else metric models
      with RANDOM weights (mechanics only; their numbers mean nothing);
    * a real model: :data:`REAL_CLIP` for CLIPScore (the evaluator does not apply).
    """
    if not uses_toy_world(model_id):
        return Scorer(clip_path=REAL_CLIP)
    scorer = Scorer()
    if model_id == RANDOM_TINY_ID and not (Path(scorer.clip_path).exists() and scorer.evaluator_path.exists()):
        folder = _random_metric_models()
        return Scorer(clip_path=folder / "clip", evaluator_path=folder / "evaluator")
    return scorer


@functools.lru_cache(maxsize=1)
def _random_metric_models() -> Path:
    """A CLIP and an evaluator with random weights, saved once per process to a temporary folder."""
    import torch
    from transformers import CLIPImageProcessor, CLIPProcessor

    from ..toy import model as tiny_model
    from ..toy import world as toyworld
    from ..toy.evaluator import AttributeEvaluator

    folder = Path(tempfile.mkdtemp(prefix="random-metrics-"))
    atexit.register(shutil.rmtree, folder, True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tokenizer = tiny_model.build_tokenizer()
        tiny_model.clip_model(tokenizer).save_pretrained(folder / "clip")
        AttributeEvaluator().eval().save(folder / "evaluator")
    size = toyworld.IMAGE_SIZE
    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(folder / "clip")
    return folder
