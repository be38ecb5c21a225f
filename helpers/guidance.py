"""Guidance schedules: during which denoising steps the text conditions the denoiser.

Notation. Sampling takes ``N`` steps, numbered ``0 .. N-1`` in sampling order (noise
first). ``text_steps = k`` means the first ``k`` steps use the text with full
classifier-free guidance (CFG) and the last ``N - k`` do not. The paper counts the
other way round: its ``a = N - k`` is the number of *final* steps without text
(``a = 0`` is the stock pipeline). Every plot shows both.

Schedules (all run the stock pipeline call; its sampling loop is never copied):

* :class:`TextWindow` ``(k, variant)``: CFG for ``k`` steps, then the text is removed.
  ``variant="uncond"`` keeps only the unconditional prediction eps(x_t, empty) (the
  paper's method); ``variant="cond"`` turns guidance off and keeps only the
  conditional prediction eps(x_t, text) (as adaptive-guidance work does). Either way,
  after step ``k`` the denoiser really runs **one** pass per step (batch ``B``, not
  ``2B``), which is where the speed comes from.
* :class:`Switch` ``(k, second)``: the first conditioning for ``k`` steps, the second
  one (prompt B, or switched-[EOS] embeddings) for the rest, CFG throughout.
* :class:`AdaptiveStop` ``(threshold, variant)`` (ours, beyond the paper): per prompt,
  CFG stops after the first step at which ``||eps_c - eps_u|| / ||eps_u||`` falls
  below ``threshold``.

Mechanisms, all diffusers extension points:

* SD 1.x/2.x and SDXL, fixed schedules: the public callbacks of :mod:`helpers.hooks.callbacks`
  (:class:`~helpers.hooks.callbacks.TextOffAfter`, :class:`~helpers.hooks.callbacks.GuidanceOffAfter`,
  :class:`~helpers.hooks.callbacks.SwitchAfter`): at the end of step ``k - 1`` they replace the
  batched ``prompt_embeds`` (and SDXL's ``add_text_embeds``/``add_time_ids``) and set
  ``pipe._guidance_scale`` to 1, the pattern of diffusers' ``SDCFGCutoffCallback``. A caller's own
  ``callback_on_step_end`` runs after ours (``MultiPipelineCallbacks``).
* PixArt-alpha (its pipeline has no ``callback_on_step_end`` in diffusers 0.42) and
  the per-prompt adaptive stop (:class:`helpers.hooks.cfg.DenoiserHooks`, also behind the
  callbacks' ``hooked(pipe)``): a forward pre-hook on the denoiser that passes on only
  the batch rows still needed, and a forward hook that puts the ``2B`` rows back (a
  stopped prompt gets its kept prediction in both halves, so the pipeline's own CFG
  line ``u + w (c - u)`` returns it exactly).
* Recording of ``||eps_u||``, ``||eps_c||`` and ``||eps_c - eps_u||`` per prompt and
  step: read off the batched output by the same forward hook, at no extra denoiser
  cost (only while CFG is on for that prompt; NaN elsewhere).

>>> run = sample(pipe, ["a red circle"], TextWindow(text_steps=10), num_inference_steps=50)
>>> run.images.shape, run.evals_per_image      # (1, 64, 64, 3), 60.0 = N + k instead of 2N
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np
import torch

from .generation import for_each_batch
from .hooks.callbacks import GuidanceOffAfter, SwitchAfter, TextOffAfter, compose
from .hooks.cfg import DenoiserHooks
from .loading import denoiser, family
from .text.conditioning import EncodedPrompt, pipeline_inputs
from .text.tokens import check_prompts

VARIANTS: tuple[str, ...] = ("uncond", "cond")


class GuidanceScheduleError(ValueError):
    """A guidance schedule was asked for with arguments that cannot work."""


@dataclasses.dataclass(frozen=True)
class TextWindow:
    """Full CFG for the first ``text_steps = k`` steps, then no text (paper's ``a = N - k``).

    ``variant="uncond"`` keeps eps(x_t, empty) after step ``k`` (the paper's);
    ``variant="cond"`` keeps eps(x_t, text), i.e. guidance off (adaptive guidance).
    """

    text_steps: int
    variant: str = "uncond"


@dataclasses.dataclass(frozen=True)
class Switch:
    """The first conditioning for ``text_steps = k`` steps, ``second`` for the other ``N - k``.

    ``second`` is a list of prompt strings or of :class:`~helpers.text.conditioning.EncodedPrompt`, or a tensor of
    ``prompt_embeds`` shaped like the first conditioning's (e.g. switched-[EOS]
    embeddings); for a bare tensor the negative embeddings, SDXL's pooled embeddings
    and PixArt's attention mask stay those of the first conditioning.
    """

    text_steps: int
    second: Any


@dataclasses.dataclass(frozen=True)
class AdaptiveStop:
    """Per prompt, stop CFG after the first step where the criterion falls below ``threshold``.

    ``criterion="ratio"``: ``||eps_c - eps_u|| / ||eps_u||``; ``"x0"``: the guidance term's size on the
    predicted clean image, RMS(eps_c - eps_u) · √((1 − ᾱ_t) / ᾱ_t) (``GuidanceRun.x0_guidance``). At least
    ``min_text_steps`` steps keep the text. ``variant`` is what is kept after the stop, as in :class:`TextWindow`.
    """

    threshold: float
    variant: str = "uncond"
    min_text_steps: int = 1
    criterion: str = "ratio"


Schedule = TextWindow | Switch | AdaptiveStop | None


def adaptive_stop_steps(ratio: np.ndarray, threshold: float, min_text_steps: int = 1) -> np.ndarray:
    """Text steps :class:`AdaptiveStop` gives each prompt, from its recorded full-CFG ratios.

    ``ratio`` is ``(n_prompts, N)`` (``GuidanceRun.ratio``). A prompt stops after the first
    step ``s`` with ``ratio[s] < threshold`` and ``s + 1 >= min_text_steps``, so it keeps
    the text for ``k = s + 1`` steps; ``N`` if that never happens. (The live run decides
    on the same ratios, so this reproduces it exactly; useful to calibrate thresholds.)
    """
    ratio = np.asarray(ratio, dtype=float)
    steps = ratio.shape[1]
    allowed = np.arange(steps) + 1 >= min_text_steps
    below = (ratio < threshold) & allowed[None, :]
    return np.where(below.any(axis=1), below.argmax(axis=1) + 1, steps)


def paper_a(text_steps: int | np.ndarray, num_inference_steps: int) -> int | np.ndarray:
    """The paper's ``a``: the number of final steps without text, ``N - k``."""
    return num_inference_steps - text_steps


@dataclasses.dataclass
class _Batch:
    """A batch of encoded prompts as the pipeline call consumes them (field names = pipeline arguments).

    Internal: the public conditioning type is :class:`helpers.text.conditioning.EncodedPrompt`
    (a list of them becomes a batch through :func:`~helpers.text.conditioning.pipeline_inputs`).
    ``pooled_*`` are SDXL's, ``*_attention_mask`` PixArt's; ``None`` elsewhere.
    """

    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor | None = None
    negative_pooled_prompt_embeds: torch.Tensor | None = None
    prompt_attention_mask: torch.Tensor | None = None
    negative_prompt_attention_mask: torch.Tensor | None = None

    @classmethod
    def from_kwargs(cls, kwargs: dict) -> "_Batch":
        """From pipeline keyword arguments, e.g. ``helpers.text.conditioning.pipeline_inputs(pipe, prompts)``.

        Non-tensor entries (such as PixArt's ``negative_prompt=None``) are ignored.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        tensors = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
        unknown = set(tensors) - names
        if unknown or not {"prompt_embeds", "negative_prompt_embeds"} <= set(tensors):
            raise GuidanceScheduleError(
                f"a batch needs prompt_embeds and negative_prompt_embeds (other tensors allowed: "
                f"{sorted(names)}); got {sorted(kwargs)}")
        return cls(**tensors)

    def __len__(self) -> int:
        return int(self.prompt_embeds.shape[0])

    def __getitem__(self, rows: slice) -> "_Batch":
        return _Batch(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[rows]
                               for f in dataclasses.fields(self)})

    def call_kwargs(self, side: str = "both") -> dict[str, torch.Tensor]:
        """Pipeline keyword arguments: ``"both"`` (CFG on), or one side as the only prompt (CFG off)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if side == "both":
            return {name: value for name, value in fields.items() if value is not None}
        prefix = "negative_" if side == "uncond" else ""
        names = ("prompt_embeds", "pooled_prompt_embeds", "prompt_attention_mask")
        kept = {name: fields[prefix + name] for name in names}
        return {name: value for name, value in kept.items() if value is not None}

    def batched(self) -> dict[str, torch.Tensor]:
        """The ``[negative; conditional]`` tensors the pipeline's loop carries while CFG is on."""
        out = {"prompt_embeds": torch.cat([self.negative_prompt_embeds, self.prompt_embeds])}
        if self.pooled_prompt_embeds is not None:
            out["add_text_embeds"] = torch.cat([self.negative_pooled_prompt_embeds, self.pooled_prompt_embeds])
        if self.prompt_attention_mask is not None:
            out["encoder_attention_mask"] = torch.cat([self.negative_prompt_attention_mask, self.prompt_attention_mask])
        return out


@torch.no_grad()
def _encode(pipe, prompts: str | Sequence[str], negative_prompt: str | Sequence[str] | None = None) -> _Batch:
    """Encode prompt strings with the pipeline's own ``encode_prompt`` in one batch (same tensors as a stock call)."""
    prompts = check_prompts(pipe, prompts)  # one sentence for non-strings and prompts over the encoder's limit
    device, fam = denoiser(pipe).device, family(pipe)
    if fam == "sd":
        cond, uncond = pipe.encode_prompt(prompts, device, 1, True, negative_prompt)
        return _Batch(cond, uncond)
    if fam == "sdxl":
        cond, uncond, pooled, uncond_pooled = pipe.encode_prompt(
            prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=True,
            negative_prompt=negative_prompt)
        return _Batch(cond, uncond, pooled, uncond_pooled)
    # clean_caption=True is what PixArt's __call__ does by default (a no-op without beautifulsoup4)
    cond, mask, uncond, uncond_mask = pipe.encode_prompt(
        prompts, True, negative_prompt=negative_prompt if negative_prompt is not None else "", device=device,
        clean_caption=True)
    return _Batch(cond, uncond, prompt_attention_mask=mask, negative_prompt_attention_mask=uncond_mask)


def _as_batch(pipe, value) -> _Batch:
    """Prompt strings (encoded in one batch) or a list of :class:`EncodedPrompt` as a :class:`_Batch`."""
    if isinstance(value, _Batch):
        return value
    if isinstance(value, EncodedPrompt):
        value = [value]
    if isinstance(value, str):
        return _encode(pipe, value)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, EncodedPrompt) for v in value):
        return _Batch.from_kwargs(pipeline_inputs(pipe, list(value)))
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return _encode(pipe, value)
    empty = " (an empty list)" if isinstance(value, (list, tuple)) and not value else ""
    raise GuidanceScheduleError(f"prompts must be a string, a list of strings or a list of EncodedPrompt "
                                f"(helpers.text.conditioning.encode), not {type(value).__name__}{empty}")


