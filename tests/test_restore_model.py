"""Earlier shipped model versions stay restorable from git history (scripts/restore_model.py)."""

import json
import subprocess

import pytest

from conftest import ROOT, load_script


def test_version_3_restores_from_history(tmp_path):
    module = load_script("restore_model")
    commit = module.VERSIONS["3"]
    if subprocess.run(["git", "cat-file", "-e", commit], cwd=ROOT, capture_output=True).returncode != 0:
        pytest.skip("this clone has no full history")
    out = module.restore("3", tmp_path / "v3")
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"
    for part in ("unet", "text_encoder", "vae", "clip", "evaluator", "tokenizer", "scheduler"):
        assert any((out / part).iterdir()), part
    log = json.loads((out / "training_log.json").read_text())
    assert "clip_objective" not in log["config"]  # version 3 predates the setting: its text tower is eos_head


def test_unknown_version_is_one_sentence(tmp_path):
    with pytest.raises(SystemExit, match="restorable versions"):
        load_script("restore_model").restore("99", tmp_path)
