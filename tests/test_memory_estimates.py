"""The memory table's arithmetic (torch-free): estimates from a synthetic dry-run record."""

from conftest import load_script

GIB = 2**30


def test_estimates_follow_the_stated_model():
    m = load_script("memory_estimates")
    run = {"weight_bytes": 8 * GIB, "parameters": {"unet": GIB // 2, "vae": GIB // 8},  # largest 2 GiB in fp32
           "paths": {"plain": {"peak_memory_bytes": 11 * GIB}, "fft": {"peak_memory_bytes": None}}, "image_size": 512}
    n = m.family_numbers(run)
    assert n["weights16"] == 4 * GIB and n["largest16"] == 1 * GIB and n["act16"] == 1 * GIB  # (11 - 8 - 1) / 2
    assert m.estimate(n, None, 1) == 5 and m.estimate(n, None, 8) == 12
    assert m.estimate(n, "model", 1) == 2 and m.estimate(n, "sequential", 8) == 9
    text = m.table({"sd15": run})
    assert "| sd15 (512) | fp16, offload none | 8 | 12.0 | fits | fits | fits |" in text
    assert "ESTIMATES" in text and "No dry run yet for: sd21, sdxl, pixart." in text
