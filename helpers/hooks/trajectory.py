"""The sampling trajectory: x_t and the predicted clean sample x̂0 at every step.

>>> images, traj = trajectory(pipe, ["a red circle"], num_inference_steps=50)
>>> traj.x0.shape                    # (steps, samples, C, h, w) predicted clean latents
>>> strip = traj.decode(pipe, "x0")  # (steps, samples, H, W, 3) images in [0, 1]

No sampling loop is copied. A forward hook on the denoiser sees x_t, the timestep and the
model output of every step; x̂0 comes from the standard formula on the guided prediction
(the one DDIM's ``pred_original_sample`` uses), for ``epsilon``, ``v_prediction`` and
``sample`` models. The latents after each step come from the pipeline's
``callback_on_step_end`` (PixArt: its legacy ``callback``).

Also here, the measures of when the shape is fixed (the paper's Fig. 1b): object masks of
toy-world images by their difference from the background colour, IoU curves of x̂0, and the
relative F1 of binarised object-token attention maps against the final object region.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .attention import Size, StepClock, binarize, conditional_slice, denoiser_inputs, f1_score, token_map
from .generation import generate
from .loading import denoiser, family
from .tokens import pipeline_token_classes


class TrajectoryError(ValueError):
    """The trajectory cannot be recorded or read as asked (message says why)."""


@dataclasses.dataclass
class Trajectory:
    """Latents of every step of one or more pipeline calls (samples concatenated in order).

    Attributes:
        timesteps: the scheduler timestep of each step.
        x0: predicted clean latents ``(steps, samples, C, h, w)`` (x̂0 at each step).
        xt: noisy latents ``(steps + 1, samples, C, h, w)``: x_t entering each step, then the
            final latent (the last entry is missing when no step-end callback ran).
    """

    timesteps: list[float]
    x0: torch.Tensor
    xt: torch.Tensor

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    def decode(self, pipe, which: str = "x0", steps: Sequence[int] | None = None, batch_size: int = 16) -> np.ndarray:
        """Decode ``"x0"`` or ``"xt"`` latents to images ``(len(steps), samples, H, W, 3)`` in [0, 1]."""
        if which not in ("x0", "xt"):
            raise TrajectoryError(f"which must be 'x0' or 'xt', not {which!r}")
        latents = self.x0 if which == "x0" else self.xt
        steps = list(range(latents.shape[0])) if steps is None else list(steps)
        bad = [s for s in steps if not -latents.shape[0] <= s < latents.shape[0]]
        if bad:
            raise TrajectoryError(f"step {bad[0]} is out of range: {which} has {latents.shape[0]} entries")
        chosen = latents[steps]
        flat = chosen.reshape(-1, *chosen.shape[2:])
        images = np.concatenate([decode_latents(pipe, flat[i:i + batch_size]) for i in range(0, len(flat), batch_size)])
        return images.reshape(len(steps), chosen.shape[1], *images.shape[1:])


@torch.no_grad()
def decode_latents(pipe, latents: torch.Tensor) -> np.ndarray:
    """VAE-decode latents the way the pipelines do; float ``(n, H, W, 3)`` in [0, 1]."""
    vae = pipe.vae
    upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    dtype = torch.float32 if upcast else vae.dtype
    if upcast:
        vae.to(torch.float32)
    try:
        z = latents.to(vae.device, dtype)
        mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            shape = (1, len(mean), 1, 1)
            z = z * torch.tensor(std, dtype=dtype, device=z.device).view(shape) / vae.config.scaling_factor \
                + torch.tensor(mean, dtype=dtype, device=z.device).view(shape)
        else:
            z = z / vae.config.scaling_factor
            if getattr(vae.config, "shift_factor", None):
                z = z + vae.config.shift_factor
        image = vae.decode(z, return_dict=False)[0]
    finally:
        if upcast:
            vae.to(torch.float16)
    return pipe.image_processor.postprocess(image, output_type="np")


def predicted_x0(scheduler, sample: torch.Tensor, model_output: torch.Tensor, timestep: float) -> torch.Tensor:
    """x̂0 from x_t and the (guided) model output, by the scheduler's prediction type.

    epsilon: (x_t - sqrt(1-ᾱ) ε) / sqrt(ᾱ); v_prediction: sqrt(ᾱ) x_t - sqrt(1-ᾱ) v; sample: the output.
    """
    if getattr(scheduler, "init_noise_sigma", 1.0) != 1.0 or not hasattr(scheduler, "alphas_cumprod"):
        raise TrajectoryError(f"{type(scheduler).__name__} is sigma-parameterised; use DDIM or DPM-Solver "
                              "(helpers.loading.set_scheduler) to record x̂0")
    alpha = scheduler.alphas_cumprod.to(torch.float64)[int(round(timestep))].item()
    x, out = sample.double(), model_output.double()
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        x0 = (x - (1 - alpha) ** 0.5 * out) / alpha ** 0.5
    elif kind == "v_prediction":
        x0 = alpha ** 0.5 * x - (1 - alpha) ** 0.5 * out
    elif kind == "sample":
        x0 = out
    else:
        raise TrajectoryError(f"unsupported prediction type {kind!r}")
    return x0.float()


class TrajectoryRecorder:
    """Collects x_t, x̂0 and the post-step latents; use through :func:`record_trajectory`.

    Args:
        pipe: a supported pipeline (SD, SDXL, PixArt).
        guidance_scale: the CFG weight, used when the pipeline does not keep its own (PixArt);
            SD and SDXL pipelines' live ``guidance_scale`` wins, so dynamic-CFG callbacks are followed.
        cfg: ``None`` detects classifier-free guidance (see :func:`helpers.attention.conditional_slice`).
    """

    def __init__(self, pipe, guidance_scale: float | None = None, cfg: bool | None = None) -> None:
        self.pipe = pipe
        self.model = denoiser(pipe)
        self.guidance_scale = guidance_scale
        self.cfg = cfg
        self.clock = StepClock()
        self._runs: list[dict[str, list]] = []

    def _guidance(self) -> tuple[float, float]:
        scale = getattr(self.pipe, "_guidance_scale", None)
        if scale is None:
            scale = self.guidance_scale
        if scale is None:
            raise TrajectoryError(f"pass guidance_scale= to record_trajectory: {type(self.pipe).__name__} does not keep it")
        return float(scale), float(getattr(self.pipe, "_guidance_rescale", 0.0) or 0.0)

    @torch.no_grad()
    def _hook(self, module, args, kwargs, output) -> None:
        sample, t = denoiser_inputs(args, kwargs)
        out = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)
        cond = conditional_slice(self.pipe, sample, self.cfg)
        channels = sample.shape[1]
        if cond.start:  # CFG: combine the two halves like the pipeline does
            uncond, text = out[: cond.start, :channels], out[cond, :channels]
            scale, rescale = self._guidance()
            out = uncond + scale * (text - uncond)
            if rescale > 0:
                from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

                out = rescale_noise_cfg(out, text, guidance_rescale=rescale)
        else:
            out = out[:, :channels]
        x_t = sample[cond]
        x0 = predicted_x0(self.pipe.scheduler, x_t, out, t)
        event = self.clock.tick(t)
        if event == "new_run":
            self._runs.append({"t": [], "x0": [], "xt": [], "after": []})
        run = self._runs[-1]
        if event == "same":  # a second denoiser call at the same step: keep the latest
            run["x0"][-1], run["xt"][-1] = x0.cpu(), x_t.float().cpu()
            return
        run["t"].append(t)
        run["x0"].append(x0.cpu())
        run["xt"].append(x_t.float().cpu())

    def callback(self, pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        """Pass as ``callback_on_step_end=rec.callback`` (SD, SDXL): keeps the latents after each step."""
        self._after(callback_kwargs["latents"])
        return {}

    def legacy_callback(self, step: int, timestep, latents: torch.Tensor) -> None:
        """Pass as ``callback=rec.legacy_callback, callback_steps=1`` (PixArt)."""
        self._after(latents)

    def _after(self, latents: torch.Tensor) -> None:
        if not self._runs:
            raise TrajectoryError("the step-end callback ran before the denoiser: install record_trajectory first")
        self._runs[-1]["after"].append(latents.detach().float().cpu())

    def step_callbacks(self) -> dict[str, object]:
        """Keyword arguments that make the pipeline call report each step's end to this recorder."""
        if family(self.pipe) == "pixart":
            return {"callback": self.legacy_callback, "callback_steps": 1}
        return {"callback_on_step_end": self.callback}

    def result(self) -> Trajectory:
        """The recorded trajectory; runs (pipeline calls) are concatenated along the sample axis."""
        if not self._runs:
            raise TrajectoryError("no denoiser call was recorded: run the pipeline inside the `with` block")
        steps = {len(run["t"]) for run in self._runs}
        if len(steps) > 1:
            raise TrajectoryError(f"the recorded pipeline calls have different step counts {sorted(steps)}")
        xts = []
        for run in self._runs:
            finals = run["after"][-1:] if len(run["after"]) == len(run["t"]) else []
            xts.append(torch.stack(run["xt"] + finals))
        if len({x.shape[0] for x in xts}) > 1:
            xts = [x[: len(self._runs[0]["t"])] for x in xts]
        return Trajectory(
            timesteps=list(self._runs[0]["t"]),
            x0=torch.cat([torch.stack(run["x0"]) for run in self._runs], dim=1),
            xt=torch.cat(xts, dim=1),
        )


