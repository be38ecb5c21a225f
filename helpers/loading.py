"""Load a text-to-image pipeline: the embedded default model or a real one by id.

>>> pipe = load_pipeline()                     # the tiny model shipped in data/models/
>>> pipe = load_pipeline("stable-diffusion-v1-5/stable-diffusion-v1-5")  # GPU / Colab

Every failure a user can cause (unknown id while offline, a pipeline class we do not
support, a missing weight folder) raises a :class:`LoadingError` whose message is one
sentence saying what to do.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Iterator

import torch

from . import tiny_model

logger = logging.getLogger(__name__)

#: Pipeline classes every helper supports, and the architecture family of each.
SUPPORTED_PIPELINES: dict[str, str] = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
    "PixArtAlphaPipeline": "pixart",
}
#: The real models of the paper (and SDXL), for users with a GPU and network.
REAL_MODEL_IDS: dict[str, str] = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "StableDiffusionPipeline",
    "stabilityai/stable-diffusion-2-1-base": "StableDiffusionPipeline",
    "stabilityai/stable-diffusion-xl-base-1.0": "StableDiffusionXLPipeline",
    "PixArt-alpha/PixArt-XL-2-512x512": "PixArtAlphaPipeline",
}
RANDOM_TINY_ID = "random-tiny"
SCHEDULERS = ("ddim", "dpm")
_logged: set[tuple[str, str]] = set()


class LoadingError(RuntimeError):
    """A pipeline could not be loaded; the message says why and what to do."""


def default_device_and_dtype(device: str | torch.device | None = None, dtype: torch.dtype | None = None):
    """CUDA + float16 when a GPU is available, else CPU + float32 (explicit values win)."""
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    return device, dtype


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "T2I_OFFLINE"))


def _class_name(model_id: str) -> str:
    """The pipeline class named in a model folder's or hub repo's ``model_index.json``."""
    path = Path(model_id)
    if path.exists():
        index = path / "model_index.json"
        if not index.exists():
            raise LoadingError(f"{model_id} is not a diffusers pipeline folder (no model_index.json); check the path.")
        return json.loads(index.read_text())["_class_name"]
    if model_id in REAL_MODEL_IDS and _offline():
        return REAL_MODEL_IDS[model_id]
    from diffusers import DiffusionPipeline

    try:
        config = DiffusionPipeline.load_config(model_id, local_files_only=_offline())
    except Exception as err:  # hub errors come in many classes; all mean the same to the user
        raise LoadingError(_unavailable(model_id, err)) from None
    return config["_class_name"]


def _unavailable(model_id: str, err: Exception | None = None) -> str:
    reason = "it is not in the local Hugging Face cache and the hub cannot be reached"
    if err is not None and not _offline() and "404" in str(err):
        reason = "no such model exists on the hub or it needs a login (huggingface-cli login)"
    return (
        f"Cannot load model {model_id!r}: {reason}; download it once with network access, "
        "or call load_pipeline() with no id to use the embedded offline model."
    )


def _log_once(what: str, device: torch.device, dtype: torch.dtype) -> None:
    key = (what, f"{device}/{dtype}")
    if key not in _logged:
        _logged.add(key)
        logger.warning("Loaded %s on %s (%s).", what, device, str(dtype).replace("torch.", ""))


def set_scheduler(pipe, name: str):
    """Swap the pipeline's sampler: ``"ddim"`` (DDIM) or ``"dpm"`` (DPM-Solver++ multistep)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    classes = {"ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler}
    if name not in classes:
        raise ValueError(f"unknown scheduler {name!r}; choose from {SCHEDULERS}")
    pipe.scheduler = classes[name].from_config(pipe.scheduler.config)
    return pipe


