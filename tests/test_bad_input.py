"""Bad input gets one clear sentence at our API boundary (issue: the real-model path), never a traceback
from inside torch or transformers."""

import time

import numpy as np
import pytest

from helpers import guidance, loading
from helpers.generation import for_each_batch, generate
from helpers.hooks.attention import AttentionRecordError, attention_resolutions, record_attention
from helpers.text.conditioning import encode
from helpers.text.tokens import PromptTooLongError, PromptTypeError

LONG = "a " + " ".join(["red"] * 90) + " circle"


def one_sentence(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and message.count(". ") <= 1, message
    return message


@pytest.mark.parametrize("entry", ["generate", "sample", "encode"])
def test_prompts_over_the_limit_raise_the_same_error_everywhere(tiny_pipe, entry):
    calls = {"generate": lambda: generate(tiny_pipe, [LONG], num_inference_steps=2, progress=False),
             "sample": lambda: guidance.sample(tiny_pipe, [LONG], None, num_inference_steps=2),
             "encode": lambda: encode(tiny_pipe, LONG)}
    with pytest.raises(PromptTooLongError) as err:
        calls[entry]()
    assert "at most 77" in one_sentence(err)


@pytest.mark.parametrize("bad", [5, [1, 2], [], ["a red circle", None]])
def test_non_string_prompts(tiny_pipe, bad):
    for call in (lambda: generate(tiny_pipe, bad, num_inference_steps=2, progress=False),
                 lambda: guidance.sample(tiny_pipe, bad, None, num_inference_steps=2)):
        with pytest.raises((PromptTypeError, guidance.GuidanceScheduleError)) as err:
            call()
        assert "prompts must be" in one_sentence(err)


def test_mismatched_lengths(tiny_pipe):
    with pytest.raises(ValueError, match="3 seeds for 2 prompts") as err:
        for_each_batch(tiny_pipe, 2, lambda idx, latents: idx, seeds=[0, 1, 2])
    one_sentence(err)


def test_a_resolution_the_model_lacks_names_the_ones_it_has(tiny_pipe):
    assert attention_resolutions(tiny_pipe.unet) == {8, 4}
    with pytest.raises(AttentionRecordError, match=r"heights \[8, 4\]") as err:
        with record_attention(tiny_pipe, resolutions=(7,)):
            pass
    one_sentence(err)
    with record_attention(tiny_pipe, resolutions=(8, 4)):
        pass


def test_attention_resolutions_of_every_family(pipes):
    assert attention_resolutions(pipes("sd21").unet) == {16, 8, 4}
    assert attention_resolutions(pipes("sdxl").unet) == {8, 4}
    assert attention_resolutions(pipes("pixart").transformer) == {16}


def test_unknown_hub_id_fails_fast_without_retries(monkeypatch):
    """With the hub unreachable (mocked) the loader answers at once, before any retrying download."""
    import huggingface_hub
    from diffusers import DiffusionPipeline

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("T2I_OFFLINE", raising=False)

    def unreachable(self, repo_id, **kwargs):
        raise ConnectionError("Failed to establish a new connection: [Errno 111] Connection refused")

    def never(*args, **kwargs):
        raise AssertionError("load_config must not be reached")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unreachable)
    monkeypatch.setattr(DiffusionPipeline, "load_config", never)
    start = time.perf_counter()
    with pytest.raises(loading.LoadingError) as err:
        loading.load_pipeline("nobody/no-such-model")
    assert time.perf_counter() - start < 5
    assert "Cannot load model 'nobody/no-such-model'" in one_sentence(err)


def test_a_model_id_reaches_from_pretrained_online(monkeypatch, tiny_pipe):
    """A hub id leaves the hub online (no local_files_only) unless HF_HUB_OFFLINE is set."""
    import diffusers
    import huggingface_hub

    seen = {}

    def fake_from_pretrained(model_id, **kwargs):
        seen.update(kwargs, model_id=model_id)
        return tiny_pipe

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("T2I_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, repo_id, **kw: object())
    monkeypatch.setattr(loading, "_class_name", lambda model_id: "StableDiffusionPipeline")
    monkeypatch.setattr(diffusers.StableDiffusionPipeline, "from_pretrained", fake_from_pretrained)
    loading.load_pipeline("someone/some-model", device="cpu", dtype=None)
    assert seen["model_id"] == "someone/some-model" and seen["local_files_only"] is False
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loading.load_pipeline("someone/some-model", device="cpu")
    assert seen["local_files_only"] is True


def test_load_pipeline_none_is_the_embedded_model_whatever_the_environment(monkeypatch):
    monkeypatch.setenv("T2I_MODEL_ID", "random-tiny")
    seen = []
    monkeypatch.setattr(loading, "_class_name", lambda model_id: seen.append(model_id) or "NoSuchPipeline")
    with pytest.raises(loading.LoadingError):
        loading.load_pipeline(None)
    assert seen and seen[0].endswith("tiny-shapes-sd")


def test_outputs_of_a_real_model_go_to_their_own_folder(tmp_path, monkeypatch):
    from helpers import notebook
    from helpers.profile import get_profile

    monkeypatch.setattr(notebook, "RESULTS_DIR", tmp_path)
    ctx = notebook.NotebookContext(name="01_x", profile=get_profile("quick"), model_id="org/model", seed=0,
                                   pipe=None, prompts=[], prompt_set="natural")
    assert ctx.results_dir == tmp_path / "org--model" / "quick" / "01_x"
    assert np.all([p != "embedded" for p in ctx.results_dir.parts])
