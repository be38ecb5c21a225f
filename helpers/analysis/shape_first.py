"""Notebook 01's study, built on :mod:`helpers.analysis.masks`: shape first, details later (the paper's Fig. 1).

* :class:`Settings` (:meth:`Settings.for_run`): how much is measured and the paper's open choices
  (which maps, how they are binarised, what the object's region is), per model and profile.
* :func:`record` -> :class:`ShapeFirstRun`: one generation per prompt with its cross-attention maps and
  its trajectory, x̂0 decoded (Fig. 1's strips, token maps and the explorer read it).
* :func:`relative_f1` -> :class:`RelativeF1`: the relative F1 of object-token maps per step (Fig. 1b) and,
  on the toy world, the IoU of x̂0's object mask with the final one.
* :func:`auroc` -> :class:`AurocStudy`: the threshold-free AUROC per step with the chance of random maps.
* :func:`decisions`: when each attribute is decided (:func:`helpers.analysis.decisions.measure_decisions`).
* :func:`rule_inputs` -> :class:`RuleInputs`: the exploration numbers and what
  :func:`helpers.verdicts.shape_first` reads (F1 of all object tokens, chance F1 of random masks).

Control renders for :func:`decisions` come from the notebook (only the loader and the toy-world metrics
import ``helpers.toy``).

>>> S = Settings.for_run(pipe, profile, toy=True, n_available=len(records))
>>> run = record(pipe, records[:S.n_prompts], S, seed=0)
>>> f1 = relative_f1(run, S)
>>> rule = rule_inputs(run, f1, S, seed=0)
>>> verdicts.shape_first(rule.f1, rule.chance)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from .. import stats
from ..hooks import attention, trajectory
from ..loading import family
from ..text.tokens import TokenClasses, pipeline_token_classes
from .decisions import DecisionResult, measure_decisions
from .masks import (auroc_by_step, auroc_chance, auroc_table, binarize, first_step_above, foreground_mask, iou_table,
                    object_words, reference_masks, relative_f1_table, settled_step)
from .mass import token_map

#: The curve names of :attr:`RelativeF1.curves` (also the panel titles of Fig. 1b).
F1_CURVE = "relative F1 of object-token maps"
IOU_CURVE = "IoU of x̂0's object mask with the final one"
#: Attributes the decision steps read and the blur sigmas (pixels) of the reader's control (our choice).
DECISION_ATTRIBUTES = ("shape", "color", "size", "position", "pattern")
BLUR_SIGMAS = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)
#: Level of the exploration's "first step / settled step" of the mean relative F1 and of x̂0's IoU.
LEVEL = 0.9


@dataclasses.dataclass(frozen=True)
class Settings:
    """What notebook 01 measures (:meth:`for_run`); ``str()`` gives the notebook's one-line summary."""

    steps: int  # sampling steps N
    guidance: float  # classifier-free guidance scale
    toy: bool  # a toy-world model: the object's region is segmented from the image; the evaluator exists
    n_prompts: int  # prompts generated (one seed each)
    map_resolution: int | None  # (unsure) the maps' size; None: all recorded sizes averaged
    record: tuple[int, ...] | None  # sizes recorded (None: every size)
    threshold: str | float = "mean"  # (unsure) how a map is binarised: "mean", "otsu" or a fraction of its max
    reference: str = "image"  # (unsure) the object's region: "image" (segmented) or "final_attention"
    mask_tolerance: float = 0.2  # colour distance from the background that counts as object
    min_final_f1: float = 0.2  # tokens with a last-step F1 below this are left out of relative F1
    early_fraction: float = 0.3  # "the first few steps": the share of steps the exploration reports at
    auroc_draws: int = 200  # random maps per prompt for the AUROC chance level
    decision_attributes: tuple[str, ...] = DECISION_ATTRIBUTES
    blur_sigmas: tuple[float, ...] = BLUR_SIGMAS
    n_blur: int = 240  # renders of known scenes for the reader's control
    readable_accuracy: float = 0.9  # a blur is readable where the evaluator's accuracy is at least this
    n_strip: int = 3  # prompts shown in the strips and the token maps

    @classmethod
    def for_run(cls, pipe, profile, toy: bool, n_available: int, **choices: Any) -> "Settings":
        """Settings of one run: ``profile`` (:class:`helpers.profile.Profile`) gives steps and guidance; quick:
        4 prompts and 48 control renders; full: 32 prompts on the toy world (8 on a real model), 240 renders.

        Maps: the embedded model's finest (8x8), SD's 16x16, SDXL's 32x32, PixArt's all sizes averaged; a real
        model records only that size (memory). ``choices`` override any other field (e.g. ``threshold="otsu"``).
        """
        quick = profile.is_quick
        n_prompts = min(n_available, 4 if quick else 32 if toy else 8)
        resolution = 8 if toy else {"sd": 16, "sdxl": 32, "pixart": None}[family(pipe)]
        fields = dict(steps=profile.num_inference_steps, guidance=profile.guidance_scale, toy=toy,
                      n_prompts=n_prompts, map_resolution=resolution,
                      record=None if toy or resolution is None else (resolution,),
                      reference="image" if toy else "final_attention", n_blur=48 if quick else 240,
                      n_strip=min(3, n_prompts))
        return cls(**(fields | choices))

    def __str__(self) -> str:
        return f"{self.n_prompts} prompts, {self.steps} steps, threshold={self.threshold!r}, reference={self.reference!r}"


