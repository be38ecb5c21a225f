"""Notebook 04's study: switched-[EOS] prompts on the S-PromptSet (Fig 4, Fig 12, Table 1).

One :class:`EOSStudy` holds what every section shares: the pairs (A, B), their encoded prompts and the
switched ones (A's [SOS] and words, B's [EOS] class: :func:`helpers.text.surgery.switch_eos`), the scorer,
the settings (:class:`Settings`) and the images of A, B and the switched prompt. Each section is one
function returning its tables (``.tables``: file stem -> table, for :func:`save`):

* :meth:`EOSStudy.generate_references` (Fig 4), :func:`attention_maps` (Fig 12), :func:`maps_by_step`
  (Fig 12's maps per step against chance), :func:`table1` (Table 1);
* the ablations and controls: :mod:`helpers.analysis.eos_ablations`;
* :func:`summary`: the numbers beside the verdict (:func:`helpers.verdicts.eos_switch_follows_b`).

Every image of pair ``i`` starts from the noise of ``seed + i``; every generation of a condition goes
through one resumable sweep (``sweep_dir(name)``). Conditions whose embeddings equal an earlier one's
(e.g. the real [EOS] only = the first k = 1 slot) are scored once (:meth:`EOSStudy.condition`).

>>> study = EOSStudy.build(pipe, model_id, profile, seed=0, sweep_dir=ctx.sweep_dir)
>>> study.generate_references()
>>> t1 = table1(study); save(t1.tables, ctx.save_table)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..loading import uses_toy_world
from ..profile import Profile, count_setting as _count
from ..text import surgery
from . import alignment, eos_controls

__all__ = ["Settings", "EOSStudy", "Table1", "SwitchedMaps", "table1", "attention_maps", "maps_by_step", "summary",
           "summary_text", "save"]


@dataclasses.dataclass(frozen=True)
class Settings:
    """How much notebook 04 measures (:meth:`for_run`).

    Attributes:
        steps, guidance: sampling settings (the profile's).
        n_pairs: pairs of Table 1 (quick 8, full the whole S-PromptSet).
        n_ablation: pairs per ablation and control condition (quick 4, full ``n_pairs``).
        n_fig: pairs in the figures (quick 2, full 4).
        n_map_pairs: pairs of the per-step maps (quick 2, full 32).
        k_values: numbers of switched [EOS] embeddings (quick (1, 8), full (1, 4, 16)).
        pair_set: ``"toy"`` (toy-world models) or ``"natural"`` (real models).
        use_evaluator: the attribute evaluator applies (toy-world models).
        attn_resolutions: attention map sizes recorded (toy world: its 8x8 layers; else every layer).
    """

    steps: int
    guidance: float
    n_pairs: int
    n_ablation: int
    n_fig: int
    n_map_pairs: int
    k_values: tuple[int, ...]
    pair_set: str
    use_evaluator: bool
    attn_resolutions: tuple[int, ...] | None

    @classmethod
    def for_run(cls, model_id: str | None, profile: Profile, n_pairs: int | None = None,
                n_ablation: int | None = None, k_values: Sequence[int] | None = None,
                n_map_pairs: int | None = None) -> "Settings":
        """The notebook's parameters (``None``: the profile's default).

        Raises:
            ValueError: a count is not a positive integer, or ``k_values`` holds a negative or non-integer k.
        """
        n_pairs, n_ablation = _count(n_pairs, "N_PAIRS"), _count(n_ablation, "N_ABLATION")
        n_map_pairs = _count(n_map_pairs, "N_MAP_PAIRS")
        if k_values is not None and (not k_values or any(
                not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 0 for k in k_values)):
            raise ValueError(f"K_VALUES must be non-negative integers or None, not {k_values!r}")
        quick = profile.is_quick
        toy = uses_toy_world(model_id)
        pair_set = "toy" if toy else "natural"  # real models: natural pairs (data/prompts/natural_s_prompt_set.json)
        n_pairs = n_pairs or (8 if quick else len(alignment.load_s_prompt_set(pair_set)))
        return cls(steps=profile.num_inference_steps, guidance=profile.guidance_scale, n_pairs=n_pairs,
                   n_ablation=min(n_ablation or (4 if quick else n_pairs), n_pairs),
                   n_fig=min(2 if quick else 4, n_pairs), n_map_pairs=min(n_map_pairs or (2 if quick else 32), n_pairs),
                   k_values=tuple(int(k) for k in (k_values or ((1, 8) if quick else (1, 4, 16)))),
                   pair_set=pair_set, use_evaluator=alignment.uses_toy_world(model_id),
                   attn_resolutions=(8,) if toy else None)


def _embedding_key(prompts: Sequence[surgery.EncodedPrompt]) -> str:
    """What a condition's images depend on: the embeddings (not the labels) of its prompts, in order."""
    from ..sweeps import fingerprint

    return fingerprint([(p.embeds, p.mask, p.pooled, p.only) for p in prompts])


