"""Cross-attention recording with diffusers attention processors, aggregated on the fly.

>>> with record_attention(pipe, resolutions=(8,)) as rec:
...     images = generate(pipe, ["a red circle", "a blue star"], num_inference_steps=50)
>>> rec.maps().shape            # (steps, prompts, tokens, 8, 8): mean over heads and 8x8 layers
>>> rec.token_mass().shape      # (steps, prompts, tokens): attention mass of each token per step

Three pieces, each usable on its own:

* :class:`CrossAttnProcessor` -- a diffusers attention processor that computes the output
  exactly like the stock ``AttnProcessor2_0`` (same operations, so no pixel changes) and,
  when it has a recorder that wants the layer, also computes softmax(QK^T/sqrt(d)) for the
  conditional half of the batch. Subclasses may override :meth:`~CrossAttnProcessor.key_value_inputs`
  to feed other encoder states to the keys and/or values (K/V substitution) and keep recording.
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

import numpy as np
import torch
import torch.nn.functional as F

from .loading import denoiser
from .tokens import TokenClasses, pipeline_token_classes

logger = logging.getLogger(__name__)

Size = tuple[int, int]
#: Token classes reported by :func:`class_mass` (``eos_class`` = real [EOS] + padding, the paper's [EOS]).
MASS_CLASSES = ("sos", "semantic", "eos_class", "eos", "padding")
_STOCK_PROCESSORS = ("AttnProcessor2_0", "AttnProcessor")


class AttentionRecordError(ValueError):
    """Recorded attention was asked for in a way that cannot be answered (message says why)."""


# ----------------------------------------------------------------------------- processor


def attention_probabilities(
    query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d) + mask) in float32, shaped ``(batch, heads, queries, keys)``.

    The scale is SDPA's default ``1/sqrt(head_dim)``, the one the stock processor uses.
    """
    scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * query.shape[-1] ** -0.5
    if attention_mask is not None:
        scores = scores + attention_mask.float()
    return scores.softmax(dim=-1)