@contextmanager
def record_trajectory(pipe, guidance_scale: float | None = None, cfg: bool | None = None) -> Iterator[TrajectoryRecorder]:
    """Record x_t and x̂0 of every pipeline call in the block (forward hook removed on exit).

    Pass ``**rec.step_callbacks()`` to the pipeline call to also keep the final latent.
    """
    rec = TrajectoryRecorder(pipe, guidance_scale, cfg)
    handle = rec.model.register_forward_hook(rec._hook, with_kwargs=True)
    try:
        yield rec
    finally:
        handle.remove()


def trajectory(
    pipe,
    prompts: str | Sequence[str],
    seed: int = 0,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    callback_on_step_end: Callable | None = None,
    **kwargs,
) -> tuple[np.ndarray, Trajectory]:
    """Generate with :func:`helpers.generation.generate` and return ``(images, trajectory)``.

    A caller's own ``callback_on_step_end`` still runs (after the recorder's). Other keyword
    arguments go to :func:`~helpers.generation.generate`.
    """
    explicit = guidance_scale if family(pipe) == "pixart" else None  # SD/SDXL: read live (dynamic-CFG callbacks)
    with record_trajectory(pipe, guidance_scale=explicit) as rec:
        callbacks = rec.step_callbacks()
        if callback_on_step_end is not None:
            if "callback_on_step_end" not in callbacks:
                raise TrajectoryError(f"{type(pipe).__name__} has no callback_on_step_end")

            def chained(p, i, t, callback_kwargs):
                rec.callback(p, i, t, callback_kwargs)
                return callback_on_step_end(p, i, t, callback_kwargs)

            callbacks["callback_on_step_end"] = chained
        images = generate(pipe, prompts, seed=seed, num_inference_steps=num_inference_steps,
                          guidance_scale=guidance_scale, **callbacks, **kwargs)
    return images, rec.result()


