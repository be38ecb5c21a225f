"""Guidance schedules as public diffusers callbacks: the images of guidance.sample, composition with a
user's own callbacks (MultiPipelineCallbacks), the forward-hook path for PixArt, clear errors."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

from helpers import guidance as g
from helpers.generation import generate
from helpers.hooks.callbacks import (FunctionCallback, GuidanceOffAfter, ScheduleCallbackError, SwitchAfter,
                                     TextOffAfter)
from helpers.hooks.steps import count_evaluations
from helpers.text.conditioning import encode, pipeline_inputs

PROMPTS = ["a red circle on the left", "a blue striped star"]
N, K = 3, 1
CALLBACKS = {"uncond": TextOffAfter, "cond": GuidanceOffAfter}


def _generate(pipe, **kwargs) -> np.ndarray:
    return generate(pipe, PROMPTS, seed=0, num_inference_steps=N, progress=False, **kwargs)


class StepLog(PipelineCallback):
    """A user's own callback: logs each step and the latents' batch size, changes nothing."""

    tensor_inputs = ["latents"]

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, int]] = []

    def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
        self.seen.append((int(step_index), int(callback_kwargs["latents"].shape[0])))
        return callback_kwargs


@pytest.fixture(scope="module")
def stock(tiny_pipe) -> np.ndarray:
    return _generate(tiny_pipe)


# ---------------------------------------------------------------- the images of guidance.sample


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
@pytest.mark.parametrize("variant", g.VARIANTS)
def test_callback_gives_the_images_of_guidance_sample(tiny_pipe, pipes, kind, variant):
    pipe = tiny_pipe if kind == "sd15" else pipes(kind)
    ours = _generate(pipe, callback_on_step_end=CALLBACKS[variant](K, pipe))
    theirs = g.sample(pipe, PROMPTS, g.TextWindow(K, variant), num_inference_steps=N).images
    assert np.array_equal(ours, theirs), (kind, variant)
    assert not np.array_equal(ours, _generate(pipe)), (kind, variant)


def test_switch_after_gives_the_images_of_guidance_switch(tiny_pipe, stock):
    second = [encode(tiny_pipe, p) for p in ("a yellow square", "a green heart")]
    kwargs = pipeline_inputs(tiny_pipe, second)
    batched = torch.cat([kwargs["negative_prompt_embeds"], kwargs["prompt_embeds"]])
    ours = _generate(tiny_pipe, callback_on_step_end=SwitchAfter(K, batched))
    assert np.array_equal(ours, g.sample(tiny_pipe, PROMPTS, g.Switch(K, second), num_inference_steps=N).images)
    assert not np.array_equal(ours, stock)
    with pytest.raises(ScheduleCallbackError, match="rows"):
        _generate(tiny_pipe, callback_on_step_end=SwitchAfter(K, batched[:1]))


def test_one_denoiser_pass_per_step_after_k(tiny_pipe, stock):
    with count_evaluations(tiny_pipe) as rows:
        _generate(tiny_pipe, callback_on_step_end=TextOffAfter(K))
    assert rows[0] == len(PROMPTS) * (N + K)
    last = GuidanceOffAfter(N)  # acts after the last step: nothing left to change
    assert np.array_equal(_generate(tiny_pipe, callback_on_step_end=last), stock)


# ---------------------------------------------------------------- the hook path (PixArt)


@pytest.mark.parametrize("variant", g.VARIANTS)
def test_pixart_takes_the_same_schedule_through_hooks(pipes, variant):
    pipe = pipes("pixart")
    before = denoiser_hooks(pipe)
    with CALLBACKS[variant](K).hooked(pipe), count_evaluations(pipe) as rows:
        ours = _generate(pipe)
    assert rows[0] == len(PROMPTS) * (N + K)
    assert denoiser_hooks(pipe) == before, "hooked() left hooks on the transformer"
    assert np.array_equal(ours, g.sample(pipe, PROMPTS, g.TextWindow(K, variant), num_inference_steps=N).images)


def test_hooked_equals_the_callback_and_restores(tiny_pipe):
    before = denoiser_hooks(tiny_pipe)
    with TextOffAfter(K).hooked(tiny_pipe):
        hooked = _generate(tiny_pipe)
        again = _generate(tiny_pipe)  # each pipeline call starts its own schedule
    assert np.array_equal(hooked, _generate(tiny_pipe, callback_on_step_end=TextOffAfter(K)))
    assert np.array_equal(hooked, again)
    with pytest.raises(RuntimeError, match="boom"):
        with GuidanceOffAfter(K).hooked(tiny_pipe):
            raise RuntimeError("boom")
    assert denoiser_hooks(tiny_pipe) == before


def denoiser_hooks(pipe) -> tuple[int, int]:
    model = pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer
    return len(model._forward_pre_hooks), len(model._forward_hooks)


# ---------------------------------------------------------------- composition with a user's own callbacks


@pytest.mark.parametrize("order", ["ours first", "theirs first"])
def test_composes_with_a_users_callback_through_multipipelinecallbacks(tiny_pipe, order):
    alone = _generate(tiny_pipe, callback_on_step_end=TextOffAfter(K))
    log, steps = StepLog(), []
    plain = FunctionCallback(lambda pipe, i, t, kw: steps.append(i))  # a function returning None
    mine = [log, plain]
    chain = [TextOffAfter(K), *mine] if order == "ours first" else [*mine, TextOffAfter(K)]
    images = _generate(tiny_pipe, callback_on_step_end=MultiPipelineCallbacks(chain))
    assert np.array_equal(images, alone)
    assert log.seen == [(s, len(PROMPTS)) for s in range(N)] and steps == list(range(N))


@pytest.mark.parametrize("schedule", [None, g.TextWindow(K, "uncond"), g.TextWindow(K, "cond"),
                                      g.Switch(K, ["a yellow square"] * 2), g.AdaptiveStop(1e9)])
def test_guidance_sample_runs_a_users_pipeline_callback(tiny_pipe, schedule):
    """guidance.sample composes with a PipelineCallback (and MultiPipelineCallbacks) as with a function."""
    log, other = StepLog(), StepLog()
    run = g.sample(tiny_pipe, PROMPTS, schedule, num_inference_steps=N,
                   callback_on_step_end=MultiPipelineCallbacks([log, other]))
    assert log.seen == other.seen == [(s, len(PROMPTS)) for s in range(N)]
    assert np.array_equal(run.images, g.sample(tiny_pipe, PROMPTS, schedule, num_inference_steps=N).images)


# ---------------------------------------------------------------- SDXL's tensors and bad input


def test_sdxl_halves_every_batched_tensor_by_its_layout(pipes):
    sdxl = pipes("sdxl")
    assert TextOffAfter(K).tensor_inputs == ["prompt_embeds"]
    assert TextOffAfter(K, sdxl).tensor_inputs == ["prompt_embeds", "add_text_embeds", "add_time_ids"]
    with pytest.raises(ScheduleCallbackError, match=r"TextOffAfter\(1, pipe\)"):
        _generate(sdxl, callback_on_step_end=TextOffAfter(K))
    # SDXL batches its time ids as cat([negative, conditional]).repeat(B, 1): the rows alternate
    time_ids = torch.cat([torch.zeros(1, 6), torch.ones(1, 6)]).repeat(2, 1)
    tensors = {"prompt_embeds": torch.arange(4.0).view(4, 1, 1), "add_text_embeds": torch.arange(4.0).view(4, 1),
               "add_time_ids": time_ids}
    for cls, rows, ids in ((TextOffAfter, [0.0, 1.0], 0.0), (GuidanceOffAfter, [2.0, 3.0], 1.0)):
        fake = SimpleNamespace(do_classifier_free_guidance=True, _guidance_scale=7.5,
                               _callback_tensor_inputs=type(sdxl)._callback_tensor_inputs)
        untouched = cls(K, sdxl)(fake, K, 0, dict(tensors))  # not its step
        assert untouched["prompt_embeds"].shape[0] == 4 and fake._guidance_scale == 7.5
        out = cls(K, sdxl)(fake, K - 1, 0, dict(tensors))
        assert out["prompt_embeds"].flatten().tolist() == rows == out["add_text_embeds"].flatten().tolist()
        assert out["add_time_ids"].shape == (2, 6) and bool((out["add_time_ids"] == ids).all())
        assert fake._guidance_scale == 1.0


def test_config_and_bad_input():
    callback = TextOffAfter(np.int64(3))
    assert callback.config.cutoff_step_index == 2 and callback.config.text_steps == 3
    assert GuidanceOffAfter(2).config.keep == "cond"
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ScheduleCallbackError, match="text_steps"):
            TextOffAfter(bad)
    with pytest.raises(ScheduleCallbackError, match="callable"):
        FunctionCallback(3)
