import json

import pytest
import torch

from helpers import loading
from helpers.toy import model as tiny_model
from helpers.loading import LoadingError, load_pipeline


def test_random_tiny_pipeline_loads_on_cpu_fp32(tiny_pipe):
    info = loading.describe(tiny_pipe)
    assert info["pipeline"] == "StableDiffusionPipeline" and info["family"] == "sd"
    assert info["device"] == "cpu" and info["dtype"] == "float32"


def test_default_device_and_dtype():
    device, dtype = loading.default_device_and_dtype()
    assert (device.type, dtype) == (("cuda", torch.float16) if torch.cuda.is_available() else ("cpu", torch.float32))
    assert loading.default_device_and_dtype("cpu", torch.float64) == (torch.device("cpu"), torch.float64)


def test_unknown_id_offline_is_one_clear_sentence(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LoadingError) as err:
        load_pipeline("nobody/no-such-model")
    message = str(err.value)
    assert "Cannot load model 'nobody/no-such-model'" in message and "\n" not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_real_id_offline_is_one_clear_sentence(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LoadingError, match="embedded offline model"):
        load_pipeline("stable-diffusion-v1-5/stable-diffusion-v1-5")


def test_unsupported_pipeline_class(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyPipeline"}))
    with pytest.raises(LoadingError, match="KandinskyPipeline .* not supported"):
        load_pipeline(str(tmp_path))


def test_folder_without_model_index(tmp_path):
    with pytest.raises(LoadingError, match="not a diffusers pipeline folder"):
        load_pipeline(str(tmp_path))


def test_missing_default_weights(monkeypatch, tmp_path):
    monkeypatch.setattr(tiny_model, "default_model_dir", lambda: tmp_path / "nothing")
    with pytest.raises(LoadingError, match="weights are missing"):
        load_pipeline()


def test_unknown_scheduler():
    with pytest.raises(ValueError, match="unknown scheduler"):
        load_pipeline("random-tiny", scheduler="euler")


def test_dpm_scheduler(tiny_pipe):
    pipe = load_pipeline("random-tiny", scheduler="dpm")
    assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"


def test_family_rejects_other_objects():
    with pytest.raises(LoadingError, match="not supported"):
        loading.family(object())


def test_trained_folder_loads_offline(smoke_model):
    pipe = load_pipeline(str(smoke_model))
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.tokenizer.model_max_length == 77
    assert pipe.unet.config.sample_size == 16 and pipe.vae.config.latent_channels == 4
