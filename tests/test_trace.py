"""trace: the maps of the recorder it wraps, prompts captured from the pipeline call, every family, steps from
the scheduler, everything restored after an exception, word maps, the npz export."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers import guidance as g
from helpers.analysis.mass import class_mass_table, token_map
from helpers.generation import generate
from helpers.hooks.attention import attention_resolutions, record_attention
from helpers.hooks.steps import SchedulerClock, StepClock
from helpers.hooks.trace import TraceError, trace
from helpers.loading import denoiser, scheduler_set
from helpers.text.conditioning import embedding_dim
from helpers.toy.random_pipelines import KINDS

PROMPTS = ["a red circle", "a large blue star on the left"]
N = 2


def _generate(pipe, **kwargs) -> np.ndarray:
    return generate(pipe, PROMPTS, seed=0, num_inference_steps=N, progress=False, **kwargs)


def test_same_maps_as_the_recorder_it_wraps(tiny_pipe):
    with record_attention(tiny_pipe, resolutions=None) as rec:
        plain = _generate(tiny_pipe, batch_size=1)  # two pipeline calls: two runs, concatenated
    with trace(tiny_pipe) as tr:
        traced = _generate(tiny_pipe, batch_size=1)
    assert np.array_equal(plain, traced)
    assert torch.equal(tr.recorder.maps(), rec.maps()) and torch.equal(tr.maps(), rec.mean_maps())
    assert torch.equal(tr.maps(step=1), rec.maps()[1].float()) and torch.equal(tr.maps(step=[0, 1]), tr.maps())
    assert torch.equal(tr.recorder.token_mass(), rec.token_mass())
    assert tr.timesteps == rec.timesteps and tr.sizes == rec.sizes
    assert tr.prompts == PROMPTS
    assert tr.class_mass().equals(class_mass_table(rec, PROMPTS))


@pytest.mark.parametrize("kind", KINDS)
def test_every_family(tiny_pipe, pipes, kind):
    pipe = tiny_pipe if kind == "sd15" else pipes(kind)
    with trace(pipe) as tr:
        _generate(pipe)
    assert tr.prompts == PROMPTS, kind
    maps = tr.maps()
    assert maps.shape[:2] == (len(PROMPTS), tr.classes(0).max_length), kind
    assert {h for h, _ in tr.sizes} == attention_resolutions(denoiser(pipe)), kind  # every resolution by default
    heat = tr.word_map("circle", 0)
    assert torch.equal(heat, token_map(maps[0], tr.classes(0).positions_of("circle"))), kind
    table = tr.class_mass()
    whole = table[table["class"].isin(["sos", "semantic", "eos_class"])].groupby(["sample", "step"])["mass"].sum()
    np.testing.assert_allclose(whole.to_numpy(), 1.0, atol=1e-5)


def test_restores_everything_after_an_exception(tiny_pipe):
    unet = tiny_pipe.unet
    processors, pre, post = dict(unet.attn_processors), dict(unet._forward_pre_hooks), dict(unet._forward_hooks)

    def boom(pipe, step_index, timestep, callback_kwargs):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with trace(tiny_pipe):
            assert "encode_prompt" in vars(tiny_pipe)
            _generate(tiny_pipe, callback_on_step_end=boom)  # fails in the middle of the pipeline call
    after = dict(unet.attn_processors)
    assert after.keys() == processors.keys() and all(after[k] is processors[k] for k in after)
    assert dict(unet._forward_pre_hooks) == pre and dict(unet._forward_hooks) == post
    assert "encode_prompt" not in vars(tiny_pipe)


def test_word_maps_and_clear_errors(tiny_pipe):
    with trace(tiny_pipe) as tr:
        _generate(tiny_pipe)
    star = tr.word_map("star", 1, step=-1)
    assert torch.equal(star, token_map(tr.maps(step=-1)[1], tr.classes(1).positions_of("star")))
    assert {"[SOS]", "large", "blue", "star", "[EOS]"} <= set(tr.word_maps(1))
    with pytest.raises(TraceError, match="'square' is not a word"):
        tr.word_map("square", 0)
    with pytest.raises(TraceError, match="out of range"):
        tr.word_map("circle", 5)
    with pytest.raises(TraceError, match="out of range"):
        tr.maps(step=N)
    with pytest.raises(TraceError, match="cannot hook"):
        with trace(SimpleNamespace()):
            pass


def test_prompts_of_pre_encoded_and_of_unknown_embeddings(tiny_pipe):
    """guidance.sample encodes first and passes prompt_embeds: still labelled; random embeddings are not."""
    noise = torch.randn(1, tiny_pipe.tokenizer.model_max_length, embedding_dim(tiny_pipe),
                        generator=torch.Generator().manual_seed(0))
    with trace(tiny_pipe) as tr:
        g.sample(tiny_pipe, PROMPTS, None, num_inference_steps=N)
        tiny_pipe(prompt_embeds=noise, num_inference_steps=N, output_type="np")
    assert tr.prompts == PROMPTS + [None]
    with pytest.raises(TraceError, match="set_prompt"):
        tr.word_map("circle", 2)
    tr.set_prompt(2, "a red circle")
    assert tr.word_map("circle", 2).shape == tr.maps().shape[-2:]


def test_save_round_trip(tiny_pipe, tmp_path):
    with trace(tiny_pipe) as tr:
        _generate(tiny_pipe)
    path = tr.save(tmp_path / "trace.npz", png=True)
    with np.load(path) as saved:  # allow_pickle=False: plain arrays only
        for h, w in tr.sizes:
            np.testing.assert_array_equal(saved[f"maps_{h}x{w}"], tr.recorder.maps((h, w)).numpy())
        np.testing.assert_array_equal(saved["token_mass"], tr.recorder.token_mass().numpy())
        np.testing.assert_array_equal(saved["timesteps"], tr.timesteps)
        assert saved["prompts"].tolist() == PROMPTS
        for i in range(len(PROMPTS)):
            c = tr.classes(i)
            assert saved["token_ids"][i].tolist() == list(c.ids) and saved["tokens"][i].tolist() == list(c.tokens)
            assert {saved["token_class"][i][p] for p in c.semantic} == {"semantic"}
            assert saved["token_class"][i][c.eos[0]] == "eos"
    assert (tmp_path / "trace" / "sample0_circle.png").is_file()


def test_steps_come_from_the_scheduler(tiny_pipe):
    # DDIM keeps no step index: the position of the timestep in scheduler.timesteps
    scheduler = SimpleNamespace(timesteps=torch.tensor([999, 500, 1]))
    clock, old = SchedulerClock(SimpleNamespace(scheduler=scheduler)), StepClock()
    assert [clock.tick(t) for t in (999.0, 999.0, 500.0)] == ["new_run", "same", "next"]
    assert [old.tick(t) for t in (999.0, 999.0, 500.0)] == ["new_run", "same", "next"]
    scheduler.timesteps = torch.tensor([400, 100])  # a new call that starts below where the last one stopped
    assert clock.tick(400.0) == "new_run" and old.tick(400.0) == "next"
    assert (clock.run, clock.step) == (1, 0)

    class Indexed:  # a scheduler with a step index (DPM-Solver++, Euler): None before its first step
        step_index = property(lambda self: self.index)

        def __init__(self) -> None:
            self.index, self.timesteps = None, torch.tensor([10.5, 3.25])

    indexed = Indexed()
    clock = SchedulerClock(SimpleNamespace(scheduler=indexed))
    assert clock.tick(10.5) == "new_run"
    indexed.index = 1
    assert clock.tick(3.25) == "next"
    indexed.index = None
    assert clock.tick(10.5) == "new_run"
    # a real one: DPM-Solver++ keeps a step index; the trace still gives the recorder's maps
    with scheduler_set(tiny_pipe, "dpm"):
        with record_attention(tiny_pipe, resolutions=None) as rec:
            _generate(tiny_pipe)
        with trace(tiny_pipe) as tr:
            _generate(tiny_pipe)
    assert len(tr.timesteps) == N and torch.equal(tr.recorder.maps(), rec.maps())
