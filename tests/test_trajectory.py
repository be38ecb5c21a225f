"""x_t / x̂0 trajectory recording and toy-world object masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.toy import world as toyworld
from helpers.analysis.masks import MaskError, binarize, f1_score, otsu_threshold
from helpers.hooks.attention import record_attention
from helpers.generation import generate
from helpers.promptsets import PromptRecord
from helpers.analysis.masks import first_step_above, settled_step, foreground_mask, iou_curve, mask_iou, relative_f1_table
from helpers.hooks.trajectory import TrajectoryError, predicted_x0, record_trajectory, trajectory

PROMPTS = ["a red circle", "a blue star", "a green heart"]


def test_shapes_and_last_step(tiny_pipe):
    images, traj = trajectory(tiny_pipe, PROMPTS, num_inference_steps=6, batch_size=2, progress=False)
    assert traj.x0.shape == (6, 3, 4, 16, 16) and traj.xt.shape == (7, 3, 4, 16, 16)
    assert traj.timesteps == sorted(traj.timesteps, reverse=True)
    # the final latent is x̂0 of the last step up to the last (tiny) noise level
    final, last_x0 = traj.xt[-1], traj.x0[-1]
    assert float((final - last_x0).norm() / final.norm()) < 0.05
    # decoding the final latent gives the pipeline's own images
    np.testing.assert_allclose(traj.decode(tiny_pipe, "xt", steps=[-1])[0], images, atol=1e-5)
    strip = traj.decode(tiny_pipe, "x0", steps=[0, 5])
    assert strip.shape == (2, 3, 64, 64, 3) and 0 <= strip.min() and strip.max() <= 1
    assert not tiny_pipe.unet._forward_hooks


def test_x0_matches_the_ddim_scheduler(tiny_pipe):
    with record_trajectory(tiny_pipe) as rec:
        generate(tiny_pipe, "a red circle", num_inference_steps=4, progress=False, **{})
    traj = rec.result()
    assert traj.xt.shape[0] == 4  # no step-end callback: only the inputs of each step
    # replay step 1 with the scheduler: its pred_original_sample is our x̂0
    scheduler = tiny_pipe.scheduler
    t = int(traj.timesteps[1])
    alpha = scheduler.alphas_cumprod[t]
    eps = (traj.xt[1] - alpha.sqrt() * traj.x0[1]) / (1 - alpha).sqrt()
    out = scheduler.step(eps, t, traj.xt[1])
    torch.testing.assert_close(out.pred_original_sample, traj.x0[1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_predicted_x0_inverts_the_forward_process(tiny_pipe, kind):
    scheduler = type(tiny_pipe.scheduler).from_config(tiny_pipe.scheduler.config, prediction_type=kind)
    torch.manual_seed(0)
    x0, eps = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    a = scheduler.alphas_cumprod[500]
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    output = {"epsilon": eps, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0, "sample": x0}[kind]
    torch.testing.assert_close(predicted_x0(scheduler, x_t, output, 500), x0, atol=1e-4, rtol=1e-4)


def test_batches_concatenate_like_single_calls(tiny_pipe):
    _, batched = trajectory(tiny_pipe, PROMPTS, num_inference_steps=3, batch_size=2, progress=False)
    _, single = trajectory(tiny_pipe, PROMPTS[2:], seed=2, num_inference_steps=3, progress=False)
    torch.testing.assert_close(batched.x0[:, 2], single.x0[:, 0], atol=1e-4, rtol=1e-4)


def test_hook_removed_after_exception(tiny_pipe):
    with pytest.raises(RuntimeError, match="boom"):
        with record_trajectory(tiny_pipe):
            raise RuntimeError("boom")
    assert not tiny_pipe.unet._forward_hooks
    with record_trajectory(tiny_pipe) as rec:
        pass
    with pytest.raises(TrajectoryError, match="no denoiser call"):
        rec.result()


def test_pixart_needs_the_guidance_scale():
    from helpers.toy.random_pipelines import random_pipeline

    pipe = random_pipeline("pixart")
    kwargs = {"height": 64, "width": 64, "use_resolution_binning": False, "clean_caption": False,
              "num_inference_steps": 2, "generator": torch.Generator().manual_seed(0), "output_type": "np"}
    with pytest.raises(TrajectoryError, match="guidance_scale"):
        with record_trajectory(pipe) as rec:
            pipe("a red circle", **kwargs)
    with record_trajectory(pipe, guidance_scale=4.5) as rec:
        image = pipe("a red circle", guidance_scale=4.5, **rec.step_callbacks(), **kwargs).images
    traj = rec.result()
    assert traj.x0.shape == (2, 1, 4, 8, 8) and traj.xt.shape == (3, 1, 4, 8, 8)
    np.testing.assert_allclose(traj.decode(pipe, "xt", steps=[-1])[0], image, atol=1e-5)


def test_foreground_mask_finds_the_rendered_object():
    rng = np.random.default_rng(0)
    ious = []
    for _ in range(12):
        image, coverage = toyworld.render(toyworld.sample_scene(rng))
        ious.append(mask_iou(foreground_mask(image), coverage > 0.5))
    assert min(ious) > 0.8 and np.mean(ious) > 0.9  # only anti-aliased edge pixels may disagree
    assert iou_curve(np.stack([image, image]), image).tolist() == [1.0, 1.0]
    with pytest.raises(MaskError):
        foreground_mask(np.zeros((8, 8)))


def test_binarize_f1_and_relative_f1(tiny_pipe):
    heat = np.zeros((8, 8))
    heat[2:5, 2:5] = 1.0
    assert binarize(heat, "mean").sum() == 9 and binarize(heat, "otsu").sum() == 9
    assert 0 <= otsu_threshold(heat) < 1
    assert f1_score(heat > 0, heat > 0) == 1.0 and np.isnan(f1_score(heat < 0, heat < 0))
    assert first_step_above([0.2, 0.95, 0.5, 1.0]) == 1 and first_step_above([0.1]) is None
    assert settled_step([0.2, 0.95, 0.5, 1.0]) == 3 and settled_step([0.95, 1.0]) == 0
    assert settled_step([1.0, 0.5]) is None
    with pytest.raises(ValueError):
        binarize(heat, "median")

    records = [PromptRecord("a red circle", {"shape": "circle"}), PromptRecord("a blue star", {"objects": ["star"]})]
    with record_attention(tiny_pipe, resolutions=None) as rec:
        generate(tiny_pipe, [r.prompt for r in records], num_inference_steps=3, progress=False)
    table = relative_f1_table(rec, records)  # reference: the last step's own map
    last = table[table.step == 2]
    assert len(table) == 6 and np.allclose(last.relative_f1, 1.0)
    full = np.ones((64, 64), bool)
    table = relative_f1_table(rec, records, references=[full, full], threshold="otsu")
    assert table.f1.between(0, 1).all()
    table = relative_f1_table(rec, records, references=[full, full], min_final_f1=1.01)
    assert table.relative_f1.isna().all()
