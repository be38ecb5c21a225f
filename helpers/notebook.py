"""What every notebook does first and last: settings, model, prompt set, results, verdict.

>>> ctx = start(PROFILE, MODEL_ID, SEED)       # parameters from the papermill cell
>>> ctx.pipe, ctx.prompts, ctx.profile.num_inference_steps
>>> ctx.save_figure(fig, "fig1b_relative_f1")
>>> ctx.show(fig, "fig1b_relative_f1")         # save_figure, then show it inline (once)
>>> ctx.verdict(True, "relative F1 passes 0.9 at step 6 of 50: supports the paper.")
>>> ctx.report(verdicts.shape_first(f1, chance))  # a pre-registered rule: verdict.txt and verdict.json
>>> images = generate_from_embeddings(ctx.pipe, prompts, batch_size=ctx.batch_size, out_dir=ctx.sweep_dir("A"))

Memory options (``offload``, ``vae_slicing``, ``vae_tiling``) go to :func:`helpers.loading.load_pipeline`;
``ctx.batch_size`` is the notebook's ``BATCH_SIZE``, else on a GPU one that fits its free memory
(:func:`helpers.loading.default_batch_size`), else ``None`` (each helper's own default, as committed).
Heavy sweeps save their chunks under ``ctx.sweep_dir(name)`` (:mod:`helpers.sweeps`), so a crashed run
resumes; the verdict (the last cell) removes them: a finished run keeps its tables and figures only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from . import loading, plots, promptsets, resources
from .hooks.steps import count_evaluations
from .profile import Profile, get_model_id, get_profile

#: Where results go; ``None``: :func:`helpers.resources.results_dir` (``$T2I_RESULTS_DIR`` or the checkout's results/).
RESULTS_DIR: Path | None = None


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
    batch_size: int | None = None
    started: float = dataclasses.field(default_factory=time.time)
    _counter: list[int] | None = None
    _hooks: contextlib.ExitStack = dataclasses.field(default_factory=contextlib.ExitStack)

    @property
    def is_embedded(self) -> bool:
        """True on the embedded default model (trained weights, ground truth and the evaluator)."""
        return self.model_id is None

    @property
    def toy_world(self) -> bool:
        """True on a model of the toy shapes world (embedded or ``"random-tiny"``: :func:`helpers.loading.uses_toy_world`)."""
        return loading.uses_toy_world(self.model_id)

    @property
    def random_weights(self) -> bool:
        """True on ``"random-tiny"``: the mechanics run, the numbers mean nothing (verdicts are INCONCLUSIVE)."""
        return self.model_id == loading.RANDOM_TINY_ID

    @property
    def results_dir(self) -> Path:
        tag = "embedded" if self.model_id is None else self.model_id.replace("/", "--")
        path = (RESULTS_DIR or resources.results_dir()) / tag / self.profile.name / self.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def sweep_dir(self, name: str) -> Path:
        """Where the sweep ``name`` keeps its chunks: ``<results folder>/sweeps/<name>`` (per model and
        profile; removed by :meth:`verdict`). A rerun after a crash skips the finished chunks."""
        return self.results_dir / "sweeps" / (re.sub(r"[^\w.=+-]+", "_", name).strip("_") or "sweep")

    def save_figure(self, fig, stem: str) -> Path:
        """Write a figure to ``results/<model>/<profile>/<notebook>/<stem>.png`` (a compressed PNG, 90 dpi)."""
        path = self.results_dir / f"{stem}.png"
        path.write_bytes(plots.grids.figure_png(fig))
        return path

    def show(self, fig, stem: str) -> None:
        """Save a figure (:meth:`save_figure`, ``<stem>.png``), show it once inline and close it.

        Shown with IPython's ``display`` (the inline backend renders it as a PNG output); outside IPython
        ``plt.show()``. Closing keeps the backend from drawing it a second time at the end of the cell.
        """
        import matplotlib.pyplot as plt

        self.save_figure(fig, stem)
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:  # a plain Python session
            get_ipython = display = None
        if get_ipython is not None and get_ipython() is not None:
            display(fig)
        else:
            plt.show()
        plt.close(fig)

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
        """Print the closing verdict: SUPPORTED / NOT SUPPORTED / INCONCLUSIVE + the measured sentence.

        Also writes ``run_summary.json`` and removes the sweeps' chunks (:meth:`sweep_dir`): the run is done.
        """
        label = {True: "SUPPORTED", False: "NOT SUPPORTED", None: "INCONCLUSIVE"}[supported]
        text = f"[{label}] ({self.profile.name} profile, {self.model_label}) {sentence}"
        print(text)
        with open(self.results_dir / "verdict.txt", "a") as fh:
            fh.write(text + "\n")
        self.save_table(self.run_summary(), "run_summary")
        shutil.rmtree(self.results_dir / "sweeps", ignore_errors=True)
        return text

    def report(self, v, *, inconclusive: str | None = None) -> str:
        """Print and save the verdict of a pre-registered rule (a :class:`helpers.verdicts.Verdict`).

        Calls :meth:`verdict` with the rule's flag and sentence (``verdict.txt``, ``run_summary.json``)
        and writes ``verdict.json``: claim, verdict, the headline estimate (value, lo, hi, n, method),
        the rule, and the details (JSON-serialisable). ``inconclusive``: a reason to report the
        outcome as INCONCLUSIVE whatever the rule reads (on ``"random-tiny"`` "random weights" is always
        added); the rule's own reading is kept in the sentence and in ``rule_verdict``.
        Returns the printed text.
        """
        if self.random_weights:
            inconclusive = "; ".join(filter(None, (inconclusive, "random weights (mechanics check only): the numbers "
                                                                "mean nothing")))
        verdict, sentence = v.verdict, v.sentence
        if inconclusive is not None and verdict == "INCONCLUSIVE":
            sentence = f"{sentence.rstrip('.')}; also {inconclusive}."
        elif inconclusive is not None:
            sentence = sentence.replace(f"Verdict: {verdict} —", f"The rule alone reads {verdict} —", 1)
            sentence = f"{sentence.rstrip('.')}. Verdict: INCONCLUSIVE — {inconclusive}."
            verdict = "INCONCLUSIVE"
        supported = {"SUPPORTED": True, "NOT SUPPORTED": False, "INCONCLUSIVE": None}[verdict]
        text = self.verdict(supported, sentence)
        record = {"notebook": self.name, "profile": self.profile.name, "model": self.model_label,
                  "claim": v.claim, "verdict": verdict, "rule_verdict": v.verdict, "inconclusive_because": inconclusive,
                  "estimate": _jsonable(v.estimate), "rule": v.rule, "sentence": sentence,
                  "details": _jsonable(dict(v.details)),
                  "related": [{"claim": r.claim, "verdict": r.verdict, "estimate": _jsonable(r.estimate),
                               "rule": r.rule, "details": _jsonable(dict(r.details))} for r in v.related]}
        if getattr(v, "exploration", None) is not None:
            record["exploration"] = _jsonable(v.exploration)
        self.save_table(record, "verdict")
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


def _jsonable(x: Any) -> Any:
    """``x`` as plain JSON types: estimates and dataclasses as dicts, tables as records, arrays as lists."""
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, (int, float)):
        return x
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: _jsonable(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if hasattr(x, "to_dict") and hasattr(x, "columns"):  # a pandas DataFrame
        return [_jsonable(r) for r in x.to_dict(orient="records")]
    if hasattr(x, "to_dict"):  # a pandas Series
        return _jsonable(x.to_dict())
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in x]
    return str(x)


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
    offload: str | None = None,
    vae_slicing: bool = False,
    vae_tiling: bool = False,
    batch_size: int | None = None,
) -> NotebookContext:
    """Resolve the parameters, load the model and the prompt set, print a header.

    Args:
        profile: ``"quick"``/``"full"``; ``None`` reads ``$T2I_PROFILE`` (default full).
        model_id: ``None`` reads ``$T2I_MODEL_ID``; unset means the embedded model.
        seed: base seed of every generation in the notebook.
        name: results sub-folder (default: the notebook's file stem if known).
        load: load the pipeline (``False`` for notebooks that only need data).
        n_prompts: prompts to take from the set (default: the profile's ``n_prompts``).
        offload, vae_slicing, vae_tiling: memory options of :func:`helpers.loading.load_pipeline`
            (``offload``: ``None``, ``"model"`` or ``"sequential"``, CUDA only).
        batch_size: ``ctx.batch_size``; ``None``: on a GPU from its free memory
            (:func:`helpers.loading.default_batch_size`), on the CPU ``None`` (each helper's default).
    """
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
        raise ValueError(f"BATCH_SIZE must be a positive integer or None, not {batch_size!r}")
    prof = get_profile(profile)
    mid = get_model_id(model_id)
    seed_everything(seed)
    plots.setup_style()
    set_name = promptsets.default_prompt_set_name(mid)
    prompts = promptsets.load_prompt_set(set_name, n=n_prompts or prof.n_prompts)
    pipe = loading.load_pipeline(mid, offload=offload, vae_slicing=vae_slicing, vae_tiling=vae_tiling) if load else None
    if batch_size is None and pipe is not None and loading.denoiser(pipe).device.type == "cuda":
        batch_size = loading.default_batch_size(pipe)  # (offloaded pipelines sit on the CPU: helpers' defaults)
    name = name or os.environ.get("T2I_NOTEBOOK") or "notebook"
    ctx = NotebookContext(name=name, profile=prof, model_id=mid, seed=seed, pipe=pipe, prompts=prompts,
                          prompt_set=set_name, batch_size=batch_size)
    if pipe is not None:
        ctx._counter = ctx._hooks.enter_context(count_evaluations(pipe))
    (ctx.results_dir / "verdict.txt").unlink(missing_ok=True)  # verdicts of this run only
    device = loading.describe(pipe)["device"] if pipe is not None else "-"
    memory = "".join(f" | {k}={v}" for k, v in (("offload", offload), ("vae_slicing", vae_slicing or None),
                                                 ("vae_tiling", vae_tiling or None), ("batch", batch_size)) if v)
    print(f"profile={prof.name} | model={ctx.model_label} | device={device} | prompts={len(prompts)} ({set_name}) "
          f"| steps={prof.num_inference_steps} | guidance={prof.guidance_scale} | seed={seed}{memory}")
    return ctx
