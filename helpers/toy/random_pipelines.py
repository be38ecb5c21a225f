"""Tiny randomly initialised pipelines of every class we support, built offline from configs in code.

They exist to prove, without network or GPU, that every helper runs on the real
architectures' *shapes of interface*: SD 1.x and 2.x tokenizers, SDXL's two text
encoders with pooled embeddings and added time conditions, PixArt-alpha's T5 encoder
and transformer. Their weights are random: their images mean nothing (tests only).

>>> pipe = random_pipeline("sdxl")
>>> image = pipe("a red circle", num_inference_steps=2, output_type="np").images[0]

==========  =====================================  ============================  ==========
kind        pipeline                               tokenizer padding             image size
==========  =====================================  ============================  ==========
``sd15``    ``StableDiffusionPipeline``             [EOS] (CLIP, like SD 1.x)     64x64
``sd21``    ``StableDiffusionPipeline``             ``!`` (OpenCLIP, like SD 2.x) 64x64
``sdxl``    ``StableDiffusionXLPipeline``           [EOS] and ``!`` (2nd)         64x64
``pixart``  ``PixArtAlphaPipeline``                 ``<pad>`` (T5, no [SOS])      256x256
==========  =====================================  ============================  ==========

PixArt's default call bins the resolution to 256x256 at least (its smallest aspect-ratio
table); pass ``height=64, width=64, use_resolution_binning=False`` for a faster call.
"""

from __future__ import annotations

import functools

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    PixArtAlphaPipeline,
    PixArtTransformer2DModel,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from . import model as tiny_model
from . import world as toyworld

KINDS = ("sd15", "sd21", "sdxl", "pixart")
#: The token SD 2.x's (OpenCLIP) tokenizer pads with instead of [EOS].
OPENCLIP_PAD = "!"
T5_MAX_LENGTH = 120


class UnknownKindError(ValueError):
    """The requested kind of random pipeline does not exist."""


# ---------------------------------------------------------------- tokenizers


def clip_tokenizer(pad_token: str = tiny_model.EOS) -> CLIPTokenizer:
    """A CLIP tokenizer over the toy-world vocabulary, padding with ``pad_token``.

    ``pad_token=tiny_model.EOS`` is SD 1.x's behaviour, ``pad_token="!"`` SD 2.x's
    (and SDXL's second tokenizer's): there ``"!"`` has id 0, as in OpenCLIP.
    """
    return tiny_model.build_tokenizer(pad_token=pad_token)


@functools.lru_cache(maxsize=1)
def _t5_vocab() -> tuple[tuple[str, float], ...]:
    """SentencePiece-style unigram pieces: one per toy word, plus single characters as fallback."""
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    pieces += [("▁" + w, -1.0) for w in toyworld.vocabulary()]
    chars = [chr(c) for c in range(33, 127)]
    pieces += [(c, -8.0) for c in chars] + [("▁" + c, -7.0) for c in chars]
    seen: set[str] = set()
    return tuple(p for p in pieces if not (p[0] in seen or seen.add(p[0])))


def t5_tokenizer() -> T5Tokenizer:
    """A T5 (unigram) tokenizer like PixArt-alpha's: ``w1 .. wn </s> <pad> ...``, no [SOS]."""
    return T5Tokenizer(vocab=list(_t5_vocab()), extra_ids=0, model_max_length=T5_MAX_LENGTH)


# ---------------------------------------------------------------- models


def _clip_text_config(tokenizer: CLIPTokenizer, hidden: int, layers: int = 2, **extra) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=tiny_model.MAX_LENGTH,
        projection_dim=hidden,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def _vae(levels: int, sample_size: int) -> AutoencoderKL:
    """A fully convolutional VAE that downsamples by ``2 ** (levels - 1)``."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=(8, 16, 16, 16)[:levels],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=sample_size,
        mid_block_add_attention=False,
    )


def _ddim(beta_start: float = 0.00085, beta_end: float = 0.012, schedule: str = "scaled_linear") -> DDIMScheduler:
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=beta_start,
        beta_end=beta_end,
        beta_schedule=schedule,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )


def _sd15() -> StableDiffusionPipeline:
    """The embedded model's architecture (SD 1.x layout, padding with [EOS])."""
    tokenizer = clip_tokenizer(tiny_model.EOS)
    text_encoder = CLIPTextModel(tiny_model.text_config(tokenizer))
    return tiny_model.assemble_pipeline(tokenizer, text_encoder, tiny_model.vae_model(), tiny_model.unet_model())


def _sd21() -> StableDiffusionPipeline:
    """SD 2.x layout: OpenCLIP-style padding with ``!``, linear projections, per-block head dims."""
    tokenizer = clip_tokenizer(OPENCLIP_PAD)
    text_encoder = CLIPTextModel(_clip_text_config(tokenizer, hidden=64, hidden_act="gelu"))
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        cross_attention_dim=64,
        attention_head_dim=(2, 4, 4),
        use_linear_projection=True,
        norm_num_groups=16,
    )
    return tiny_model.assemble_pipeline(tokenizer, text_encoder, _vae(3, 64), unet)


def _sdxl() -> StableDiffusionXLPipeline:
    """SDXL layout: two text encoders (hidden 64 + 96, concatenated), pooled + time-id conditions."""
    tokenizer, tokenizer_2 = clip_tokenizer(tiny_model.EOS), clip_tokenizer(OPENCLIP_PAD)
    text_encoder = CLIPTextModel(_clip_text_config(tokenizer, hidden=64, hidden_act="quick_gelu"))
    text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config(tokenizer_2, hidden=96, hidden_act="gelu"))
    time_embed_dim = 8
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        transformer_layers_per_block=(1, 1, 2),
        cross_attention_dim=64 + 96,
        attention_head_dim=(2, 4, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        # six micro-conditions (original size, crop top-left, target size) + pooled text embedding
        projection_class_embeddings_input_dim=6 * time_embed_dim + text_encoder_2.config.projection_dim,
        norm_num_groups=16,
    )
    return StableDiffusionXLPipeline(
        vae=_vae(3, 64),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=_ddim(),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


def _pixart() -> PixArtAlphaPipeline:
    """PixArt-alpha layout: T5 encoder (no [SOS]), DiT with adaLN-single and learned sigma."""
    tokenizer = t5_tokenizer()
    text_encoder = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
    )
    transformer = PixArtTransformer2DModel(
        sample_size=32,  # smallest size PixArt's resolution binning accepts (256x256 images)
        num_layers=2,
        num_attention_heads=4,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        patch_size=2,
        cross_attention_dim=32,
        caption_channels=text_encoder.config.d_model,
        norm_num_groups=8,
    )
    return PixArtAlphaPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=_vae(4, 256),
        transformer=transformer,
        scheduler=_ddim(0.0001, 0.02, "linear"),
    )


_BUILDERS = {"sd15": _sd15, "sd21": _sd21, "sdxl": _sdxl, "pixart": _pixart}


def random_pipeline(kind: str, seed: int = 0):
    """A tiny pipeline of class ``kind`` (see :data:`KINDS`) with random weights, in eval mode on CPU.

    The same ``seed`` gives identical weights. Tests only: the images mean nothing.

    Raises:
        UnknownKindError: when ``kind`` is not one of :data:`KINDS`.
    """
    if kind not in _BUILDERS:
        raise UnknownKindError(f"unknown random pipeline kind {kind!r}; choose from {', '.join(KINDS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pipe = _BUILDERS[kind]()
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe

