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
