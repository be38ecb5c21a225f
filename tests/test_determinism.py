import numpy as np

from helpers.generation import generate


def test_same_seed_same_images(tiny_pipe):
    a = generate(tiny_pipe, ["a red circle", "a blue star"], seed=3, num_inference_steps=4)
    b = generate(tiny_pipe, ["a red circle", "a blue star"], seed=3, num_inference_steps=4)
    assert np.array_equal(a, b)


def test_batch_size_does_not_change_images(tiny_pipe):
    prompts = ["a red circle", "a blue star", "a green heart"]
    a = generate(tiny_pipe, prompts, seed=0, num_inference_steps=3, batch_size=3)
    b = generate(tiny_pipe, prompts, seed=0, num_inference_steps=3, batch_size=1)
    assert np.allclose(a, b, atol=1e-5)


def test_different_seed_different_images(tiny_pipe):
    a = generate(tiny_pipe, "a red circle", seed=0, num_inference_steps=3)
    b = generate(tiny_pipe, "a red circle", seed=1, num_inference_steps=3)
    assert not np.array_equal(a, b)
