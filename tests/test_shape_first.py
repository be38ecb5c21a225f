"""helpers.analysis.shape_first / helpers.plots.shape_first (notebook 01's study): settings per model and profile,
the per-step summaries on synthetic tables, and on a random-tiny recording the same numbers as the notebook's
former inline code, the rule's inputs, the decision steps and the figures."""

from __future__ import annotations

import dataclasses

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from helpers.analysis import shape_first as study  # noqa: E402
from helpers.profile import get_profile  # noqa: E402
from helpers.promptsets import PromptRecord  # noqa: E402


def _fake_pipe(name: str):
    """An object whose class name is a supported pipeline's (all that Settings.for_run asks of a real model)."""
    return type(name, (), {})()


def test_settings_follow_the_model_and_the_profile():
    quick, full = get_profile("quick"), get_profile("full")
    toy = study.Settings.for_run(None, full, toy=True, n_available=100)
    assert (toy.n_prompts, toy.map_resolution, toy.record, toy.reference, toy.n_blur, toy.n_strip) == \
        (32, 8, None, "image", 240, 3)
    assert (toy.steps, toy.guidance) == (full.num_inference_steps, full.guidance_scale)
    sd = study.Settings.for_run(_fake_pipe("StableDiffusionPipeline"), full, toy=False, n_available=100)
    assert (sd.n_prompts, sd.map_resolution, sd.record, sd.reference) == (8, 16, (16,), "final_attention")
    xl = study.Settings.for_run(_fake_pipe("StableDiffusionXLPipeline"), quick, toy=False, n_available=2)
    assert (xl.n_prompts, xl.map_resolution, xl.record, xl.n_blur, xl.n_strip) == (2, 32, (32,), 48, 2)
    pixart = study.Settings.for_run(_fake_pipe("PixArtAlphaPipeline"), full, toy=False, n_available=100)
    assert pixart.map_resolution is None and pixart.record is None  # every size, averaged
    chosen = study.Settings.for_run(None, quick, toy=True, n_available=10, threshold="otsu", min_final_f1=0.5)
    assert (chosen.threshold, chosen.min_final_f1, chosen.n_prompts) == ("otsu", 0.5, 4)
    assert str(chosen) == "4 prompts, %d steps, threshold='otsu', reference='image'" % quick.num_inference_steps


def test_summaries_per_step_and_the_shown_rows():
    data = pd.DataFrame({"step": [1, 1, 1, 1, 2, 2], "v": [0.0, 1.0, 2.0, 3.0, 5.0, np.nan]})
    s = study.summarise(data, "v")
    assert list(s.columns) == ["mean", "median", "q25", "q75"]
    assert s.loc[1].tolist() == [1.5, 1.5, 0.75, 2.25] and s.loc[2, "mean"] == 5.0
    table = pd.DataFrame({"x": range(50)})
    shown = study.shown_rows(table, 50)
    assert len(shown) == 12 and shown["x"].iloc[0] == 0 and shown["x"].iloc[-1] == 49
    assert len(study.shown_rows(table.iloc[:5], 5)) == 5


RECORDS = [PromptRecord("a red circle", {"shape": "circle", "color": "red"}),
           PromptRecord("a blue star", {"shape": "star", "color": "blue"})]


@pytest.fixture(scope="module")
def recorded(tiny_pipe):
    settings = study.Settings.for_run(tiny_pipe, get_profile("quick"), toy=True, n_available=len(RECORDS), steps=3)
    return settings, study.record(tiny_pipe, RECORDS, settings, seed=0)


def test_record_keeps_maps_trajectory_and_x0_of_every_step(recorded):
    settings, run = recorded
    assert run.num_steps == 3 and run.x0_steps == [0, 1, 2] and list(run.shown) == [0, 1, 2]
    assert run.x0_images.shape[:2] == (3, 2) and run.images.shape[0] == 2
    assert tuple(run.step_maps.shape[:2]) == (3, 2) and tuple(run.step_maps.shape[-2:]) == (8, 8)
    np.testing.assert_array_equal(run.x0(1, 1), run.x0_images[1, 1])
    assert [c.prompt for c in run.classes] == run.prompts and "maps (3, 2" in str(run)


def _former_notebook_code(run, s):
    """Notebook 01's sections 3 and 4 and its verdict cell as they were inline (toy world), for comparison."""
    from helpers import stats
    from helpers.analysis import masks

    references = [masks.foreground_mask(im, s.mask_tolerance) for im in run.images]
    f1 = masks.relative_f1_table(run.rec, run.records, references, threshold=s.threshold,
                                 resolution=s.map_resolution, min_final_f1=s.min_final_f1)
    f1["step"] += 1
    curves = {"f1": study.summarise(f1, "relative_f1")}
    iou = masks.iou_table(run.x0_images, run.images, s.mask_tolerance)
    iou["step"] += 1
    by_step = curves["f1"].add_prefix("relative_f1_")
    by_step["f1_mean"] = f1.groupby("step").f1.mean()
    by_step["x0_iou_mean"] = study.summarise(iou, "iou")["mean"]
    object_masks = masks.reference_masks(run.rec, run.records, references, s.threshold, s.map_resolution)
    auroc = masks.auroc_table(run.rec, run.records, object_masks, resolution=s.map_resolution)
    chance_auroc = masks.auroc_chance(object_masks, tuple(run.step_maps.shape[-2:]), s.auroc_draws, seed=0)
    chance = pd.Series({i: float(np.mean([stats.random_mask_f1(np.asarray(m, bool), seed=0) if m.any() else 0.0]))
                        for i, m in enumerate(references)})
    return by_step, masks.auroc_by_step(auroc, chance_auroc), chance, f1[["sample", "word", "step", "f1"]].fillna({"f1": 0.0})