@dataclasses.dataclass
class EOSStudy:
    """What the sections of notebook 04 share (:meth:`build`).

    Attributes:
        pipe: the pipeline.
        settings: :class:`Settings`.
        pairs: the S-PromptSet pairs (A = ``source``, B = ``target``).
        A, B, S: encoded prompts of A, of B and the switched ones (A's words + B's [EOS] class).
        scorer: the alignment scorer (:func:`helpers.analysis.alignment.scorer_for`).
        seed: pair ``i`` starts from the noise of ``seed + i`` in every condition.
        batch_size: prompts per pipeline call (``None``: the helpers' default).
        sweep_dir: sweep name -> the folder of its chunks (``ctx.sweep_dir``); ``None``: nothing saved.
        images: ``"A"``, ``"B"``, ``"switched"`` -> images, after :meth:`generate_references`.
    """

    pipe: Any
    settings: Settings
    pairs: list
    A: list
    B: list
    S: list
    scorer: Any
    seed: int = 0
    batch_size: int | None = None
    sweep_dir: Callable[[str], Path] | None = None
    images: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    _scored: dict[str, pd.DataFrame] = dataclasses.field(default_factory=dict, repr=False)
    _switched_table: pd.DataFrame | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def build(cls, pipe, model_id: str | None, profile: Profile, seed: int = 0, batch_size: int | None = None,
              sweep_dir: Callable[[str], Path] | None = None, n_pairs: int | None = None,
              n_ablation: int | None = None, k_values: Sequence[int] | None = None,
              n_map_pairs: int | None = None) -> "EOSStudy":
        """Settings, the first ``n_pairs`` pairs, their encoded A, B and switched prompts, and the scorer."""
        settings = Settings.for_run(model_id, profile, n_pairs, n_ablation, k_values, n_map_pairs)
        pairs = alignment.load_s_prompt_set(settings.pair_set, n=settings.n_pairs)
        A = [surgery.encode(pipe, p.source.prompt) for p in pairs]
        B = [surgery.encode(pipe, p.target.prompt) for p in pairs]
        S = [surgery.switch_eos(a, b) for a, b in zip(A, B)]
        return cls(pipe=pipe, settings=settings, pairs=pairs, A=A, B=B, S=S, scorer=alignment.scorer_for(model_id),
                   seed=seed, batch_size=batch_size, sweep_dir=sweep_dir)

    def __str__(self) -> str:
        s = self.settings
        lines = [f"{len(self.pairs)} pairs (Table 1), {s.n_ablation} per ablation; "
                 f"{s.steps} steps, guidance {s.guidance}; k values {s.k_values}; evaluator: {s.use_evaluator}",
                 f"[EOS]-class slots of A: {min(len(a.eos_class) for a in self.A)}-{max(len(a.eos_class) for a in self.A)}"]
        return "\n".join(lines + [f"note: {note}" for note in surgery.caveats(self.pipe)])

    # -- generation and scoring (the notebook's gen and score)
    def gen(self, prompts: Sequence[surgery.EncodedPrompt], sweep: str | None = None) -> np.ndarray:
        """Images for edited embeddings; item i starts from the noise of seed + i (its pair's seed).
        A sweep name saves each batch under the results folder (resumed after a crash)."""
        out_dir = sweep and self.sweep_dir and self.sweep_dir(sweep)
        return surgery.generate_from_embeddings(self.pipe, prompts, seed=self.seed,
                                                num_inference_steps=self.settings.steps,
                                                guidance_scale=self.settings.guidance, batch_size=self.batch_size,
                                                out_dir=out_dir or None, desc=sweep or "generate")

    def score(self, images: np.ndarray, with_references: bool = True) -> pd.DataFrame:
        """Alignment of images[i] with pair i's A and B: their prompts and (optionally) their same-seed images."""
        n = len(images)
        refs = {"source_images": self.images["A"][:n], "target_images": self.images["B"][:n]} if with_references else {}
        return alignment.score_source_target(self.scorer, images, [p.source for p in self.pairs[:n]],
                                             [p.target for p in self.pairs[:n]], evaluator=self.settings.use_evaluator,
                                             **refs)

    def condition(self, prompts: Sequence[surgery.EncodedPrompt], sweep: str) -> pd.DataFrame:
        """The score table of one condition: generated (sweep ``sweep``) and scored, unless a condition with
        the same embeddings was scored before (then its table)."""
        self._require_references()
        key = _embedding_key(prompts)
        if key not in self._scored:
            self._scored[key] = self.score(self.gen(prompts, sweep))
        return self._scored[key]

    def generate_references(self) -> None:
        """The images of A, of B and of the switched prompt (sweeps ``"A"``, ``"B"``, ``"switched"``)."""
        self.images["A"] = self.gen(self.A, "A")
        self.images["B"] = self.gen(self.B, "B")
        self.images["switched"] = self.gen(self.S, "switched")

    def _require_references(self) -> None:
        if not {"A", "B", "switched"} <= set(self.images):
            raise ValueError("generate the A, B and switched images first: call study.generate_references()")

    def switched_table(self) -> pd.DataFrame:
        """Alignment of every switched image (one row per pair): Table 1's and the verdict's table."""
        self._require_references()
        if self._switched_table is None:
            self._switched_table = self.score(self.images["switched"])
        return self._switched_table

    def table_of(self, which: str) -> pd.DataFrame:
        """The first ``n_ablation`` rows of ``"A"`` (prompt A itself, k = 0) or ``"switched"`` (k = all),
        the reference rows of every ablation."""
        n = self.settings.n_ablation
        if which not in ("A", "switched"):
            raise ValueError(f"which must be 'A' or 'switched', not {which!r}")
        prompts = self.A[:n] if which == "A" else self.S[:n]
        key = _embedding_key(prompts)
        if key not in self._scored:
            self._require_references()
            self._scored[key] = self.score(self.images["A"][:n]) if which == "A" else self.switched_table().iloc[:n]
        return self._scored[key]

    def object_words(self, i: int) -> tuple[str, str, str]:
        """A's object word, A's attribute word (colour, or the object's first modifier) and B's object word."""
        p = self.pairs[i]
        word_a = p.source.attributes.get("shape") or p.source.attributes["objects"][0]  # toy: the shape; natural: the object
        attr_a = p.source.attributes.get("color") or (p.source.attributes.get("modifiers") or {}).get(word_a, [word_a])[0]
        word_b = p.target.attributes.get("shape") or p.target.attributes["objects"][0]
        return word_a, attr_a, word_b