def _as_conditioning(pipe, value, like: _Batch) -> _Batch:
    """A Switch's ``second`` (prompts, encoded prompts or a tensor) as a batch of ``len(like)`` rows."""
    if isinstance(value, torch.Tensor):
        if value.shape != like.prompt_embeds.shape:
            raise GuidanceScheduleError(
                f"switch embeddings have shape {tuple(value.shape)} but the first conditioning's prompt_embeds "
                f"have {tuple(like.prompt_embeds.shape)}; they must match")
        second = dataclasses.replace(like, prompt_embeds=value.to(like.prompt_embeds))
    else:
        second = _as_batch(pipe, value)
    if len(second) != len(like):
        raise GuidanceScheduleError(f"the switch target has {len(second)} rows but there are {len(like)} prompts")
    return second


@dataclasses.dataclass
class GuidanceRun:
    """Images and per-step bookkeeping of one :func:`sample` call.

    The norm arrays are ``(n_prompts, N)``: L2 norms over all latent elements of the
    unconditional prediction, the conditional one and their difference, NaN at the
    steps where CFG was off for that prompt.
    """

    images: np.ndarray
    eps_uncond_norm: np.ndarray
    eps_cond_norm: np.ndarray
    diff_norm: np.ndarray
    text_steps: np.ndarray
    denoiser_calls: int
    denoiser_rows: int
    num_inference_steps: int
    x0_guidance: np.ndarray | None = None  # (n_prompts, N): RMS(eps_c - eps_u) · √((1 − ᾱ_t) / ᾱ_t), NaN off CFG

    @property
    def ratio(self) -> np.ndarray:
        """``||eps_c - eps_u|| / ||eps_u||`` per prompt and step (the adaptive stop's criterion)."""
        return self.diff_norm / self.eps_uncond_norm

    @property
    def paper_a(self) -> np.ndarray:
        """Per prompt, the paper's ``a = N - k``."""
        return paper_a(self.text_steps, self.num_inference_steps)

    @property
    def evals_per_image(self) -> float:
        """Denoiser evaluations per image: ``2N`` for full CFG, ``N + k`` for a text window."""
        return self.denoiser_rows / len(self.images)


