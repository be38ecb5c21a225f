"""Where the hooks learn what the denoiser is doing: its inputs, the step, the CFG half, a call counter.

* :func:`denoiser_sample` / :func:`denoiser_inputs` -- the one parser of a UNet / PixArt-transformer
  forward call's arguments (the latent sample, the timestep); every hook in this package uses it.
* :class:`StepClock` -- turns the stream of timesteps into (run, step) indices;
  :class:`SchedulerClock` -- the same indices read off the scheduler (its ``step_index``).
* :func:`conditional_slice` -- which batch rows carry the prompt under classifier-free guidance.
* :func:`count_evaluations` -- counts denoiser evaluations (batch rows) while a block runs.

Nothing here imports a model: the functions take the arguments a forward (pre-)hook receives.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


def denoiser_sample(args: tuple, kwargs: dict) -> torch.Tensor:
    """The latent input of a UNet (``sample``) or PixArt-transformer (``hidden_states``) forward call."""
    if args:
        return args[0]
    return kwargs["sample"] if "sample" in kwargs else kwargs["hidden_states"]


class StepClock:
    """Turns a stream of denoiser timesteps into (run, step) indices.

    Same timestep as the previous call: same step. Lower: next step. Higher (or first call):
    a new run, i.e. a new pipeline call. (Consecutive one-step calls at the same timestep
    therefore merge: record them in separate ``with`` blocks.)
    """

    def __init__(self) -> None:
        self.run = -1
        self.step = -1
        self._last: float | None = None

    def tick(self, timestep: float) -> str:
        """Advance with a denoiser call at ``timestep``; returns ``"same"``, ``"next"`` or ``"new_run"``."""
        if self._last is not None and timestep == self._last:
            return "same"
        event = "next" if self._last is not None and timestep < self._last else "new_run"
        if event == "new_run":
            self.run, self.step = self.run + 1, 0
        else:
            self.step += 1
        self._last = timestep
        return event


class SchedulerClock(StepClock):
    """(run, step) indices read off the pipeline's scheduler rather than guessed from the timesteps.

    The step of a denoiser call is the scheduler's ``step_index`` where it keeps one (DPM-Solver++,
    Euler, UniPC, ...; ``None`` before the first ``scheduler.step`` of a call counts as 0), else the
    position of the timestep in ``scheduler.timesteps`` (DDIM and PNDM keep no index). A call at the
    same step and timestep as the previous one is the same step, a later step the next one, anything
    else a new run (another pipeline call) -- also a call that starts below where the previous one
    stopped, which :class:`StepClock` would take for its next step. Timesteps the scheduler does not
    list fall back to :class:`StepClock`'s rule. ``pipe.scheduler`` is read at every call, so swapping
    the scheduler (``helpers.loading.scheduler_set``) is followed.
    """

    def __init__(self, pipe) -> None:
        super().__init__()
        self.pipe = pipe
        self._index: int | None = None

    def position(self, timestep: float) -> int | None:
        """The scheduler's step index for a denoiser call at ``timestep`` (``None`` if it cannot say)."""
        scheduler = self.pipe.scheduler
        if isinstance(getattr(type(scheduler), "step_index", None), property):
            index = scheduler.step_index
            return 0 if index is None else int(index)
        timesteps = getattr(scheduler, "timesteps", None)
        if not isinstance(timesteps, torch.Tensor):
            return None
        hits = (timesteps.detach().flatten().float().cpu() == float(timestep)).nonzero().flatten().tolist()
        later = [h for h in hits if self._index is None or h >= self._index]
        return (later or hits or [None])[0]

    def tick(self, timestep: float) -> str:
        """Advance with a denoiser call at ``timestep``; returns ``"same"``, ``"next"`` or ``"new_run"``."""
        index = self.position(timestep)
        if index is None:
            self._index = None
            return super().tick(timestep)
        if self._index is not None and index == self._index and timestep == self._last:
            event = "same"
        elif self._index is not None and index > self._index:
            event, self.step = "next", self.step + 1
        else:
            event, self.run, self.step = "new_run", self.run + 1, 0
        self._index, self._last = index, timestep
        return event


def denoiser_inputs(args: tuple, kwargs: dict) -> tuple[torch.Tensor, float]:
    """The latent input and the timestep of a UNet / PixArt-transformer forward call."""
    sample = denoiser_sample(args, kwargs)
    t = args[1] if len(args) > 1 else kwargs.get("timestep")
    t = float(t.flatten()[0]) if isinstance(t, torch.Tensor) else float(t)
    return sample, t


def conditional_slice(pipe, sample: torch.Tensor, cfg: bool | None = None) -> slice:
    """Rows of the denoiser batch that carry the prompt (the second half under CFG).

    ``cfg=None`` reads ``pipe.do_classifier_free_guidance`` (SD, SDXL); pipelines without it
    (PixArt) count as CFG when the batch's two halves hold identical latents, as the
    pipeline's ``torch.cat([latents] * 2)`` makes them.
    """
    n = sample.shape[0]
    if cfg is None:
        try:
            cfg = bool(pipe.do_classifier_free_guidance)
        except AttributeError:
            cfg = n % 2 == 0 and torch.equal(sample[: n // 2], sample[n // 2:])
    return slice(n // 2, n) if cfg and n % 2 == 0 else slice(0, n)


@contextlib.contextmanager
def count_evaluations(pipe) -> Iterator[list[int]]:
    """Count denoiser evaluations (batch rows summed over calls) while the block runs.

    ``with count_evaluations(pipe) as n: ...`` then ``n[0]``; a CFG step of one image counts 2.
    The hook is removed on exit, also when the block raises.
    """
    from ..loading import denoiser

    rows = [0]

    def hook(module, args, kwargs):
        rows[0] += int(denoiser_sample(args, kwargs).shape[0])

    handle = denoiser(pipe).register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield rows
    finally:
        handle.remove()