def save(tables: Mapping[str, Any], save_table: Callable[[Any, str], Any]) -> None:
    """``save_table(table, stem)`` for every ``stem -> table`` (``ctx.save_table``)."""
    for stem, table in tables.items():
        save_table(table, stem)


# ------------------------------------------------------------------------------ Table 1
@dataclasses.dataclass
class Table1:
    """Alignment of the switched images with A vs B (:func:`table1`)."""

    switched: pd.DataFrame  # one row per switched image
    table1: pd.DataFrame  # alignment.summarize of it
    reference: pd.DataFrame  # the model's own A and B images against the prompts
    reference_columns: dict

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        return {"table1_switched": self.table1, "table1_reference": self.reference}

    def shown(self) -> dict[str, pd.DataFrame]:
        """Title -> table for display: Table 1 (mean ± s.e.) and the A and B images against their prompts."""
        return {f"Switched prompts, {len(self.switched)} pairs": alignment.format_mean_se(self.table1),
                "The model's own A and B images against the prompts":
                    alignment.condition_table(self.reference, self.reference_columns)}


def table1(study: EOSStudy) -> Table1:
    """Table 1: the switched images scored against A and B (prompts and same-seed images), and the A and B
    images against their prompts (how often the model draws what a prompt names)."""
    table_s = study.switched_table()
    score_a = study.score(study.images["A"], False)
    reference = alignment.summarize_conditions({"A images": score_a, "B images": study.score(study.images["B"], False)})
    return Table1(table_s, alignment.summarize(table_s), reference, alignment.metric_columns(score_a))


