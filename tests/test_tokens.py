"""Token bookkeeping on every tokenizer class we support, built offline.

SD 1.x pads with [EOS]; SD 2.x (and SDXL's second tokenizer) pads with ``!``;
PixArt's T5 has no [SOS] and pads with ``<pad>``.
"""

from __future__ import annotations

import pytest

from helpers.toy.random_pipelines import OPENCLIP_PAD, clip_tokenizer, random_pipeline, t5_tokenizer
from helpers.toy.model import EOS
from helpers.text.tokens import CLASS_NAMES, PromptTooLongError, pipeline_token_classes, token_classes

PROMPT = "a red circle and a blue star"
N_WORDS = len(PROMPT.split())


@pytest.fixture(scope="module")
def sd1_tok():
    return clip_tokenizer(EOS)


@pytest.fixture(scope="module")
def sd2_tok():
    return clip_tokenizer(OPENCLIP_PAD)


@pytest.fixture(scope="module")
def t5_tok():
    return t5_tokenizer()


def _check_partition(tc):
    """Every position belongs to exactly one class, in the order sos, semantic, eos, padding."""
    flat = tc.sos + tc.semantic + tc.eos + tc.padding
    assert flat == tuple(range(tc.max_length))
    assert set(tc.groups()) == set(CLASS_NAMES)
    assert tc.eos_class == tc.eos + tc.padding


@pytest.mark.parametrize("which", ["sd1_tok", "sd2_tok"])
def test_clip_layout(which, request):
    tok = request.getfixturevalue(which)
    tc = token_classes(tok, PROMPT)
    _check_partition(tc)
    assert tc.max_length == 77 and tc.has_sos
    assert tc.sos == (0,) and tc.ids[0] == tok.bos_token_id
    assert tc.semantic == tuple(range(1, 1 + N_WORDS))
    assert tc.eos == (1 + N_WORDS,) and tc.ids[1 + N_WORDS] == tok.eos_token_id
    assert tc.padding == tuple(range(2 + N_WORDS, 77))


def test_sd1_pads_with_eos(sd1_tok):
    tc = token_classes(sd1_tok, PROMPT)
    assert tc.padding_is_eos
    assert {tc.ids[p] for p in tc.padding} == {sd1_tok.eos_token_id}


def test_sd2_pads_with_exclamation_mark(sd2_tok):
    tc = token_classes(sd2_tok, PROMPT)
    assert not tc.padding_is_eos
    assert {tc.ids[p] for p in tc.padding} == {sd2_tok.convert_tokens_to_ids("!")} == {0}
    assert {tc.tokens[p] for p in tc.padding} == {"!"}


def test_t5_has_no_sos(t5_tok):
    tc = token_classes(t5_tok, PROMPT)
    _check_partition(tc)
    assert not tc.has_sos and tc.sos == ()
    assert tc.semantic == tuple(range(N_WORDS))
    assert tc.eos == (N_WORDS,) and tc.tokens[N_WORDS] == "</s>"
    assert {tc.tokens[p] for p in tc.padding} == {"<pad>"}
    assert not tc.padding_is_eos


def test_sdxl_two_tokenizers():
    pipe = random_pipeline("sdxl")
    first, second = pipeline_token_classes(pipe, PROMPT, which=1), pipeline_token_classes(pipe, PROMPT, which=2)
    assert first.padding_is_eos and not second.padding_is_eos
    # same positions for both encoders: the concatenated embeddings line up token by token
    assert first.groups() == second.groups()


def test_second_tokenizer_of_sd_pipeline_is_a_clear_error():
    with pytest.raises(ValueError, match="no tokenizer number 2"):
        pipeline_token_classes(random_pipeline("sd15"), PROMPT, which=2)


def test_pixart_uses_120_tokens():
    tc = pipeline_token_classes(random_pipeline("pixart"), PROMPT)
    assert tc.max_length == 120 and not tc.has_sos


@pytest.mark.parametrize("which", ["sd1_tok", "sd2_tok", "t5_tok"])
def test_words_and_positions(which, request):
    tc = token_classes(request.getfixturevalue(which), PROMPT)
    assert [w for w, _ in tc.words()] == PROMPT.split()
    offset = len(tc.sos)
    assert tc.positions_of("circle") == (offset + 2,)
    assert tc.positions_of("RED") == (offset + 1,)  # case-insensitive
    assert tc.positions_of("a") == (offset,)  # first occurrence
    with pytest.raises(ValueError, match="not a token"):
        tc.positions_of("zebra")


@pytest.mark.parametrize("which", ["sd1_tok", "sd2_tok", "t5_tok"])
def test_unknown_word_is_split_into_pieces_not_eos(which, request):
    tok = request.getfixturevalue(which)
    tc = token_classes(tok, "a zebra")
    positions = tc.positions_of("zebra")
    assert len(positions) > 1
    assert all(p in tc.semantic for p in positions)
    assert tok.eos_token_id not in [tc.ids[p] for p in positions]


@pytest.mark.parametrize("which", ["sd1_tok", "sd2_tok"])
def test_clip_punctuation_is_its_own_word(which, request):
    tc = token_classes(request.getfixturevalue(which), "a red circle, a star")
    assert tc.positions_of("circle") == (3,)
    assert tc.positions_of(",") == (4,)


def test_t5_punctuation_does_not_hide_word(t5_tok):
    tc = token_classes(t5_tok, "a red circle, a star")
    assert tc.positions_of("circle") == (2,)


def test_empty_prompt(sd1_tok, t5_tok):
    clip = token_classes(sd1_tok, "")
    assert (clip.sos, clip.semantic, clip.eos) == ((0,), (), (1,))
    t5 = token_classes(t5_tok, "")
    assert (t5.sos, t5.semantic, t5.eos) == ((), (), (0,))


@pytest.mark.parametrize("which", ["sd1_tok", "sd2_tok"])
def test_longest_prompt_fits_and_one_more_word_raises(which, request):
    tok = request.getfixturevalue(which)
    tc = token_classes(tok, " ".join(["red"] * 75))  # 75 + [SOS] + [EOS] = 77
    assert tc.padding == () and tc.eos == (76,)
    with pytest.raises(PromptTooLongError, match="78 tokens but the text encoder takes at most 77"):
        token_classes(tok, " ".join(["red"] * 76))


def test_prompt_too_long_is_a_value_error(t5_tok):
    assert issubclass(PromptTooLongError, ValueError)
    with pytest.raises(PromptTooLongError):
        token_classes(t5_tok, " ".join(["red"] * 120))  # 120 + </s>
    assert token_classes(t5_tok, " ".join(["red"] * 119)).padding == ()


def test_explicit_max_length(sd1_tok):
    tc = token_classes(sd1_tok, PROMPT, max_length=16)
    assert tc.max_length == 16 and tc.padding == tuple(range(2 + N_WORDS, 16))


def test_prompt_must_be_a_string(sd1_tok):
    with pytest.raises(TypeError, match="prompt must be a string"):
        token_classes(sd1_tok, ["a red circle"])
