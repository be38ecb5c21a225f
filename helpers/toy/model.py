"""Architecture of the embedded default model, defined as configs in code.

The tiny model is a genuine diffusers ``StableDiffusionPipeline``: a CLIP tokenizer
(SOS/EOS, padded with EOS to 77 tokens, like SD 1.x), a causal ``CLIPTextModel``, an
``AutoencoderKL`` (64x64x3 images <-> 16x16x4 latents) and a
``UNet2DConditionModel`` with cross-attention at 8x8 and 4x4. ``scripts/train_tiny_model.py``
trains it; :func:`helpers.toy.random_pipelines.random_pipeline` (kind ``"sd15"``) builds the same
architecture with random weights for tests (never for results).
"""

from __future__ import annotations

import collections
from pathlib import Path

import torch

from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPTokenizer, CLIPVisionConfig

from . import world as toyworld

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


def _merge(seq: list[str], pair: tuple[str, str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(seq):
        if i + 1 < len(seq) and (seq[i], seq[i + 1]) == pair:
            out.append(seq[i] + seq[i + 1])
            i += 2
        else:
            out.append(seq[i])
            i += 1
    return out


def word_merges(words: list[str]) -> list[tuple[str, str]]:
    """Greedy BPE merges that make each word one token; ties broken alphabetically.

    (The ``tokenizers`` trainer breaks ties in hash order, so its merges -- and the token
    ids -- would change from one process to the next.)
    """
    to_unicode = bytes_to_unicode()
    seqs = [[to_unicode[b] for b in w.encode()] for w in sorted(set(words)) if w]
    seqs = [s[:-1] + [s[-1] + "</w>"] for s in seqs]
    merges: list[tuple[str, str]] = []
    while True:
        counts = collections.Counter(pair for seq in seqs for pair in zip(seq, seq[1:]))
        if not counts:
            return merges
        pair = min(counts, key=lambda p: (-counts[p], p))
        merges.append(pair)
        seqs = [_merge(seq, pair) for seq in seqs]


def build_tokenizer(words: list[str] | None = None, pad_token: str = EOS) -> CLIPTokenizer:
    """A CLIP BPE tokenizer whose vocabulary has one token per word of the toy world.

    ``pad_token=EOS`` is SD 1.x's padding; ``pad_token="!"`` SD 2.x's (OpenCLIP).

    Every byte (and byte + ``</w>``) is in the vocabulary too, so unknown words still
    tokenize (into pieces), never into [EOS]/unknown.
    """
    words = words if words is not None else toyworld.vocabulary()
    chars = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in chars + [c + "</w>" for c in chars]:
        vocab.setdefault(token, len(vocab))
    merges = word_merges(words)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab[SOS] = len(vocab)
    vocab[EOS] = len(vocab)
    if pad_token not in vocab:
        raise ValueError(f"pad token {pad_token!r} is not in the tokenizer's vocabulary")
    return CLIPTokenizer(vocab=vocab, merges=list(merges), pad_token=pad_token, model_max_length=MAX_LENGTH)


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


def vision_config(conv_stem: tuple[int, ...] | None = None) -> CLIPVisionConfig:
    """The CLIP image tower: a 3-layer ViT on 64x64 renders, 8x8 patches (64 tokens).

    ``conv_stem`` (channel widths, e.g. ``(32, 64)``) replaces the 8-pixel patch projection by
    stride-2 3x3 convolutions reaching the same 8x8 grid (:class:`ConvStem`); it is recorded in the
    config (``conv_stem``) so :func:`load_clip` rebuilds it.
    """
    config = CLIPVisionConfig(
        image_size=toyworld.IMAGE_SIZE,
        patch_size=8,
        hidden_size=HIDDEN,
        intermediate_size=4 * HIDDEN,
        num_hidden_layers=3,
        num_attention_heads=4,
        projection_dim=HIDDEN,
    )
    config.conv_stem = list(conv_stem) if conv_stem else None
    return config


class ConvStem(torch.nn.Module):
    """Stride-2 3x3 convolutions from 64x64 pixels to the ViT's 8x8 grid of ``hidden``-wide tokens.

    A drop-in for ``CLIPVisionEmbeddings.patch_embedding`` (it exposes the last layer's ``weight``,
    which transformers reads for the dtype): an 8-pixel linear patch projection cannot tell a small
    star from a small circle (v4's retrieval of shape 66%); a few convolutions can.
    """

    def __init__(self, channels: tuple[int, ...] = (32, 64), hidden: int = HIDDEN, in_channels: int = 3) -> None:
        super().__init__()
        widths = [in_channels, *channels, hidden]
        layers: list[torch.nn.Module] = []
        for i in range(len(widths) - 1):
            layers.append(torch.nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1))
            if i < len(widths) - 2:
                layers.append(torch.nn.GELU())
        self.layers = torch.nn.Sequential(*layers)

    @property
    def weight(self) -> torch.Tensor:
        return self.layers[-1].weight

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.layers(pixels)


def _attach_stem(model: CLIPModel) -> CLIPModel:
    stem = getattr(model.config.vision_config, "conv_stem", None)
    if stem:
        vision = model.config.vision_config
        if 2 ** (len(stem) + 1) != vision.patch_size:
            raise ValueError(f"conv_stem {stem}: {len(stem) + 1} stride-2 layers do not make {vision.patch_size}-pixel patches")
        model.vision_model.embeddings.patch_embedding = ConvStem(tuple(stem), vision.hidden_size, vision.num_channels)
    return model


def clip_model(tokenizer: CLIPTokenizer, conv_stem: tuple[int, ...] | None = None) -> CLIPModel:
    """The contrastive text-image pair whose text tower becomes the pipeline's encoder."""
    config = CLIPConfig(
        text_config=text_config(tokenizer).to_dict(),
        vision_config=vision_config(conv_stem).to_dict(),
        projection_dim=HIDDEN,
    )
    return _attach_stem(CLIPModel(config))


def load_clip(folder: str | Path) -> CLIPModel:
    """A saved :func:`clip_model`, with its :class:`ConvStem` when its config names one.

    Without a stem this is ``CLIPModel.from_pretrained``; with one, the stock loader would drop the
    stem's weights, so the model is built from the config and loaded strictly.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    config = CLIPConfig.from_pretrained(folder)
    if not getattr(config.vision_config, "conv_stem", None):
        return CLIPModel.from_pretrained(folder)
    model = _attach_stem(CLIPModel(config))
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    return model


def vae_model(channels: tuple[int, ...] = (16, 32, 64), layers_per_block: int = 1) -> AutoencoderKL:
    """64x64x3 <-> 16x16x4, fully convolutional (no mid-block attention).

    ``channels`` has one entry per level (three levels: two 2x downsamplings); the training script's
    ``vae_channels`` / ``vae_layers`` settings choose them.
    """
    if len(channels) != 3:
        raise ValueError(f"vae_model: three levels give 16x16 latents of 64x64 images, got channels={channels}")
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=tuple(channels),
        layers_per_block=layers_per_block,
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


def default_model_dir() -> Path:
    """Where the shipped weights of the embedded default model live."""
    from ..resources import model_dir

    return model_dir(MODEL_NAME)