# ------------------------------------------------------------------------------ Fig 12
@dataclasses.dataclass
class SwitchedMaps:
    """Cross-attention maps of A's words under the switched prompt (:func:`attention_maps`).

    ``rows``: per pair, the images and the maps shown (A's word in A, B's word in B, A's object word, A's
    attribute word and the [EOS] under the switched prompt) and the words; ``f1``: the F1 table.
    """

    rows: list[dict]
    f1: pd.DataFrame

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        return {"fig12_object_map_f1": self.f1}

    def f1_text(self) -> str:
        return ("F1 of an object word's binarised map with the image's object (foreground) mask:\n"
                + self.f1.round(2).to_string() + "\nmean: "
                + ", ".join(f"{k} {v:.2f}" for k, v in self.f1.mean().items()))


def attention_maps(study: EOSStudy) -> SwitchedMaps:
    """Fig 12: record the cross-attention (mean over heads, layers and steps) while generating A, B and the
    switched prompt of the first ``n_fig`` pairs; F1 of each object word's binarised map (above its mean,
    upsampled) with the object region of its image (pixels away from the background colour)."""
    from ..hooks import attention
    from ..text.tokens import pipeline_token_classes
    from .masks import binarize, f1_score, foreground_mask, upsample
    from .mass import token_map

    study._require_references()
    n_fig = study.settings.n_fig

    def recorded(prompts):
        with attention.record_attention(study.pipe, resolutions=study.settings.attn_resolutions, per_step=False) as rec:
            images = study.gen(prompts)
        return images, rec.mean_maps()          # (samples, tokens, h, w)

    _, maps_A = recorded(study.A[:n_fig])
    _, maps_B = recorded(study.B[:n_fig])
    _, maps_S = recorded(study.S[:n_fig])
    images_A, images_B, images_S = (study.images[k] for k in ("A", "B", "switched"))
    rows, f1_rows = [], []
    for i, p in enumerate(study.pairs[:n_fig]):
        ca = pipeline_token_classes(study.pipe, p.source.prompt)
        cb = pipeline_token_classes(study.pipe, p.target.prompt)
        word_a, attr_a, word_b = study.object_words(i)
        obj_a, col_a = ca.positions_of(word_a), ca.positions_of(attr_a)
        obj_b = cb.positions_of(word_b)
        heat_s = token_map(maps_S[i], obj_a).numpy()
        heat_a = token_map(maps_A[i], obj_a).numpy()
        heat_b = token_map(maps_B[i], obj_b).numpy()
        f1_rows.append({"pair": i} | {
            name: f1_score(binarize(upsample(heat, image.shape[:2])), foreground_mask(image))
            for name, heat, image in (("A's word, switched image", heat_s, images_S[i]),
                                      ("A's word, A image", heat_a, images_A[i]),
                                      ("B's word, B image", heat_b, images_B[i]))})
        rows.append({"images": (images_A[i], images_B[i], images_S[i]), "words": (word_a, attr_a, word_b),
                     "heat_a": heat_a, "heat_b": heat_b, "heat_s": heat_s,
                     "heat_attr": token_map(maps_S[i], col_a).numpy(), "heat_eos": token_map(maps_S[i], ca.eos).numpy()})
    return SwitchedMaps(rows, pd.DataFrame(f1_rows).set_index("pair"))


