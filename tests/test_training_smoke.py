"""A few steps of every training stage on a tiny config (CI never retrains the shipped model)."""

import json

import numpy as np

from helpers.evaluator import AttributeEvaluator
from helpers.metrics import Scorer


def test_training_writes_a_complete_model(smoke_model):
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "clip", "evaluator"):
        assert (smoke_model / part).is_dir(), part
    log = json.loads((smoke_model / "training_log.json").read_text())
    assert set(log["stages"]) >= {"data", "clip", "vae", "evaluator", "latents", "unet", "export"}


def test_scorer_runs_on_the_smoke_model(smoke_model):
    scorer = Scorer(clip_path=smoke_model / "clip", evaluator_path=smoke_model / "evaluator")
    images = np.random.default_rng(0).random((2, 64, 64, 3)).astype(np.float32)
    preds = scorer.attributes(images)
    assert set(preds[0]) == {"shape", "color", "size", "position", "pattern", "background"}
    scores = scorer.clip_score(images, ["a red circle", "a blue star"])
    assert scores.shape == (2,) and np.all(scores >= 0)
    sim = scorer.image_clip_score(images, images)
    assert np.allclose(sim, 100, atol=1e-3)
    assert isinstance(AttributeEvaluator.load(smoke_model / "evaluator"), AttributeEvaluator)


def test_training_resumes_from_checkpoints(smoke_model, tmp_path):
    """Interrupting after the clip stage and resuming gives the same UNet as one run."""
    import torch
    from conftest import load_script
    from safetensors.torch import load_file

    module = load_script("train_tiny_model")
    work = tmp_path / "resumed"
    work.mkdir()
    original = module.STAGES
    try:
        module.STAGES = original[:3]  # stop early: data, clip, vae
        module.main(["--profile", "smoke", "--work-dir", str(work), "--out", str(work / "model"), "--threads", "1"])
    except Exception:
        pass
    finally:
        module.STAGES = original
    module.main(["--profile", "smoke", "--work-dir", str(work), "--out", str(work / "model"), "--threads", "1"])
    a = load_file(smoke_model / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(work / "model" / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