def load_pipeline(
    model_id: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    scheduler: str = "ddim",
):
    """Load a supported diffusers pipeline.

    Args:
        model_id: ``None`` for the embedded default model in ``data/models/``; a hub id
            such as ``"stable-diffusion-v1-5/stable-diffusion-v1-5"``; a local pipeline
            folder; or ``"random-tiny"`` for the tiny architecture with random weights
            (tests only: its images mean nothing).
        device: defaults to CUDA when available, else CPU.
        dtype: defaults to float16 on CUDA, float32 on CPU.
        scheduler: ``"ddim"`` (the paper's default) or ``"dpm"``.

    Raises:
        LoadingError: unknown id while offline, unsupported pipeline class, or missing weights.
    """
    from . import profile

    model_id = profile.get_model_id(model_id)
    device, dtype = default_device_and_dtype(device, dtype)
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; choose from {SCHEDULERS}")
    if model_id == RANDOM_TINY_ID:
        pipe = tiny_model.random_pipeline()
        what = "RANDOM-WEIGHT tiny pipeline (tests only, not a trained model)"
    else:
        if model_id is None:
            folder = tiny_model.default_model_dir()
            if not (folder / "model_index.json").exists() or not (folder / "unet").exists():
                raise LoadingError(
                    f"The embedded model's weights are missing from {folder}; "
                    "restore them with git or train them with `python scripts/train_tiny_model.py`."
                )
            model_id = str(folder)
        class_name = _class_name(model_id)
        if class_name not in SUPPORTED_PIPELINES:
            raise LoadingError(
                f"Pipeline class {class_name} of {model_id!r} is not supported; "
                f"supported classes are {', '.join(SUPPORTED_PIPELINES)}."
            )
        import diffusers

        cls = getattr(diffusers, class_name)
        local = Path(model_id).exists()
        kwargs = {} if class_name != "StableDiffusionPipeline" or local else {"safety_checker": None}
        try:
            pipe = cls.from_pretrained(model_id, dtype=dtype, local_files_only=local or _offline(), **kwargs)
        except (OSError, ValueError, EnvironmentError) as err:
            if local:
                raise LoadingError(f"Cannot load the pipeline folder {model_id}: {err}".split("\n")[0]) from None
            raise LoadingError(_unavailable(model_id, err)) from None
        what = "embedded tiny model" if Path(model_id) == tiny_model.default_model_dir() else model_id
    if scheduler != "ddim" or not type(pipe.scheduler).__name__.startswith("DDIM"):
        set_scheduler(pipe, scheduler)
    pipe = pipe.to(device) if model_id != RANDOM_TINY_ID or dtype == torch.float32 else pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    _log_once(what, device, dtype)
    return pipe


def family(pipe) -> str:
    """``"sd"``, ``"sdxl"`` or ``"pixart"``; raises :class:`LoadingError` for other pipelines."""
    name = type(pipe).__name__
    if name not in SUPPORTED_PIPELINES:
        raise LoadingError(f"Pipeline class {name} is not supported; supported classes are {', '.join(SUPPORTED_PIPELINES)}.")
    return SUPPORTED_PIPELINES[name]


def denoiser(pipe) -> torch.nn.Module:
    """The UNet (SD, SDXL) or transformer (PixArt) of a supported pipeline."""
    family(pipe)
    return pipe.unet if hasattr(pipe, "unet") and pipe.unet is not None else pipe.transformer


@contextlib.contextmanager
def count_evaluations(pipe) -> Iterator[list[int]]:
    """Count denoiser evaluations (batch rows summed over calls) while the block runs.

    ``with count_evaluations(pipe) as n: ...`` then ``n[0]``; a CFG step of one image counts 2.
    The hook is removed on exit, also when the block raises.
    """
    rows = [0]

    def hook(module, args, kwargs):
        sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        rows[0] += int(sample.shape[0])

    handle = denoiser(pipe).register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield rows
    finally:
        handle.remove()


def describe(pipe) -> dict[str, object]:
    """Model size and placement, for notebook headers."""
    parts = {}
    for name, module in pipe.components.items():
        if isinstance(module, torch.nn.Module):
            parts[name] = sum(p.numel() for p in module.parameters())
    d = denoiser(pipe)
    return {
        "pipeline": type(pipe).__name__,
        "family": family(pipe),
        "device": str(d.device),
        "dtype": str(d.dtype).replace("torch.", ""),
        "parameters": parts,
        "total_parameters": sum(parts.values()),
        "scheduler": type(pipe.scheduler).__name__,
    }