def maps_by_step(study: EOSStudy, threshold: str | float = "mean") -> eos_controls.MapSteps:
    """Fig 12 per step, against chance: for the first ``n_map_pairs`` pairs, the F1 at every step of A's object
    word's map and of the real [EOS]'s map under the switched prompt with the switched image's object, and of
    A's object word in A's own image, each beside a random mask of the same area
    (:func:`helpers.analysis.eos_controls.map_f1_by_step`)."""
    from ..text.tokens import pipeline_token_classes

    n = study.settings.n_map_pairs
    classes = [pipeline_token_classes(study.pipe, p.source.prompt) for p in study.pairs[:n]]
    objects = [c.positions_of(study.object_words(i)[0]) for i, c in enumerate(classes)]
    switched, own = study.S[:n], study.A[:n]
    runs = {"A's word, switched image": (switched, objects),
            "[EOS], switched image": (switched, [c.eos for c in classes]),
            "A's word, A image": (own, objects)}
    return eos_controls.map_f1_by_step(study.pipe, runs, seed=study.seed, num_inference_steps=study.settings.steps,
                                       guidance_scale=study.settings.guidance, batch_size=study.batch_size,
                                       resolutions=study.settings.attn_resolutions, threshold=threshold,
                                       n_examples=min(2, n))


# ------------------------------------------------------------------------------ summary
def summary(study: EOSStudy, t1: Table1, kv, maps: SwitchedMaps, model: str, seconds: float) -> dict:
    """The numbers beside the verdict (``summary.json``): pairs, settings, the CLIP preferences, the shape
    follow fractions with the evaluator, the KL of the keys (``kv``: :func:`helpers.analysis.eos_ablations.kv_ablation`)
    and Fig 12's mean F1."""
    table_S = t1.switched
    out = {"pairs": len(study.pairs), "steps": study.settings.steps, "guidance": study.settings.guidance,
           "model": model, "seconds": seconds}
    pref = (table_S["clip_target"] > table_S["clip_source"]).astype(float)
    out["clip_prefers_B"] = float(pref.mean())
    if "imgclip_target" in table_S:
        out["image_clip_closer_to_B"] = float((table_S["imgclip_target"] > table_S["imgclip_source"]).mean())
    if study.settings.use_evaluator:
        img, gt = alignment.follow_fractions(table_S, "shape", "images"), alignment.follow_fractions(table_S, "shape")
        fidelity = float(t1.reference.loc[("A images", "evaluator: shape"), "source"])
        out.update({"shape_follows_B_image": img["target"], "shape_follows_A_image": img["source"],
                    "n_images_test": img["n"], "shape_follows_B_prompt": gt["target"],
                    "shape_follows_A_prompt": gt["source"], "model_shape_fidelity": fidelity})
    out["kl_keys"] = kv.kl_result
    out["fig12_f1"] = {k: float(v) for k, v in maps.f1.mean().items()}
    return out


def summary_text(study: EOSStudy, t1: Table1, summary_: Mapping) -> str:
    """Which attributes follow B's [EOS] and which survive from A's words (vs the same-seed images); empty
    without the evaluator."""
    if not study.settings.use_evaluator:
        return ""
    table1_ = t1.table1
    attrs = [m.replace("evaluator vs images: ", "") for m in table1_.index if m.startswith("evaluator vs images")]
    rows = {a: table1_.loc[f"evaluator vs images: {a}"] for a in attrs}
    follow_b = [a for a, r in rows.items() if r["target"] > r["source"]]
    follow_a = [a for a, r in rows.items() if r["target"] <= r["source"]]
    return (f"Attributes following B's [EOS] (vs the same-seed images): {', '.join(follow_b) or 'none'}; surviving "
            f"from A's semantic tokens: {', '.join(follow_a) or 'none'}; the model draws A's own shape for A in "
            f"{summary_['model_shape_fidelity']:.0%} of cases")