# ----------------------------------------------------------------------------- object masks


def background_color(image: np.ndarray, border: int = 2) -> np.ndarray:
    """Median RGB of the image's outer ``border`` pixels (the toy world's plain background)."""
    image = _as_float(image)
    edge = np.concatenate([image[:border].reshape(-1, 3), image[-border:].reshape(-1, 3),
                           image[:, :border].reshape(-1, 3), image[:, -border:].reshape(-1, 3)])
    return np.median(edge, axis=0)


def foreground_mask(image: np.ndarray, tolerance: float = 0.2, border: int = 2) -> np.ndarray:
    """Boolean object mask: pixels farther than ``tolerance`` (RGB distance, [0, 1] units) from the background colour."""
    image = _as_float(image)
    return np.linalg.norm(image - background_color(image, border), axis=-1) > tolerance


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks; NaN when both are empty."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else float("nan")


def iou_curve(step_images: np.ndarray, final_image: np.ndarray, tolerance: float = 0.2) -> np.ndarray:
    """IoU of each step image's object mask (e.g. decoded x̂0) with the final image's."""
    final = foreground_mask(final_image, tolerance)
    return np.array([mask_iou(foreground_mask(im, tolerance), final) for im in step_images])


def iou_table(step_images: np.ndarray, final_images: np.ndarray, tolerance: float = 0.2):
    """Long pandas table ``sample, step, iou`` of :func:`iou_curve` for ``(steps, samples, H, W, 3)`` images."""
    import pandas as pd

    step_images = np.asarray(step_images)
    if step_images.shape[1] != len(final_images):
        raise TrajectoryError(f"{step_images.shape[1]} trajectories but {len(final_images)} final images")
    rows = [(i, s, v) for i in range(len(final_images))
            for s, v in enumerate(iou_curve(step_images[:, i], final_images[i], tolerance))]
    return pd.DataFrame(rows, columns=["sample", "step", "iou"])


