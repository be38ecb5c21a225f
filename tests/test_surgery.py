"""Embedding surgery (helpers/surgery.py), the S-PromptSet and source/target scoring (helpers/alignment.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.analysis import alignment
from helpers.text import surgery
from helpers.generation import initial_latents
from helpers.toy.random_pipelines import KINDS
from helpers.text.conditioning import negative_for

LONG_A = "there is a large red striped circle on the left on a black background"  # 14 semantic tokens
SHORT_B = "a blue star"  # 3 semantic tokens


def call_kwargs(pipe) -> dict:
    """Small, fast pipeline-call settings (PixArt at 64x64 without resolution binning)."""
    extra = {"height": 64, "width": 64, "use_resolution_binning": False} if surgery.family(pipe) == "pixart" else {}
    return {"num_inference_steps": 2, "guidance_scale": 7.5, "output_type": "np", **extra}


def assert_switched(s, a, b, k=None):
    """A's values at A's [SOS]/semantic positions; B's [EOS] class from A's [EOS] position on."""
    keep = list(a.sos + a.semantic)
    torch.testing.assert_close(s.embeds[keep], a.embeds[keep], rtol=0, atol=0)
    slots = a.eos_class
    k = len(slots) if k is None else k
    for i, pos in enumerate(slots):
        if i < k:
            donor = b.eos_class[min(i, len(b.eos_class) - 1)]
            torch.testing.assert_close(s.embeds[pos], b.embeds[donor], rtol=0, atol=0)
        else:
            torch.testing.assert_close(s.embeds[pos], a.embeds[pos], rtol=0, atol=0)


# ------------------------------------------------------------------ switched prompts, every tokenizer


def test_sd1_tokenizer_pads_with_eos(tiny_pipe):
    a = surgery.encode(tiny_pipe, LONG_A)
    assert tiny_pipe.tokenizer.pad_token_id == tiny_pipe.tokenizer.eos_token_id
    assert a.sos == (0,) and len(a.semantic) == 14 and a.eos_class[0] == 15 and a.length == 77


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("order", ["long_source", "short_source"])
def test_switched_embedding_positions(pipes, kind, order):
    pipe = pipes(kind)
    a, b = surgery.encode(pipe, LONG_A), surgery.encode(pipe, SHORT_B)
    if order == "short_source":
        a, b = b, a  # B longer than A: B's [EOS] class is extended by repeating its last embedding
    s = surgery.switch_eos(a, b)
    assert s.embeds.shape == a.embeds.shape
    assert (s.sos, s.semantic, s.eos_class) == (a.sos, a.semantic, a.eos_class)
    assert_switched(s, a, b)
    torch.testing.assert_close(s.embeds[a.eos_class[0]], b.embeds[b.eos_class[0]], rtol=0, atol=0)  # real [EOS]
    if kind == "pixart":
        assert a.sos == () and s.mask is not None
        assert s.mask[a.eos_class[0]] == 1 and s.mask[list(a.semantic)].all()
    if kind == "sdxl":
        torch.testing.assert_close(s.pooled, b.pooled)
        torch.testing.assert_close(surgery.switch_eos(a, b, pooled_from="source").pooled, a.pooled)


def test_sd2_padding_is_not_eos(pipes):
    pipe = pipes("sd21")
    a = surgery.encode(pipe, SHORT_B)
    assert pipe.tokenizer.pad_token_id != pipe.tokenizer.eos_token_id
    assert len(a.eos_class) == 77 - 4  # the real [EOS] and the "!" padding
    assert any("non-[EOS]" in note for note in surgery.caveats(pipe))


@pytest.mark.parametrize("k", [0, 1, 5, 60])
def test_first_k_eos_from_target(tiny_pipe, k):
    a, b = surgery.encode(tiny_pipe, LONG_A), surgery.encode(tiny_pipe, SHORT_B)
    s = surgery.switch_eos(a, b, k=k)
    assert_switched(s, a, b, k=k)
    if k == 0:
        torch.testing.assert_close(s.embeds, a.embeds, rtol=0, atol=0)


def test_switched_prompt_reproduces_stock_call(tiny_pipe):
    """pipeline_inputs of an unedited prompt gives the stock pipeline's image exactly."""
    prompt = LONG_A
    latents = initial_latents(tiny_pipe, [3])
    stock = tiny_pipe(prompt, latents=latents, **call_kwargs(tiny_pipe)).images
    ours = surgery.generate_from_embeddings(tiny_pipe, [surgery.encode(tiny_pipe, prompt)], seeds=[3],
                                            num_inference_steps=2)
    np.testing.assert_array_equal(stock, ours)


