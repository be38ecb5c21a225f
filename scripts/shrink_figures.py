#!/usr/bin/env python
"""Re-encode the tracked figures small: PNGs under results/ and the PNG outputs embedded in notebooks/.

    python scripts/shrink_figures.py            # rewrite in place, print the bytes saved

Each PNG gets a 256-colour palette and at most 1600 px on its longest side
(``helpers.plots.grids.compress_png``); numbers and text outputs are untouched. New figures are
written this way already (``NotebookContext.save_figure`` / ``show``); this script is for files made
before, and is idempotent.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpers.plots.grids import compress_png  # noqa: E402


def shrink_png_file(path: Path) -> int:
    data = path.read_bytes()
    new = compress_png(data)
    if len(new) < len(data):
        path.write_bytes(new)
    return len(data) - len(new)


def shrink_notebook(path: Path) -> int:
    text = path.read_text()
    nb = json.loads(text)
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" in data:
                raw = base64.b64decode(data["image/png"])
                new = compress_png(raw)
                if len(new) < len(raw):
                    data["image/png"] = base64.b64encode(new).decode() + "\n"
                    output.setdefault("metadata", {}).pop("image/png", None)
    out = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    path.write_text(out)
    return len(text.encode()) - len(out.encode())


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    targets = [Path(a) for a in args] or sorted((ROOT / "results").rglob("*.png")) + sorted((ROOT / "notebooks").glob("*.ipynb"))
    saved = 0
    for path in targets:
        saved += shrink_notebook(path) if path.suffix == ".ipynb" else shrink_png_file(path)
    print(f"{len(targets)} files, {saved / 2**20:.1f} MiB saved")
    return saved


if __name__ == "__main__":
    main()
