"""Tiny random pipelines of every supported class: build offline, generate, deterministic, classified."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.generation import generate
from helpers.loading import denoiser, family
from helpers.toy.random_pipelines import KINDS, UnknownKindError, clip_tokenizer, random_pipeline
from helpers.toy import model as tiny_model
from helpers.toy.world import vocabulary

EXPECTED = {
    "sd15": ("StableDiffusionPipeline", "sd", "UNet2DConditionModel", 64),
    "sd21": ("StableDiffusionPipeline", "sd", "UNet2DConditionModel", 64),
    "sdxl": ("StableDiffusionXLPipeline", "sdxl", "UNet2DConditionModel", 64),
    "pixart": ("PixArtAlphaPipeline", "pixart", "PixArtTransformer2DModel", 256),
}
PROMPT = "a red circle on the left"


@pytest.fixture(scope="module", params=KINDS)
def kind_and_pipe(request):
    return request.param, random_pipeline(request.param)


def _call(pipe, seed: int) -> np.ndarray:
    return pipe(PROMPT, num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(seed)).images


def test_class_family_and_denoiser(kind_and_pipe):
    kind, pipe = kind_and_pipe
    class_name, fam, denoiser_name, _ = EXPECTED[kind]
    assert type(pipe).__name__ == class_name
    assert family(pipe) == fam
    assert type(denoiser(pipe)).__name__ == denoiser_name


def test_default_call_gives_finite_image_of_expected_size(kind_and_pipe):
    kind, pipe = kind_and_pipe
    size = EXPECTED[kind][3]
    images = _call(pipe, 0)
    assert images.shape == (1, size, size, 3)
    assert np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1


def test_same_seed_same_image_and_different_seed_differs(kind_and_pipe):
    _, pipe = kind_and_pipe
    a, b, c = _call(pipe, 0), _call(pipe, 0), _call(pipe, 1)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_generate_helper_runs_with_guidance(kind_and_pipe):
    _, pipe = kind_and_pipe
    a = generate(pipe, [PROMPT, "a blue star"], seed=0, num_inference_steps=2, progress=False)
    b = generate(pipe, [PROMPT, "a blue star"], seed=0, num_inference_steps=2, progress=False, batch_size=1)
    assert a.shape[0] == 2 and np.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_weights(kind):
    a, b = random_pipeline(kind, seed=0), random_pipeline(kind, seed=0)
    c = random_pipeline(kind, seed=1)
    wa, wb, wc = (next(iter(denoiser(p).parameters())) for p in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_building_does_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    random_pipeline("sd21", seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_padding_tokens_match_real_models():
    sd15, sd21, sdxl, pixart = (random_pipeline(k) for k in KINDS)
    assert sd15.tokenizer.pad_token_id == sd15.tokenizer.eos_token_id
    assert sd21.tokenizer.pad_token == "!" and sd21.tokenizer.pad_token_id == 0
    assert sdxl.tokenizer.pad_token_id == sdxl.tokenizer.eos_token_id
    assert sdxl.tokenizer_2.pad_token == "!"
    assert pixart.tokenizer.bos_token_id is None
    assert (pixart.tokenizer.eos_token, pixart.tokenizer.pad_token) == ("</s>", "<pad>")


def test_sdxl_conditions_fit_the_unet():
    pipe = random_pipeline("sdxl")
    unet = pipe.unet.config
    assert unet.addition_embed_type == "text_time"
    assert unet.cross_attention_dim == pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size
    assert unet.projection_class_embeddings_input_dim == 6 * unet.addition_time_embed_dim + pipe.text_encoder_2.config.projection_dim


def test_unknown_kind_is_one_clear_error():
    with pytest.raises(UnknownKindError, match="choose from sd15, sd21, sdxl, pixart"):
        random_pipeline("sd3")


def test_every_toy_word_is_one_clip_token():
    tok = clip_tokenizer()
    for word in vocabulary():
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word


def test_clip_merges_do_not_depend_on_hash_order():
    """Same ids in every process (tests/test_sharding.py checks it across real processes)."""
    assert tiny_model.word_merges(["red", "bed", "zebra"]) == tiny_model.word_merges(["zebra", "bed", "red", "red"])