def _check(pipe, schedule: Schedule, steps: int, guidance_scale: float) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise GuidanceScheduleError(f"num_inference_steps must be a positive integer, not {steps!r}")
    if schedule is not None and not isinstance(schedule, (TextWindow, Switch, AdaptiveStop)):
        raise GuidanceScheduleError(f"unknown schedule {schedule!r}; use TextWindow, Switch, AdaptiveStop or None")
    if isinstance(schedule, (TextWindow, Switch)):
        k = schedule.text_steps
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 0 <= k <= steps:
            raise GuidanceScheduleError(
                f"text_steps={k!r} is outside [0, {steps}]: it counts the first steps that use the text "
                f"(the paper's a = N - text_steps)")
    if isinstance(schedule, (TextWindow, AdaptiveStop)) and schedule.variant not in VARIANTS:
        raise GuidanceScheduleError(f"unknown variant {schedule.variant!r}; choose from {VARIANTS}")
    if isinstance(schedule, AdaptiveStop):
        if not (isinstance(schedule.threshold, (int, float)) and math.isfinite(schedule.threshold)
                and schedule.threshold > 0):
            raise GuidanceScheduleError(f"threshold must be a positive number, not {schedule.threshold!r}")
        if not 0 <= schedule.min_text_steps <= steps:
            raise GuidanceScheduleError(f"min_text_steps={schedule.min_text_steps} is outside [0, {steps}]")
        if schedule.criterion not in ("ratio", "x0"):
            raise GuidanceScheduleError(f"unknown criterion {schedule.criterion!r}; choose 'ratio' or 'x0'")
    if schedule is not None and not guidance_scale > 1:
        raise GuidanceScheduleError(
            f"guidance_scale={guidance_scale} turns CFG off, so a guidance schedule has nothing to change; use > 1")
    if getattr(pipe.scheduler, "order", 1) != 1:
        raise GuidanceScheduleError(
            f"{type(pipe.scheduler).__name__} calls the denoiser several times per step; use DDIM or DPM-Solver++")
    model = denoiser(pipe)
    if getattr(model.config, "time_cond_proj_dim", None) is not None:
        raise GuidanceScheduleError("this UNet is guidance-distilled (time_cond_proj_dim): it runs without CFG")


