"""The real SD tokenizers offline (helpers/text/sd_tokenizer.py, issue 23) and the prompt sets they must take.

Torch-free: helpers.text.sd_tokenizer, helpers.text.tokens and helpers.promptsets import no torch
(test_no_torch_and_no_open_clip_import checks), and open_clip is never imported (only its BPE file is read).
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.promptsets import load_prompt_set
from helpers.text import sd_tokenizer as sdt
from helpers.text.tokens import PromptTooLongError, token_classes

ROOT = Path(__file__).resolve().parent.parent
NATURAL_S_PROMPT_SET = ROOT / "data" / "prompts" / "natural_s_prompt_set.json"
SOS_ID, EOS_ID, BANG_ID = 49406, 49407, 0
CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]  # "a photo of a cat", CLIP's known ids

try:
    sdt.bpe_path()
    BPE_MISSING = ""
except FileNotFoundError as err:
    BPE_MISSING = str(err)
needs_bpe = pytest.mark.skipif(bool(BPE_MISSING), reason=f"CLIP's BPE file is missing ({BPE_MISSING})")
VERSIONS = ("1.x", "2.x")


@pytest.fixture(scope="module")
def tokenizers():
    return {v: sdt.sd_tokenizer(v) for v in VERSIONS}


def natural_pairs() -> list[dict]:
    return json.loads(NATURAL_S_PROMPT_SET.read_text())["pairs"]


def test_missing_bpe_file_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(sdt.importlib.util, "find_spec", lambda name: None)

    def not_found(name):
        raise sdt.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(sdt.importlib.metadata, "distribution", not_found)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps open_clip_torch==\d"):
        sdt.bpe_path()


def test_unknown_version_is_refused():
    with pytest.raises(ValueError, match="1.x"):
        sdt.sd_tokenizer("3.x")


def test_bytes_to_unicode_is_openais_table():
    table = sdt.bytes_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256
    assert table[ord("!")] == "!" and table[ord("a")] == "a" and table[ord(" ")] == "Ġ"


@needs_bpe
def test_vocabulary_size_and_special_ids():
    vocab, merges = sdt.clip_vocab_and_merges()
    assert len(vocab) == 49408 and len(merges) == 49152 - 256 - 2
    assert vocab["<|startoftext|>"] == SOS_ID and vocab["<|endoftext|>"] == EOS_ID and vocab["!"] == BANG_ID
    assert vocab["a</w>"] == 256 + ord("a") - ord("!")  # the byte tokens, then the same with </w>
    assert all(vocab["".join(m.split())] == 512 + rank for rank, m in enumerate(merges[:1000]))


@needs_bpe
@pytest.mark.parametrize("version, pad_id", [("1.x", EOS_ID), ("2.x", BANG_ID)])
def test_tokenizer_ids_padding_and_length(tokenizers, version, pad_id):
    tok = tokenizers[version]
    assert len(tok) == 49408 and tok.model_max_length == 77
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (SOS_ID, EOS_ID, pad_id)
    assert tok("a photo of a cat").input_ids == CAT_IDS
    assert tok.convert_ids_to_tokens(CAT_IDS)[1:-1] == ["a</w>", "photo</w>", "of</w>", "a</w>", "cat</w>"]
    padded = tok("a photo of a cat", padding="max_length", max_length=77).input_ids
    assert padded[:7] == CAT_IDS and padded[7:] == [pad_id] * 70


@needs_bpe
def test_cache_dir_keeps_the_vocabulary_files(tmp_path):
    tok = sdt.sd_tokenizer("2.x", cache_dir=tmp_path / "clip")
    assert (tmp_path / "clip" / "vocab.json").is_file() and (tmp_path / "clip" / "merges.txt").is_file()
    assert tok("a photo of a cat").input_ids == CAT_IDS and tok.pad_token_id == BANG_ID


@needs_bpe
@pytest.mark.parametrize("version", VERSIONS)
def test_the_77_token_limit(tokenizers, version):
    tok = tokenizers[version]
    assert token_classes(tok, " ".join(["cat"] * 75)).eos == (76,)  # 75 words + [SOS] + [EOS] = 77
    with pytest.raises(PromptTooLongError, match="77"):
        token_classes(tok, " ".join(["cat"] * 76))


@needs_bpe
@pytest.mark.parametrize("version, padding_is_eos", [("1.x", True), ("2.x", False)])
def test_token_classes(tokenizers, version, padding_is_eos):
    c = token_classes(tokenizers[version], "a leather chair")
    assert c.max_length == 77 and c.has_sos and c.sos == (0,)
    assert c.semantic == (1, 2, 3) and c.eos == (4,) and c.padding == tuple(range(5, 77))
    assert c.padding_is_eos is padding_is_eos
    assert c.ids[4] == EOS_ID and set(c.ids[5:]) == {EOS_ID if padding_is_eos else BANG_ID}
    assert c.positions_of("leather") == (2,) and c.positions_of("chair") == (3,)
    assert len(c.eos_class) == 73


@needs_bpe
@pytest.mark.parametrize("version", VERSIONS)
def test_every_natural_prompt_fits(tokenizers, version):
    records = load_prompt_set("natural")
    assert records
    for r in records:
        token_classes(tokenizers[version], r.prompt)  # raises PromptTooLongError


def test_natural_s_prompt_set_schema():
    pairs = natural_pairs()
    assert len(pairs) >= 60
    assert len({(p["source"]["prompt"], p["target"]["prompt"]) for p in pairs}) == len(pairs)
    for p in pairs:
        a, b = p["source"], p["target"]
        assert a["prompt"] and b["prompt"] and "objects" in p["differs"]
        assert a["attributes"]["objects"] and b["attributes"]["objects"]
        assert not set(a["attributes"]["objects"]) & set(b["attributes"]["objects"])
        assert not set(a["attributes"]["objects"]) & set(b["prompt"].split()), p  # B never names A's object
        assert not set(b["attributes"]["objects"]) & set(a["prompt"].split()), p


def test_natural_s_prompt_set_is_what_the_script_writes():
    spec = importlib.util.spec_from_file_location("make_natural", ROOT / "scripts" / "make_natural_s_prompt_set.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    raw = json.loads(NATURAL_S_PROMPT_SET.read_text())
    assert script.make_pairs(raw["seed"]) == raw["pairs"], "rerun scripts/make_natural_s_prompt_set.py"


@needs_bpe
@pytest.mark.parametrize("version", VERSIONS)
def test_natural_s_prompt_set_fits_and_objects_are_found(tokenizers, version):
    for p in natural_pairs():
        for side in ("source", "target"):
            r = p[side]
            c = token_classes(tokenizers[version], r["prompt"])  # raises PromptTooLongError
            for obj in r["attributes"]["objects"]:
                assert c.positions_of(obj), (obj, r["prompt"])


@needs_bpe
def test_no_torch_and_no_open_clip_import():
    code = ("import sys; from helpers.text.sd_tokenizer import sd_tokenizer; from helpers.text.tokens import "
            "token_classes; token_classes(sd_tokenizer('1.x'), 'a cat'); "
            "print('torch' in sys.modules, 'open_clip' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
