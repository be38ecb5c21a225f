"""K/V substitution in cross-attention (helpers/kv_substitution.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers.hooks import kv
from helpers.text import surgery
from helpers.hooks.attention import record_attention
from helpers.loading import denoiser
from helpers.toy.random_pipelines import KINDS

PROMPT_A = "a photo of a large red striped circle on the left"
PROMPT_B = "a blue plain star"


def small(pipe) -> dict:
    extra = {"height": 64, "width": 64, "use_resolution_binning": False} if surgery.family(pipe) == "pixart" else {}
    return {"num_inference_steps": 2, "seed": 5, **extra}


def encoded(pipe):
    a, b = surgery.encode(pipe, PROMPT_A), surgery.encode(pipe, PROMPT_B)
    return a, b, surgery.switch_eos(a, b, pooled_from="source")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", ["keys", "values", "both"])
def test_identical_substitution_reproduces_stock(pipes, kind, which):
    """Keys and/or values from the prompt's own embeddings: bit-identical to the stock processor."""
    pipe = pipes(kind)
    a, _, _ = encoded(pipe)
    stock = surgery.generate_from_embeddings(pipe, [a], **small(pipe))
    subs = {"keys": [a]} if which == "keys" else {"values": [a]} if which == "values" else {"keys": [a], "values": [a]}
    ours, _ = kv.generate_substituted(pipe, [a], **subs, **small(pipe))
    np.testing.assert_array_equal(ours, stock)


@pytest.mark.parametrize("kind", KINDS)
def test_keys_and_values_switched_equal_the_switched_prompt(pipes, kind):
    pipe = pipes(kind)
    a, _, s = encoded(pipe)
    switched = surgery.generate_from_embeddings(pipe, [s], **small(pipe))
    both, _ = kv.generate_substituted(pipe, [a], keys=[s], values=[s], **small(pipe))
    np.testing.assert_array_equal(both, switched)
    k_only, _ = kv.generate_substituted(pipe, [a], keys=[s], **small(pipe))
    v_only, _ = kv.generate_substituted(pipe, [a], values=[s], **small(pipe))
    assert not np.array_equal(k_only, switched) and not np.array_equal(v_only, switched)


def test_batches_of_several_prompts(tiny_pipe):
    a, b, s = encoded(tiny_pipe)
    stock = surgery.generate_from_embeddings(tiny_pipe, [a, b, a], num_inference_steps=2, batch_size=2)
    ours, _ = kv.generate_substituted(tiny_pipe, [a, b, a], keys=[a, b, a], num_inference_steps=2, batch_size=2)
    np.testing.assert_array_equal(ours, stock)


def test_processors_restored_after_exception(tiny_pipe):
    model = denoiser(tiny_pipe)
    before = dict(model.attn_processors)
    a, _, s = encoded(tiny_pipe)
    with pytest.raises(RuntimeError, match="boom"):
        with kv.kv_substitution(tiny_pipe, keys=[s]) as installed:
            assert installed and all(isinstance(p, kv.KVSubstitutionProcessor) for p in installed.values())
            assert len(installed) == sum(1 for k in before if k.endswith("attn2.processor"))
            raise RuntimeError("boom")
    after = model.attn_processors
    assert all(after[k] is before[k] for k in before)
    # a failure inside the pipeline call (a substitute batch that does not fit) also restores them
    with pytest.raises(surgery.EmbeddingShapeError, match="do not fit a denoiser batch"):
        with kv.kv_substitution(tiny_pipe, keys=[s, s, s]):
            surgery.generate_from_embeddings(tiny_pipe, [a], num_inference_steps=1)
    assert all(model.attn_processors[k] is before[k] for k in before)


