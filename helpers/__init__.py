"""Helpers for reproducing "Towards Understanding the Working Mechanism of Text-to-Image
Diffusion Model" (Yi et al., NeurIPS 2024) on the embedded tiny model or real Stable Diffusion.

The public API is re-exported here (imported on first use, so ``import helpers`` is cheap)::

    from helpers import load_pipeline, generate, record_attention, encode, switch_eos, sample, TextWindow

Layout (CONTRIBUTING.md has the full map): ``loading``, ``generation``, ``latents``, ``guidance``,
``profile``, ``notebook``, ``promptsets`` at the top; ``hooks/`` (everything that hooks into a
pipeline call), ``text/`` (token classes, encoded prompts, embedding edits), ``analysis/``
(measurements), ``plots/``, ``toy/`` (the shapes world and the embedded model), ``bench/``.
"""

from __future__ import annotations

import importlib
import logging as _logging


class _QuietTorchvisionNotice(_logging.Filter):
    """transformers announces at import that image processors fall back to PIL without
    torchvision; we use PIL on purpose (CPU-only install), so drop that one notice."""

    def filter(self, record: _logging.LogRecord) -> bool:
        return "requires torchvision" not in record.getMessage()


for _name in ("transformers.utils.import_utils",):
    _logging.getLogger(_name).addFilter(_QuietTorchvisionNotice())

#: Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    # loading and generation
    "load_pipeline": "loading", "LoadingError": "loading", "family": "loading", "denoiser": "loading",
    "set_scheduler": "loading", "scheduler_set": "loading", "uses_toy_world": "loading",
    "generate": "generation", "initial_latents": "generation", "for_each_batch": "generation",
    "encode_images": "latents", "decode_latents": "latents",
    # hooks
    "record_attention": "hooks.attention", "AttentionRecorder": "hooks.attention",
    "CrossAttnProcessor": "hooks.processors", "installed_processors": "hooks.processors",
    "count_evaluations": "hooks.steps",
    "record_trajectory": "hooks.trajectory", "trajectory": "hooks.trajectory", "Trajectory": "hooks.trajectory",
    "kv_substitution": "hooks.kv", "generate_substituted": "hooks.kv",
    "trace": "hooks.trace", "Trace": "hooks.trace",
    "TextOffAfter": "hooks.callbacks", "GuidanceOffAfter": "hooks.callbacks", "SwitchAfter": "hooks.callbacks",
    "FunctionCallback": "hooks.callbacks",
    # text
    "token_classes": "text.tokens", "pipeline_token_classes": "text.tokens", "TokenClasses": "text.tokens",
    "PromptTooLongError": "text.tokens",
    "EncodedPrompt": "text.conditioning", "encode": "text.conditioning", "unconditional": "text.conditioning",
    "pipeline_inputs": "text.conditioning",
    "switch_eos": "text.surgery", "replace_tokens": "text.surgery", "generate_from_embeddings": "text.surgery",
    # guidance schedules
    "sample": "guidance", "TextWindow": "guidance", "Switch": "guidance", "AdaptiveStop": "guidance",
    "GuidanceRun": "guidance",
    # long runs
    "run_sweep": "sweeps", "sample_sweep": "sweeps",
    # analysis
    "class_mass": "analysis.mass", "class_mass_table": "analysis.mass", "relative_f1_table": "analysis.masks",
    "Scorer": "analysis.metrics",
    # notebooks
    "start": "notebook", "load_prompt_set": "promptsets", "get_profile": "profile",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'helpers' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