@pytest.mark.parametrize("kind", KINDS)
def test_edited_embeddings_run_in_every_pipeline(pipes, kind):
    pipe = pipes(kind)
    a, b = surgery.encode(pipe, LONG_A), surgery.encode(pipe, SHORT_B)
    prompts = [a, surgery.switch_eos(a, b), surgery.replace_tokens(a, "semantic", "random"), surgery.eos_only(b),
               surgery.eos_only(a)]
    if kind != "pixart":
        prompts.append(surgery.sos_only(a))
    kw = call_kwargs(pipe)
    kw.pop("output_type")
    images = surgery.generate_from_embeddings(pipe, prompts, **kw)
    assert images.shape[0] == len(prompts) and np.isfinite(images).all()
    latents = initial_latents(pipe, [0])
    stock = pipe(LONG_A, latents=latents, **call_kwargs(pipe)).images
    np.testing.assert_allclose(stock[0], images[0], atol=1e-4)  # batched: float-level differences only


# ------------------------------------------------------------------ replacements and single-class prompts


@pytest.mark.parametrize("which", ["semantic", "eos", "sos"])
def test_replace_tokens(tiny_pipe, which):
    a = surgery.encode(tiny_pipe, LONG_A)
    pos = list(a.positions(which))
    other = [i for i in range(a.length) if i not in pos]
    zero = surgery.replace_tokens(a, which, "zero")
    assert torch.count_nonzero(zero.embeds[pos]) == 0
    torch.testing.assert_close(zero.embeds[other], a.embeds[other], rtol=0, atol=0)
    rnd = surgery.replace_tokens(a, which, "random", torch.Generator().manual_seed(0))
    torch.testing.assert_close(rnd.embeds[pos].norm(dim=-1), a.embeds[pos].norm(dim=-1))
    assert not torch.allclose(rnd.embeds[pos], a.embeds[pos])
    torch.testing.assert_close(rnd.embeds[other], a.embeds[other], rtol=0, atol=0)
    again = surgery.replace_tokens(a, which, "random", torch.Generator().manual_seed(0))
    torch.testing.assert_close(again.embeds, rnd.embeds, rtol=0, atol=0)


def test_replace_on_switched_prompt_keeps_the_other_class(tiny_pipe):
    a, b = surgery.encode(tiny_pipe, LONG_A), surgery.encode(tiny_pipe, SHORT_B)
    s = surgery.replace_tokens(surgery.switch_eos(a, b), "semantic", "zero")
    assert torch.count_nonzero(s.embeds[list(a.semantic)]) == 0
    torch.testing.assert_close(s.embeds[a.eos_class[0]], b.embeds[b.eos_class[0]], rtol=0, atol=0)


def test_single_class_prompts(tiny_pipe):
    a = surgery.encode(tiny_pipe, SHORT_B)
    sos, eos = surgery.sos_only(a), surgery.eos_only(a)
    assert sos.length == 1 and eos.length == 77 - 4
    torch.testing.assert_close(eos.embeds, a.embeds[list(a.eos_class)], rtol=0, atol=0)
    neg = negative_for(tiny_pipe, eos)
    assert neg.length == eos.length and neg.only == "eos"
    assert surgery.pipeline_inputs(tiny_pipe, [sos])["negative_prompt_embeds"].shape == (1, 1, a.dim)
    assert surgery.eos_only(a, length=5).length == 5


def test_pixart_has_no_sos(pipes):
    a = surgery.encode(pipes("pixart"), SHORT_B)
    with pytest.raises(surgery.NotMeaningfulError, match="no \\[SOS\\]"):
        surgery.sos_only(a)
    assert isinstance(surgery.NotMeaningfulError("x"), ValueError)


# ------------------------------------------------------------------ clear errors


def test_prompt_too_long(tiny_pipe):
    with pytest.raises(surgery.PromptTooLongError, match="at most 77"):
        surgery.encode(tiny_pipe, " ".join(["red circle"] * 60))


@pytest.mark.parametrize("k", [-1, 63, 1000, 2.5])
def test_k_out_of_range(tiny_pipe, k):
    a, b = surgery.encode(tiny_pipe, LONG_A), surgery.encode(tiny_pipe, SHORT_B)
    assert len(a.eos_class) == 62
    with pytest.raises(surgery.EOSSlotError, match="\\[EOS\\]-class positions"):
        surgery.switch_eos(a, b, k=k)


def test_wrong_shapes(tiny_pipe, pipes):
    a = surgery.encode(tiny_pipe, LONG_A)
    with pytest.raises(surgery.EmbeddingShapeError, match="\\(length, dim\\)"):
        a.replace(embeds=a.embeds[None])
    with pytest.raises(surgery.EmbeddingShapeError, match="cover"):
        a.replace(embeds=a.embeds[:10])
    other = surgery.encode(pipes("sd21"), SHORT_B)  # width 64, not 128
    with pytest.raises(surgery.EmbeddingShapeError, match="differ in shape"):
        surgery.switch_eos(a, other)
    with pytest.raises(surgery.EmbeddingShapeError, match="do not fit"):
        surgery.pipeline_inputs(tiny_pipe, [other])
    with pytest.raises(surgery.EmbeddingShapeError, match="same layout"):
        surgery.pipeline_inputs(tiny_pipe, [a, surgery.eos_only(a)])
    with pytest.raises(surgery.EmbeddingShapeError, match="pixart"):
        surgery.switch_eos(surgery.encode(pipes("pixart"), SHORT_B), a)