@dataclasses.dataclass
class ShapeFirstRun:
    """One recorded generation per prompt (:func:`record`)."""

    records: list  # the prompt records (their object words)
    rec: attention.AttentionRecorder  # per-step cross-attention maps of every recorded size
    images: np.ndarray  # (prompts, H, W, 3) the generated images
    trajectory: trajectory.Trajectory
    step_maps: torch.Tensor  # (steps, prompts, tokens, h, w): the maps of the settings' size
    shown: np.ndarray  # the (at most 10) steps the strips show, 0-based
    x0_steps: list[int]  # the steps whose x̂0 is decoded (every step on the toy world, else ``shown``)
    x0_images: np.ndarray  # (len(x0_steps), prompts, H, W, 3)
    classes: list[TokenClasses]  # the token classes of each prompt
    num_steps: int  # sampling steps N

    @property
    def prompts(self) -> list[str]:
        return [r.prompt for r in self.records]

    def x0(self, step: int, sample: int) -> np.ndarray:
        """x̂0 of ``sample`` at ``step`` (0-based; one of :attr:`x0_steps`)."""
        return self.x0_images[self.x0_steps.index(step), sample]

    def __str__(self) -> str:
        return (f"maps {tuple(self.step_maps.shape)} from sizes {self.rec.sizes}; "
                f"x̂0 images {tuple(self.x0_images.shape)}")


def record(pipe, records: Sequence, settings: Settings, seed: int = 0) -> ShapeFirstRun:
    """Generate every record's prompt once, recording the cross-attention maps and the trajectory, and decode x̂0.

    Attention processors and the trajectory's hooks are removed on exit (recording changes no pixel).
    Images from :func:`helpers.hooks.trajectory.trajectory` (seeds ``seed + i``); x̂0 decoded at every step on
    the toy world, at the (at most 10) shown steps on a real model (large images).
    """
    prompts = [r.prompt for r in records]
    steps = settings.steps
    with attention.record_attention(pipe, resolutions=settings.record) as rec:
        images, traj = trajectory.trajectory(pipe, prompts, seed=seed, num_inference_steps=steps,
                                             guidance_scale=settings.guidance)
    step_maps = rec.maps(settings.map_resolution)  # (steps, prompts, tokens, h, w)
    shown = np.unique(np.linspace(0, steps - 1, min(steps, 10)).round().astype(int))
    x0_steps = list(range(steps)) if settings.toy else [int(s) for s in shown]
    x0_images = traj.decode(pipe, "x0", steps=x0_steps)  # (len(x0_steps), prompts, H, W, 3)
    return ShapeFirstRun(records=list(records), rec=rec, images=images, trajectory=traj, step_maps=step_maps,
                         shown=shown, x0_steps=x0_steps, x0_images=x0_images,
                         classes=[pipeline_token_classes(pipe, p) for p in prompts], num_steps=steps)


