#!/usr/bin/env python
"""Restore an earlier shipped version of the embedded model from git history into a folder.

    python scripts/restore_model.py 3                      # -> .cache/tiny-shapes-sd-v3
    python scripts/restore_model.py 3 --out /tmp/v3
    T2I_MODEL_ID=.cache/tiny-shapes-sd-v3 make notebooks NB_OUT=outputs/v3   # its notebooks, beside the shipped ones

Each version is the `data/models/tiny-shapes-sd` folder of the commit that last shipped it (the
weights are plain git files, so any clone with full history has them). Version 3 is the
`clip_objective=eos_head` text-encoder control of notebook 04's [EOS] experiment.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL_PATH = "data/models/tiny-shapes-sd"
#: version -> the last commit that shipped it as data/models/tiny-shapes-sd
VERSIONS = {"3": "62e4f3306188a5f5399938542f6ef7452e1c8a47"}


def restore(version: str, out: Path | None = None) -> Path:
    """Extract version ``version`` of the model folder into ``out`` (default .cache/tiny-shapes-sd-v<version>)."""
    if version not in VERSIONS:
        raise SystemExit(f"unknown model version {version!r}; restorable versions: {', '.join(sorted(VERSIONS))}")
    out = out or ROOT / ".cache" / f"tiny-shapes-sd-v{version}"
    try:
        archive = subprocess.run(["git", "archive", "--format=tar", VERSIONS[version], MODEL_PATH], cwd=ROOT,
                                 capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise SystemExit(f"cannot read commit {VERSIONS[version][:10]} from git history ({err}): "
                         "restore needs a clone with full history") from None
    out.mkdir(parents=True, exist_ok=True)
    prefix = MODEL_PATH + "/"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.startswith(prefix):
                target = out / member.name[len(prefix):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
    print(f"model version {version} -> {out}")
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version", choices=sorted(VERSIONS))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    return restore(args.version, args.out)


if __name__ == "__main__":
    main()
