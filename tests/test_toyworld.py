import numpy as np
import pytest

from helpers.toy import world as tw


def test_render_is_deterministic_and_shaped():
    scene = tw.sample_scene(np.random.default_rng(0))
    a, mask = tw.render(scene)
    b, _ = tw.render(scene)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8 and mask.shape == (64, 64)
    assert np.array_equal(a, b)
    assert 0.02 < mask.mean() < 0.5


def test_every_attribute_value_renders_differently():
    rng = np.random.default_rng(1)
    base = tw.sample_scene(rng, shape="circle", color="red", pattern="plain")
    for shape in tw.SHAPES:
        other = tw.Scene(**{**base.__dict__, "shape": shape})
        if shape != "circle":
            assert not np.array_equal(tw.render(other)[0], tw.render(base)[0])


def test_held_out_pairs_are_excluded_and_available():
    rng = np.random.default_rng(2)
    train = [tw.sample_scene(rng) for _ in range(500)]
    assert not any((s.shape, s.color) in tw.HELD_OUT_PAIRS for s in train)
    held = [tw.sample_scene(rng, held_out="only") for _ in range(20)]
    assert all((s.shape, s.color) in tw.HELD_OUT_PAIRS for s in held)
    assert len(tw.HELD_OUT_PAIRS) >= 0.1 * len(tw.SHAPES) * len(tw.COLORS)


def test_captions_name_the_ground_truth():
    rng = np.random.default_rng(3)
    for _ in range(50):
        scene = tw.sample_scene(rng)
        text = tw.caption(scene, template=tw.FULL_TEMPLATES[0])
        named = tw.named_attributes(text)
        assert named["shape"] == scene.shape and named["color"] == scene.color
        assert named["position"] == scene.position and named["size"] == scene.size


def test_bad_attribute_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown attribute"):
        tw.sample_scene(np.random.default_rng(0), shape="hexagon")
