"""Guidance schedules as diffusers callbacks, so they compose with your own through ``MultiPipelineCallbacks``.

>>> from diffusers.callbacks import MultiPipelineCallbacks
>>> images = pipe(prompts, num_inference_steps=50,
...               callback_on_step_end=MultiPipelineCallbacks([TextOffAfter(25, pipe), my_callback])).images
>>> with TextOffAfter(25).hooked(pixart_pipe):      # PixArt's call takes no callback_on_step_end
...     images = pixart_pipe(prompts, num_inference_steps=50).images

``text_steps = k`` counts the first steps that use the text with full classifier-free guidance
(the paper's ``a = N - k`` counts the last ones without it). The callback acts at the end of step
``k - 1``, so it registers ``cutoff_step_index = k - 1`` in its config, as diffusers' own cut-off
callbacks do; from step ``k`` on the denoiser runs one pass per step (batch ``B``, not ``2B``).

* :class:`TextOffAfter` -- the paper's method: keep the unconditional half, eps(x_t, empty).
* :class:`GuidanceOffAfter` -- guidance off: keep the conditional half, eps(x_t, text). Diffusers'
  ``SDCFGCutoffCallback`` / ``SDXLCFGCutoffCallback`` do this for one prompt (they keep row ``-1``);
  ours keep ``B`` rows, and take SDXL's ``add_time_ids`` by its layout.
* :class:`SwitchAfter` -- other batched conditioning from step ``k`` on, CFG throughout.
* :class:`FunctionCallback` -- a plain ``callback_on_step_end`` function as a ``PipelineCallback``.

Each schedule also has :meth:`~_Schedule.hooked`: the same schedule through forward hooks on the
denoiser (:class:`helpers.hooks.cfg.DenoiserHooks`), for pipelines without ``callback_on_step_end``
(PixArt-alpha in diffusers 0.42); it gives the same images as the callback on SD (tested).
Setting ``pipe._guidance_scale = 1`` is diffusers' documented way to turn CFG off mid-call; it
lasts until the pipeline's next call resets it.
"""

from __future__ import annotations

import contextlib
import numbers
from typing import Callable, Iterator, Sequence

import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

from ..loading import denoiser, family
from .cfg import DenoiserHooks
from .steps import SchedulerClock, conditional_slice, denoiser_inputs

#: The batched tensors of a CFG step that a cut-off halves, per family (SD 1.x/2.x: the embeddings only).
SDXL_TENSORS = ("prompt_embeds", "add_text_embeds", "add_time_ids")


class ScheduleCallbackError(ValueError):
    """A schedule callback was built or used in a way that cannot work (message says why)."""


def _check_steps(text_steps) -> int:
    if not isinstance(text_steps, numbers.Integral) or isinstance(text_steps, bool) or text_steps < 1:
        raise ScheduleCallbackError(
            f"text_steps must be an integer >= 1 (the first steps that keep the text), not {text_steps!r}; "
            "for no text at all call the pipeline with guidance_scale=1 (or guidance.sample with TextWindow(0))")
    return int(text_steps)