def test_other_bad_requests(tiny_pipe):
    a = surgery.encode(tiny_pipe, LONG_A)
    for call, match in [
        (lambda: surgery.replace_tokens(a, "semantic", "gaussian"), "mode"),
        (lambda: surgery.replace_tokens(a, "words", "zero"), "token class"),
        (lambda: surgery.switch_eos(a, a, pooled_from="B"), "pooled_from"),
        (lambda: surgery.switch_eos(surgery.eos_only(a), a), "EOS-only"),
        (lambda: surgery.eos_only(a, length=100), "EOS"),
        (lambda: surgery.sos_only(surgery.sos_only(a)), "already"),
        (lambda: surgery.generate_from_embeddings(tiny_pipe, [a], seeds=[0, 1]), "seeds"),
        (lambda: surgery.pipeline_inputs(tiny_pipe, []), "at least one"),
    ]:
        with pytest.raises(ValueError, match=match):
            call()


# ------------------------------------------------------------------ S-PromptSet and source/target scoring


def test_s_prompt_set():
    pairs = alignment.load_s_prompt_set()
    assert len(pairs) >= 100
    for p in pairs:
        for attr in ("shape", "color", "pattern"):
            assert p.source.attributes[attr] != p.target.attributes[attr]
            assert attr in p.differs
        assert p.source.prompt != p.target.prompt
    assert len(alignment.load_s_prompt_set(n=8)) == 8
    with pytest.raises(FileNotFoundError, match="make_s_prompt_set"):
        alignment.load_s_prompt_set(path="/nonexistent.json")


class FakeScorer:
    """Reads the attributes of B for even images and of A for odd ones; CLIPScore 30 for the
    prompt whose object the image shows, 20 otherwise."""

    def __init__(self, pairs):
        self.pairs = pairs

    def attributes(self, images):
        return [dict((p.target if i % 2 == 0 else p.source).attributes) for i, p in enumerate(self.pairs)]

    def image_clip_score(self, images, references):
        return 100.0 - 100.0 * np.abs(np.asarray(images) - np.asarray(references)).reshape(len(images), -1).mean(1)

    def clip_score(self, images, prompts):
        return np.array([30.0 if prompt == (p.target if i % 2 == 0 else p.source).prompt else 20.0
                         for i, (p, prompt) in enumerate(zip(self.pairs, prompts))])


def test_score_source_target():
    pairs = alignment.load_s_prompt_set(n=6)
    images = np.zeros((6, 64, 64, 3), dtype=np.float32)
    df = alignment.score_source_target(FakeScorer(pairs), images, [p.source for p in pairs],
                                       [p.target for p in pairs])
    assert list(df["follows"]) == ["target", "source"] * 3
    assert list(df["clip_target"]) == [30.0, 20.0] * 3
    summary = alignment.summarize(df)
    assert summary.loc["evaluator: shape", "target"] == pytest.approx(0.5)
    assert summary.loc["CLIPScore", "source"] == pytest.approx(25.0)
    assert alignment.follow_fractions(df)["target"] == pytest.approx(0.5)
    assert "±" in alignment.format_mean_se(summary).loc["CLIPScore", "source (A)"]
    with pytest.raises(ValueError, match="records"):
        alignment.score_source_target(FakeScorer(pairs), images[:2], [p.source for p in pairs], [])


class ReadingScorer(FakeScorer):
    """The evaluator 'reads' an image's shape from its first pixel (0: circle, 1: star, else: heart)."""

    def attributes(self, images):
        names = {0.0: "circle", 1.0: "star"}
        return [{"shape": names.get(float(im[0, 0, 0]), "heart"), "color": "red"} for im in np.asarray(images)]


def test_alignment_against_reference_images():
    pairs = alignment.load_s_prompt_set(n=4)
    source, target = np.zeros((4, 8, 8, 3)), np.ones((4, 8, 8, 3))
    images = np.stack([target[0], source[1], np.full((8, 8, 3), 0.5), target[3]])
    scorer = ReadingScorer(pairs)
    df = alignment.score_source_target(scorer, images, [p.source for p in pairs], [p.target for p in pairs],
                                       attributes=("shape", "color"), clip=False,
                                       source_images=source, target_images=target)
    assert list(df["follows_img"]) == ["target", "source", "neither", "target"]
    assert df["source_img_color"].isna().all()  # both references read "red": not usable
    fr = alignment.follow_fractions(df, "shape", against="images")
    assert fr["target"] == pytest.approx(0.5) and fr["source"] == pytest.approx(0.25) and fr["n"] == 4
    np.testing.assert_allclose(df["l1_target"], [0, 1, 0.5, 0], atol=0.01)  # uint8 rounding
    summary = alignment.summarize(df)
    assert "evaluator vs images: shape" in summary.index and "L1 distance" in summary.index
    table = alignment.condition_table(alignment.summarize_conditions({"x": df}))
    assert ("images: shape", "B") in table.columns
    with pytest.raises(ValueError, match="reference image"):
        alignment.image_references(scorer, images, source[:2], target)
    with pytest.raises(ValueError, match="against"):
        alignment.follow_fractions(df, "shape", against="text")