def summarise(data: pd.DataFrame, column: str) -> pd.DataFrame:
    """Mean, median and quartiles of a column per step."""
    g = data.groupby("step")[column]
    return pd.DataFrame({"mean": g.mean(), "median": g.median(), "q25": g.quantile(0.25), "q75": g.quantile(0.75)})


def shown_rows(table: pd.DataFrame, num_steps: int, n: int = 12) -> pd.DataFrame:
    """At most ``n`` evenly spaced rows of a per-step table of ``num_steps`` rows (the notebook's view)."""
    return table.iloc[np.unique(np.linspace(0, num_steps - 1, min(num_steps, n)).round().astype(int))]


@dataclasses.dataclass
class RelativeF1:
    """Relative F1 of object-token maps per step (:func:`relative_f1`)."""

    table: pd.DataFrame  # relative_f1_table, steps 1-based
    references: list[np.ndarray] | None  # the object mask of each image (None: each token's last-step map)
    per_size: dict[str, float] | None  # mean last-step F1 of object-token maps per recorded map size
    n_tokens: int  # object tokens
    dropped: int  # ... left out (last-step F1 below min_final_f1)
    min_final_f1: float
    curves: dict[str, pd.DataFrame]  # F1_CURVE (and IOU_CURVE on the toy world): summarise() per step
    by_step: pd.DataFrame  # the saved table ``relative_f1_by_step``
    num_steps: int

    def shown(self) -> pd.DataFrame:
        """:attr:`by_step` rounded, at most 12 evenly spaced steps."""
        return shown_rows(self.by_step.round(3), self.num_steps)

    def __str__(self) -> str:
        lines = []
        if self.per_size is not None:
            lines.append("mean F1 of object-token maps at the last step, per map size: "
                         + str({k: round(float(v), 3) for k, v in self.per_size.items()}))
        lines.append(f"{self.n_tokens} object tokens, {self.dropped} left out (last-step F1 below {self.min_final_f1})")
        return "\n".join(lines)


def relative_f1(run: ShapeFirstRun, settings: Settings) -> RelativeF1:
    """Relative F1 (F1_t / F1_last) of each object token per step against the object's region; on the toy world
    also the IoU of x̂0's object mask with the final image's (:func:`helpers.analysis.masks.iou_table`).

    The region: the final image segmented from its background (``reference="image"``, the F1 of every recorded
    map size is also given) or each token's binarised last-step map (``"final_attention"``).
    """
    rec, records, steps = run.rec, run.records, run.num_steps
    references = ([foreground_mask(im, settings.mask_tolerance) for im in run.images]
                  if settings.reference == "image" else None)
    per_size = None
    if references is not None:  # how well each recorded map size outlines the object at the last step
        per_size = {f"{h}x{w}": relative_f1_table(rec, records, references, settings.threshold, resolution=(h, w))
                    .query(f"step == {steps - 1}").f1.mean() for h, w in rec.sizes}
    f1 = relative_f1_table(rec, records, references, threshold=settings.threshold,
                           resolution=settings.map_resolution, min_final_f1=settings.min_final_f1)
    f1["step"] += 1
    tokens = f1.groupby(["sample", "word"]).relative_f1
    dropped = int(tokens.apply(lambda s: s.isna().all()).sum())
    curves = {F1_CURVE: summarise(f1, "relative_f1")}
    if settings.toy:
        iou = iou_table(run.x0_images, run.images, settings.mask_tolerance)
        iou["step"] += 1
        curves[IOU_CURVE] = summarise(iou, "iou")
    by_step = curves[F1_CURVE].add_prefix("relative_f1_")
    by_step["f1_mean"] = f1.groupby("step").f1.mean()
    if settings.toy:
        by_step["x0_iou_mean"] = curves[IOU_CURVE]["mean"]
    return RelativeF1(table=f1, references=references, per_size=per_size, n_tokens=tokens.ngroups, dropped=dropped,
                      min_final_f1=settings.min_final_f1, curves=curves, by_step=by_step, num_steps=steps)


