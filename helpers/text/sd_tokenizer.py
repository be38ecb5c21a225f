"""The real Stable Diffusion tokenizers, offline: CLIP's BPE as shipped in the ``open_clip_torch`` wheel.

SD 1.x (CLIP ViT-L/14), SD 2.x (OpenCLIP ViT-H/14) and both SDXL tokenizers use the same
49,408-token byte-level BPE of OpenAI's CLIP; they differ only in the padding token:

* ``"1.x"``: pads with ``<|endoftext|>`` (id 49407), so padding is copies of [EOS];
* ``"2.x"`` (also SDXL's ``tokenizer_2``): pads with ``!`` (id 0).

The merges come from ``open_clip/bpe_simple_vocab_16e6.txt.gz`` of the ``open_clip_torch`` wheel,
installed with ``pip install --no-deps`` (``make setup`` does) and found on disk without importing
``open_clip`` (whose import pulls torchvision). Nothing here imports torch or needs the network.

>>> tok = sd_tokenizer("1.x")
>>> tok("a photo of a cat").input_ids
[49406, 320, 1125, 539, 320, 2368, 49407]

Caveat: OpenAI's own tokenizer also runs ``ftfy`` and HTML unescaping on the text; the
transformers tokenizer (like the SD pipelines' own) does not, which matters only for mojibake and
HTML entities, never for the plain prompts of ``data/prompts/``.
"""

from __future__ import annotations

import atexit
import functools
import gzip
import importlib.metadata
import importlib.util
import json
import shutil
import tempfile
from pathlib import Path

#: The wheel that ships the merges; installed with ``--no-deps`` (see the Makefile).
OPEN_CLIP_WHEEL = "open_clip_torch==3.3.0"
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE = 49408
N_MERGES = 49152 - 256 - 2  # OpenAI's simple_tokenizer: lines[1 : 49152 - 256 - 2 + 1]
SOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77
#: Version -> padding token of its tokenizer.
PAD_TOKENS = {"1.x": EOS, "2.x": "!"}


def bpe_path() -> Path:
    """``open_clip/bpe_simple_vocab_16e6.txt.gz`` of the installed ``open_clip_torch`` wheel (not imported).

    Raises:
        FileNotFoundError: when the wheel is not installed.
    """
    candidates: list[Path] = []
    spec = importlib.util.find_spec("open_clip")  # finds the package without running its __init__
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / BPE_FILE for p in spec.submodule_search_locations]
    try:
        dist = importlib.metadata.distribution("open_clip_torch")
        candidates += [Path(dist.locate_file(f)) for f in (dist.files or ()) if f.name == BPE_FILE]
    except importlib.metadata.PackageNotFoundError:
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"CLIP's BPE merges (open_clip/{BPE_FILE}) are not installed: run "
        f"`pip install --no-deps {OPEN_CLIP_WHEEL}` (`make setup` does it)."
    )


def bytes_to_unicode() -> dict[int, str]:
    """OpenAI's byte -> printable unicode character table of the byte-level BPE (256 entries)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


@functools.lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], tuple[str, ...]]:
    """CLIP's vocabulary (token -> id, 49,408 tokens) and its merges (``"a b"`` strings, in rank order).

    Built exactly as OpenAI's ``simple_tokenizer``: the 256 byte characters, the same with ``</w>``,
    every merge joined, then ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407).
    """
    lines = gzip.decompress(bpe_path().read_bytes()).decode("utf-8").split("\n")
    merges = tuple(lines[1 : N_MERGES + 1])
    if len(merges) != N_MERGES or any(len(m.split()) != 2 for m in merges):
        raise ValueError(f"{bpe_path()} is not CLIP's BPE file: expected {N_MERGES} merges of two symbols")
    tokens = list(bytes_to_unicode().values())
    tokens += [t + "</w>" for t in tokens]
    tokens += ["".join(m.split()) for m in merges]
    tokens += [SOS, EOS]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"CLIP vocabulary has {len(vocab)} distinct tokens, expected {VOCAB_SIZE}")
    return vocab, merges


def write_vocab_files(folder: str | Path) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` (the Hugging Face CLIP format) into ``folder``; returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab_and_merges()
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    if not vocab_file.exists() or not merges_file.exists():
        vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return folder


@functools.lru_cache(maxsize=1)
def _session_folder() -> Path:
    """The vocabulary files of this process, in a temporary folder removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix="clip-bpe-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return write_vocab_files(folder)


def sd_tokenizer(version: str = "1.x", cache_dir: str | Path | None = None):
    """The ``transformers.CLIPTokenizer`` of Stable Diffusion ``version`` (``"1.x"`` or ``"2.x"``), offline.

    Args:
        version: ``"1.x"`` pads with ``<|endoftext|>`` (49407); ``"2.x"`` (and SDXL's second tokenizer)
            pads with ``!`` (0). Both take 77 tokens, [SOS] and [EOS] included.
        cache_dir: a folder to keep ``vocab.json`` / ``merges.txt`` in; default a temporary folder
            removed when the process exits.
    """
    if version not in PAD_TOKENS:
        raise ValueError(f"unknown Stable Diffusion tokenizer version {version!r}; known: {sorted(PAD_TOKENS)}")
    from transformers import CLIPTokenizer  # no torch import

    folder = write_vocab_files(cache_dir) if cache_dir is not None else _session_folder()
    return CLIPTokenizer.from_pretrained(
        str(folder), bos_token=SOS, eos_token=EOS, unk_token=EOS, pad_token=PAD_TOKENS[version],
        model_max_length=MAX_LENGTH,
    )
