"""scripts/profile_unet_training.py: the UNet stage's step timed in parts, variants side by side (issue 19)."""

import pandas as pd
import pytest
import torch
from conftest import load_script


def test_profile_writes_parts_and_ratios(tmp_path):
    script = load_script("profile_unet_training")
    threads = torch.get_num_threads()
    try:
        md = script.main(["--variants", "baseline", "channels_last", "text_cached", "--rounds", "2", "--steps", "1",
                          "--batch", "2", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    table = pd.read_csv(md.with_suffix(".csv")).set_index("method")
    assert list(table.index) == ["baseline", "channels_last", "text_cached"]
    assert table.loc["baseline", "ratio"] == 1.0 and (table["seconds"] > 0).all()
    parts = table[["text_s", "forward_s", "backward_s", "update_s", "ema_s"]].sum(axis=1)
    assert (parts <= table["seconds"] * 1.01).all()  # 2 rounds: medians are means
    assert "Baseline's step: text" in md.read_text()


def test_profile_needs_the_baseline(tmp_path):
    script = load_script("profile_unet_training")
    with pytest.raises(SystemExit, match="must include baseline"):
        script.main(["--variants", "channels_last", "--out", str(tmp_path)])