def _run_chunk(pipe, cond: _Batch, schedule: Schedule, latents: torch.Tensor, steps: int,
               guidance_scale: float, record: bool, pipe_kwargs: dict) -> tuple[np.ndarray, DenoiserHooks]:
    """One pipeline call for one chunk of prompts under ``schedule``."""
    fam, batch = family(pipe), len(cond)
    call = dict(num_inference_steps=steps, guidance_scale=guidance_scale, latents=latents, output_type="np",
                **pipe_kwargs)
    if fam == "pixart":
        call["negative_prompt"] = None  # its default "" may not be passed beside negative_prompt_embeds
    kwargs: dict = cond.call_kwargs("both")
    policy = substitute = callback = None
    adaptive = schedule if isinstance(schedule, AdaptiveStop) else None
    k = getattr(schedule, "text_steps", steps)
    if isinstance(schedule, TextWindow) and k == 0:
        kwargs, call["guidance_scale"] = cond.call_kwargs(schedule.variant), 1.0
    elif isinstance(schedule, Switch):
        second = schedule.second
        if k == 0:
            kwargs = second.call_kwargs("both")
        elif k < steps and fam == "pixart":
            batched = second.batched()
            substitute = (k, {"encoder_hidden_states": batched["prompt_embeds"],
                              "encoder_attention_mask": batched["encoder_attention_mask"]})
        elif k < steps:
            batched = second.batched()
            callback = SwitchAfter(k, batched["prompt_embeds"], batched.get("add_text_embeds"))
    elif isinstance(schedule, TextWindow) and k < steps:
        if fam == "pixart":
            policy = lambda step: [schedule.variant if step >= k else None] * batch  # noqa: E731
        else:
            callback = (TextOffAfter if schedule.variant == "uncond" else GuidanceOffAfter)(k, pipe)
    hooks = DenoiserHooks(batch, steps, policy, substitute, adaptive, record,
                          getattr(pipe.scheduler, "alphas_cumprod", None))
    if callback is not None:  # ours first, then the caller's own (a function or a PipelineCallback)
        user, names = call.pop("callback_on_step_end", None), call.pop("callback_on_step_end_tensor_inputs", None)
        call["callback_on_step_end"] = compose(callback, user, names)
    with hooks.installed(denoiser(pipe)):
        images = pipe(**kwargs, **call).images
    return images, hooks


