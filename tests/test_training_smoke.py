"""A few steps of every training stage on a tiny config (CI never retrains the shipped model)."""

import json

import numpy as np

from helpers.toy.evaluator import AttributeEvaluator
from helpers.analysis.metrics import Scorer


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
    """Stopping after the vae stage (--stop-after) and going on gives the same UNet as one run."""
    import torch
    from conftest import load_script
    from safetensors.torch import load_file

    module = load_script("train_tiny_model")
    work = tmp_path / "resumed"
    args = ["--profile", "smoke", "--work-dir", str(work), "--out", str(work / "model"), "--threads", "1"]
    module.main(args + ["--stop-after", "vae"])
    assert (work / "vae.done").exists() and not (work / "unet.done").exists() and not (work / "model").exists()
    module.main(args)
    a = load_file(smoke_model / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(work / "model" / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_quality_script_runs_on_a_model_folder(smoke_model, tmp_path):
    """scripts/evaluate_tiny_model.py --quick on a trained folder writes its report (json + markdown)."""
    from conftest import load_script

    report = load_script("evaluate_tiny_model").main(
        ["--quick", "--model-id", str(smoke_model), "--out", str(tmp_path), "--device", "cpu", "--float32"])
    assert {"guidance_7.5", "guidance_1.0", "held_out_pairs_guidance_7.5", "passes"} <= set(report)
    assert (tmp_path / "model_quality_quick.json").exists() and (tmp_path / "model_quality_quick.md").exists()


def test_settings_can_be_changed_from_the_command_line(tmp_path):
    import pytest
    from conftest import load_script

    module = load_script("train_tiny_model")
    cfg = module.apply_overrides(module.PROFILES["smoke"], ["unet_steps=7", "unet_min_snr_gamma=2.5"])
    assert cfg["unet_steps"] == 7 and cfg["unet_min_snr_gamma"] == 2.5
    assert module.PROFILES["smoke"]["unet_steps"] == 4  # the profile itself is untouched
    assert module.apply_overrides(module.PROFILES["smoke"], ["vae_channels=32,64,64"])["vae_channels"] == (32, 64, 64)
    for bad in (["no_such_setting=1"], ["unet_steps"], ["unet_steps=many"], ["vae_channels=32,wide"]):
        with pytest.raises(SystemExit, match="--set"):
            module.apply_overrides(module.PROFILES["smoke"], bad)


def test_plain_mse_option_trains(tmp_path):
    """``--set unet_min_snr_gamma=0`` (plain MSE, version 2's UNet loss) runs end to end (smoke config)."""
    import json

    from conftest import load_script

    module = load_script("train_tiny_model")
    module.main(["--profile", "smoke", "--work-dir", str(tmp_path), "--out", str(tmp_path / "model"), "--threads", "1",
                 "--set", "unet_min_snr_gamma=0"])
    log = json.loads((tmp_path / "model" / "training_log.json").read_text())
    assert log["config"]["unet_min_snr_gamma"] == 0 and log["stages"]["unet"]["final_loss"] > 0


def test_probes_read_a_work_folder(smoke_model):
    """scripts/probe_tiny_model.py: the UNet checkpoint's EMA weights and the VAE's ceiling."""
    from conftest import load_script

    probe = load_script("probe_tiny_model")
    work = smoke_model.parent  # the smoke run's work folder
    unet = probe.main(["--work-dir", str(work), "--unet", "--n", "4", "--steps", "2"])
    assert unet["unet_step"] == 4 and set(unet["guidance_7.5"]) >= {"shape", "color"}
    vae = probe.main(["--work-dir", str(work), "--vae", "--n", "8"])
    assert vae["n_renders"] == 8 and 0 <= vae["reconstructions"]["shape"] <= 1 and vae["psnr_db"] > 0


def test_edge_weights_mark_outlines_and_leave_the_background_alone():
    """The VAE's edge-weighted loss: weight 1 + w on and next to an object's outline, 1 on flat background."""
    import torch
    from conftest import load_script

    module = load_script("train_tiny_model")
    x = torch.zeros(1, 3, 32, 32)
    x[:, 0, 10:20, 10:20] = 1.0  # a red square on black
    w = module.edge_weights(x, 4.0)
    assert w.shape == (1, 1, 32, 32)
    assert w[0, 0, 0, 0] == 1 and w[0, 0, 15, 15] == 1  # far background, inside of the flat square
    assert w[0, 0, 10, 10] == 5 and w[0, 0, 9, 15] == 5  # the corner and just outside the top edge
    rec = x.clone()
    rec[:, :, 10, 10] = 0.0  # a lost corner costs more with edge weights than without
    base, _ = module.reconstruction_loss(rec, x)
    weighted, _ = module.reconstruction_loss(rec, x, 4.0)
    assert weighted > base > 0


def test_compare_runs_finds_identical_and_changed_stages(smoke_model, tmp_path):
    """scripts/compare_runs.py: a work folder equals itself; a changed weight is reported."""
    import shutil

    import torch
    from conftest import load_script

    module = load_script("compare_runs")
    work = smoke_model.parent
    text = module.main([str(work), str(work), "--labels", "one", "same"])
    assert "| vae.ckpt |" in text and "differs" not in text and "one vs same" in text
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(work / "clip.ckpt", other / "clip.ckpt")
    state = torch.load(work / "vae.ckpt", map_location="cpu", weights_only=False)
    tensor = next(v for v in state["vae"].values() if v.is_floating_point())
    tensor += 0.5
    torch.save(state, other / "vae.ckpt")
    text = module.main([str(work), str(other)])
    assert "| clip.ckpt |" in text and "identical" in text.split("| clip.ckpt |")[1].splitlines()[0]
    assert "max abs diff 0.5" in text.split("| vae.ckpt |")[1].splitlines()[0]


def test_reused_image_stages_can_be_reused_again(tmp_path):
    """A model whose image stages were themselves reused (its log names where from) can lend them again;
    the new log keeps where they were trained."""
    import torch
    from conftest import load_script

    module = load_script("train_tiny_model")
    source = tmp_path / "source"
    for folder in ("vae", "evaluator"):
        (source / folder).mkdir(parents=True)
        (source / folder / "x.json").write_text("{}")
    stages = {s: {"seconds": 60.0, "reused_from": "/elsewhere/v3", "steps": 3} for s in ("vae", "evaluator", "decoder")}
    (source / "training_log.json").write_text(json.dumps({"stages": stages}))
    run = module.Run(work=tmp_path / "work", out=tmp_path / "out", cfg={"vae_steps": 3, "eval_steps": 3,
                     "decoder_steps": 3}, seed=0, device=torch.device("cpu"))
    run.work.mkdir()
    module.reuse_image_stages(run, source)
    for stage in ("vae", "evaluator", "decoder"):
        marker = json.loads((run.work / f"{stage}.done").read_text())
        assert marker["reused_from"] == str(source) and marker["trained_in"] == "/elsewhere/v3"
        assert marker["seconds"] == 60.0
    assert (run.work / "vae" / "x.json").exists()
