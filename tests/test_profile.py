import pytest

from helpers.profile import get_model_id, get_profile


def test_profile_from_argument_and_env(monkeypatch):
    monkeypatch.setenv("T2I_PROFILE", "quick")
    assert get_profile().is_quick
    assert get_profile("full").num_inference_steps == 50
    assert get_profile("full").guidance_scale == 7.5
    monkeypatch.delenv("T2I_PROFILE")
    assert get_profile().name == "full"


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(ValueError, match="use 'quick' or 'full'"):
        get_profile("medium")


def test_model_id_resolution(monkeypatch):
    monkeypatch.delenv("T2I_MODEL_ID", raising=False)
    assert get_model_id() is None and get_model_id("embedded") is None
    monkeypatch.setenv("T2I_MODEL_ID", "stabilityai/stable-diffusion-2-1-base")
    assert get_model_id() == "stabilityai/stable-diffusion-2-1-base"
    assert get_model_id("x/y") == "x/y"
