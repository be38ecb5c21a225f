"""The real families at their published sizes, with random weights: dry runs of every helper path, offline.

Compute, memory and tensor shapes do not depend on the weights' values, so a pipeline built from a
model's published configuration with random weights costs what the real one costs, and shows that
every helper runs on it, without downloading a single weight (its images mean nothing)::

    pipe = build("sd15")                              # 1.07e9 random parameters, configs of data/configs/sd15
    report = run_paths(pipe, steps=2)                 # every helper path, native 512 px
    report = run_paths(pipe, steps=1, height=256, width=256)   # real widths, 32x32 latents

``data/configs/<family>/`` holds ``model_index.json`` and one JSON per component, written from the
published Hub configs of :data:`MODEL_IDS`. Tokenizers, built offline: SD 1.5 ``sd_tokenizer("1.x")``,
SD 2.1 ``sd_tokenizer("2.x")``, SDXL both (the real ones, :mod:`helpers.text.sd_tokenizer`).

PixArt: T5's real 32,128-piece SentencePiece vocabulary cannot be built offline, so its tokenizer is
a STAND-IN (:func:`standin_t5_tokenizer`, T5's special ids and PixArt's 120-token padding: token
counts differ from the real tokenizer's, compute does not). Its T5-v1.1-XXL encoder (4.76e9
parameters: 19 GB in float32, 9.5 GB in bfloat16) can be built with fewer of its 24 layers at the
real width (``t5_layers``); :func:`run_paths` then reports the measured figures and, labelled as
estimates, the full encoder's weights, memory and encoding time scaled by layers.

Every scheduler is swapped for DDIM from its published config, as :func:`helpers.loading.load_pipeline`
does by default (the trajectory needs an alpha-parameterised sampler with one evaluation per step).
"""

from __future__ import annotations

import contextlib
import gc
import json
import resource
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from ..analysis.fft import split_bands
from ..generation import generate, initial_latents
from ..guidance import TextWindow, sample
from ..hooks.attention import attention_resolutions, record_attention
from ..hooks.kv import generate_substituted
from ..hooks.trace import trace
from ..hooks.trajectory import trajectory
from ..loading import denoiser, family as pipeline_family, set_scheduler
from ..resources import data_dir
from ..text.conditioning import encode
from ..text.sd_tokenizer import sd_tokenizer
from ..text.surgery import generate_from_embeddings, switch_eos
from .latency import synchronizer, timed_parts

FAMILIES = ("sd15", "sd21", "sdxl", "pixart")
MODEL_IDS = {
    "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sd21": "stabilityai/stable-diffusion-2-1-base",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
    "pixart": "PixArt-alpha/PixArt-XL-2-512x512",
}
#: The helper paths :func:`run_paths` runs, in order ("plain": the stock call, the baseline and warm-up).
PATHS = ("plain", "attention", "trace", "surgery", "kv", "guidance", "trajectory", "fft")
PROMPTS = ("a red striped circle on the left", "a blue plain star at the top")
T5_LAYERS = 24  # T5-v1.1-XXL's encoder
T5_MAX_LENGTH = 120  # PixArt-alpha's max_sequence_length
#: Keys of a published transformers config that are not arguments of its config class.
_NOT_CONFIG_FIELDS = ("architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "_name_or_path")
_TEXT_CONFIG_CLASSES = {"CLIPTextModel": "CLIPTextConfig", "CLIPTextModelWithProjection": "CLIPTextConfig",
                        "T5EncoderModel": "T5Config"}
_MODULES = ("text_encoder", "text_encoder_2", "unet", "transformer", "vae")


def config_dir(family: str) -> Path:
    """``<data>/configs/<family>/``, the published configurations of one family.

    Raises:
        ValueError: ``family`` is not one of :data:`FAMILIES`.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    return data_dir() / "configs" / family


def load_configs(family: str) -> dict[str, dict]:
    """Every config of ``family`` by component name (``model_index``, ``unet``, ``text_encoder``, ...)."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(config_dir(family).glob("*.json"))}


def standin_t5_tokenizer():
    """A STAND-IN for PixArt's T5 tokenizer (the real vocabulary cannot be built offline).

    A unigram ``T5Tokenizer``: one piece per word of :data:`PROMPTS`, single characters as fallback,
    T5's special ids (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2), no [SOS], padding to 120 tokens.
    """
    from transformers import T5Tokenizer

    chars = [chr(c) for c in range(33, 127)]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    pieces += [("▁" + w, -1.0) for w in sorted({w for p in PROMPTS for w in p.split()})]
    pieces += [(c, -8.0) for c in chars] + [("▁" + c, -7.0) for c in chars]
    seen: set[str] = set()
    vocab = [(piece, score) for piece, score in pieces if not (piece in seen or seen.add(piece))]  # first one wins
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=T5_MAX_LENGTH)


