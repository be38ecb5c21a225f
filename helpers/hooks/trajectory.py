"""The sampling trajectory: x_t and the predicted clean sample x̂0 at every step.

>>> images, traj = trajectory(pipe, ["a red circle"], num_inference_steps=50)
>>> traj.x0.shape                    # (steps, samples, C, h, w) predicted clean latents
>>> strip = traj.decode(pipe, "x0")  # (steps, samples, H, W, 3) images in [0, 1]

No sampling loop is copied. A forward hook on the denoiser sees x_t, the timestep and the
model output of every step; x̂0 comes from the standard formula on the guided prediction
(the one DDIM's ``pred_original_sample`` uses), for ``epsilon``, ``v_prediction`` and
``sample`` models. The latents after each step come from the pipeline's
``callback_on_step_end`` (PixArt: its legacy ``callback``).

The measures read off a trajectory (object masks, IoU and relative F1 curves) live in
:mod:`helpers.analysis.masks`; the band analysis of x_t in :mod:`helpers.analysis.bands`.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..generation import generate
from ..latents import decode_latents
from ..loading import denoiser, family
from .steps import StepClock, conditional_slice, denoiser_inputs


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
        images: the generated images ``(samples, H, W, 3)`` in [0, 1], when the recording made them.
    """

    timesteps: list[float]
    x0: torch.Tensor
    xt: torch.Tensor
    images: np.ndarray | None = None

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    @property
    def latents(self) -> torch.Tensor:
        """x_T, the latent after each step, ..., the generated latent: ``xt`` (``latents[k]`` = after ``k`` steps)."""
        return self.xt

    @property
    def final(self) -> torch.Tensor:
        """The generated clean latents ``(samples, C, h, w)`` (the end of the trajectory)."""
        if self.xt.shape[0] != self.num_steps + 1:
            raise TrajectoryError("the final latent was not recorded (the pipeline ran no step-end callback)")
        return self.xt[-1]

    @property
    def levels(self) -> list[int]:
        """Timestep at which each entry of ``xt`` lives: the sampler's grid, then 0 for the final latent."""
        return [int(t) for t in self.timesteps] + [0]

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
        starts = range(0, len(flat), batch_size)
        images = np.concatenate([decode_latents(pipe, flat[i:i + batch_size])
                                 for i in tqdm(starts, desc=f"decode {which}", disable=len(starts) < 4)])
        return images.reshape(len(steps), chosen.shape[1], *images.shape[1:])


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
        cfg: ``None`` detects classifier-free guidance (see :func:`helpers.hooks.steps.conditional_slice`).
    """

    def __init__(self, pipe, guidance_scale: float | None = None, cfg: bool | None = None) -> None:
        self.pipe = pipe
        self.model = denoiser(pipe)
        self.guidance_scale = guidance_scale
        self.cfg = cfg
        self.clock = StepClock()
        self._runs: list[dict[str, list]] = []

    def _guidance(self) -> tuple[float, float]:
        # the public property of SD/SDXL pipelines (diffusers' CFG-cutoff callbacks lower it mid-call,
        # and then the batch has no unconditional half any more); PixArt keeps none: pass it explicitly
        scale = getattr(self.pipe, "guidance_scale", None) if family(self.pipe) != "pixart" else None
        if scale is None:
            scale = self.guidance_scale
        if scale is None:
            raise TrajectoryError(f"pass guidance_scale= to record_trajectory: {type(self.pipe).__name__} does not keep it")
        return float(scale), float(getattr(self.pipe, "guidance_rescale", 0.0) or 0.0)

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
    return images, dataclasses.replace(rec.result(), images=images)