def test_the_study_gives_the_numbers_of_the_former_inline_code(recorded):
    settings, run = recorded
    f1 = study.relative_f1(run, settings)
    auroc = study.auroc(run, f1.references, settings, seed=0, early_fraction=0.2)
    rule = study.rule_inputs(run, f1, settings, seed=0)
    by_step, auroc_steps, chance, f1_all = _former_notebook_code(run, settings)
    pd.testing.assert_frame_equal(f1.by_step, by_step)
    pd.testing.assert_frame_equal(auroc.by_step, auroc_steps)
    pd.testing.assert_series_equal(rule.chance, chance)
    pd.testing.assert_frame_equal(rule.f1, f1_all)
    assert set(f1.per_size) == {f"{h}x{w}" for h, w in run.rec.sizes}
    assert f1.n_tokens == 2 and 0 <= f1.dropped <= 2 and "object tokens" in str(f1)
    assert len(f1.shown()) == 3 and auroc.title == "AUROC of 8x8 maps against the object mask"
    assert set(auroc.summary.index.get_level_values("step")) == {1, 3}  # ceil(0.2 * 3) and the last step
    keys = list(rule.summary)
    assert keys[:5] == ["steps", "prompts", "map_resolution", "threshold", "reference"]
    assert keys[-4:] == ["tokens_in_rule", "chance_f1_mean", "empty_reference_masks", "undefined_f1_counted_as_0"]
    assert "relative_f1_at_step_1" in keys and "step_x0_iou_stays_ge_0.9" in keys
    assert rule.summary["tokens_in_rule"] == 2 and not rule.f1["f1"].isna().any()
    assert str(rule).startswith("exploration (tokens with last-step F1 >= 0.2)")


def test_without_a_segmenter_the_reference_is_each_tokens_last_map(recorded):
    settings, run = recorded
    own = dataclasses.replace(settings, reference="final_attention")
    f1 = study.relative_f1(run, own)
    assert f1.references is None and f1.per_size is None
    kept = f1.table.dropna(subset=["relative_f1"])
    np.testing.assert_allclose(kept.loc[kept.step == 3, "relative_f1"], 1.0)  # its own last map: F1_last = 1
    rule = study.rule_inputs(run, f1, own, seed=0)
    assert rule.summary["reference"] == "final_attention" and list(rule.chance.index) == [0, 1]
    by_step = study.auroc(run, None, own, seed=0, early_fraction=0.2).by_step
    assert {"object", "real [EOS]", "[EOS] class"} <= set(by_step["kind"]) and set(by_step["step"]) == {0, 1, 2}


class _Scene:
    def __init__(self, shape):
        self.shape = shape

    def attributes(self):
        return {"shape": self.shape, "color": "red"}


def test_decisions_read_every_step_with_the_blur_control(recorded):
    settings, run = recorded
    s = dataclasses.replace(settings, decision_attributes=("shape", "color"), blur_sigmas=(0.0, 2.0))
    read = lambda images: [{"shape": "circle", "color": "red"} for _ in images]  # noqa: E731  a constant reader
    decided = study.decisions(run, read, s, [_Scene("circle"), _Scene("star")],
                              lambda scenes: np.zeros((len(scenes), 16, 16, 3), np.float32))
    table = decided.summary(s.readable_accuracy)
    assert (table["decided_step"] == 1).all() and table.loc["color", "readable_sigma"] == 2.0
    assert decided.control.loc[0.0, "shape"] == 0.5 and decided.blur.shape == (3, 2)
    assert study.decisions(run, read, s).control is None
    with pytest.raises(ValueError, match="renderer"):
        study.decisions(run, read, s, [_Scene("circle")])
    partial = dataclasses.replace(run, x0_steps=[0, 2], x0_images=run.x0_images[[0, 2]])
    with pytest.raises(ValueError, match="every step"):
        study.decisions(partial, read, s)


def test_figures_and_the_static_explorer(recorded, tiny_pipe):
    import matplotlib.pyplot as plt

    from helpers.plots import shape_first as figures

    settings, run = recorded
    fig = figures.plot_strips(tiny_pipe, run, 2)
    assert len(fig.axes) == 2 * 2 * 3
    fig = figures.plot_token_maps(run, settings.map_resolution, 2)
    assert len(fig.axes) == 2 * (1 + max(len(c.words()) + 3 for c in run.classes))
    fig = figures.plot_relative_f1(study.relative_f1(run, settings).curves)
    assert [ax.get_title() for ax in fig.axes] == [study.F1_CURVE, study.IOU_CURVE]
    plt.close("all")
    figures.explore(run)  # headless: the first view, drawn once (widgets or not)
    plt.close("all")
