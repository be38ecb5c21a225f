"""DAAM-style tracing: one context manager around your own pipeline calls, then maps by word.

>>> with trace(pipe) as tr:
...     images = pipe(["a red circle", "a blue star"], num_inference_steps=30).images
>>> tr.word_map("circle")            # (h, w): mean over steps, heads, layers and every resolution
>>> tr.maps(step=5).shape            # (samples, tokens, h, w) at step 5
>>> tr.class_mass()                  # long table: sample, prompt, step, timestep, class, mass
>>> tr.save("attention.npz")         # every recorded array, the prompts and their token classes

:func:`trace` wraps :func:`helpers.hooks.attention.record_attention` (same processors, same
aggregation, so the same maps) and adds what a user would otherwise pass twice:

* **prompts**, captured once from the pipeline call itself: the pipeline's own ``encode_prompt``
  is wrapped for the block (an instance attribute, removed on exit) and remembers which prompt
  each encoded row came from; at the first denoiser call of every pipeline call the conditional
  rows of ``encoder_hidden_states`` are matched to those rows by value. So ``pipe(prompts)``,
  :func:`helpers.generation.generate` and :func:`helpers.guidance.sample` (which encodes first,
  then passes ``prompt_embeds``) are all labelled; rows made elsewhere (edited embeddings) are
  ``None`` until :meth:`Trace.set_prompt` names them.
* **token classes** of each prompt, with the tokenizer and the length the pipeline used (PixArt:
  after its own caption preprocessing; SDXL: its first tokenizer, whose positions the maps share).
* **steps** from the scheduler (:class:`~helpers.hooks.steps.SchedulerClock`), every
  cross-attention resolution by default, and everything restored on exit, also after an exception.
"""

from __future__ import annotations

import hashlib
import inspect
import numbers
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence, Union

import numpy as np
import torch

from ..analysis.mass import class_mass, token_map, word_maps
from ..loading import LoadingError, denoiser, family
from ..text.tokens import TokenClasses, token_classes
from .attention import AttentionRecorder, Size, record_attention
from .processors import AttentionRecordError
from .steps import SchedulerClock, conditional_slice, denoiser_sample

Step = Union[int, slice, Sequence[int], None]  # which recorded steps a map averages


class TraceError(AttentionRecordError):
    """A trace was asked for something it cannot answer (message says why)."""


def _digest(row: torch.Tensor) -> bytes:
    return hashlib.blake2b(row.detach().to("cpu", torch.float32).contiguous().numpy().tobytes(),
                           digest_size=16).digest()


