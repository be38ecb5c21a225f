"""Shared fixtures: everything offline, small and seeded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("T2I_PROFILE", "quick")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_pipe():
    """The tiny architecture with random weights (mechanics only)."""
    from helpers.loading import load_pipeline

    return load_pipeline("random-tiny")


@pytest.fixture(scope="session")
def pipes():
    """Random tiny pipelines of every supported class (helpers.toy.random_pipelines), built on first use."""
    from helpers.toy.random_pipelines import random_pipeline

    cache = {}

    def get(kind: str):
        if kind not in cache:
            cache[kind] = random_pipeline(kind)
        return cache[kind]

    return get


@pytest.fixture(scope="session")
def smoke_model(tmp_path_factory) -> Path:
    """A model folder made by a few steps of every training stage (scripts/train_tiny_model.py)."""
    module = load_script("train_tiny_model")
    work = tmp_path_factory.mktemp("smoke")
    module.main(["--profile", "smoke", "--work-dir", str(work), "--out", str(work / "model"), "--threads", "1"])
    return work / "model"


def load_script(name: str):
    """Import ``scripts/<name>.py`` as a module (scripts are not part of the package)."""
    import importlib.util
    import sys

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
