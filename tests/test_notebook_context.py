import matplotlib

matplotlib.use("Agg")

from helpers import notebook
from helpers.promptsets import load_prompt_set


def test_start_without_model(tmp_path, monkeypatch):
    monkeypatch.setattr(notebook, "RESULTS_DIR", tmp_path)
    ctx = notebook.start("quick", None, 0, name="test_nb", load=False)
    assert ctx.pipe is None and ctx.is_embedded and ctx.prompt_set == "toy"
    assert len(ctx.prompts) == ctx.profile.n_prompts
    text = ctx.verdict(True, "it works")
    assert text.startswith("[SUPPORTED] (quick profile, embedded tiny model)")
    assert (tmp_path / "embedded" / "quick" / "test_nb" / "verdict.txt").exists()
    ctx.save_table({"a": 1.0}, "numbers")
    assert (tmp_path / "embedded" / "quick" / "test_nb" / "numbers.json").exists()


def test_toy_prompt_set_has_ground_truth():
    records = load_prompt_set("toy")
    assert len(records) >= 100
    assert all({"shape", "color", "size", "position", "pattern"} <= set(r.attributes) for r in records)
    assert any(r.held_out for r in records)


def test_show_saves_the_figure_and_closes_it(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    monkeypatch.setattr(notebook, "RESULTS_DIR", tmp_path)
    ctx = notebook.start("quick", None, 0, name="test_show", load=False)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    assert ctx.show(fig, "line") is None
    assert (ctx.results_dir / "line.png").stat().st_size > 0
    assert not plt.fignum_exists(fig.number)
