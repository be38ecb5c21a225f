"""helpers.analysis.decisions on synthetic readings (the rule) and on a random-tiny trajectory (the plumbing)."""

import numpy as np
import pytest

from helpers.analysis.decisions import blur_control, decision_steps, read_trajectory


def seq(values):
    return [[{"shape": v}] for v in values]


@pytest.mark.parametrize("values, decided", [
    (["a", "a", "a", "a"], 0),          # decided from the first step
    (["b", "a", "a", "a"], 1),
    (["a", "b", "a", "a"], 2),          # a flip back counts: it must stay
    (["b", "b", "b", "a"], 3),          # only the final image
])
def test_decision_step_is_where_the_reading_settles(values, decided):
    table = decision_steps(seq(values), ["shape"])
    assert table.loc[0, "decided_at"] == decided and table.loc[0, "final"] == "a"
    assert table.loc[0, "fraction"] == pytest.approx(decided / 3)


def test_bad_readings():
    with pytest.raises(ValueError, match="at least 2"):
        decision_steps(seq(["a"]), ["shape"])
    with pytest.raises(ValueError, match="one reading per sample"):
        decision_steps([[{"shape": "a"}], []], ["shape"])


def test_blur_control_and_trajectory_readings(tiny_pipe):
    from helpers.hooks.trajectory import trajectory

    images, traj = trajectory(tiny_pipe, ["a red circle", "a blue star"], num_inference_steps=3)

    def read(batch):
        return [{"shape": "circle" if float(np.mean(im)) > 0.5 else "star"} for im in batch]

    readings = read_trajectory(tiny_pipe, traj, read)
    assert len(readings) == 4 and all(len(r) == 2 for r in readings)
    control = blur_control(read, images, [{"shape": "circle"}, {"shape": "star"}], sigmas=(0, 2))
    assert list(control.index) == [0.0, 2.0] and control["shape"].between(0, 1).all()


# ----------------------------------------------------------- the reader's control and x̂0's blur (synthetic)
def _noise_images(n=3, size=24, seed=0):
    return np.random.default_rng(seed).random((n, size, size, 3)).astype(np.float32)


def sharpness_reader(batch):
    """Reads 'shape' only on sharp images (uniform noise: std 0.29 unblurred, below 0.1 from sigma 1 on)."""
    return [{"shape": "x" if float(np.std(im)) > 0.1 else "y", "color": "c"} for im in batch]


def test_x0_blur_recovers_the_blur_of_the_final_image():
    from helpers.analysis.decisions import _blur, x0_blur

    final = _noise_images()
    sigmas = (0.0, 1.0, 3.0, 6.0)
    steps = np.stack([_blur(final, s) for s in (6.0, 3.0, 1.0, 0.0)])
    np.testing.assert_array_equal(x0_blur(steps, final, sigmas), np.repeat([[6.0], [3.0], [1.0], [0.0]], 3, axis=1))
    with pytest.raises(ValueError, match="do not match"):
        x0_blur(steps[:, :2], final, sigmas)


def test_readable_sigma_is_the_last_sigma_before_the_first_miss():
    import pandas as pd

    from helpers.analysis.decisions import readable_sigma

    control = pd.DataFrame({"shape": [1.0, 0.95, 0.5, 0.96], "color": [0.5, 1.0, 1.0, 1.0], "size": [1, 1, 1, 1.0],
                            "n": [20] * 4}, index=pd.Index([0.0, 1.0, 2.0, 4.0], name="sigma"))
    assert readable_sigma(control, 0.9) == {"shape": 1.0, "color": None, "size": 4.0}  # a later recovery does not count


def test_decision_summary_separates_the_image_from_the_reader():
    from helpers.analysis.decisions import _blur, measure_decisions

    final = _noise_images()
    steps = np.stack([_blur(final, s) for s in (6.0, 3.0, 1.0, 0.0)])  # x̂0 sharpens over N = 4 steps
    truths = [{"shape": "x", "color": "c"}] * len(final)
    result = measure_decisions(steps, final, sharpness_reader, final, truths, ("shape", "color"),
                               sigmas=(0.0, 1.0, 3.0, 6.0))
    assert result.control.loc[0.0, "shape"] == 1 and result.control.loc[1.0, "shape"] == 0
    summary = result.summary(min_accuracy=0.9)
    shape, color = summary.loc["shape"], summary.loc["color"]
    assert shape["n"] == 3 and shape["decided_step"] == 4 and color["decided_step"] == 1
    assert shape["readable_sigma"] == 0 and color["readable_sigma"] == 6
    assert shape["readable_from_step"] == 4 and color["readable_from_step"] == 1
    # shape is decided exactly when x̂0 becomes readable: the step may be the reader's limit; colour from step 1: not
    assert shape["reader_bound"] == 1 and color["reader_bound"] == 0
    assert shape["decided_early"] == 0 and color["decided_early"] == 1 and 0 < color["decided_early_lo"] < 1
    assert shape["decided_step_lo"] == shape["decided_step_hi"] == 4


def test_read_steps_checks_its_inputs():
    from helpers.analysis.decisions import read_steps

    final = _noise_images()
    with pytest.raises(ValueError, match="steps, samples"):
        read_steps(final, final, sharpness_reader)
    with pytest.raises(ValueError, match="final images"):
        read_steps(final[None], final[:2], sharpness_reader)
    assert len(read_steps(final[None], None, sharpness_reader)) == 1


def test_decisions_figure():
    import matplotlib.pyplot as plt

    from helpers.analysis.decisions import _blur, measure_decisions
    from helpers.plots.decisions import plot_decisions

    final = _noise_images()
    steps = np.stack([_blur(final, s) for s in (3.0, 0.0)])
    result = measure_decisions(steps, final, sharpness_reader, final, [{"shape": "x", "color": "c"}] * 3,
                               ("shape", "color"), sigmas=(0.0, 3.0))
    fig = plot_decisions(result)
    assert len(fig.axes) == 3
    plt.close(fig)
    no_control = measure_decisions(steps, final, sharpness_reader, attributes=("shape",))
    fig = plot_decisions(no_control)
    assert len(fig.axes) == 1 and no_control.control is None
    plt.close(fig)
