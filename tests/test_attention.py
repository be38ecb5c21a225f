"""Cross-attention recording: restoring, normalisation, no pixel change, bounded memory, architectures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.analysis.mass import class_mass, class_mass_table
from helpers.hooks.attention import AttentionRecordError, CrossAttnProcessor, installed_processors, map_size, record_attention
from helpers.generation import generate
from helpers.text.tokens import pipeline_token_classes

PROMPTS = ["a red circle", "a large blue star on the left"]


def _processors(pipe):
    return dict(pipe.unet.attn_processors)


def _call(pipe, prompts, steps=3, guidance=7.5, **kwargs):
    """A direct pipeline call with fixed noise (works for every pipeline class)."""
    return pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, output_type="np",
                generator=torch.Generator().manual_seed(0), **kwargs).images


@pytest.fixture(scope="module")
def others():
    from helpers.toy.random_pipelines import random_pipeline

    return {kind: random_pipeline(kind) for kind in ("sd21", "sdxl", "pixart")}


def test_processors_restored_after_exception(tiny_pipe):
    before = _processors(tiny_pipe)
    with pytest.raises(RuntimeError, match="boom"):
        with record_attention(tiny_pipe, resolutions=None):
            assert any(isinstance(p, CrossAttnProcessor) for p in _processors(tiny_pipe).values())
            raise RuntimeError("boom")
    after = _processors(tiny_pipe)
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    assert not tiny_pipe.unet._forward_pre_hooks


def test_attention_sums_to_one_over_tokens(tiny_pipe):
    with record_attention(tiny_pipe, resolutions=None) as rec:
        generate(tiny_pipe, PROMPTS, num_inference_steps=3, progress=False)
    maps = rec.maps()
    assert maps.shape == (3, 2, 77, 8, 8)  # 4x4 maps upsampled onto the 8x8 grid
    torch.testing.assert_close(maps.sum(dim=2), torch.ones(3, 2, 8, 8))
    torch.testing.assert_close(rec.maps(4).sum(dim=2), torch.ones(3, 2, 4, 4))
    torch.testing.assert_close(rec.token_mass().sum(-1), torch.ones(3, 2))
    torch.testing.assert_close(rec.token_mass(4).sum(-1), torch.ones(3, 2))
    # all-layer mass = layer-count-weighted mean of the per-size masses (3 layers at 8x8, 4 at 4x4)
    torch.testing.assert_close(rec.token_mass(), (3 * rec.token_mass(8) + 4 * rec.token_mass(4)) / 7)
    assert rec.sizes == [(8, 8), (4, 4)]


def test_recording_changes_no_pixel(tiny_pipe):
    plain = generate(tiny_pipe, PROMPTS, seed=5, num_inference_steps=4, progress=False)
    with record_attention(tiny_pipe, resolutions=None):
        hooked = generate(tiny_pipe, PROMPTS, seed=5, num_inference_steps=4, progress=False)
    assert np.array_equal(plain, hooked)


def test_fifty_step_record_is_bounded(tiny_pipe):
    with record_attention(tiny_pipe, resolutions=(8,)) as rec:
        generate(tiny_pipe, "a red circle", num_inference_steps=50, progress=False)
    assert rec.maps().shape == (50, 1, 77, 8, 8)  # one head/layer-averaged map per step, not per layer or head
    with record_attention(tiny_pipe, resolutions=(8,), per_step=False) as rec:
        generate(tiny_pipe, "a red circle", num_inference_steps=50, progress=False)
    assert rec.mean_maps().shape == (1, 77, 8, 8)
    # one step-mean map + per-step token mass (all layers, and per map size)
    assert rec.aggregator.nbytes() == 4 * (77 * 8 * 8 + 2 * 50 * 77)
    with pytest.raises(AttentionRecordError, match="per_step=False"):
        rec.maps()


def test_only_the_conditional_half_is_recorded(tiny_pipe):
    with record_attention(tiny_pipe, resolutions=None) as guided:
        generate(tiny_pipe, PROMPTS, num_inference_steps=2, guidance_scale=7.5, progress=False)
    with record_attention(tiny_pipe, resolutions=None) as unguided:
        generate(tiny_pipe, PROMPTS, num_inference_steps=2, guidance_scale=1.0, progress=False)
    # step 0 sees the same x_T and the same prompt in both runs: the maps must agree
    torch.testing.assert_close(guided.maps()[0], unguided.maps()[0], atol=1e-5, rtol=1e-4)
    assert guided.maps().shape[1] == 2


def test_batches_over_several_calls_are_concatenated(tiny_pipe):
    prompts = PROMPTS + ["a green heart"]
    with record_attention(tiny_pipe) as rec:
        generate(tiny_pipe, prompts, num_inference_steps=2, batch_size=2, progress=False)
    with record_attention(tiny_pipe) as single:
        generate(tiny_pipe, prompts[2:], seed=2, num_inference_steps=2, progress=False)
    assert rec.maps().shape[:2] == (2, 3) and len(rec.aggregator.runs) == 2
    torch.testing.assert_close(rec.maps()[:, 2], single.maps()[:, 0], atol=1e-5, rtol=1e-4)


def test_subclass_processor_keeps_its_behaviour_while_recording(tiny_pipe):
    class ZeroValues(CrossAttnProcessor):
        def key_value_inputs(self, attn, encoder_hidden_states):
            return encoder_hidden_states, torch.zeros_like(encoder_hidden_states)

    model = tiny_pipe.unet
    before = _processors(tiny_pipe)
    with installed_processors(model, lambda name, orig: ZeroValues(name)):
        base = generate(tiny_pipe, "a red circle", num_inference_steps=2, progress=False)
        with record_attention(tiny_pipe) as rec:
            assert all(type(p) is ZeroValues for k, p in _processors(tiny_pipe).items() if "attn2" in k)
            recorded = generate(tiny_pipe, "a red circle", num_inference_steps=2, progress=False)
        assert all(type(p) is ZeroValues and p.recorder is None for k, p in _processors(tiny_pipe).items() if "attn2" in k)
    assert np.array_equal(base, recorded) and rec.maps().shape == (2, 1, 77, 8, 8)
    assert all(_processors(tiny_pipe)[k] is before[k] for k in before)


@pytest.mark.parametrize("kind", ["sd21", "sdxl", "pixart"])
def test_other_architectures(others, kind):
    pipe = others[kind]
    kwargs = {"height": 64, "width": 64, "use_resolution_binning": False, "clean_caption": False} if kind == "pixart" else {}
    plain = _call(pipe, PROMPTS, **kwargs)
    with record_attention(pipe, resolutions=None) as rec:
        hooked = _call(pipe, PROMPTS, **kwargs)
    assert np.array_equal(plain, hooked)
    tokens = 120 if kind == "pixart" else 77
    maps = rec.maps()
    assert maps.shape[:3] == (3, 2, tokens)
    torch.testing.assert_close(maps.sum(dim=2), torch.ones(3, 2, *maps.shape[-2:]))
    table = class_mass_table(rec, PROMPTS)
    eos_class = table[table["class"] == "eos_class"]["mass"].to_numpy()
    assert np.all((eos_class >= 0) & (eos_class <= 1 + 1e-6))
    if kind == "pixart":  # T5 padding is masked out by PixArt and has no [SOS]
        assert table[table["class"].isin(["padding", "sos"])]["mass"].max() < 1e-3


def test_class_mass_splits_eos_and_padding(tiny_pipe):
    classes = pipeline_token_classes(tiny_pipe, "a red circle")
    mass = np.zeros(77)
    mass[0], mass[2], mass[4], mass[10] = 0.5, 0.2, 0.2, 0.1  # sos, semantic 'red', real eos, padding
    got = class_mass(mass, classes)
    assert got["sos"] == pytest.approx(0.5) and got["semantic"] == pytest.approx(0.2)
    assert got["eos"] == pytest.approx(0.2) and got["padding"] == pytest.approx(0.1)
    assert got["eos_class"] == pytest.approx(0.3)
    with pytest.raises(AttentionRecordError):
        class_mass(np.zeros(10), classes)


def test_map_size_is_derived_from_lengths():
    assert map_size(64, (16, 16)) == (8, 8)
    assert map_size(16, (16, 16)) == (4, 4)
    assert map_size(96, (16, 24)) == (8, 12)
    assert map_size(4096, (64, 64)) == (64, 64)
    with pytest.raises(AttentionRecordError):
        map_size(7, (16, 16))


def test_bad_requests_fail_clearly(tiny_pipe):
    with pytest.raises(AttentionRecordError, match="resolutions"):
        with record_attention(tiny_pipe, resolutions=("8",)):
            pass
    with record_attention(tiny_pipe, resolutions=(8,)) as rec:
        pass
    with pytest.raises(AttentionRecordError, match="no cross-attention was recorded"):
        rec.maps()
    with record_attention(tiny_pipe, resolutions=(8,)) as rec:
        generate(tiny_pipe, "a red circle", num_inference_steps=2, progress=False)
    with pytest.raises(AttentionRecordError, match="resolution 16"):
        rec.maps(16)
