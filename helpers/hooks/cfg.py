"""The hook mechanism that changes classifier-free guidance inside a stock pipeline call.

The other mechanism, a ``callback_on_step_end`` that at the end of step ``k - 1`` keeps one half
of the batched conditioning and turns CFG off (or swaps in other tensors), is public as diffusers
``PipelineCallback`` s in :mod:`helpers.hooks.callbacks`.

* :class:`DenoiserHooks` -- forward (pre-)hooks on the denoiser for pipelines without a
  step-end callback (PixArt) and for per-prompt decisions: pass on only the batch rows still
  needed and put the ``2B`` rows back afterwards; also records ``||eps_u||``, ``||eps_c||``
  and ``||eps_c - eps_u||`` at no extra denoiser cost.

**Hook order contract.** :meth:`DenoiserHooks.installed` registers both hooks with
``prepend=True``: its pre-hook runs *before* any other forward pre-hook on the denoiser (so
evaluation counters and attention/trajectory recorders installed earlier see the rows that
really run), and its forward hook runs *before* any other forward hook (so those see the
restored ``2B``-row output, as in a stock call). Hooks installed inside its ``with`` block
keep the same order, because prepending puts ours first whenever it is installed.

:mod:`helpers.guidance` and :meth:`helpers.hooks.callbacks.TextOffAfter.hooked` build schedules from it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator

import numpy as np
import torch

from ..bench.timing import x0_guidance_scale
from .steps import denoiser_inputs, denoiser_sample


class DenoiserHooks:
    """Forward (pre-)hooks on the denoiser: step counting, row gating, substitution, recording.

    Args:
        batch: number of prompts ``B`` in this pipeline call (CFG batch is ``2B``).
        steps: ``N``.
        policy: ``None`` (never gate) or a callable ``step -> list[str | None]`` giving per
            prompt ``None`` (CFG: both rows) or ``"uncond"``/``"cond"`` (the one kept row).
        substitute: ``(from_step, {kwarg: 2B tensor})`` replaced in the denoiser call.
        adaptive: an ``AdaptiveStop`` (:mod:`helpers.guidance`) whose decisions this object makes.
        record: fill the norm arrays.
        alphas_cumprod: the scheduler's ᾱ by timestep; with it ``x0`` holds, per prompt and CFG step, the
            guidance term's size on the predicted clean image, RMS(ε_c − ε_u) · √((1 − ᾱ_t) / ᾱ_t).
    """

    def __init__(self, batch: int, steps: int, policy=None, substitute=None, adaptive=None,
                 record: bool = True, alphas_cumprod=None):
        self.batch, self.steps, self.policy, self.substitute, self.adaptive, self.record = (
            batch, steps, policy, substitute, adaptive, record)
        self.alphas = None if alphas_cumprod is None else np.asarray(torch.as_tensor(alphas_cumprod).double().cpu())
        self.step = -1
        self.calls = self.rows = 0
        self.norms = np.full((3, batch, steps), np.nan)
        self.x0 = np.full((batch, steps), np.nan)
        self._scale = np.nan
        self.stop_from = np.full(batch, steps)
        self._rows: list[int] | None = None
        self._plan: list[str | None] = [None] * batch

    @contextlib.contextmanager
    def installed(self, module: torch.nn.Module) -> Iterator["DenoiserHooks"]:
        """Install both hooks on ``module`` (first in hook order: see the module's contract); removed on exit."""
        handles = [module.register_forward_pre_hook(self._pre, with_kwargs=True, prepend=True),
                   module.register_forward_hook(self._post, with_kwargs=True, prepend=True)]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _plan_for_step(self) -> list[str | None]:
        plan = list(self.policy(self.step)) if self.policy is not None else [None] * self.batch
        if self.adaptive is not None:
            plan = [self.adaptive.variant if self.step >= self.stop_from[j] else p for j, p in enumerate(plan)]
        return plan

    def _pre(self, module, args, kwargs):
        self.step += 1
        self.calls += 1
        sample, t = denoiser_inputs(args, kwargs)
        n = sample.shape[0]
        self._rows = None
        if self.alphas is not None:
            abar = self.alphas[min(max(int(round(t)), 0), len(self.alphas) - 1)]
            self._scale = x0_guidance_scale(abar) / float(np.sqrt(sample[0].numel()))
        if n != 2 * self.batch:  # CFG is off in the pipeline itself: nothing to gate or record
            self.rows += n
            return None
        if self.substitute is not None and self.step >= self.substitute[0]:
            kwargs = {**kwargs, **self.substitute[1]}
        self._plan = self._plan_for_step()
        rows = [r for j, p in enumerate(self._plan)
                for r in ((j, self.batch + j) if p is None else ((j,) if p == "uncond" else (self.batch + j,)))]
        self.rows += len(rows)
        if len(rows) == n:
            return args, kwargs
        self._rows = sorted(rows)
        index = torch.tensor(self._rows, device=sample.device)
        return take_rows(args, n, index), take_rows(kwargs, n, index)

    def _post(self, module, args, kwargs, output):
        out = output[0] if isinstance(output, tuple) else output.sample
        if self._rows is None and out.shape[0] != 2 * self.batch:
            return None  # the pipeline itself runs without CFG now
        full = out
        if self._rows is not None:  # put the 2B rows back; a stopped prompt gets its kept row twice
            where = {r: i for i, r in enumerate(self._rows)}
            order = []
            for half in (0, 1):
                for j, p in enumerate(self._plan):
                    own = half * self.batch + j
                    order.append(where[own] if p is None else where[j if p == "uncond" else self.batch + j])
            full = out[torch.tensor(order, device=out.device)]
        if self.record or self.adaptive is not None:
            self._observe(full, sample_channels=denoiser_sample(args, kwargs).shape[1])
        if full is out:
            return None
        return (full,) + tuple(output[1:]) if isinstance(output, tuple) else dataclasses.replace(output, sample=full)

    @torch.no_grad()
    def _observe(self, full: torch.Tensor, sample_channels: int) -> None:
        if full.shape[1] == 2 * sample_channels:  # learned variance (PixArt): keep the noise channels
            full = full[:, :sample_channels]
        uncond, cond = full.float().chunk(2)
        norms = torch.stack([uncond.flatten(1).norm(dim=1), cond.flatten(1).norm(dim=1),
                             (cond - uncond).flatten(1).norm(dim=1)]).cpu().numpy()
        active = np.array([p is None for p in self._plan])
        x0 = norms[2] * self._scale
        if self.step < self.steps:
            self.norms[:, active, self.step] = norms[:, active]
            self.x0[active, self.step] = x0[active]
        if self.adaptive is not None:
            ratio = x0 if self.adaptive.criterion == "x0" else norms[2] / np.maximum(norms[0], 1e-12)
            for j in np.flatnonzero(active & (ratio < self.adaptive.threshold)):
                if self.stop_from[j] == self.steps and self.step + 1 >= self.adaptive.min_text_steps:
                    self.stop_from[j] = self.step + 1


def take_rows(value, n: int, index: torch.Tensor):
    """``value`` with every tensor whose first dimension is ``n`` reduced to ``index`` (recursing)."""
    if isinstance(value, torch.Tensor):
        return value.index_select(0, index.to(value.device)) if value.ndim and value.shape[0] == n else value
    if isinstance(value, dict):
        return {k: take_rows(v, n, index) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(take_rows(v, n, index) for v in value)
    return value