def _diffusers_component(config: dict):
    """A diffusers model or scheduler from its published config (class named by ``_class_name``)."""
    import diffusers

    return getattr(diffusers, config["_class_name"]).from_config(config)


def _text_encoder(config: dict, **overrides):
    """A transformers text encoder (class named by ``architectures``) from its published config."""
    import transformers

    arch = config["architectures"][0]
    fields = {k: v for k, v in config.items() if k not in _NOT_CONFIG_FIELDS and not k.startswith("_")}
    fields.update(overrides)
    return getattr(transformers, arch)(getattr(transformers, _TEXT_CONFIG_CLASSES[arch])(**fields))


def build(family: str, dtype: torch.dtype = torch.float32, t5_layers: int | None = None, seed: int = 0,
          device: str | torch.device = "cpu", scheduler: str | None = "ddim", t5_tokenizer=None):
    """The pipeline of ``family`` at its published size with random weights, in eval mode on ``device``.

    Each component is initialised in float32 on the CPU (the same ``seed`` gives the same weights on
    every device), then cast to ``dtype`` and moved to ``device`` before the next one is built.

    Args:
        family: one of :data:`FAMILIES`.
        dtype: dtype of every component (PixArt's T5 overflows float16 with real weights: prefer bfloat16).
        t5_layers: PixArt only: build this many of T5-XXL's 24 layers at the real width (``None``: all 24).
        scheduler: ``"ddim"`` (default, as ``load_pipeline``), ``"dpm"``, or ``None`` for the published one.
        t5_tokenizer: PixArt only: the tokenizer to use (default :func:`standin_t5_tokenizer`).

    Raises:
        ValueError: unknown family, or ``t5_layers`` outside 1..24 or given for a family without T5.
    """
    configs = load_configs(family)
    if t5_layers is not None and (family != "pixart" or not 1 <= int(t5_layers) <= T5_LAYERS):
        raise ValueError(f"t5_layers={t5_layers!r} applies to pixart only, between 1 and {T5_LAYERS}")
    import diffusers

    device = torch.device(device)
    parts: dict[str, Any] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in _MODULES:
            if name not in configs:
                continue
            cfg = configs[name]
            if "architectures" in cfg:
                overrides = {"num_layers": int(t5_layers)} if "T5" in cfg["architectures"][0] and t5_layers else {}
                module = _text_encoder(cfg, **overrides)
            else:
                module = _diffusers_component(cfg)
            parts[name] = module.to(device=device, dtype=dtype).eval()
            del module
            gc.collect()
    parts["scheduler"] = _diffusers_component(configs["scheduler"])
    if family in ("sd15", "sd21"):
        pipe = diffusers.StableDiffusionPipeline(
            tokenizer=sd_tokenizer("1.x" if family == "sd15" else "2.x"), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False, **parts)
    elif family == "sdxl":
        pipe = diffusers.StableDiffusionXLPipeline(
            tokenizer=sd_tokenizer("1.x"), tokenizer_2=sd_tokenizer("2.x"), add_watermarker=False,
            force_zeros_for_empty_prompt=bool(configs["model_index"].get("force_zeros_for_empty_prompt", True)),
            **parts)
    else:
        pipe = diffusers.PixArtAlphaPipeline(tokenizer=t5_tokenizer or standin_t5_tokenizer(), **parts)
    if scheduler is not None:
        set_scheduler(pipe, scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def parameter_counts(pipe) -> dict[str, int]:
    """Parameters of each ``torch.nn.Module`` component of ``pipe``."""
    return {name: sum(p.numel() for p in m.parameters())
            for name, m in pipe.components.items() if isinstance(m, torch.nn.Module)}


def weight_bytes(pipe) -> int:
    """Bytes held by the parameters of every component."""
    return sum(p.numel() * p.element_size() for m in pipe.components.values()
               if isinstance(m, torch.nn.Module) for p in m.parameters())


def t5_extrapolation(pipe, peak_bytes: int | None = None, encode_seconds: float | None = None) -> dict | None:
    """For a T5 built with fewer than 24 layers: measured counts and the full encoder's ESTIMATED ones.

    ``None`` for pipelines without T5. The estimates add ``24 - n`` copies of the last built block's
    weights to the parameters and to ``peak_bytes`` (T5's activations at 120 tokens are small next to
    them) and scale ``encode_seconds`` by ``24 / n``; denoising steps do not run T5.
    """
    encoder = getattr(pipe, "text_encoder", None)
    if type(encoder).__name__ != "T5EncoderModel":
        return None
    built, width = int(encoder.config.num_layers), int(encoder.config.d_model)
    per_layer = sum(p.numel() for p in encoder.encoder.block[-1].parameters())
    total = sum(p.numel() for p in encoder.parameters())
    missing_bytes = (T5_LAYERS - built) * per_layer * next(encoder.parameters()).element_size()
    note = (f"ESTIMATES, not measurements: T5 built with {built} of {T5_LAYERS} layers at the real width {width}; "
            "the full encoder adds the missing layers' weights, encoding time scales with layers")
    return {"note": note if built < T5_LAYERS else "the full T5 encoder was built: the estimates equal the measurements",
            "layers_built": built, "layers_real": T5_LAYERS, "width": width, "params_built": total,
            "params_per_layer": per_layer, "params_real_estimate": total + (T5_LAYERS - built) * per_layer,
            "missing_weight_bytes_estimate": missing_bytes, "measured_peak_memory_bytes": peak_bytes,
            "peak_memory_real_estimate_bytes": None if peak_bytes is None else peak_bytes + missing_bytes,
            "measured_encode_seconds": encode_seconds,
            "encode_seconds_real_estimate": None if encode_seconds is None else encode_seconds * T5_LAYERS / built}


@contextlib.contextmanager
def latent_size(pipe, size: int | None) -> Iterator[int]:
    """Run the block at square latents of side ``size`` (``None``: the native size); restored on exit.

    The helpers draw their noise at the denoiser's ``config.sample_size`` (``initial_latents``), and the
    pipelines take their default image size from it (SDXL from ``default_sample_size``): both are set.
    """
    model = denoiser(pipe)
    original = model.config.sample_size
    native = original[0] if isinstance(original, (list, tuple)) else int(original)
    size = native if size is None else int(size)
    old_default = getattr(pipe, "default_sample_size", None)
    model.register_to_config(sample_size=size)
    if old_default is not None:
        pipe.default_sample_size = size
    try:
        yield size
    finally:
        model.register_to_config(sample_size=original)
        if old_default is not None:
            pipe.default_sample_size = old_default


def _reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda max_memory_allocated during the path"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "process max RSS so far (ru_maxrss)"


# ---------------------------------------------------------------- the paths: fn(pipe, steps, call kwargs, state)


def _plain(pipe, steps: int, kw: dict, state: dict) -> dict:
    images = generate(pipe, [PROMPTS[0]], num_inference_steps=steps, progress=False, **kw)
    return {"image_shape": list(images.shape)}


def _attention(pipe, steps: int, kw: dict, state: dict) -> dict:
    expected = sorted(attention_resolutions(denoiser(pipe)), reverse=True)
    with record_attention(pipe, resolutions=None) as rec:
        generate(pipe, [PROMPTS[0]], num_inference_steps=steps, progress=False, **kw)
    heights = [h for h, _ in rec.sizes]
    if heights != expected:
        raise AssertionError(f"maps recorded at heights {heights}, expected {expected}")
    return {"sizes": [list(s) for s in rec.sizes],
            "map_shapes": {f"{h}x{w}": list(rec.maps((h, w)).shape) for h, w in rec.sizes},
            "token_mass_shape": list(rec.token_mass().shape)}


def _trace(pipe, steps: int, kw: dict, state: dict) -> dict:
    """The DAAM-style facade on a plain call: prompt captured, per-step word maps, class mass."""
    expected = sorted(attention_resolutions(denoiser(pipe)), reverse=True)
    with trace(pipe) as tr:
        generate(pipe, [PROMPTS[0]], num_inference_steps=steps, progress=False, **kw)
    if tr.prompts != [PROMPTS[0]]:
        raise AssertionError(f"trace captured prompts {tr.prompts}, expected {[PROMPTS[0]]}")
    heights = [h for h, _ in tr.sizes]
    if heights != expected:
        raise AssertionError(f"trace recorded heights {heights}, expected {expected}")
    word = tr.word_map("circle", 0, step=-1)
    mass = tr.class_mass()
    last = mass[mass["step"] == mass["step"].max()].groupby("class")["mass"].sum()
    return {"prompts": tr.prompts, "sizes": [list(x) for x in tr.sizes], "steps_recorded": len(tr.timesteps),
            "word_map_shape": list(word.shape), "word_map_finite": bool(torch.isfinite(word).all()),
            "class_mass_last_step": {str(k): float(v) for k, v in last.items()}}


def _surgery(pipe, steps: int, kw: dict, state: dict) -> dict:
    sync = synchronizer(denoiser(pipe).device)
    sync()
    start = time.perf_counter()
    a, b = encode(pipe, PROMPTS[0]), encode(pipe, PROMPTS[1])
    sync()
    state["encode_seconds"] = (time.perf_counter() - start) / 2
    state["a"], state["s"] = a, switch_eos(a, b)
    images = generate_from_embeddings(pipe, [state["s"]], num_inference_steps=steps, **kw)
    return {"encode_seconds_per_prompt": state["encode_seconds"], "embeds_shape": list(a.embeds.shape),
            "eos_class_positions": len(a.eos_class), "image_shape": list(images.shape)}


def _kv(pipe, steps: int, kw: dict, state: dict) -> dict:
    if "s" not in state:
        raise RuntimeError("needs the surgery path's encoded prompts, and that path failed")
    images, kl = generate_substituted(pipe, [state["a"]], keys=[state["s"]], measure_kl=True,
                                      num_inference_steps=steps, **kw)
    return {"kl": kl.result(), "image_shape": list(images.shape)}


def _guidance(pipe, steps: int, kw: dict, state: dict) -> dict:
    run = sample(pipe, [PROMPTS[0]], TextWindow(1), num_inference_steps=steps, **kw)
    return {"schedule": "TextWindow(k=1)", "denoiser_calls": run.denoiser_calls,
            "evals_per_image": run.evals_per_image, "image_shape": list(run.images.shape)}


def _trajectory(pipe, steps: int, kw: dict, state: dict) -> dict:
    images, traj = trajectory(pipe, [PROMPTS[0]], num_inference_steps=steps, progress=False, **kw)
    state["latents"] = traj.xt
    return {"x0_shape": list(traj.x0.shape), "xt_shape": list(traj.xt.shape), "timesteps": list(traj.timesteps)}


def _fft(pipe, steps: int, kw: dict, state: dict) -> dict:
    x, source = state.get("latents"), "the trajectory's x_t"
    if x is None:
        x, source = initial_latents(pipe, [0]).float().cpu(), "initial noise (the trajectory path failed)"
    low, high = split_bands(x, cutoff=0.25)
    error = float((low + high - x).abs().max())
    if error > 1e-4 * max(1.0, float(x.abs().max())):
        raise AssertionError(f"low + high differs from the latents by {error}")
    return {"input": source, "shape": list(x.shape), "max_reconstruction_error": error,
            "low_band_energy_share": float(low.pow(2).sum() / x.pow(2).sum().clamp_min(1e-30))}


_PATH_FUNCTIONS: dict[str, Callable[[Any, int, dict, dict], dict]] = {
    "plain": _plain, "attention": _attention, "trace": _trace, "surgery": _surgery, "kv": _kv, "guidance": _guidance,
    "trajectory": _trajectory, "fft": _fft}


def check_size(height: int | None, width: int | None) -> int | None:
    """The common side of a reduced resolution (``None`` for native); one sentence when it is unusable.

    Raises:
        ValueError: only one of height and width, different values (the helpers draw square latents),
            or a side that is not a positive multiple of 64 pixels.
    """
    if height is None and width is None:
        return None
    if height is None or width is None or height != width:
        raise ValueError(f"give height and width together and equal (square latents), not {height}x{width}")
    if not isinstance(height, int) or height <= 0 or height % 64:
        raise ValueError(f"the image side must be a positive multiple of 64 pixels, not {height!r}")
    return height


def run_paths(pipe, steps: int = 2, height: int | None = None, width: int | None = None,
              log: Callable[[str], None] | None = None, paths: Sequence[str] | None = None) -> dict[str, Any]:
    """Run every helper path of :data:`PATHS` for ``steps`` steps; per path its status, time and memory.

    At the native latent size, or at ``height`` x ``width`` pixels (square, a multiple of 64) with the
    real channel widths. Each path's entry: ``status`` (``"OK"`` or ``"error"`` with the message),
    ``seconds`` (wall time of the path), ``seconds_per_step`` (denoiser forward time per call, hooks
    included; one call per step, with the CFG batch), ``peak_memory_bytes`` and ``peak_memory_kind``.
    A path's failure never stops the others. ``paths`` runs only those (in :data:`PATHS`' order; ``kv``
    needs ``surgery``, ``fft`` reads ``trajectory``'s latents when it ran).

    Raises:
        ValueError: ``steps`` below 1, an unknown path, or an unusable size (see :func:`check_size`).
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, not {steps!r}")
    unknown = [p for p in (paths or ()) if p not in PATHS]
    if unknown:
        raise ValueError(f"unknown helper path {unknown[0]!r}: choose among {', '.join(PATHS)}")
    selected = [p for p in PATHS if paths is None or p in paths]
    side = check_size(height, width)
    log = log or (lambda message: None)
    model = denoiser(pipe)
    device = model.device
    kw = {"use_resolution_binning": False} if pipeline_family(pipe) == "pixart" else {}
    result: dict[str, Any] = {"pipeline": type(pipe).__name__, "device": str(device),
                              "dtype": str(model.dtype).replace("torch.", ""), "steps": steps,
                              "parameters": parameter_counts(pipe), "weight_bytes": weight_bytes(pipe), "paths": {}}
    state: dict[str, Any] = {}
    with latent_size(pipe, None if side is None else side // pipe.vae_scale_factor) as size:
        result.update(latent_size=size, image_size=size * pipe.vae_scale_factor, native_size=side is None)
        for name in selected:
            log(f"  {name}: running {steps} step(s) at {size * pipe.vae_scale_factor} px ...")
            _reset_peak(device)
            start = time.perf_counter()
            try:
                with timed_parts(pipe) as timer:
                    entry = {"status": "OK", **_PATH_FUNCTIONS[name](pipe, steps, kw, state)}
            except Exception as err:  # a dry run reports every failure and goes on
                message = (f"{type(err).__name__}: {err}".strip().splitlines() or [type(err).__name__])[0][:500]
                entry = {"status": "error", "error": message,
                         "traceback": traceback.format_exc(limit=-8).splitlines()[-16:]}
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            peak, kind = _peak(device)
            calls = [s for _, s in timer["calls"]]
            entry.update(seconds=time.perf_counter() - start, denoiser_calls=len(calls),
                         seconds_per_step=sum(calls) / len(calls) if calls else None,
                         peak_memory_bytes=peak, peak_memory_kind=kind)
            result["paths"][name] = entry
            per_step = "" if entry["seconds_per_step"] is None else f", {entry['seconds_per_step']:.3f} s/step"
            log(f"  {name}: {entry['status']}{per_step}, peak {peak / 2**30:.2f} GiB"
                + (f" -- {entry['error']}" if entry["status"] != "OK" else ""))
    peak = max(e["peak_memory_bytes"] for e in result["paths"].values())
    t5 = t5_extrapolation(pipe, peak, state.get("encode_seconds"))
    if t5 is not None:
        result["t5_extrapolation"] = t5
    return result