def sample(
    pipe,
    prompts: str | Sequence[str] | Sequence[EncodedPrompt],
    schedule: Schedule = None,
    *,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    seed: int = 0,
    batch_size: int = 8,
    record: bool = True,
    progress: bool = False,
    **pipe_kwargs,
) -> GuidanceRun:
    """Generate under a guidance schedule with the stock pipeline call.

    Prompt ``i`` starts from the noise of seed ``seed + i``, as in
    :func:`helpers.generation.generate`, so ``schedule=None`` or ``TextWindow(N)``
    reproduces it exactly.

    Args:
        prompts: prompt strings, or :class:`~helpers.text.conditioning.EncodedPrompt` s (e.g. switched-[EOS]
            embeddings from :mod:`helpers.text.surgery`).
        schedule: :class:`TextWindow`, :class:`Switch`, :class:`AdaptiveStop` or ``None`` (full CFG).
        record: record the prediction norms (a forward hook; no extra denoiser pass). The
            hooks that count denoiser calls are always installed (negligible cost).
        progress: a progress bar with ETA over the batches.
        pipe_kwargs: extra pipeline arguments (e.g. ``height``/``width``).

    Raises:
        GuidanceScheduleError: ``text_steps`` outside ``[0, N]``, an unknown variant, a
            non-positive threshold, guidance off, or a multi-evaluation scheduler.
    """
    _check(pipe, schedule, num_inference_steps, guidance_scale)
    cond = _as_batch(pipe, prompts)
    if isinstance(schedule, Switch):
        schedule = dataclasses.replace(schedule, second=_as_conditioning(pipe, schedule.second, cond))
    n = len(cond)

    def chunk(idx: list[int], latents: torch.Tensor) -> tuple[np.ndarray, DenoiserHooks]:
        rows = slice(idx[0], idx[-1] + 1)
        chunk_schedule = schedule
        if isinstance(schedule, Switch):
            chunk_schedule = dataclasses.replace(schedule, second=schedule.second[rows])
        return _run_chunk(pipe, cond[rows], chunk_schedule, latents, num_inference_steps, guidance_scale, record,
                          pipe_kwargs)

    parts = for_each_batch(pipe, n, chunk, batch_size, seed, progress=progress, desc="sample")
    if isinstance(schedule, (TextWindow, Switch)):
        text_steps = np.full(n, schedule.text_steps)
    elif isinstance(schedule, AdaptiveStop):
        text_steps = np.concatenate([h.stop_from for _, h in parts])
    else:
        text_steps = np.full(n, num_inference_steps)
    norms = np.concatenate([h.norms for _, h in parts], axis=1)
    return GuidanceRun(
        images=np.concatenate([images for images, _ in parts]),
        eps_uncond_norm=norms[0], eps_cond_norm=norms[1], diff_norm=norms[2],
        text_steps=text_steps.astype(int),
        denoiser_calls=sum(h.calls for _, h in parts),
        denoiser_rows=sum(h.rows for _, h in parts),
        num_inference_steps=num_inference_steps,
        x0_guidance=np.concatenate([h.x0 for _, h in parts]),
    )


