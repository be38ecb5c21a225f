"""Architecture of the embedded default model, defined as configs in code.

The tiny model is a genuine diffusers ``StableDiffusionPipeline``: a CLIP tokenizer
(SOS/EOS, padded with EOS to 77 tokens, like SD 1.x), a causal ``CLIPTextModel``, an
``AutoencoderKL`` (64x64x3 images <-> 16x16x4 latents) and a
``UNet2DConditionModel`` with cross-attention at 8x8 and 4x4. ``scripts/train_tiny_model.py``
trains it; :func:`random_pipeline` builds the same architecture with random weights
for tests (never for results).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPTokenizer, CLIPVisionConfig

from . import toyworld

MODEL_NAME = "tiny-shapes-sd"
MAX_LENGTH = 77
HIDDEN = 128
SOS, EOS = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _word_merges(words: list[str]) -> list[tuple[str, str]]:
    """BPE merges (trained with the ``tokenizers`` library) that make each word one token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(
        vocab_size=100_000,
        min_frequency=1,
        initial_alphabet=list(bytes_to_unicode().values()),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    tok.train_from_iterator(words, trainer=trainer)
    merges = json.loads(tok.to_str())["model"]["merges"]
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in merges]


def build_tokenizer(words: list[str] | None = None) -> CLIPTokenizer:
    """A CLIP BPE tokenizer whose vocabulary has one token per word of the toy world.

    Every byte (and byte + ``</w>``) is in the vocabulary too, so unknown words still
    tokenize (into pieces), never into [EOS]/unknown.
    """
    words = words if words is not None else toyworld.vocabulary()
    chars = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in chars + [c + "</w>" for c in chars]:
        vocab.setdefault(token, len(vocab))
    merges = _word_merges(words)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab[SOS] = len(vocab)
    vocab[EOS] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=list(merges), model_max_length=MAX_LENGTH)
    return tokenizer


def text_config(tokenizer: CLIPTokenizer) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=4 * HIDDEN,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=MAX_LENGTH,
        projection_dim=HIDDEN,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def vision_config() -> CLIPVisionConfig:
    return CLIPVisionConfig(
        image_size=toyworld.IMAGE_SIZE,
        patch_size=8,
        hidden_size=HIDDEN,
        intermediate_size=4 * HIDDEN,
        num_hidden_layers=3,
        num_attention_heads=4,
        projection_dim=HIDDEN,
    )


def clip_model(tokenizer: CLIPTokenizer) -> CLIPModel:
    """The contrastive text-image pair whose text tower becomes the pipeline's encoder."""
    config = CLIPConfig(
        text_config=text_config(tokenizer).to_dict(),
        vision_config=vision_config().to_dict(),
        projection_dim=HIDDEN,
    )
    return CLIPModel(config)


def vae_model() -> AutoencoderKL:
    """64x64x3 <-> 16x16x4, fully convolutional (no mid-block attention)."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=toyworld.IMAGE_SIZE,
        mid_block_add_attention=False,
    )


def unet_model() -> UNet2DConditionModel:
    """UNet on 16x16x4 latents with cross-attention at 8x8, 4x4 and in the middle block."""
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 128),
        layers_per_block=1,
        cross_attention_dim=HIDDEN,
        attention_head_dim=4,
        norm_num_groups=32,
    )


def scheduler() -> DDIMScheduler:
    """SD's scaled-linear beta schedule over 1000 steps, epsilon prediction."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )


def assemble_pipeline(
    tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, vae: AutoencoderKL, unet: UNet2DConditionModel
) -> StableDiffusionPipeline:
    """Put the parts together as a stock diffusers pipeline (no safety checker)."""
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def random_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """The tiny architecture with RANDOM weights: for tests only, never for results."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    text_encoder = CLIPTextModel(text_config(tokenizer))
    pipe = assemble_pipeline(tokenizer, text_encoder, vae_model(), unet_model())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def default_model_dir() -> Path:
    """Where the shipped weights of the embedded default model live."""
    return Path(__file__).resolve().parent.parent / "data" / "models" / MODEL_NAME
