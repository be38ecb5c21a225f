"""What every notebook does first and last: settings, model, prompt set, results, verdict.

>>> ctx = start(PROFILE, MODEL_ID, SEED)       # parameters from the papermill cell
>>> ctx.pipe, ctx.prompts, ctx.profile.num_inference_steps
>>> ctx.save_figure(fig, "fig1b_relative_f1")
>>> ctx.verdict(True, "relative F1 passes 0.9 at step 6 of 50: supports the paper.")
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import loading, plotting, promptsets
from .profile import Profile, get_model_id, get_profile

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results"


@dataclasses.dataclass
class NotebookContext:
    """Everything a notebook's cells share."""

    name: str
    profile: Profile
    model_id: str | None
    seed: int
    pipe: Any
    prompts: list[promptsets.PromptRecord]
    prompt_set: str
    started: float = dataclasses.field(default_factory=time.time)
    _counter: list[int] | None = None
    _hooks: contextlib.ExitStack = dataclasses.field(default_factory=contextlib.ExitStack)

    @property
    def is_embedded(self) -> bool:
        """True on the embedded default model (ground truth and evaluator available)."""
        return self.model_id is None

    @property
    def results_dir(self) -> Path:
        tag = "embedded" if self.model_id is None else self.model_id.replace("/", "--")
        path = RESULTS_DIR / tag / self.profile.name / self.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def save_figure(self, fig, stem: str) -> Path:
        """Write a figure to ``results/<model>/<profile>/<notebook>/<stem>.png``."""
        path = self.results_dir / f"{stem}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        return path

    def save_table(self, table, stem: str) -> Path:
        """Write a pandas DataFrame (CSV and markdown) or a dict (JSON) to the results folder."""
        if isinstance(table, dict):
            path = self.results_dir / f"{stem}.json"
            path.write_text(json.dumps(table, indent=1, default=float))
            return path
        path = self.results_dir / f"{stem}.csv"
        table.to_csv(path)
        try:
            (self.results_dir / f"{stem}.md").write_text(table.to_markdown())
        except ImportError:  # tabulate is optional
            pass
        return path

    def verdict(self, supported: bool | None, sentence: str) -> str:
        """Print the closing verdict: SUPPORTED / NOT SUPPORTED / INCONCLUSIVE + the measured sentence."""
        label = {True: "SUPPORTED", False: "NOT SUPPORTED", None: "INCONCLUSIVE"}[supported]
        text = f"[{label}] ({self.profile.name} profile, {self.model_label}) {sentence}"
        print(text)
        with open(self.results_dir / "verdict.txt", "a") as fh:
            fh.write(text + "\n")
        self.save_table(self.run_summary(), "run_summary")
        return text

    def run_summary(self) -> dict:
        """Denoiser evaluations (batch rows) and wall-clock seconds since :func:`start`.

        The README turns the full-profile counts into expected runtimes on real models.
        """
        return {"notebook": self.name, "profile": self.profile.name, "model": self.model_label,
                "denoiser_evaluations": None if self._counter is None else self._counter[0],
                "seconds": round(time.time() - self.started, 1)}

    def close(self) -> None:
        """Remove the evaluation counter's hook (done automatically when the kernel exits)."""
        self._hooks.close()

    @property
    def model_label(self) -> str:
        return "embedded tiny model" if self.model_id is None else self.model_id


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (generation itself uses explicit generators)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def start(
    profile: str | None = None,
    model_id: str | None = None,
    seed: int = 0,
    name: str | None = None,
    load: bool = True,
    n_prompts: int | None = None,
) -> NotebookContext:
    """Resolve the parameters, load the model and the prompt set, print a header.

    Args:
        profile: ``"quick"``/``"full"``; ``None`` reads ``$T2I_PROFILE`` (default full).
        model_id: ``None`` reads ``$T2I_MODEL_ID``; unset means the embedded model.
        seed: base seed of every generation in the notebook.
        name: results sub-folder (default: the notebook's file stem if known).
        load: load the pipeline (``False`` for notebooks that only need data).
        n_prompts: prompts to take from the set (default: the profile's ``n_prompts``).
    """
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    prof = get_profile(profile)
    mid = get_model_id(model_id)
    seed_everything(seed)
    plotting.setup_style()
    set_name = promptsets.default_prompt_set_name(mid)
    prompts = promptsets.load_prompt_set(set_name, n=n_prompts or prof.n_prompts)
    pipe = loading.load_pipeline(mid) if load else None
    name = name or os.environ.get("T2I_NOTEBOOK") or "notebook"
    ctx = NotebookContext(name=name, profile=prof, model_id=mid, seed=seed, pipe=pipe, prompts=prompts, prompt_set=set_name)
    if pipe is not None:
        ctx._counter = ctx._hooks.enter_context(loading.count_evaluations(pipe))
    (ctx.results_dir / "verdict.txt").unlink(missing_ok=True)  # verdicts of this run only
    device = loading.describe(pipe)["device"] if pipe is not None else "-"
    print(f"profile={prof.name} | model={ctx.model_label} | device={device} | prompts={len(prompts)} ({set_name}) "
          f"| steps={prof.num_inference_steps} | guidance={prof.guidance_scale} | seed={seed}")
    return ctx