@dataclasses.dataclass
class AurocStudy:
    """AUROC of the maps against the object mask per step, with chance (:func:`auroc`)."""

    by_step: pd.DataFrame  # masks.auroc_by_step with the chance rows (the saved ``auroc_by_step``)
    summary: pd.DataFrame  # its rows at the rule's early step and the last step, steps 1-based (``auroc_summary``)
    map_size: tuple[int, int]

    @property
    def title(self) -> str:
        return f"AUROC of {self.map_size[0]}x{self.map_size[1]} maps against the object mask"


def auroc(run: ShapeFirstRun, references: Sequence[np.ndarray] | None, settings: Settings, seed: int = 0,
          early_fraction: float | None = None) -> AurocStudy:
    """Threshold-free: AUROC per step of the object token's, the real [EOS]'s and the [EOS] class's maps (raw and
    renormalised over the words) against ``references`` (:attr:`RelativeF1.references`; ``None``: the first object
    token's binarised last-step map), with the chance of ``settings.auroc_draws`` random maps per prompt.

    ``early_fraction``: the summary's early step is ceil(early_fraction · N), by default the rule's
    (``helpers.verdicts.RULES["shape_first"]["early_fraction"]``).
    """
    if early_fraction is None:
        from ..verdicts import RULES

        early_fraction = RULES["shape_first"]["early_fraction"]
    steps = run.num_steps
    object_masks = reference_masks(run.rec, run.records, references, settings.threshold, settings.map_resolution)
    table = auroc_table(run.rec, run.records, object_masks, resolution=settings.map_resolution)
    map_size = tuple(run.step_maps.shape[-2:])
    chance = auroc_chance(object_masks, map_size, settings.auroc_draws, seed=seed)
    by_step = auroc_by_step(table, chance)
    early_step = int(np.ceil(early_fraction * steps))  # the rule's early step (1-based)
    summary = (by_step[by_step.step.isin([early_step - 1, steps - 1])].assign(step=lambda d: d.step + 1)
               .set_index(["normalization", "kind", "step"]))
    return AurocStudy(by_step=by_step, summary=summary, map_size=(int(map_size[0]), int(map_size[1])))


def decisions(run: ShapeFirstRun, read: Callable[[np.ndarray], list], settings: Settings,
              control_scenes: Sequence | None = None,
              render: Callable[[Sequence], np.ndarray] | None = None) -> DecisionResult:
    """When each of ``settings.decision_attributes`` is decided: x̂0 of every step read by ``read`` (e.g. the
    attribute evaluator's ``Scorer.attributes``; :func:`helpers.analysis.decisions.measure_decisions`).

    The reader's blur control runs on ``render(control_scenes)``, scenes of known attributes (each with
    ``.attributes()``, e.g. ``helpers.toy.world.dataset`` and ``render_batch``); without them, no control.
    Needs x̂0 of every step (recorded on toy-world models).
    """
    if run.x0_steps != list(range(run.num_steps)):
        raise ValueError("decision steps need x̂0 of every step (recorded on toy-world models only)")
    images = truths = None
    if control_scenes is not None:
        if render is None:
            raise ValueError("control scenes need a renderer (render)")
        images, truths = render(control_scenes), [s.attributes() for s in control_scenes]
    return measure_decisions(run.x0_images, run.images, read, images, truths, settings.decision_attributes,
                             settings.blur_sigmas)


def _when(step: int | None) -> str:
    return "never" if step is None else f"step {step + 1}"