def test_bad_inputs(tiny_pipe, pipes):
    a, _, s = encoded(tiny_pipe)
    other = surgery.encode(pipes("sd21"), PROMPT_B)  # width 64, not 128
    cases = [
        (lambda: kv.kv_substitution(tiny_pipe, keys=[other]).__enter__(), surgery.EmbeddingShapeError, "width|shape"),
        (lambda: kv.kv_substitution(tiny_pipe, keys=torch.zeros(1, 77)).__enter__(), surgery.EmbeddingShapeError,
         "shape"),
        (lambda: kv.kv_substitution(tiny_pipe, keys=[a], values=[a, a]).__enter__(), surgery.EmbeddingShapeError,
         "differ in shape"),
        (lambda: kv.kv_substitution(tiny_pipe, keys=[a, surgery.eos_only(a)]).__enter__(),
         surgery.EmbeddingShapeError, "same shape"),
        (lambda: kv.generate_substituted(tiny_pipe, [a], keys=[s, s]), ValueError, "2 keys for 1 prompts"),
        (lambda: kv.generate_substituted(tiny_pipe, [a], values=[s], measure_kl=True), ValueError, "needs"),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()
    with pytest.raises(TypeError, match="EncodedPrompt"):
        kv.kv_substitution(tiny_pipe, keys=["a prompt"]).__enter__()
    assert all(not isinstance(p, kv.KVSubstitutionProcessor) for p in denoiser(tiny_pipe).attn_processors.values())


# ------------------------------------------------------------------ KL of the attention distributions


def test_attention_kl_by_hand():
    stats = kv.AttentionKL()
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    uniform = torch.zeros(1, 3)
    valid = torch.ones(1, 3, dtype=torch.bool)
    stats.update("layer", logits, uniform, valid)
    expected = 0.5 * math.log(0.5 * 3) + 2 * 0.25 * math.log(0.25 * 3)
    result = stats.result()
    assert result["kl_substituted"] == pytest.approx(expected, rel=1e-5)
    assert result["kl_uniform"] == pytest.approx(expected, rel=1e-5)
    assert result["kl_uniform_substituted"] == pytest.approx(0.0, abs=1e-6)
    masked = kv.AttentionKL()  # a masked token is left out of the uniform distribution
    masked.update("layer", torch.tensor([[0.0, 0.0, -10000.0]]), torch.tensor([[0.0, 0.0, -10000.0]]),
                  torch.tensor([[True, True, False]]))
    assert masked.result()["kl_uniform"] == pytest.approx(0.0, abs=1e-4)
    assert math.isnan(kv.AttentionKL().result()["kl_uniform"])


@pytest.mark.parametrize("kind", ["sd15", "pixart"])
def test_kl_measured_during_sampling(pipes, kind):
    pipe = pipes(kind)
    a, _, s = encoded(pipe)
    _, same = kv.generate_substituted(pipe, [a], keys=[a], measure_kl=True, **small(pipe))
    assert same.result()["kl_substituted"] == pytest.approx(0.0, abs=1e-6)
    _, switched = kv.generate_substituted(pipe, [a], keys=[s], measure_kl=True, **small(pipe))
    result = switched.result()
    assert result["kl_substituted"] > 1e-6 and result["kl_uniform"] > 0
    table = switched.layer_table()
    assert len(table) == len([k for k in denoiser(pipe).attn_processors if "attn2" in k])


def test_recording_attention_inside_substitution(tiny_pipe):
    """record_attention nested in kv_substitution records the substituted run, images unchanged."""
    a, _, s = encoded(tiny_pipe)
    reference, _ = kv.generate_substituted(tiny_pipe, [a], keys=[s], num_inference_steps=2)
    stats = kv.AttentionKL()
    with kv.kv_substitution(tiny_pipe, keys=[s], kl=stats):
        with record_attention(tiny_pipe, resolutions=(8,)) as rec:
            images = surgery.generate_from_embeddings(tiny_pipe, [a], num_inference_steps=2)
    np.testing.assert_array_equal(images, reference)
    assert rec.maps().shape == (2, 1, 77, 8, 8)
    assert stats.count > 0
    assert all(not isinstance(p, kv.KVSubstitutionProcessor) for p in denoiser(tiny_pipe).attn_processors.values())