def _as_float(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise TrajectoryError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    return image.astype(np.float32) / 255 if image.dtype == np.uint8 else image.astype(np.float32)


# ----------------------------------------------------------------------------- relative F1 (Fig. 1b)


def object_words(attributes: dict) -> list[str]:
    """The object nouns of a prompt record: ``objects`` (natural set) or ``shape`` (toy set)."""
    if attributes.get("objects"):
        return list(attributes["objects"])
    if attributes.get("shape"):
        return [attributes["shape"]]
    raise TrajectoryError(f"prompt record names no object (no 'objects' or 'shape' in {sorted(attributes)})")


def upsample(heat: np.ndarray | torch.Tensor, size: Size) -> np.ndarray:
    """Bilinear upsampling of ``(..., h, w)`` maps to ``size``."""
    t = torch.as_tensor(np.asarray(heat, dtype=np.float32))
    lead = t.shape[:-2]
    out = F.interpolate(t.reshape(-1, 1, *t.shape[-2:]), size=size, mode="bilinear", align_corners=False)
    return out.reshape(*lead, *size).numpy()


def f1_curve(step_maps: np.ndarray | torch.Tensor, reference: np.ndarray, threshold: str | float = "mean") -> np.ndarray:
    """F1 per step between a token's binarised map ``(steps, h, w)`` (upsampled) and a reference mask."""
    heat = upsample(step_maps, tuple(reference.shape))
    return np.array([f1_score(binarize(h, threshold), reference) for h in heat])


def relative_f1_table(
    rec,
    records: Sequence,
    references: Sequence[np.ndarray] | None = None,
    threshold: str | float = "mean",
    resolution: int | Size | None = None,
    min_final_f1: float = 0.0,
):
    """Relative F1 (F1_t / F1_last) of each object token of each prompt, as a long pandas table.

    Args:
        rec: a per-step :class:`helpers.attention.AttentionRecorder` of ``len(records)`` samples.
        records: :class:`helpers.promptsets.PromptRecord` s (their object words, see :func:`object_words`).
        references: one boolean object mask per sample (e.g. the final image segmented from its
            background, :func:`foreground_mask`). ``None`` uses each token's binarised map at the
            last step (for real images without a segmenter): then F1_last = 1.
        threshold: how to binarise maps, see :func:`binarize`.
        resolution: which maps (``None``: all recorded sizes averaged).
        min_final_f1: tokens whose last-step F1 is below this get NaN relative F1 (a ratio to a
            near-zero F1 is noise that dominates a mean).

    Columns: ``sample, prompt, word, step, timestep, f1, relative_f1`` (NaN where F1_last = 0
    or below ``min_final_f1``).
    """
    import pandas as pd

    maps = rec.maps(resolution)
    if maps.shape[1] != len(records):
        raise TrajectoryError(f"{maps.shape[1]} samples were recorded but {len(records)} prompt records were given")
    timesteps, rows = rec.timesteps, []
    for i, record in enumerate(records):
        classes = pipeline_token_classes(rec.pipe, record.prompt)
        for word in dict.fromkeys(object_words(record.attributes)):
            heat = token_map(maps[:, i], classes.positions_of(word)).numpy()
            ref = binarize(heat[-1], threshold) if references is None else np.asarray(references[i], bool)
            f1 = f1_curve(heat, ref, threshold)
            rel = f1 / f1[-1] if f1[-1] > 0 and f1[-1] >= min_final_f1 else np.full_like(f1, np.nan)
            rows += [(i, record.prompt, word, s, timesteps[s], f1[s], rel[s]) for s in range(len(f1))]
    return pd.DataFrame(rows, columns=["sample", "prompt", "word", "step", "timestep", "f1", "relative_f1"])


def first_step_above(curve: Sequence[float], level: float = 0.9) -> int | None:
    """Index of the first value ``>= level`` (``None`` if never)."""
    hits = np.nonzero(np.asarray(curve, dtype=np.float64) >= level)[0]
    return int(hits[0]) if hits.size else None


def settled_step(curve: Sequence[float], level: float = 0.9) -> int | None:
    """Index from which every later value is ``>= level`` (``None`` if the last one is below)."""
    below = np.nonzero(~(np.asarray(curve, dtype=np.float64) >= level))[0]
    if not below.size:
        return 0
    return int(below[-1]) + 1 if below[-1] + 1 < len(curve) else None

