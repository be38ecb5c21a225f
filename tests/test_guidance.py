"""Guidance schedules: exactness at k = N, one denoiser pass per step after k, switching, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import guidance as g
from helpers.generation import generate
from helpers.loading import denoiser
from helpers.toy.random_pipelines import KINDS, random_pipeline

PROMPTS = ["a red circle on the left", "a blue striped star", "a large green heart"]
N = 5


@pytest.fixture(scope="module")
def reference(tiny_pipe) -> np.ndarray:
    return generate(tiny_pipe, PROMPTS, seed=0, num_inference_steps=N, progress=False)


class BatchLog:
    """Batch size of every denoiser call, seen by a forward pre-hook (independent of the helper's own)."""

    def __init__(self, pipe):
        self.sizes: list[int] = []
        self.handle = denoiser(pipe).register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        sample = args[0] if args else kwargs["hidden_states"]
        self.sizes.append(int(sample.shape[0]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# ---------------------------------------------------------------- exactness


@pytest.mark.parametrize("variant", g.VARIANTS)
def test_k_equal_n_is_bit_identical_to_stock(tiny_pipe, reference, variant):
    run = g.sample(tiny_pipe, PROMPTS, g.TextWindow(N, variant), num_inference_steps=N)
    assert np.array_equal(run.images, reference)
    assert run.evals_per_image == 2 * N and (run.text_steps == N).all() and (run.paper_a == 0).all()


def test_no_schedule_without_recording_is_stock(tiny_pipe, reference):
    run = g.sample(tiny_pipe, PROMPTS, None, num_inference_steps=N, record=False)
    assert np.array_equal(run.images, reference)
    assert np.isnan(run.diff_norm).all()


def test_switch_to_the_same_prompts_is_stock(tiny_pipe, reference):
    for k in (0, 2, N):
        run = g.sample(tiny_pipe, PROMPTS, g.Switch(k, PROMPTS), num_inference_steps=N)
        assert np.array_equal(run.images, reference), k


def test_switch_accepts_encoded_prompts_and_a_bare_tensor(tiny_pipe, reference):
    from helpers.text.conditioning import encode, pipeline_inputs

    same = [encode(tiny_pipe, p) for p in PROMPTS]
    assert np.array_equal(g.sample(tiny_pipe, PROMPTS, g.Switch(2, same), num_inference_steps=N).images, reference)
    tensor = pipeline_inputs(tiny_pipe, same)["prompt_embeds"].clone()
    assert np.array_equal(g.sample(tiny_pipe, PROMPTS, g.Switch(2, tensor), num_inference_steps=N).images, reference)
    other = pipeline_inputs(tiny_pipe, [encode(tiny_pipe, "a yellow square")] * 3)["prompt_embeds"]
    run = g.sample(tiny_pipe, PROMPTS, g.Switch(2, other), num_inference_steps=N)
    assert not np.array_equal(run.images, reference)


def test_switch_at_zero_is_the_second_prompt_and_order_matters(tiny_pipe):
    other = ["a yellow square"] * 3
    b = generate(tiny_pipe, other, seed=0, num_inference_steps=N, progress=False)
    assert np.array_equal(g.sample(tiny_pipe, PROMPTS, g.Switch(0, other), num_inference_steps=N).images, b)
    ab = g.sample(tiny_pipe, PROMPTS, g.Switch(2, other), num_inference_steps=N).images
    ba = g.sample(tiny_pipe, other, g.Switch(2, PROMPTS), num_inference_steps=N).images
    assert not np.array_equal(ab, ba)


def test_sample_takes_encoded_prompts(tiny_pipe, reference):
    """A list of EncodedPrompt (the one conditioning type) gives the stock images; bad prompts get one sentence."""
    from helpers.text.conditioning import encode

    encoded = [encode(tiny_pipe, p) for p in PROMPTS]
    np.testing.assert_allclose(g.sample(tiny_pipe, encoded, None, num_inference_steps=N).images, reference, atol=1e-5)
    for bad in ([], [1, 2], None):
        with pytest.raises(g.GuidanceScheduleError, match="prompts must be"):
            g.sample(tiny_pipe, bad, None, num_inference_steps=N)


# ---------------------------------------------------------------- one pass per step after k


@pytest.mark.parametrize("variant", g.VARIANTS)
@pytest.mark.parametrize("k", [0, 1, 3])
def test_one_denoiser_pass_per_step_after_k(tiny_pipe, variant, k):
    with BatchLog(tiny_pipe) as log:
        run = g.sample(tiny_pipe, PROMPTS[:1], g.TextWindow(k, variant), num_inference_steps=N)
    assert log.sizes == [2] * k + [1] * (N - k)
    assert run.evals_per_image == N + k and run.denoiser_calls == N
    assert np.isnan(run.diff_norm[:, k:]).all() and np.isfinite(run.diff_norm[:, :k]).all()


def test_k_zero_is_plain_unconditional_or_conditional_sampling(tiny_pipe):
    uncond = generate(tiny_pipe, [""] * 3, seed=0, num_inference_steps=N, guidance_scale=1.0, progress=False)
    cond = generate(tiny_pipe, PROMPTS, seed=0, num_inference_steps=N, guidance_scale=1.0, progress=False)
    assert np.array_equal(g.sample(tiny_pipe, PROMPTS, g.TextWindow(0, "uncond"), num_inference_steps=N).images, uncond)
    assert np.array_equal(g.sample(tiny_pipe, PROMPTS, g.TextWindow(0, "cond"), num_inference_steps=N).images, cond)


@pytest.mark.parametrize("variant", g.VARIANTS)
def test_row_gate_equals_the_callback(tiny_pipe, variant):
    """The hook mechanism (PixArt, adaptive) and the callback one (SD/SDXL) give the same images."""
    window = g.sample(tiny_pipe, PROMPTS, g.TextWindow(2, variant), num_inference_steps=N)
    forced = g.sample(tiny_pipe, PROMPTS, g.AdaptiveStop(1e9, variant, min_text_steps=2), num_inference_steps=N)
    assert np.array_equal(window.images, forced.images)
    assert (forced.text_steps == 2).all() and forced.denoiser_rows == window.denoiser_rows


def test_variants_differ_after_k(tiny_pipe, reference):
    a = g.sample(tiny_pipe, PROMPTS, g.TextWindow(2, "uncond"), num_inference_steps=N).images
    b = g.sample(tiny_pipe, PROMPTS, g.TextWindow(2, "cond"), num_inference_steps=N).images
    assert not np.array_equal(a, b) and not np.array_equal(a, reference)


# ---------------------------------------------------------------- recording and adaptive stop


def test_recorded_norms_match_the_batched_output(tiny_pipe):
    seen = []

    def hook(module, args, output):
        u, c = output[0].float().chunk(2)
        seen.append(torch.stack([u.flatten(1).norm(dim=1), c.flatten(1).norm(dim=1), (c - u).flatten(1).norm(dim=1)]))

    handle = denoiser(tiny_pipe).register_forward_hook(hook)
    try:
        run = g.sample(tiny_pipe, PROMPTS, None, num_inference_steps=N)
    finally:
        handle.remove()
    expected = torch.stack(seen, dim=-1).numpy()  # (3, n, N)
    got = np.stack([run.eps_uncond_norm, run.eps_cond_norm, run.diff_norm])
    assert np.allclose(got, expected, rtol=1e-6)
    assert np.allclose(run.ratio, run.diff_norm / run.eps_uncond_norm)


def test_adaptive_stop_is_per_prompt_and_batch_independent(tiny_pipe):
    full = g.sample(tiny_pipe, PROMPTS, None, num_inference_steps=N)
    threshold = float(np.median(full.ratio[:, 1]))  # some prompts stop after step 1, others later
    run = g.sample(tiny_pipe, PROMPTS, g.AdaptiveStop(threshold), num_inference_steps=N)
    assert len(set(run.text_steps)) > 1
    assert run.evals_per_image == pytest.approx(N + run.text_steps.mean())
    for i, k in enumerate(run.text_steps):
        alone = g.sample(tiny_pipe, PROMPTS[i:i + 1], g.TextWindow(int(k)), seed=i, num_inference_steps=N)
        assert np.allclose(run.images[i], alone.images[0], atol=1e-5)
    assert (run.text_steps == g.adaptive_stop_steps(full.ratio, threshold)).all()  # the rule replayed offline


def test_x0_criterion_is_the_guidance_term_on_x0_and_drives_the_stop(tiny_pipe):
    full = g.sample(tiny_pipe, PROMPTS, None, num_inference_steps=N)
    tiny_pipe.scheduler.set_timesteps(N)
    abar = tiny_pipe.scheduler.alphas_cumprod[tiny_pipe.scheduler.timesteps.long()].double().numpy()
    d = tiny_pipe.unet.config.in_channels * tiny_pipe.unet.config.sample_size ** 2  # latent elements per image
    expected = full.diff_norm / np.sqrt(d) * np.sqrt((1 - abar) / abar)[None, :]
    assert np.allclose(full.x0_guidance, expected, rtol=1e-5)
    threshold = float(np.median(full.x0_guidance[:, 1]))
    run = g.sample(tiny_pipe, PROMPTS, g.AdaptiveStop(threshold, criterion="x0"), num_inference_steps=N)
    assert (run.text_steps == g.adaptive_stop_steps(full.x0_guidance, threshold)).all()
    with pytest.raises(g.GuidanceScheduleError, match="criterion"):
        g.sample(tiny_pipe, PROMPTS, g.AdaptiveStop(0.1, criterion="eps"), num_inference_steps=N)


def test_adaptive_stop_rule():
    ratio = np.array([[0.5, 0.3, 0.1, 0.05], [0.5, 0.5, 0.5, 0.5], [0.01, 0.5, 0.01, 0.5]])
    assert list(g.adaptive_stop_steps(ratio, 0.2)) == [3, 4, 1]
    assert list(g.adaptive_stop_steps(ratio, 0.2, min_text_steps=2)) == [3, 4, 3]
    assert list(g.adaptive_stop_steps(ratio, 1.0, min_text_steps=4)) == [4, 4, 4]


def test_hooks_are_removed_even_after_an_error(tiny_pipe):
    model = denoiser(tiny_pipe)
    before = (len(model._forward_pre_hooks), len(model._forward_hooks))
    calls = []

    def fail_at_third_call(module, args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")

    handle = model.register_forward_pre_hook(fail_at_third_call)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            g.sample(tiny_pipe, PROMPTS, g.AdaptiveStop(0.1), num_inference_steps=N)
    finally:
        handle.remove()
    assert (len(model._forward_pre_hooks), len(model._forward_hooks)) == before
    g.sample(tiny_pipe, PROMPTS[:1], g.TextWindow(1), num_inference_steps=2)
    assert (len(model._forward_pre_hooks), len(model._forward_hooks)) == before


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("schedule", [
    g.TextWindow(-1), g.TextWindow(N + 1), g.TextWindow(2.5), g.TextWindow(True), g.TextWindow(2, "both"),
    g.Switch(N + 1, PROMPTS), g.AdaptiveStop(0.0), g.AdaptiveStop(float("nan")), g.AdaptiveStop(0.1, "text"),
    g.AdaptiveStop(0.1, min_text_steps=N + 1), "k=2",
])
def test_bad_schedules_give_clear_errors(tiny_pipe, schedule):
    with pytest.raises(g.GuidanceScheduleError, match=r"text_steps|variant|threshold|min_text_steps|schedule"):
        g.sample(tiny_pipe, PROMPTS, schedule, num_inference_steps=N)


def test_other_bad_inputs(tiny_pipe):
    with pytest.raises(g.GuidanceScheduleError, match="outside"):
        g.sample(tiny_pipe, PROMPTS, g.TextWindow(N + 1), num_inference_steps=N)
    with pytest.raises(g.GuidanceScheduleError, match="guidance_scale"):
        g.sample(tiny_pipe, PROMPTS, g.TextWindow(2), num_inference_steps=N, guidance_scale=1.0)
    with pytest.raises(g.GuidanceScheduleError, match="rows|prompts"):
        g.sample(tiny_pipe, PROMPTS, g.Switch(2, ["a red circle"]), num_inference_steps=N)
    with pytest.raises(g.GuidanceScheduleError, match="shape"):
        g.sample(tiny_pipe, PROMPTS, g.Switch(2, torch.zeros(3, 5, 7)), num_inference_steps=N)
    with pytest.raises(g.GuidanceScheduleError, match="prompts must be"):
        g.sample(tiny_pipe, PROMPTS, g.Switch(2, 42), num_inference_steps=N)
    with pytest.raises(g.GuidanceScheduleError, match="empty list"):
        g.sample(tiny_pipe, [], None, num_inference_steps=N)
    with pytest.raises(g.GuidanceScheduleError, match="num_inference_steps"):
        g.sample(tiny_pipe, PROMPTS, None, num_inference_steps=0)


def test_paper_a_is_n_minus_k():
    assert g.paper_a(10, 50) == 40
    assert (g.paper_a(np.array([0, 50]), 50) == np.array([50, 0])).all()


# ---------------------------------------------------------------- every supported architecture


@pytest.fixture(scope="module", params=KINDS)
def any_pipe(request):
    return request.param, random_pipeline(request.param)


def test_every_architecture(any_pipe):
    kind, pipe = any_pipe
    steps, prompts = 3, PROMPTS[:2]
    stock = generate(pipe, prompts, seed=0, num_inference_steps=steps, progress=False)
    assert np.array_equal(g.sample(pipe, prompts, g.TextWindow(steps), num_inference_steps=steps).images, stock), kind
    assert np.array_equal(g.sample(pipe, prompts, g.Switch(1, prompts), num_inference_steps=steps).images, stock), kind
    for variant in g.VARIANTS:
        with BatchLog(pipe) as log:
            run = g.sample(pipe, prompts, g.TextWindow(1, variant), num_inference_steps=steps)
        assert log.sizes == [4, 2, 2], (kind, variant)
        gated = g.sample(pipe, prompts, g.AdaptiveStop(1e9, variant, min_text_steps=1), num_inference_steps=steps)
        assert np.array_equal(run.images, gated.images), (kind, variant)
        assert np.isfinite(run.diff_norm[:, 0]).all() and np.isnan(run.diff_norm[:, 1:]).all()
    switched = g.sample(pipe, prompts, g.Switch(1, ["a yellow square"] * 2), num_inference_steps=steps)
    assert not np.array_equal(switched.images, stock)


@pytest.mark.parametrize("schedule", [None, g.TextWindow(2, "uncond"), g.TextWindow(2, "cond"), g.Switch(2, PROMPTS)])
def test_a_users_own_step_end_callback_still_runs(tiny_pipe, schedule):
    """guidance.sample never overwrites the caller's callback_on_step_end: ours runs first, then theirs."""
    seen = []

    def mine(pipe, step_index, timestep, callback_kwargs):
        seen.append((step_index, tuple(callback_kwargs["latents"].shape)))
        return callback_kwargs

    g.sample(tiny_pipe, PROMPTS, schedule, num_inference_steps=N, callback_on_step_end=mine)
    assert [s for s, _ in seen] == list(range(N)) and all(shape[0] == len(PROMPTS) for _, shape in seen)
