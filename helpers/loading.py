"""Load a text-to-image pipeline: the embedded default model or a real one by id.

>>> pipe = load_pipeline()                     # the tiny model shipped in data/models/
>>> pipe = load_pipeline("stable-diffusion-v1-5/stable-diffusion-v1-5")  # GPU / Colab

Every failure a user can cause (unknown id while offline, a pipeline class we do not
support, a missing weight folder) raises a :class:`LoadingError` whose message is one
sentence saying what to do.

Nothing here reads the environment's model choice: ``load_pipeline(None)`` is always the
embedded model. Notebooks read ``$T2I_MODEL_ID`` once, in :func:`helpers.notebook.start`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Iterator

import torch

from .toy import model as tiny_model  # the default model's folder and names (see CONTRIBUTING.md)

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
#: Model ids that draw the synthetic shapes world (``None`` is the embedded default model).
TOY_MODEL_IDS = (None, "", "embedded", "default", RANDOM_TINY_ID)
SCHEDULERS = ("ddim", "dpm")
OFFLOAD_MODES = (None, "model", "sequential")
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
    if not _offline():
        _check_hub(model_id)
    from diffusers import DiffusionPipeline

    try:
        config = DiffusionPipeline.load_config(model_id, local_files_only=_offline())
    except Exception as err:  # hub errors come in many classes; all mean the same to the user
        raise LoadingError(_unavailable(model_id, err)) from None
    return config["_class_name"]


def _check_hub(model_id: str, timeout: float = 10.0) -> None:
    """Fail fast, with one sentence, when the hub cannot be reached or has no such model.

    One request without retries (``huggingface_hub``'s file downloads retry for about 20 seconds
    when the network is down). A model already in the local cache passes without the hub.
    """
    from huggingface_hub import HfApi, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(model_id, "model_index.json"), str):
        return
    try:
        HfApi().model_info(model_id, timeout=timeout)
    except Exception as err:  # connection errors, 404, gated repos: all one sentence for the user
        raise LoadingError(_unavailable(model_id, err)) from None


def _unavailable(model_id: str, err: Exception | None = None) -> str:
    reason = "it is not in the local Hugging Face cache and the hub cannot be reached"
    if err is not None and not _offline() and ("404" in str(err) or type(err).__name__ in (
            "RepositoryNotFoundError", "GatedRepoError")):
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


def uses_toy_world(model_id: str | None) -> bool:
    """Whether the model draws the toy shapes world (the embedded model or ``"random-tiny"``).

    The one place that decides it: ground truth, the attribute evaluator and the toy prompt
    sets apply exactly to these models.
    """
    return model_id in TOY_MODEL_IDS


def set_scheduler(pipe, name: str):
    """Swap the pipeline's sampler: ``"ddim"`` (DDIM) or ``"dpm"`` (DPM-Solver++ multistep)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    classes = {"ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler}
    if name not in classes:
        raise ValueError(f"unknown scheduler {name!r}; choose from {SCHEDULERS}")
    pipe.scheduler = classes[name].from_config(pipe.scheduler.config)
    return pipe


@contextlib.contextmanager
def scheduler_set(pipe, name: str) -> Iterator:
    """``with scheduler_set(pipe, "dpm"): ...`` -- :func:`set_scheduler` for the block; the original
    scheduler object is put back on exit, also when the block raises."""
    original = pipe.scheduler
    set_scheduler(pipe, name)
    try:
        yield pipe
    finally:
        pipe.scheduler = original


def load_pipeline(
    model_id: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    scheduler: str = "ddim",
    offload: str | None = None,
    vae_slicing: bool = False,
    vae_tiling: bool = False,
    variant: str | None = "auto",
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
        offload: ``None`` (everything on ``device``), ``"model"`` (diffusers'
            ``enable_model_cpu_offload``: one component on the GPU at a time; SDXL at 1024 px on a
            16 GB card) or ``"sequential"`` (``enable_sequential_cpu_offload``: least memory, slowest).
            Needs CUDA.
        vae_slicing, vae_tiling: decode a batch image by image / large images in tiles (less memory).
        variant: weights variant of a hub repo, e.g. ``"fp16"``; ``"auto"`` asks for ``"fp16"`` when
            loading in float16 from the hub and falls back to the full weights where a repo has none.

    Raises:
        LoadingError: unknown id while offline, unsupported pipeline class, missing weights, or an
            offload mode that cannot work here.
    """
    if model_id in ("", "embedded", "default"):
        model_id = None
    device, dtype = default_device_and_dtype(device, dtype)
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; choose from {SCHEDULERS}")
    if offload not in OFFLOAD_MODES:
        raise LoadingError(f"offload must be one of {OFFLOAD_MODES}, not {offload!r}.")
    if offload is not None and device.type != "cuda":
        raise LoadingError(f"offload={offload!r} moves components between the CPU and a CUDA GPU, and this run is "
                           f"on {device.type}: leave offload=None.")
    if model_id == RANDOM_TINY_ID:
        from .toy.random_pipelines import random_pipeline

        pipe = random_pipeline("sd15")
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
        wanted = ("fp16" if dtype == torch.float16 and not local else None) if variant == "auto" else variant
        try:
            try:
                pipe = cls.from_pretrained(model_id, dtype=dtype, local_files_only=local or _offline(), variant=wanted,
                                           **kwargs)
            except (OSError, ValueError) as err:
                if variant != "auto" or wanted is None or "variant" not in str(err).lower():
                    raise
                pipe = cls.from_pretrained(model_id, dtype=dtype, local_files_only=local or _offline(), **kwargs)
        except (OSError, ValueError, EnvironmentError) as err:
            if local:
                raise LoadingError(f"Cannot load the pipeline folder {model_id}: {err}".split("\n")[0]) from None
            raise LoadingError(_unavailable(model_id, err)) from None
        what = "embedded tiny model" if Path(model_id) == tiny_model.default_model_dir() else model_id
    if scheduler != "ddim" or not type(pipe.scheduler).__name__.startswith("DDIM"):
        set_scheduler(pipe, scheduler)
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe = pipe.to(device) if model_id != RANDOM_TINY_ID or dtype == torch.float32 else pipe.to(device, dtype)
    if vae_slicing:
        pipe.vae.enable_slicing()
    if vae_tiling:
        pipe.vae.enable_tiling()
    pipe.set_progress_bar_config(disable=True)
    _log_once(what, device, dtype)
    return pipe


def default_batch_size(pipe, per_image_gib: float | None = None, cap: int = 16) -> int:
    """A batch size that fits the free memory of the pipeline's GPU (``cap`` on the CPU).

    ``per_image_gib`` is the memory one image of a CFG call needs; by default a rough figure per family
    at its native resolution in float16 (SD 1.x/2.x 0.6, SDXL 2.5, PixArt 1.5 GiB), on top of the weights
    already loaded. At least 1.
    """
    model = denoiser(pipe)
    if model.device.type != "cuda":
        return cap
    per_image_gib = per_image_gib or {"sd": 0.6, "sdxl": 2.5, "pixart": 1.5}[family(pipe)]
    free, _ = torch.cuda.mem_get_info(model.device)
    return max(1, min(cap, int(0.8 * free / 2**30 / per_image_gib)))


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


def embedded_model_dir() -> Path:
    """The embedded default model's folder (``data/models/tiny-shapes-sd``), for code outside ``helpers.toy``."""
    return Path(tiny_model.default_model_dir())
