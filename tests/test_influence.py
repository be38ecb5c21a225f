"""helpers.analysis.influence: attention statistics by class on synthetic tensors, the causal conditions on random-tiny."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers.analysis.influence import (CONDITIONS, InfluenceRun, condition_prompt, influence_table, query_entropy,
                                        run_conditions, token_statistics)
from helpers.text.tokens import TokenClasses

L = 8  # tokens


def classes(prompt="a red circle"):
    return TokenClasses(prompt=prompt, ids=tuple(range(L)), tokens=("<s>", "a", "red", "circle") + ("</s>",) * 4,
                        sos=(0,), semantic=(1, 2, 3), eos=(4,), padding=(5, 6, 7), padding_is_eos=True, has_sos=True)


def test_uniform_attention_is_one_times_uniform_with_full_entropy():
    mass = np.full((5, 3, L), 1 / L)  # (steps, prompts, tokens)
    maps = np.full((3, L, 4, 4), 1 / L)
    table = token_statistics(mass, [classes()] * 3, maps)
    np.testing.assert_allclose(table["per_token_vs_uniform"], 1.0)
    np.testing.assert_allclose(table["entropy"], 1.0)
    assert table.loc["sos", "mass"] == pytest.approx(1 / L) and table.loc["eos_class", "mass"] == pytest.approx(4 / L)
    assert table.loc["semantic", "positions"] == 3 and (table["n"] == 3).all()
    assert query_entropy(maps).value == pytest.approx(1.0)


def test_a_sink_is_many_times_uniform_and_a_spot_has_no_entropy():
    rng = np.random.default_rng(0)
    mass = rng.random((4, 3, L)) * 0.02
    mass[:, :, 0] = 0.9
    mass /= mass.sum(-1, keepdims=True)
    maps = np.full((3, L, 4, 4), 1 / L)
    maps[:, 3] = 0.0
    maps[:, 3, 1, 2] = 1.0  # the object word looks at one pixel
    table = token_statistics(mass, [classes()] * 3, maps)
    assert table.loc["sos", "per_token_vs_uniform"] > 5 and table.loc["sos", "mass_lo"] < table.loc["sos", "mass"]
    assert table.loc["semantic", "entropy"] == pytest.approx(2 / 3)  # two uniform words and one spot
    onehot = np.zeros((2, L, 2, 2))
    onehot[:, 0] = 1.0
    assert query_entropy(onehot).value == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="prompts"):
        token_statistics(mass, [classes()] * 2)


def _run(readings, l1):
    from helpers.analysis.alignment import PromptPair
    from helpers.promptsets import PromptRecord

    pairs = [PromptPair(PromptRecord("a red circle", {"shape": "circle", "color": "red"}),
                        PromptRecord("a red star", {"shape": "star", "color": "red"}))] * 4
    return InfluenceRun(pairs, readings, l1, {}, {})


def test_influence_table_counts_changes_follows_and_stays():
    a = [{"shape": "circle", "color": "red"}] * 4
    switched = [{"shape": "star", "color": "red"}] * 3 + [{"shape": "circle", "color": "red"}]
    run = _run({"A": a, "switch [EOS] class": switched}, {"A": np.zeros(4), "switch [EOS] class": np.full(4, 0.2)})
    table = influence_table(run, attributes=("shape", "color")).set_index(["condition", "measure"])
    row = table.loc[("switch [EOS] class", "shape changed")]
    assert row["value"] == 0.75 and row["n"] == 4 and row["method"] == "Wilson" and row["lo"] < 0.75 < row["hi"]
    assert table.loc[("switch [EOS] class", "shape follows B"), "value"] == 0.75
    assert table.loc[("switch [EOS] class", "shape stays A"), "value"] == 0.25
    assert ("switch [EOS] class", "color follows B") not in table.index  # A and B agree on colour: not scored
    assert table.loc[("A", "shape changed"), "value"] == 0
    assert table.loc[("switch [EOS] class", "L1 to A's image"), "value"] == pytest.approx(0.2)
    assert table.loc[("switch [EOS] class", "L1 to A's image"), "class"] == "eos_class"
    no_reader = influence_table(_run(None, {"A": np.zeros(4), "zero words": np.arange(4.0)}))
    assert list(no_reader["measure"]) == ["L1 to A's image"] * 2


@pytest.fixture(scope="module")
def encoded(tiny_pipe):
    from helpers.text.surgery import encode

    return encode(tiny_pipe, "a red circle"), encode(tiny_pipe, "a blue star")


@pytest.mark.parametrize("name", [c for c in CONDITIONS if c.startswith("zero")])
def test_zero_conditions_zero_exactly_their_class(encoded, name):
    a, b = encoded
    out = condition_prompt(name, a, b).embeds
    positions = {"zero [SOS]": a.sos, "zero words": a.semantic, "zero [EOS] class": a.eos_class,
                 "zero real [EOS]": a.eos_class[:1], "zero padding": a.eos_class[1:]}[name]
    rest = [i for i in range(a.length) if i not in positions]
    assert torch.count_nonzero(out[list(positions)]) == 0
    torch.testing.assert_close(out[rest], a.embeds[rest])


def test_switch_conditions_take_b_only_where_asked(encoded):
    a, b = encoded
    padding = condition_prompt("switch padding", a, b).embeds
    torch.testing.assert_close(padding[a.eos_class[0]], a.embeds[a.eos_class[0]])
    real = condition_prompt("switch real [EOS]", a, b).embeds
    torch.testing.assert_close(real[a.eos_class[0]], b.embeds[b.eos_class[0]])
    torch.testing.assert_close(real[list(a.eos_class[1:])], a.embeds[list(a.eos_class[1:])])
    assert condition_prompt("B", a, b) is b
    with pytest.raises(ValueError, match="unknown condition"):
        condition_prompt("switch words", a, b)


def test_run_conditions_on_random_tiny(tiny_pipe):
    from helpers.analysis.alignment import PromptPair
    from helpers.promptsets import PromptRecord

    pairs = [PromptPair(PromptRecord("a red circle", {"shape": "circle"}), PromptRecord("a blue star", {"shape": "star"})),
             PromptPair(PromptRecord("a green heart", {"shape": "heart"}), PromptRecord("a red cross", {"shape": "cross"}))]

    def read(images):
        return [{"shape": "circle" if float(np.mean(im)) > 0.5 else "star"} for im in images]

    run = run_conditions(tiny_pipe, pairs, read, conditions=("B", "zero padding", "switch real [EOS]"),
                         num_inference_steps=2, n_show=1)
    assert run.conditions == ["A", "B", "zero padding", "switch real [EOS]"]
    assert np.all(run.l1_to_a["A"] == 0) and np.all(run.l1_to_a["B"] > 0)
    assert run.examples["B"].shape[0] == 1 and len(run.readings["zero padding"]) == 2
    table = influence_table(run)
    assert set(table["measure"]) == {"L1 to A's image", "shape changed", "shape follows B", "shape stays A"}
    assert table["value"].between(0, math.inf).all()


def test_influence_figures():
    import matplotlib.pyplot as plt
    import pandas as pd

    from helpers.plots.influence import plot_mass_vs_influence, plot_token_statistics

    stats_table = token_statistics(np.full((2, 3, L), 1 / L), [classes()] * 3, np.full((3, L, 2, 2), 1 / L))
    norms = pd.DataFrame({f"{c}_{s}": [1.0, 2.0, 3.0, 4.0] for c in ("embedding_norm", "key_norm", "cosine_to_eos")
                          for s in ("mean", "std")}, index=["sos", "semantic", "eos", "padding"])
    fig = plot_token_statistics(stats_table, norms)
    assert len(fig.axes) == 4
    plt.close(fig)
    a = [{"shape": "circle"}] * 4
    run = _run({"A": a, "switch padding": a, "zero [SOS]": [{"shape": "star"}] * 4},
               {"A": np.zeros(4), "switch padding": np.zeros(4), "zero [SOS]": np.ones(4)})
    fig = plot_mass_vs_influence(stats_table, influence_table(run))
    assert len(fig.axes) == 2
    plt.close(fig)


def test_the_objectives_script_measures_through_the_helper():
    """scripts/text_encoder_objectives.py builds its conditions with helpers.analysis.influence (smoke run)."""
    from conftest import load_script

    script = load_script("text_encoder_objectives")
    out = script.measure("random-tiny", n_pairs=2, steps=2)
    assert out["n_pairs"] == 2 and out["switch all: shape follows B"]["n"] == 2
    assert set(out["attention mass"]) == {"sos", "semantic", "eos", "padding"}
    assert "switch all: shape follows B" in script.markdown({"tiny": out})