def sweep_text_window(pipe, prompts: Sequence[str] | Sequence[EncodedPrompt], text_steps: Sequence[int],
                      variants: Sequence[str] = VARIANTS, **sample_kwargs) -> dict[tuple[str, int], GuidanceRun]:
    """:func:`sample` for every ``(variant, k)``; ``k = N`` (full CFG) is run once and shared by the variants.

    The full-CFG run records the norms (at no extra cost); the others do not.
    """
    steps = sample_kwargs.get("num_inference_steps", 50)
    full = sample(pipe, prompts, None, record=True, **sample_kwargs)
    runs: dict[tuple[str, int], GuidanceRun] = {}
    for variant in variants:
        for k in sorted(set(int(k) for k in text_steps)):
            runs[variant, k] = full if k == steps else sample(
                pipe, prompts, TextWindow(k, variant), record=False, **sample_kwargs)
    return runs


def sweep_switch(pipe, first: Sequence[EncodedPrompt] | Sequence[str], second: Sequence[EncodedPrompt] | Sequence[str],
                 text_steps: Sequence[int],
                 **sample_kwargs) -> dict[tuple[str, int], np.ndarray]:
    """Images for both orders of a switch at every ``k``: ``("first->second", k)`` and ``("second->first", k)``.

    The pure conditionings (k = 0 and k = N) are generated once and shared by the two orders.
    """
    steps = sample_kwargs.get("num_inference_steps", 50)
    orders = {"first->second": (first, second), "second->first": (second, first)}
    pure: dict[int, np.ndarray] = {}  # id of the conditioning used throughout -> images
    out = {}
    for order, (a, b) in orders.items():
        for k in sorted(set(int(k) for k in text_steps)):
            whole = a if k == steps else b if k == 0 else None
            if whole is not None and id(whole) in pure:
                out[order, k] = pure[id(whole)]
                continue
            out[order, k] = sample(pipe, a, Switch(k, b), record=False, **sample_kwargs).images
            if whole is not None:
                pure[id(whole)] = out[order, k]
    return out


def norm_summary(run: GuidanceRun):
    """Long table of the recorded norms: step, quantity, mean and standard deviation over prompts."""
    import pandas as pd

    rows = []
    quantities = {"||eps_u||": run.eps_uncond_norm, "||eps_c||": run.eps_cond_norm,
                  "||eps_c - eps_u||": run.diff_norm, "||eps_c - eps_u|| / ||eps_u||": run.ratio}
    for name, values in quantities.items():
        for step in range(values.shape[1]):
            column = values[:, step]
            column = column[np.isfinite(column)]
            if column.size:
                rows.append({"step": step, "a": run.num_inference_steps - step, "quantity": name,
                             "mean": float(column.mean()), "std": float(column.std()), "n": int(column.size)})
    return pd.DataFrame(rows)