class _Schedule(PipelineCallback):
    """Common part: the step it acts at, its tensor inputs, and the hook path (:meth:`hooked`)."""

    def __init__(self, text_steps: int, names: Sequence[str]) -> None:
        k = _check_steps(text_steps)
        super().__init__(cutoff_step_ratio=None, cutoff_step_index=k - 1)
        self.register_to_config(text_steps=k)
        self.text_steps = k
        self._names = list(names)

    @property
    def tensor_inputs(self) -> list[str]:
        """The pipeline tensors this callback reads and returns (the pipeline passes exactly these)."""
        return list(self._names)

    def _gate(self, batch: int, steps: int) -> DenoiserHooks:
        raise NotImplementedError

    @contextlib.contextmanager
    def hooked(self, pipe) -> Iterator["_Schedule"]:
        """Apply this schedule with forward hooks on the denoiser for every pipeline call in the block.

        For pipelines without ``callback_on_step_end`` (PixArt), or to keep that argument free. Each
        call is found by :class:`~helpers.hooks.steps.SchedulerClock`; its batch is read off its first
        CFG denoiser call. The hooks run first among the denoiser's hooks (the contract of
        :mod:`helpers.hooks.cfg`) and are removed on exit, also when the block raises.
        """
        model, clock, current = denoiser(pipe), SchedulerClock(pipe), [None]

        def pre(module, args, kwargs):
            sample, t = denoiser_inputs(args, kwargs)
            if clock.tick(t) == "new_run":
                n = sample.shape[0]
                cfg = conditional_slice(pipe, sample) != slice(0, n)
                current[0] = self._gate(n // 2, len(pipe.scheduler.timesteps)) if cfg else None
            return None if current[0] is None else current[0]._pre(module, args, kwargs)

        def post(module, args, kwargs, output):
            return None if current[0] is None else current[0]._post(module, args, kwargs, output)

        handles = [model.register_forward_pre_hook(pre, with_kwargs=True, prepend=True),
                   model.register_forward_hook(post, with_kwargs=True, prepend=True)]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()


class _Cutoff(_Schedule):
    keep = "uncond"

    def __init__(self, text_steps: int, pipe=None) -> None:
        fam = None if pipe is None else family(pipe)
        super().__init__(text_steps, SDXL_TENSORS if fam == "sdxl" else ("prompt_embeds",))
        self.register_to_config(keep=self.keep, family=fam)

    def callback_fn(self, pipeline, step_index: int, timestep, callback_kwargs: dict) -> dict:
        """At the end of step ``k - 1``: keep one half of every batched tensor and turn CFG off."""
        if step_index != self.config.cutoff_step_index or not getattr(pipeline, "do_classifier_free_guidance", True):
            return callback_kwargs
        if "add_time_ids" in getattr(pipeline, "_callback_tensor_inputs", ()) and "add_time_ids" not in self._names:
            name = type(self).__name__
            raise ScheduleCallbackError(f"on SDXL {name} must halve the pooled embeddings and time ids too: "
                                        f"build it with the pipeline, {name}({self.text_steps}, pipe)")
        batch = callback_kwargs["prompt_embeds"].shape[0] // 2
        for name in self._names:
            callback_kwargs[name] = _half(name, callback_kwargs[name], batch, self.keep)
        pipeline._guidance_scale = 1.0  # do_classifier_free_guidance -> False: one pass per step from now on
        return callback_kwargs

    def _gate(self, batch: int, steps: int) -> DenoiserHooks:
        k, keep = self.text_steps, self.keep
        return DenoiserHooks(batch, steps, policy=lambda step: [keep if step >= k else None] * batch, record=False)


def _half(name: str, tensor: torch.Tensor, batch: int, keep: str) -> torch.Tensor:
    """The ``keep`` half of a batched ``[negative; conditional]`` tensor of ``2 * batch`` rows."""
    if name == "add_time_ids":  # SDXL builds cat([negative, conditional]).repeat(B, 1): the rows alternate
        return tensor[0::2] if keep == "uncond" else tensor[1::2]
    return tensor[:batch] if keep == "uncond" else tensor[batch:]


class TextOffAfter(_Cutoff):
    """The paper's schedule: full CFG for the first ``text_steps`` steps, then eps(x_t, empty) only.

    Args:
        text_steps: ``k >= 1``, the first steps that use the text (the paper's ``a = N - k``).
        pipe: the pipeline it will run in; needed on SDXL (its pooled embeddings and time ids are
            halved too), optional elsewhere.
    """

    keep = "uncond"


class GuidanceOffAfter(_Cutoff):
    """Full CFG for the first ``text_steps`` steps, then eps(x_t, text) only (guidance off).

    Args are those of :class:`TextOffAfter`.
    """

    keep = "cond"


class SwitchAfter(_Schedule):
    """The call's own conditioning for the first ``text_steps`` steps, then ``prompt_embeds``; CFG stays on.

    Args:
        text_steps: ``k >= 1``.
        prompt_embeds: the batched ``[negative; conditional]`` embeddings (``2B`` rows) for steps ``k ..``.
        add_text_embeds: SDXL's batched pooled embeddings (``2B`` rows), to switch them as well.
        attention_mask: PixArt's batched attention mask, for :meth:`hooked` on PixArt.
    """

    def __init__(self, text_steps: int, prompt_embeds: torch.Tensor, add_text_embeds: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None) -> None:
        tensors = {"prompt_embeds": prompt_embeds, "add_text_embeds": add_text_embeds}
        self.replacement = {name: value for name, value in tensors.items() if value is not None}
        self.attention_mask = attention_mask
        super().__init__(text_steps, list(self.replacement))

    def callback_fn(self, pipeline, step_index: int, timestep, callback_kwargs: dict) -> dict:
        """At the end of step ``k - 1``: swap in the replacement tensors."""
        if step_index != self.config.cutoff_step_index:
            return callback_kwargs
        for name, value in self.replacement.items():
            if value.shape[0] != callback_kwargs[name].shape[0]:
                raise ScheduleCallbackError(
                    f"SwitchAfter's {name} has {value.shape[0]} rows but the pipeline's has "
                    f"{callback_kwargs[name].shape[0]}: pass the batched [negative; conditional] tensor")
            callback_kwargs[name] = value
        return callback_kwargs

    def _gate(self, batch: int, steps: int) -> DenoiserHooks:
        if "add_text_embeds" in self.replacement:
            raise ScheduleCallbackError("SwitchAfter.hooked cannot switch SDXL's pooled embeddings: pass it as "
                                        "callback_on_step_end instead")
        states = {"encoder_hidden_states": self.replacement["prompt_embeds"]}
        if self.attention_mask is not None:
            states["encoder_attention_mask"] = self.attention_mask
        return DenoiserHooks(batch, steps, substitute=(self.text_steps, states), record=False)


class FunctionCallback(PipelineCallback):
    """A plain ``callback_on_step_end(pipe, step_index, timestep, callback_kwargs)`` as a ``PipelineCallback``.

    ``tensor_inputs`` are the tensors it reads (the pipeline's default: ``["latents"]``); a ``None``
    return keeps the tensors unchanged.
    """

    def __init__(self, fn: Callable, tensor_inputs: Sequence[str] | None = None) -> None:
        if not callable(fn):
            raise ScheduleCallbackError(f"a callback must be callable, not {type(fn).__name__}")
        super().__init__()
        self.fn = fn
        self._names = list(tensor_inputs or ["latents"])

    @property
    def tensor_inputs(self) -> list[str]:
        return list(self._names)

    def callback_fn(self, pipeline, step_index: int, timestep, callback_kwargs: dict) -> dict:
        return self.fn(pipeline, step_index, timestep, callback_kwargs) or callback_kwargs


def compose(ours: PipelineCallback, user,
            tensor_inputs: Sequence[str] | None = None) -> PipelineCallback | MultiPipelineCallbacks:
    """``ours`` then the caller's own callback (a function, a ``PipelineCallback`` or ``MultiPipelineCallbacks``).

    ``tensor_inputs`` are a plain function's (``callback_on_step_end_tensor_inputs``); the user's
    callback sees, and may change, what ours returned.
    """
    if user is None:
        return ours
    if not isinstance(user, (PipelineCallback, MultiPipelineCallbacks)):
        user = FunctionCallback(user, tensor_inputs)
    return MultiPipelineCallbacks([ours, user])