@dataclasses.dataclass
class RuleInputs:
    """What :func:`helpers.verdicts.shape_first` reads, and the exploration beside it (:func:`rule_inputs`)."""

    f1: pd.DataFrame  # sample, word, step (1-based), f1 of every object token (undefined F1 counted as 0)
    chance: pd.Series  # per sample: chance F1 of random masks of the object's area (mean over its reference masks)
    summary: dict  # the saved ``summary``
    exploration: str  # the printed exploration line

    def __str__(self) -> str:
        lines = [self.exploration, str(self.summary)]
        n_empty, n_undefined = self.summary["empty_reference_masks"], self.summary["undefined_f1_counted_as_0"]
        if n_empty or n_undefined:
            lines.append(f"{n_empty} empty reference masks (chance F1 0: no mask overlaps an empty object); "
                         f"{n_undefined} F1 values undefined (map and reference both empty), counted as 0")
        return "\n".join(lines)


def rule_inputs(run: ShapeFirstRun, f1: RelativeF1, settings: Settings, seed: int = 0) -> RuleInputs:
    """The exploration (the step from which the mean relative F1 of the kept tokens, and x̂0's IoU, stay >= 0.9;
    not the verdict) and the rule's inputs: F1 by step of ALL object tokens, and per sample the chance F1 of random
    masks of the object's area (:func:`helpers.stats.random_mask_f1`, ``seed``) against the reference masks
    :func:`relative_f1` used (the image's object mask, or each token's binarised last-step map)."""
    steps, n_prompts = run.num_steps, len(run.records)
    mean_curve = f1.curves[F1_CURVE]["mean"]
    first90 = first_step_above(mean_curve.to_numpy(), LEVEL)
    settled90 = settled_step(mean_curve.to_numpy(), LEVEL)
    early = int(np.ceil(settings.early_fraction * steps))
    summary = {"steps": steps, "prompts": n_prompts, "map_resolution": str(settings.map_resolution),
               "threshold": str(settings.threshold), "reference": settings.reference,
               "tokens_used": f1.n_tokens - f1.dropped, "tokens_left_out": f1.dropped,
               "first_step_relative_f1_ge_0.9": None if first90 is None else first90 + 1,
               "step_relative_f1_stays_ge_0.9": None if settled90 is None else settled90 + 1,
               "relative_f1_at_step_1": float(mean_curve.iloc[0]),
               f"relative_f1_at_step_{early}": float(mean_curve.iloc[early - 1]),
               "f1_at_last_step": float(f1.by_step["f1_mean"].iloc[-1])}
    exploration = (f"exploration (tokens with last-step F1 >= {settings.min_final_f1}): mean relative F1 first >= 0.9 "
                   f"at {_when(first90)}, stays from {_when(settled90)} of {steps}")
    if settings.toy:
        iou_settled = settled_step(f1.curves[IOU_CURVE]["mean"].to_numpy(), LEVEL)
        summary["step_x0_iou_stays_ge_0.9"] = None if iou_settled is None else iou_settled + 1
        exploration += f"; x̂0's object mask keeps IoU >= 0.9 from {_when(iou_settled)}"

    if f1.references is not None:
        reference_of = {i: [np.asarray(f1.references[i], bool)] for i in range(n_prompts)}
    else:
        reference_of = {}
        for i, r in enumerate(run.records):
            c = run.classes[i]
            reference_of[i] = [binarize(token_map(run.step_maps[-1, i], c.positions_of(w)).numpy(), settings.threshold)
                               for w in dict.fromkeys(object_words(r.attributes))]
    n_empty = sum(not m.any() for refs in reference_of.values() for m in refs)
    chance = pd.Series({i: float(np.mean([stats.random_mask_f1(m, seed=seed) if m.any() else 0.0 for m in refs]))
                        for i, refs in reference_of.items()})
    f1_all = f1.table[["sample", "word", "step", "f1"]]
    n_undefined = int(f1_all["f1"].isna().sum())
    f1_all = f1_all.fillna({"f1": 0.0})
    summary |= {"tokens_in_rule": int(f1_all.groupby(["sample", "word"]).ngroups), "chance_f1_mean": float(chance.mean()),
                "empty_reference_masks": n_empty, "undefined_f1_counted_as_0": n_undefined}
    return RuleInputs(f1=f1_all, chance=chance, summary=summary, exploration=exploration)
