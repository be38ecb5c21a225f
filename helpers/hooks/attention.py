"""Cross-attention recording with diffusers attention processors, aggregated on the fly.

>>> with record_attention(pipe, resolutions=(8,)) as rec:
...     images = generate(pipe, ["a red circle", "a blue star"], num_inference_steps=50)
>>> rec.maps().shape            # (steps, prompts, tokens, 8, 8): mean over heads and 8x8 layers
>>> rec.token_mass().shape      # (steps, prompts, tokens): attention mass of each token per step

Three pieces, each usable on its own:

* :class:`~helpers.hooks.processors.CrossAttnProcessor` -- the stock-equivalent processor that
  records (:mod:`helpers.hooks.processors`).
* :class:`AttentionAggregator` -- running means over heads and layers per step and map size;
  stores at most one ``(tokens, h, w)`` map per sample, step and map size (or only the
  mean over steps with ``per_step=False``), plus a ``(tokens,)`` mass per step.
* :class:`AttentionRecorder` / :func:`record_attention` -- the context manager that installs the
  processors with ``set_attn_processor``, counts steps with a forward pre-hook on the denoiser,
  and always restores the original processors.

A *step* is one call of the denoiser; a new *run* (another pipeline call) starts when the
timestep goes up. Runs are concatenated along the sample axis, so prompts batched over
several pipeline calls come out in order. With classifier-free guidance only the conditional
half of the batch is recorded. Map sizes are derived from the hidden-state length and the
latent shape; a *resolution* is the map's height in cells (its width too for square images).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F

from ..loading import denoiser
from .processors import AttentionRecordError, CrossAttnProcessor, attention_probabilities, installed_processors
from .steps import StepClock, conditional_slice, denoiser_inputs

logger = logging.getLogger(__name__)

Size = tuple[int, int]
_STOCK_PROCESSORS = ("AttnProcessor2_0", "AttnProcessor")


def _recording_processor(name: str, original, recorder) -> CrossAttnProcessor:
    """A recording copy of a :class:`CrossAttnProcessor`, or a new one replacing a stock processor."""
    if isinstance(original, CrossAttnProcessor):
        proc = copy.copy(original)
        proc.name, proc.recorder = name, recorder
        return proc
    if type(original).__name__ not in _STOCK_PROCESSORS:
        logger.warning("record_attention replaces %s on %s while recording; its behaviour is off meanwhile.",
                       type(original).__name__, name)
    return CrossAttnProcessor(name, recorder)


def map_size(length: int, latent_size: Size) -> Size:
    """The ``(h, w)`` grid of ``length`` query tokens for a latent of ``latent_size``.

    Each UNet level (or PixArt patch) divides both sides by the same factor, rounding up.
    """
    height, width = latent_size
    factor = 1
    while factor <= max(height, width):
        h, w = -(-height // factor), -(-width // factor)
        if h * w == length:
            return h, w
        factor *= 2
    side = math.isqrt(length)
    if side * side == length:
        return side, side
    raise AttentionRecordError(f"cannot lay out {length} attention queries on a grid for latents of size {latent_size}")


@dataclasses.dataclass
class _Run:
    """Aggregates of one pipeline call."""

    timesteps: list[float] = dataclasses.field(default_factory=list)
    maps: dict[Size, list[torch.Tensor]] = dataclasses.field(default_factory=dict)  # per step (b, T, h, w)
    map_sums: dict[Size, torch.Tensor] = dataclasses.field(default_factory=dict)  # sum over steps
    map_steps: dict[Size, int] = dataclasses.field(default_factory=dict)
    mass: list[torch.Tensor] = dataclasses.field(default_factory=list)  # per step (b, T), all layers
    size_mass: dict[Size, list[torch.Tensor]] = dataclasses.field(default_factory=dict)  # per step (b, T)


class AttentionAggregator:
    """Running means of cross-attention maps over heads and layers, per step and map size.

    Args:
        per_step: keep one map per step (``(tokens, h, w)`` per sample and size); ``False``
            keeps only the running sum over steps. The per-step token mass is kept either way.
        store_device: where finished steps are kept (CPU by default, off the GPU).
        store_dtype: dtype of kept maps (float16 halves the memory).
    """

    def __init__(self, per_step: bool = True, store_device: str | torch.device = "cpu",
                 store_dtype: torch.dtype = torch.float32) -> None:
        self.per_step = per_step
        self.store_device = torch.device(store_device)
        self.store_dtype = store_dtype
        self.runs: list[_Run] = []
        self._sums: dict[Size, torch.Tensor] = {}
        self._counts: dict[Size, int] = {}
        self._open = False

    def begin_step(self, timestep: float, new_run: bool) -> None:
        """Close the pending step and open one at ``timestep`` (in a new run if asked)."""
        self.end_step()
        if new_run or not self.runs:
            self.runs.append(_Run())
        self.runs[-1].timesteps.append(timestep)
        self._open = True

    def add(self, probs: torch.Tensor) -> None:
        """Add one layer's head-averaged maps ``(batch, tokens, h, w)`` to the open step."""
        if not self._open:
            raise AttentionRecordError("attention was added outside a step: call begin_step first")
        size = tuple(probs.shape[-2:])
        if size in self._sums:
            self._sums[size] += probs
            self._counts[size] += 1
        else:
            self._sums[size], self._counts[size] = probs.clone(), 1

    def end_step(self) -> None:
        """Average the open step's layers and keep the result (no-op when no step is open)."""
        if not self._open:
            return
        run = self.runs[-1]
        if not self._sums:  # a step where no recorded layer ran: forget it
            run.timesteps.pop()
            self._open = False
            return
        mass_total = 0
        for size, total in self._sums.items():
            mass = total.mean(dim=(-2, -1))  # summed over this size's layers
            mass_total = mass_total + mass
            run.size_mass.setdefault(size, []).append((mass / self._counts[size]).to(self.store_device, torch.float32))
            mean = (total / self._counts[size]).to(self.store_device, self.store_dtype)
            if self.per_step:
                run.maps.setdefault(size, []).append(mean)
            else:
                run.map_sums[size] = run.map_sums[size] + mean if size in run.map_sums else mean
                run.map_steps[size] = run.map_steps.get(size, 0) + 1
        run.mass.append((mass_total / sum(self._counts.values())).to(self.store_device, torch.float32))
        self._sums, self._counts = {}, {}
        self._open = False

    # -- results

    @property
    def sizes(self) -> list[Size]:
        """Map sizes seen, largest first."""
        seen = {s for run in self.runs for s in (run.maps if self.per_step else run.map_sums)}
        return sorted(seen, key=lambda s: (-s[0] * s[1], s))

    @property
    def timesteps(self) -> list[float]:
        """Timesteps of the recorded steps (of the first run; all runs must agree)."""
        self._check_runs()
        return list(self.runs[0].timesteps)

    def _check_runs(self) -> None:
        self.end_step()
        if not self.runs or not self.runs[0].mass:
            raise AttentionRecordError("no cross-attention was recorded: run the pipeline inside the `with` block")
        steps = {len(run.mass) for run in self.runs}
        if len(steps) > 1:
            raise AttentionRecordError(f"the recorded pipeline calls have different step counts {sorted(steps)}; "
                                       "record them in separate `with` blocks")

    def _select(self, resolution: int | Size | None) -> list[Size]:
        sizes = self.sizes
        if resolution is None:
            return sizes
        chosen = [s for s in sizes if _matches(s, resolution)]
        if not chosen:
            raise AttentionRecordError(f"no maps recorded at resolution {resolution}; recorded: {sizes}")
        return chosen

    def maps(self, resolution: int | Size | None = None) -> torch.Tensor:
        """Per-step maps ``(steps, samples, tokens, h, w)``.

        ``resolution=None`` averages every recorded size, upsampled (bilinear) to the largest.
        """
        self._check_runs()
        if not self.per_step:
            raise AttentionRecordError("maps were recorded with per_step=False: use mean_maps() instead")
        per_size = []
        for size in self._select(resolution):
            per_size.append(torch.cat([torch.stack(run.maps[size]) for run in self.runs], dim=1))
        return _combine(per_size)

    def mean_maps(self, resolution: int | Size | None = None) -> torch.Tensor:
        """Maps averaged over steps: ``(samples, tokens, h, w)``."""
        self._check_runs()
        if self.per_step:
            return self.maps(resolution).float().mean(dim=0)
        per_size = []
        for size in self._select(resolution):
            per_size.append(torch.cat([run.map_sums[size].float() / run.map_steps[size] for run in self.runs]))
        return _combine(per_size)

    def token_mass(self, resolution: int | Size | None = None) -> torch.Tensor:
        """Attention mass per token, ``(steps, samples, tokens)``: mean over pixels, heads and layers.

        ``resolution=None``: every recorded layer weighs the same; else the layers of that size.
        Each query's probabilities sum to 1 over tokens, so each row sums to 1.
        """
        self._check_runs()
        if resolution is None:
            return torch.cat([torch.stack(run.mass) for run in self.runs], dim=1)
        (size,) = self._select(resolution)[:1]
        return torch.cat([torch.stack(run.size_mass[size]) for run in self.runs], dim=1)

    def nbytes(self) -> int:
        """Bytes held by the kept aggregates."""
        tensors = [t for run in self.runs for ts in run.maps.values() for t in ts]
        tensors += [t for run in self.runs for t in run.map_sums.values()]
        tensors += [t for run in self.runs for t in run.mass]
        tensors += [t for run in self.runs for ts in run.size_mass.values() for t in ts]
        return sum(t.numel() * t.element_size() for t in tensors)