class Trace:
    """What :func:`trace` recorded: cross-attention maps with the prompts and token classes of every sample.

    Samples are the conditional rows of every pipeline call in the block, in order (as in
    :class:`~helpers.hooks.attention.AttentionRecorder`, whose results ``recorder`` holds).
    """

    def __init__(self, pipe, recorder: AttentionRecorder) -> None:
        self.pipe, self.recorder, self.fam = pipe, recorder, family(pipe)
        self._known: dict[bytes, tuple[str, str, int]] = {}  # row digest -> (prompt, tokenized text, length)
        self._runs: list[list[tuple[str, str, int] | None]] = []
        self._named: dict[int, str] = {}
        self._classes: dict[tuple[str, int], TokenClasses] = {}

    # -- capture (called by the pipeline)

    def _remember(self, arguments: dict, embeds: torch.Tensor) -> None:
        prompt = arguments.get("prompt")
        if arguments.get("prompt_embeds") is not None or prompt is None or not isinstance(embeds, torch.Tensor):
            return
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        texts = prompts
        if self.fam == "pixart":  # what its encode_prompt tokenizes
            texts = self.pipe._text_preprocessing(prompts, clean_caption=bool(arguments.get("clean_caption")))
        per = max(1, embeds.shape[0] // len(prompts))  # num_images_per_prompt
        for j, row in enumerate(embeds):
            if j // per < len(prompts):
                self._known[_digest(row)] = (prompts[j // per], texts[j // per], int(embeds.shape[1]))

    def _wrap(self, original: Callable) -> Callable:
        signature = inspect.signature(original)

        def encode_prompt(*args, **kwargs):
            out = original(*args, **kwargs)
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError:
                return out
            self._remember(bound.arguments, out[0])
            return out

        return encode_prompt

    def _pre_hook(self, module, args, kwargs) -> None:
        """At the first denoiser call of a pipeline call: which prompt each recorded row shows."""
        if self.recorder.clock.run < len(self._runs):
            return
        sample = denoiser_sample(args, kwargs)
        states = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
        rows = states[conditional_slice(self.pipe, sample, self.recorder.cfg)] if states is not None else []
        self._runs.append([self._known.get(_digest(row)) for row in rows])

    # -- prompts and token classes

    @property
    def prompts(self) -> list[str | None]:
        """The prompt of every recorded sample (``None``: made from embeddings this trace did not see encoded)."""
        flat = [entry for run in self._runs for entry in run]
        return [self._named.get(i, entry[0] if entry else None) for i, entry in enumerate(flat)]

    def set_prompt(self, i: int, prompt: str) -> None:
        """Name the prompt of sample ``i`` (e.g. one generated from edited ``prompt_embeds``)."""
        i = self._sample(i)
        if not isinstance(prompt, str):
            raise TraceError(f"a prompt must be a string, not {type(prompt).__name__}")
        self._named[i] = prompt

    def _sample(self, i: int) -> int:
        n = len(self.prompts)
        if not isinstance(i, numbers.Integral) or isinstance(i, bool) or not -n <= i < n:
            raise TraceError(f"sample {i!r} is out of range: this trace holds {n} samples")
        return int(i) % n

    def classes(self, i: int = 0) -> TokenClasses:
        """Token classes ([SOS], semantic, [EOS], padding) of sample ``i``'s prompt, as the pipeline tokenized it."""
        i = self._sample(i)
        entry = [e for run in self._runs for e in run][i]
        length = self.recorder.token_mass().shape[-1]
        if i in self._named:
            text = self._named[i]
            if self.fam == "pixart":
                text = self.pipe._text_preprocessing(text, clean_caption=False)[0]
        elif entry is None:
            raise TraceError(f"sample {i} was generated from prompt_embeds this trace did not see encoded, so its "
                             "words are unknown: encode it inside the `with` block or call set_prompt(i, prompt)")
        else:
            text, length = entry[1], entry[2]
        if (text, length) not in self._classes:
            self._classes[text, length] = token_classes(self.pipe.tokenizer, text, max_length=length)
        return self._classes[text, length]

    # -- maps and mass

    def maps(self, step: Step = None, resolution: int | Size | None = None) -> torch.Tensor:
        """Maps ``(samples, tokens, h, w)``: the mean over steps (``step=None``), one step, or the mean of some.

        ``step`` indexes the recorded steps (negative from the end; a slice or a list averages them).
        ``resolution=None`` averages every recorded size, upsampled to the largest.
        """
        if step is None:
            return self.recorder.mean_maps(resolution).float()
        if not self.recorder.aggregator.per_step:
            raise TraceError("this trace kept only the mean over steps (per_step=False): use step=None")
        per_step = self.recorder.maps(resolution)
        n = per_step.shape[0]
        if isinstance(step, numbers.Integral) and not isinstance(step, bool):
            if not -n <= step < n:
                raise TraceError(f"step {step} is out of range: {n} steps were recorded")
            return per_step[int(step)].float()
        chosen = list(range(n))[step] if isinstance(step, slice) else [int(s) for s in step]
        if not chosen or not all(-n <= s < n for s in chosen):
            raise TraceError(f"steps {step!r} select nothing in the {n} recorded steps")
        return per_step[chosen].float().mean(dim=0)

    def word_map(self, word: str, i: int = 0, step: Step = None, resolution: int | Size | None = None) -> torch.Tensor:
        """The ``(h, w)`` map of ``word`` in sample ``i``: the sum over its token pieces (see :meth:`maps`)."""
        classes = self.classes(i)
        try:
            positions = classes.positions_of(word)
        except ValueError:
            words = [w for w, _ in classes.words()]
            raise TraceError(f"{word!r} is not a word of sample {self._sample(i)}'s prompt {classes.prompt!r}; "
                             f"its words are {words}") from None
        return token_map(self.maps(step, resolution)[self._sample(i)], positions)

    def word_maps(self, i: int = 0, step: Step = None, resolution: int | Size | None = None) -> dict[str, torch.Tensor]:
        """Label -> ``(h, w)`` map for sample ``i``: ``[SOS]``, each word, ``[EOS]``, mean padding."""
        return word_maps(self.maps(step, resolution)[self._sample(i)], self.classes(i))

    def class_mass(self, resolution: int | Size | None = None):
        """Long table (pandas) of attention mass per sample, step and token class.

        Columns ``sample, prompt, step, timestep, class, mass`` (those of
        :func:`helpers.analysis.mass.class_mass_table`); classes are :data:`~helpers.analysis.mass.MASS_CLASSES`.
        """
        import pandas as pd

        mass = self.recorder.token_mass(resolution).numpy()
        timesteps, rows = self.timesteps, []
        for i, prompt in enumerate(self.prompts):
            for name, values in class_mass(mass[:, i], self.classes(i)).items():
                rows += [(i, prompt, s, timesteps[s], name, float(v)) for s, v in enumerate(values)]
        return pd.DataFrame(rows, columns=["sample", "prompt", "step", "timestep", "class", "mass"])

    @property
    def timesteps(self) -> list[float]:
        """Timesteps of the recorded steps."""
        return self.recorder.timesteps

    @property
    def sizes(self) -> list[Size]:
        """Map sizes recorded, largest first."""
        return self.recorder.sizes

    # -- export

    def save(self, path: str | Path, png: bool = False) -> Path:
        """Write every recorded array to ``path`` (``.npz``, no pickles) and, with ``png``, word maps as PNGs.

        Keys: ``maps_{h}x{w}`` (``(steps, samples, tokens, h, w)``, or ``mean_maps_{h}x{w}`` without
        per-step maps), ``token_mass`` ``(steps, samples, tokens)``, ``timesteps``, ``prompts``, and per
        sample and position ``token_ids`` (-1 unknown), ``tokens`` and ``token_class``
        (sos/semantic/eos/padding, empty unknown). PNGs go to the folder ``path`` without its suffix, one
        per sample and word (mean over steps, scaled to 0..255 per map).
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        per_step = self.recorder.aggregator.per_step
        for h, w in self.sizes:
            maps = self.recorder.maps((h, w)) if per_step else self.recorder.mean_maps((h, w))
            arrays[f"{'' if per_step else 'mean_'}maps_{h}x{w}"] = maps.float().numpy()
        mass = self.recorder.token_mass()
        arrays["token_mass"], arrays["timesteps"] = mass.numpy(), np.asarray(self.timesteps, dtype=np.float64)
        prompts = self.prompts
        arrays["prompts"] = np.asarray([p or "" for p in prompts], dtype=str)
        n, length = len(prompts), mass.shape[-1]
        ids = np.full((n, length), -1, np.int64)
        tokens, kinds = np.full((n, length), "", object), np.full((n, length), "", object)
        for i, prompt in enumerate(prompts):
            if prompt is None:
                continue
            c = self.classes(i)
            ids[i], tokens[i] = c.ids, c.tokens
            for name, positions in c.groups().items():
                kinds[i, list(positions)] = name
        arrays.update(token_ids=ids, tokens=tokens.astype(str), token_class=kinds.astype(str))
        np.savez_compressed(path, **arrays)
        if png:
            self._save_png(path.with_suffix(""), prompts)
        return path

    def _save_png(self, folder: Path, prompts: list[str | None]) -> None:
        from PIL import Image

        folder.mkdir(parents=True, exist_ok=True)
        for i, prompt in enumerate(prompts):
            if prompt is None:
                continue
            for label, heat in self.word_maps(i).items():
                heat = heat.numpy()
                span = float(heat.max() - heat.min()) or 1.0
                pixels = np.round(255 * (heat - heat.min()) / span).astype(np.uint8)
                name = "".join(ch if ch.isalnum() else "_" for ch in label)
                Image.fromarray(pixels).save(folder / f"sample{i}_{name}.png")


@contextmanager
def trace(
    pipe,
    resolutions: Sequence[int | Size] | None = None,
    per_step: bool = True,
    layer_filter: Callable[[str], bool] | None = None,
    store_dtype: torch.dtype = torch.float32,
) -> Iterator[Trace]:
    """Trace the cross-attention of every pipeline call made inside the block (SD 1.x/2.x, SDXL, PixArt).

    Args:
        resolutions: map heights to record; ``None`` (default) records every cross-attention layer.
        per_step: keep a map per step (else only the mean over steps; the mass is kept per step).
        layer_filter: optional predicate on layer names (e.g. ``lambda n: "up_blocks" in n``).
        store_dtype: dtype of the kept maps (float16 halves the memory).

    Raises:
        TraceError: ``pipe`` is not a supported diffusers pipeline.
    """
    try:
        family(pipe)
    except LoadingError as error:
        raise TraceError(f"trace cannot hook a {type(pipe).__name__}: {error}") from None
    with record_attention(pipe, resolutions, per_step, layer_filter, None, store_dtype,
                          clock=SchedulerClock(pipe)) as rec:
        tr = Trace(pipe, rec)
        own = vars(pipe).get("encode_prompt")  # an instance attribute already there (e.g. an outer trace)
        handle = denoiser(pipe).register_forward_pre_hook(tr._pre_hook, with_kwargs=True)
        try:
            pipe.encode_prompt = tr._wrap(pipe.encode_prompt)
            yield tr
        finally:
            handle.remove()
            if own is None:
                vars(pipe).pop("encode_prompt", None)
            else:
                pipe.encode_prompt = own