class CrossAttnProcessor:
    """Stock-equivalent scaled-dot-product attention processor that can record probabilities.

    Args:
        name: the layer's name in ``model.attn_processors`` (without ``.processor``).
        recorder: an :class:`AttentionRecorder` (or anything with ``wants(name, length)`` and
            ``record(name, query, key, attention_mask)``); ``None`` records nothing.

    The output is computed with the same operations as diffusers' ``AttnProcessor2_0``, so a
    pipeline gives bit-identical images with this processor installed. Subclass and override
    :meth:`key_value_inputs` to change what keys/values see; recording keeps working.
    """

    def __init__(self, name: str = "", recorder=None) -> None:
        self.name = name
        self.recorder = recorder

    def key_value_inputs(self, attn, encoder_hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder states fed to ``to_k`` and ``to_v`` (default: the prompt's, unchanged)."""
        return encoder_hidden_states, encoder_hidden_states

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key_states, value_states = self.key_value_inputs(attn, encoder_hidden_states)
        key = attn.to_k(key_states)
        value = attn.to_v(value_states)

        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        if self.recorder is not None and self.recorder.wants(self.name, query.shape[-2]):
            self.recorder.record(self.name, query, key, attention_mask)

        hidden_states = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def cross_attention_layers(model: torch.nn.Module) -> list[str]:
    """Names (as in ``model.attn_processors``, without ``.processor``) of the cross-attention layers."""
    names = []
    for key in model.attn_processors:
        name = key.removesuffix(".processor")
        if getattr(model.get_submodule(name), "is_cross_attention", False):
            names.append(name)
    return names


@contextmanager
def installed_processors(
    model: torch.nn.Module, make: Callable[[str, object], object], layers: Iterable[str] | None = None
) -> Iterator[dict[str, object]]:
    """Replace the processors of ``layers`` (default: cross-attention) by ``make(name, original)``.

    The originals are restored on exit, also when the block raises. Yields the new processors by name.
    Useful for any processor family (recording, K/V substitution, ...).
    """
    originals = dict(model.attn_processors)
    chosen = set(cross_attention_layers(model) if layers is None else layers)
    unknown = chosen - {k.removesuffix(".processor") for k in originals}
    if unknown:
        raise AttentionRecordError(f"no attention layer named {sorted(unknown)[0]!r} in {type(model).__name__}")
    new = {}
    table = {}
    for key, proc in originals.items():
        name = key.removesuffix(".processor")
        table[key] = new[name] = make(name, proc) if name in chosen else proc
    model.set_attn_processor(table)
    try:
        yield new
    finally:
        model.set_attn_processor(dict(originals))


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


# ----------------------------------------------------------------------------- steps and CFG


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


def denoiser_inputs(args: tuple, kwargs: dict) -> tuple[torch.Tensor, float]:
    """The latent input and the timestep of a UNet / PixArt-transformer forward call."""
    sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
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


# ----------------------------------------------------------------------------- aggregation


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


# ----------------------------------------------------------------------------- recorder


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
    """

    def __init__(self, pipe, resolutions: Iterable[int | Size] | None = (8,), per_step: bool = True,
                 layer_filter: Callable[[str], bool] | None = None, cfg: bool | None = None,
                 store_dtype: torch.dtype = torch.float32) -> None:
        resolutions = _check_resolutions(resolutions)
        self.pipe = pipe
        self.model = denoiser(pipe)
        self.resolutions = resolutions
        self.layer_filter = layer_filter
        self.cfg = cfg
        self.aggregator = AttentionAggregator(per_step=per_step, store_dtype=store_dtype)
        self.clock = StepClock()
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
) -> Iterator[AttentionRecorder]:
    """Record the cross-attention of every pipeline call made inside the block.

    Installs a :class:`CrossAttnProcessor` on each cross-attention layer (a copy with a recorder
    when the layer already runs a :class:`CrossAttnProcessor` subclass, e.g. K/V substitution)
    and a forward pre-hook on the denoiser; both are removed on exit, also on exceptions.
    See :class:`AttentionRecorder` for the arguments.
    """
    rec = AttentionRecorder(pipe, resolutions, per_step, layer_filter, cfg, store_dtype)
    handle = rec.model.register_forward_pre_hook(rec._pre_hook, with_kwargs=True)
    try:
        with installed_processors(rec.model, lambda name, orig: _recording_processor(name, orig, rec)):
            yield rec
    finally:
        handle.remove()
        rec.aggregator.end_step()


# ----------------------------------------------------------------------------- token classes


def class_mass(mass: torch.Tensor | np.ndarray, classes: TokenClasses) -> dict[str, np.ndarray]:
    """Sum a ``(..., tokens)`` mass over the positions of each class of :data:`MASS_CLASSES`."""
    mass = np.asarray(mass, dtype=np.float64)
    if mass.shape[-1] != classes.max_length:
        raise AttentionRecordError(f"mass has {mass.shape[-1]} tokens but the prompt is padded to {classes.max_length}")
    groups = {"sos": classes.sos, "semantic": classes.semantic, "eos_class": classes.eos_class,
              "eos": classes.eos, "padding": classes.padding}
    return {name: mass[..., list(pos)].sum(-1) if pos else np.zeros(mass.shape[:-1]) for name, pos in groups.items()}


def class_mass_table(rec: AttentionRecorder, prompts: Sequence[str], resolution: int | Size | None = None):
    """Long table (pandas) of attention mass per sample, step and token class.

    Columns: ``sample, prompt, step, timestep, class, mass``; ``prompts[i]`` is sample ``i``.
    ``resolution`` restricts the mass to the layers of one map size (default: all recorded).
    """
    import pandas as pd

    mass = rec.token_mass(resolution).numpy()
    if mass.shape[1] != len(prompts):
        raise AttentionRecordError(f"{mass.shape[1]} samples were recorded but {len(prompts)} prompts were given")
    timesteps = rec.timesteps
    rows = []
    for i, prompt in enumerate(prompts):
        per_class = class_mass(mass[:, i], pipeline_token_classes(rec.pipe, prompt))
        for name, values in per_class.items():
            rows += [(i, prompt, s, timesteps[s], name, float(v)) for s, v in enumerate(values)]
    return pd.DataFrame(rows, columns=["sample", "prompt", "step", "timestep", "class", "mass"])


def token_map(maps: torch.Tensor, positions: Sequence[int]) -> torch.Tensor:
    """The map of a word: sum over its token positions of ``maps[..., tokens, h, w]``."""
    if not positions:
        raise AttentionRecordError("a word needs at least one token position")
    return maps[..., list(positions), :, :].float().sum(dim=-3)


def word_maps(maps: torch.Tensor, classes: TokenClasses) -> dict[str, torch.Tensor]:
    """Label -> map for one sample's ``(tokens, h, w)`` maps: ``[SOS]``, each word, ``[EOS]``, mean padding."""
    out = {"[SOS]": maps[classes.sos[0]].float()} if classes.has_sos else {}
    for word, positions in classes.words():
        out.setdefault(word, token_map(maps, positions))
    out["[EOS]"] = maps[classes.eos[0]].float()
    if classes.padding:
        out["padding (mean)"] = maps[list(classes.padding)].float().mean(dim=0)
    return out


# ----------------------------------------------------------------------------- binary maps


def binarize(heat: np.ndarray | torch.Tensor, threshold: str | float = "mean") -> np.ndarray:
    """Boolean mask of a heat map: ``"mean"`` (above its mean), ``"otsu"``, or a fraction of its max."""
    heat = np.asarray(heat, dtype=np.float64)
    if threshold == "mean":
        return heat > heat.mean()
    if threshold == "otsu":
        return heat > otsu_threshold(heat)
    if isinstance(threshold, (int, float)) and 0 <= threshold <= 1:
        return heat > threshold * heat.max()
    raise ValueError(f"threshold must be 'mean', 'otsu' or a fraction in [0, 1], not {threshold!r}")


def otsu_threshold(values: np.ndarray, bins: int = 64) -> float:
    """Otsu's threshold: the cut that maximises the between-class variance of ``values``."""
    values = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = values.min(), values.max()
    if hi <= lo:
        return float(lo)
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    p = hist / hist.sum()
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * centres)
    w1 = 1 - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (m0[-1] * w0 - m0) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = -1
    return float(edges[1:][int(np.argmax(between))])


def f1_score(pred: np.ndarray, ref: np.ndarray) -> float:
    """F1 (Dice) of two boolean masks; NaN when both are empty."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    total = pred.sum() + ref.sum()
    return float(2 * (pred & ref).sum() / total) if total else float("nan")