def _matches(size: Size, resolution: int | Size) -> bool:
    if isinstance(resolution, int):
        return size[0] == resolution
    return tuple(size) == tuple(resolution)


def _combine(per_size: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean of maps of several sizes, upsampled bilinearly to the first (largest) size."""
    if len(per_size) == 1:
        return per_size[0]
    target = per_size[0].shape[-2:]
    out = torch.zeros(per_size[0].shape, dtype=torch.float32)
    for maps in per_size:
        lead = maps.shape[:-2]
        flat = maps.float().reshape(-1, 1, *maps.shape[-2:])
        up = F.interpolate(flat, size=target, mode="bilinear", align_corners=False) if maps.shape[-2:] != target else flat
        out += up.reshape(*lead, *target)
    return out / len(per_size)


class AttentionRecorder:
    """Records cross-attention of a pipeline's denoiser; use through :func:`record_attention`.

    Args:
        pipe: a supported diffusers pipeline (SD, SDXL, PixArt) or anything whose
            :func:`helpers.loading.denoiser` works.
        resolutions: map heights to record (e.g. ``(8,)`` or ``(16, 8)``); ``None`` records all.
        per_step: keep a map per step (else only the mean over steps; the mass is always per step).
        layer_filter: optional predicate on layer names (e.g. ``lambda n: "up_blocks" in n``).
        cfg: ``None`` detects classifier-free guidance (see :func:`conditional_slice`).
        store_dtype: dtype of kept maps.
        clock: what tells steps and runs apart (default :class:`StepClock`, from the timesteps;
            :func:`helpers.hooks.trace.trace` passes a :class:`SchedulerClock`).
    """

    def __init__(self, pipe, resolutions: Iterable[int | Size] | None = (8,), per_step: bool = True,
                 layer_filter: Callable[[str], bool] | None = None, cfg: bool | None = None,
                 store_dtype: torch.dtype = torch.float32, clock: StepClock | None = None) -> None:
        resolutions = _check_resolutions(resolutions)
        self.pipe = pipe
        self.model = denoiser(pipe)
        if resolutions is not None:
            available = attention_resolutions(self.model)
            missing = [r for r in resolutions if (r if isinstance(r, int) else r[0]) not in available]
            if available and missing:
                raise AttentionRecordError(
                    f"this {type(self.model).__name__} has cross-attention maps of heights {sorted(available, reverse=True)} "
                    f"at its default image size, not {missing[0]}: pass one of those, or resolutions=None to record all")
        self.resolutions = resolutions
        self.layer_filter = layer_filter
        self.cfg = cfg
        self.aggregator = AttentionAggregator(per_step=per_step, store_dtype=store_dtype)
        self.clock = StepClock() if clock is None else clock
        self._latent_size: Size | None = None
        self._cond = slice(None)
        self._wanted: dict[tuple[str, int], bool] = {}
        self._sizes: dict[int, Size] = {}

    # -- hooks called by the model

    def _pre_hook(self, module, args, kwargs) -> None:
        sample, t = denoiser_inputs(args, kwargs)
        if tuple(sample.shape[-2:]) != self._latent_size:
            self._latent_size = tuple(sample.shape[-2:])
            self._sizes.clear()
            self._wanted.clear()
        self._cond = conditional_slice(self.pipe, sample, self.cfg)
        event = self.clock.tick(t)
        if event != "same":
            self.aggregator.begin_step(t, new_run=event == "new_run")

    def wants(self, name: str, length: int) -> bool:
        """Whether layer ``name`` with ``length`` queries is recorded (cheap, cached)."""
        key = (name, length)
        if key not in self._wanted:
            ok = self.layer_filter is None or self.layer_filter(name)
            if ok and self.resolutions is not None:
                size = self._size(length)
                ok = any(_matches(size, r) for r in self.resolutions)
            self._wanted[key] = ok
        return self._wanted[key]

    def _size(self, length: int) -> Size:
        if length not in self._sizes:
            if self._latent_size is None:
                raise AttentionRecordError("the denoiser ran without its pre-hook: record inside record_attention()")
            self._sizes[length] = map_size(length, self._latent_size)
        return self._sizes[length]

    @torch.no_grad()
    def record(self, name: str, query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
        """Head-mean attention probabilities of the conditional rows -> the aggregator."""
        cond = self._cond
        mask = attention_mask
        if mask is not None and mask.shape[0] == query.shape[0]:
            mask = mask[cond]
        probs = attention_probabilities(query[cond], key[cond], mask).mean(dim=1)  # (b, L, T)
        h, w = self._size(probs.shape[1])
        self.aggregator.add(probs.transpose(1, 2).reshape(probs.shape[0], probs.shape[2], h, w))

    # -- results (see AttentionAggregator)

    def maps(self, resolution: int | Size | None = None) -> torch.Tensor:
        """Per-step maps ``(steps, samples, tokens, h, w)`` (see :meth:`AttentionAggregator.maps`)."""
        return self.aggregator.maps(resolution)

    def mean_maps(self, resolution: int | Size | None = None) -> torch.Tensor:
        """Maps averaged over steps, ``(samples, tokens, h, w)``."""
        return self.aggregator.mean_maps(resolution)

    def token_mass(self, resolution: int | Size | None = None) -> torch.Tensor:
        """Attention mass per token, ``(steps, samples, tokens)`` (all recorded layers, or one size)."""
        return self.aggregator.token_mass(resolution)

    @property
    def timesteps(self) -> list[float]:
        return self.aggregator.timesteps

    @property
    def sizes(self) -> list[Size]:
        return self.aggregator.sizes


def attention_resolutions(model) -> set[int]:
    """Heights of the cross-attention maps of a UNet or PixArt transformer at its default latent size.

    UNet: level ``i`` of ``down_block_types`` works at ``ceil(sample_size / 2**i)``; the mid block at the
    last level; the up blocks mirror the down blocks. PixArt: ``sample_size / patch_size``. Empty when the
    config does not say (then nothing is checked).
    """
    config = model.config
    size = getattr(config, "sample_size", None)
    size = size[0] if isinstance(size, (tuple, list)) else size
    if not isinstance(size, int):
        return set()
    if hasattr(config, "down_block_types"):
        levels = len(config.down_block_types)
        heights = {-(-size // 2**i) for i, b in enumerate(config.down_block_types) if "CrossAttn" in b}
        heights |= {-(-size // 2**(levels - 1 - j)) for j, b in enumerate(config.up_block_types) if "CrossAttn" in b}
        if "CrossAttn" in str(getattr(config, "mid_block_type", "") or ""):
            heights.add(-(-size // 2**(levels - 1)))
        return heights
    patch = getattr(config, "patch_size", None)
    return {size // patch} if isinstance(patch, int) and patch > 0 else set()


def _check_resolutions(resolutions) -> list[int | Size] | None:
    """``None``, an int, or an iterable of ints / ``(h, w)`` pairs -> a list (or ``None``)."""
    if resolutions is None:
        return None
    entries = [resolutions] if isinstance(resolutions, int) else list(resolutions)
    for r in entries:
        ok = (isinstance(r, int) and r > 0) or (
            isinstance(r, tuple) and len(r) == 2 and all(isinstance(v, int) and v > 0 for v in r))
        if not ok:
            raise AttentionRecordError(f"resolutions must be positive ints or (h, w) pairs, not {r!r}")
    return entries


@contextmanager
def record_attention(
    pipe,
    resolutions: Iterable[int | Size] | None = (8,),
    per_step: bool = True,
    layer_filter: Callable[[str], bool] | None = None,
    cfg: bool | None = None,
    store_dtype: torch.dtype = torch.float32,
    clock: StepClock | None = None,
) -> Iterator[AttentionRecorder]:
    """Record the cross-attention of every pipeline call made inside the block.

    Installs a :class:`CrossAttnProcessor` on each cross-attention layer (a copy with a recorder
    when the layer already runs a :class:`CrossAttnProcessor` subclass, e.g. K/V substitution)
    and a forward pre-hook on the denoiser; both are removed on exit, also on exceptions.
    See :class:`AttentionRecorder` for the arguments.
    """
    rec = AttentionRecorder(pipe, resolutions, per_step, layer_filter, cfg, store_dtype, clock)
    handle = rec.model.register_forward_pre_hook(rec._pre_hook, with_kwargs=True)
    try:
        with installed_processors(rec.model, lambda name, orig: _recording_processor(name, orig, rec)):
            yield rec
    finally:
        handle.remove()
        rec.aggregator.end_step()
