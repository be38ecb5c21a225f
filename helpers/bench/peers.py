"""The peers of the acceleration benchmark, used through their own packages (never re-implemented).

**T-GATE** (``tgate``: caches cross-attention after a gate step and then drops CFG) and **DeepCache**
(``DeepCache``: reuses deep UNet features between full steps). Each is entered as a context manager that
undoes the package's monkey-patching on exit; a peer that is missing or does not support the pipeline is
reported by :func:`peer_status` with the reason.
"""

from __future__ import annotations

import contextlib
import importlib.util
from typing import Callable, Iterator

import torch

from ..hooks.steps import denoiser_sample
from ..loading import denoiser, family


def peer_status(pipe) -> dict[str, str | None]:
    """Per peer (``"tgate"``, ``"deepcache"``): ``None`` when usable on ``pipe``, else the reason."""
    fam = family(pipe)
    status: dict[str, str | None] = {}
    if importlib.util.find_spec("tgate") is None:
        status["tgate"] = "package tgate is not installed (pip install tgate==1.0.0)"
    else:
        status["tgate"] = None
    if importlib.util.find_spec("DeepCache") is None:
        status["deepcache"] = "package DeepCache is not installed (pip install DeepCache==0.1.1)"
    elif fam == "pixart":
        status["deepcache"] = "DeepCache caches UNet skip branches; PixArt-alpha's transformer has none"
    else:
        status["deepcache"] = None
    return status


@contextlib.contextmanager
def forwards_restored(module: torch.nn.Module) -> Iterator[None]:
    """Undo a peer's monkey-patching on exit: every submodule gets back the instance-level
    ``forward`` it had before (none, or e.g. an accelerate offload hook), and T-GATE's
    ``cache`` attributes are dropped."""
    missing = object()
    before = {sub: (sub.__dict__.get("forward", missing), sub.__dict__.get("cache", missing))
              for sub in module.modules()}
    try:
        yield
    finally:
        for sub, saved in before.items():
            for name, value in zip(("forward", "cache"), saved):
                if value is missing:
                    sub.__dict__.pop(name, None)
                else:
                    sub.__dict__[name] = value


@contextlib.contextmanager
def tgate_context(pipe) -> Iterator[Callable]:
    """T-GATE's pipeline call (``pipe.tgate``), with the attention forwards restored afterwards."""
    import tgate

    loader = {"sd": tgate.TgateSDLoader, "sdxl": tgate.TgateSDXLLoader, "pixart": tgate.TgatePixArtAlphaLoader}
    with forwards_restored(denoiser(pipe)):
        loader[family(pipe)](pipe)
        try:
            yield pipe.tgate
        finally:
            del pipe.tgate


def halve_cached(value, rows: int, keep: str):
    """DeepCache's cached block outputs for a batch that shrank from ``2 * rows`` to ``rows``: the
    ``keep`` half (``"uncond"``: the first rows, diffusers' ``[negative; conditional]`` order; ``"cond"``:
    the last) of every tensor with ``2 * rows`` rows, inside tuples, lists and dicts
    (:func:`helpers.hooks.cfg.take_rows`)."""
    from ..hooks.cfg import take_rows

    index = torch.arange(rows) if keep == "uncond" else torch.arange(rows, 2 * rows)
    return take_rows(value, 2 * rows, index)


@contextlib.contextmanager
def deepcache_context(pipe, interval: int, keep: str | None = None) -> Iterator[Callable]:
    """The stock call with DeepCache enabled (cache branch 0, uniform interval), disabled afterwards.

    ``keep`` (``"uncond"`` / ``"cond"``): the composition with a text window (the text pass dropped after
    k steps). DeepCache caches the deep features of the 2B rows of a CFG step; when the batch falls to B
    rows, the kept half of the cache is taken before the next call, so a cached step after k reuses that
    half's features (a denoiser pre-hook, removed on exit).
    """
    from DeepCache import DeepCacheSDHelper

    if keep not in (None, "uncond", "cond"):
        raise ValueError(f"keep must be None, 'uncond' or 'cond', not {keep!r}")
    net = denoiser(pipe)
    with forwards_restored(net):
        helper = DeepCacheSDHelper(pipe=pipe)
        helper.set_params(cache_interval=interval, cache_branch_id=0)
        helper.enable()

        def shrink(module, args, kwargs):
            rows = int(denoiser_sample(args, kwargs).shape[0])
            helper.cached_output = {k: halve_cached(v, rows, keep) for k, v in helper.cached_output.items()}

        handle = net.register_forward_pre_hook(shrink, with_kwargs=True) if keep else None
        try:
            yield pipe.__call__
        finally:
            if handle is not None:
                handle.remove()
            helper.disable()
