"""helpers.analysis.token_study / helpers.plots.tokens (notebook 03's study): the [EOS]-class split, the summaries
and the per-token labels on synthetic tensors; on a random-tiny recording the same tables as the notebook's former
inline code, and the figures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from helpers.analysis import token_study as study  # noqa: E402
from helpers.text.tokens import TokenClasses  # noqa: E402

L = 8  # tokens


def classes(prompt="a red circle", n_words=3):
    words = ("a", "red</w>", "circle</w>")[:n_words]
    eos = 1 + n_words
    return TokenClasses(prompt=prompt, ids=tuple(range(L)), tokens=("<|startoftext|>",) + words + ("<|endoftext|>",) * (L - eos),
                        sos=(0,), semantic=tuple(range(1, eos)), eos=(eos,), padding=tuple(range(eos + 1, L)),
                        padding_is_eos=True, has_sos=True)


def by_class(sos=(0.8, 0.6), eos=(0.05, 0.1), padding=(0.05, 0.1)):
    rows = {"sos": sos, "eos": eos, "padding": padding}
    rows["eos_class"] = tuple(e + p for e, p in zip(eos, padding))
    rows["semantic"] = tuple(1 - s - c for s, c in zip(sos, rows["eos_class"]))
    return pd.DataFrame(rows, index=pd.Index([1, 2], name="step"))


def test_padding_offsets_count_positions_after_the_real_eos():
    mass = np.zeros((2, 2, L))  # (steps, prompts, tokens)
    mass[:, 0, 5:] = [[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]]
    mass[:, 1, 4:] = 0.5
    offsets = study.padding_offsets(mass, [classes(), classes("a circle", n_words=2)])
    assert offsets["offset"].tolist() == [1, 2, 3, 1, 2, 3, 4]  # prompt 0: [EOS] at 4; prompt 1: at 3
    np.testing.assert_allclose(offsets["mass"], [0.2, 0.2, 0.2, 0.5, 0.5, 0.5, 0.5])


def test_eos_share_and_the_summary_of_the_class_means():
    table = by_class()
    np.testing.assert_allclose(study.eos_share(table), [0.5, 0.5])
    zero = by_class(eos=(0.0, 0.1), padding=(0.0, 0.1))
    assert np.isnan(study.eos_share(zero).iloc[0])  # no [EOS]-class mass: no share
    assert study.eos_share_text(table) == "real [EOS] share of the [EOS]-class mass: mean 0.500 (min 0.500, max 0.500)"
    described = study.describe_classes(table)
    assert list(described.columns) == ["sos", "semantic", "eos_class", "eos", "padding"]
    assert list(described.index) == ["mean", "min", "max"] and described.loc["min", "sos"] == 0.6

    class Rec:
        sizes = [(8, 8), (4, 4)]

    run = study.MassRun(prompts=["a", "b"], classes=[classes()] * 2, rec=Rec(), images=np.zeros((2, 4, 4, 3)),
                        mass=np.full((2, 2, L), 1 / L), table=pd.DataFrame(), by_class=table, num_steps=2)
    summary = study.mass_summary(run, sos_level=0.7)
    assert list(summary) == ["steps", "prompts", "resolutions", "sos_min", "sos_mean", "semantic_mean", "eos_class_mean",
                             "real_eos_mean", "padding_mean", "steps_with_sos_ge_level"]
    assert summary["steps_with_sos_ge_level"] == 1 and summary["sos_min"] == 0.6 and summary["resolutions"] == "[(8, 8), (4, 4)]"
    assert study.summary_text(summary, 0.7).startswith("[SOS] 0.70 of the mass on average (min 0.60; above the paper's "
                                                      "0.7 at 1 of 2 steps)")
    assert "rows sum to 1: True" in str(run) and "padding is [EOS]: True" in str(run)


def test_probes_need_enough_prompts():
    assert study.encoder_probes(None, [object()] * 7) is None  # no encoder call below 8 prompts


def test_token_kinds_and_labels():
    from helpers.plots.tokens import token_kinds, token_labels

    c = classes()
    assert list(token_kinds(c)) == ["sos", "semantic", "semantic", "semantic", "eos", "padding", "padding", "padding"]
    assert token_labels(c) == ["[SOS]", "a", "red", "circle", "[EOS]", "", "", ""]


@pytest.fixture(scope="module")
def recorded(tiny_pipe):
    return study.record_mass(tiny_pipe, ["a red circle", "a blue star on the left"], None, seed=0,
                             num_inference_steps=2, guidance_scale=7.5)


def test_record_mass_gives_the_tables_of_the_former_inline_code(recorded, tiny_pipe):
    from helpers.analysis.influence import query_entropy, token_statistics
    from helpers.analysis.mass import class_mass_table
    from helpers.generation import generate
    from helpers.hooks.attention import record_attention

    run = recorded
    with record_attention(tiny_pipe, resolutions=None, per_step=False) as rec:  # the notebook's former section 1
        images = generate(tiny_pipe, run.prompts, seed=0, num_inference_steps=2, guidance_scale=7.5)
    table = class_mass_table(rec, run.prompts)
    table["step"] += 1
    np.testing.assert_array_equal(run.images, images)
    np.testing.assert_array_equal(run.mass, rec.token_mass().numpy())
    pd.testing.assert_frame_equal(run.table, table)
    pd.testing.assert_frame_equal(run.by_class, table.pivot_table(index="step", columns="class", values="mass",
                                                                  aggfunc="mean"))
    per_size = study.class_mass_by_resolution(run.rec, run.prompts)
    assert list(per_size.index) == [f"{h}x{w}" for h, w in rec.sizes]
    np.testing.assert_allclose(per_size.sum(axis=1) - per_size["eos_class"], 1.0, atol=1e-4)  # the classes split 1
    stats_table, spread = study.attention_statistics(run)
    maps = rec.mean_maps().numpy()
    pd.testing.assert_frame_equal(stats_table, token_statistics(rec.token_mass().numpy(), run.classes, maps))
    assert spread == query_entropy(maps) and run.mass.shape == (2, 2, 77)


def test_figures(recorded):
    import matplotlib.pyplot as plt

    from helpers.plots import tokens as figures

    run = recorded
    fig = figures.plot_class_mass(run.table, study.SOS_LEVEL)
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == "Cross-attention mass per token class"
    fig = figures.plot_tokens_one_prompt(run.mass[:, 0], run.classes[0])
    assert fig.axes[0].get_title() == "a red circle" and len(fig.axes[0].patches) == 77
    fig = figures.plot_eos_split(run.table, study.padding_offsets(run.mass, run.classes))
    assert [ax.get_title() for ax in fig.axes] == ["[EOS] class split", "Padding copies"]
    plt.close("all")


def test_probe_fit_on_some_records_scored_on_others(tiny_pipe):
    """``score_records``: fit on one set (seen pairs), score on another (held-out pairs); the default split unchanged."""
    import types

    from helpers.analysis import encoder
    from helpers.toy import world

    rng = np.random.default_rng(0)

    def recs(n, held_out):
        out = []
        for _ in range(n):
            text = world.caption(world.sample_scene(rng, held_out=held_out), template=world.FULL_TEMPLATES[0])
            out.append(types.SimpleNamespace(prompt=text, attributes=world.named_attributes(text)))
        return out

    seen, held = recs(12, "exclude"), recs(4, "only")
    split = encoder.probe_accuracy(tiny_pipe, seen, "shape")
    transfer = encoder.probe_accuracy(tiny_pipe, seen, "shape", score_records=held)
    assert set(split) == set(transfer) and all(0 <= v <= 1 for v in transfer.values())
    assert all(v * 4 == round(v * 4) for k, v in transfer.items() if k != "chance")  # scored on the 4 held-out
    with pytest.raises(ValueError, match="score_records has no prompt"):
        encoder.probe_accuracy(tiny_pipe, seen, "shape", score_records=[types.SimpleNamespace(prompt="x", attributes={})])
