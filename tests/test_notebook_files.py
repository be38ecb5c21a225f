"""The committed notebooks: CI (nbmake) must run them in the profile of $T2I_PROFILE."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _tagged(cells, tag):
    return [c for c in cells if tag in c.get("metadata", {}).get("tags", [])]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_profile_comes_from_the_environment(path):
    """One `parameters` cell with PROFILE = None and no papermill-injected cell (a committed
    `PROFILE = "full"` would make the quick CI run execute the full profile)."""
    cells = json.loads(path.read_text())["cells"]
    params = _tagged(cells, "parameters")
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    assert "PROFILE = None" in "".join(params[0]["source"])
    assert not _tagged(cells, "injected-parameters"), "run `make notebooks` (no -p PROFILE), or strip the cell"
