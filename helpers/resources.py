"""Where the project's data (embedded model, prompt sets) and results live. Standard library only.

>>> model_dir()      # <data>/models/tiny-shapes-sd
>>> prompt_dir()     # <data>/prompts
>>> results_dir()    # <results>/ (callers create their sub-folders)

Data, first found wins:

1. ``$T2I_DATA_DIR`` when set (an explicit setting wins; it must then be a folder);
2. the repository's ``data/`` when this package runs from a checkout (``pip install -e .``,
   ``make``, a notebook next to ``helpers/``).

A wheel (``pip install .`` or from git) does not carry the ~31 MB embedded model: point
``T2I_DATA_DIR`` at the ``data/`` folder of a clone. Results go to ``$T2I_RESULTS_DIR``, else the
checkout's ``results/``, else ``./results`` in the current directory (never beside site-packages).
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV_VAR = "T2I_DATA_DIR"
RESULTS_ENV_VAR = "T2I_RESULTS_DIR"
EMBEDDED_MODEL = "tiny-shapes-sd"

#: The folder that holds the top-level ``helpers`` package (one level per dot of this module's name,
#: so the answer stays right if this module moves into a subpackage).
_PACKAGE_PARENT = Path(__file__).resolve().parents[__name__.count(".")]


class DataNotFoundError(FileNotFoundError):
    """The data folder is missing; the message says which setting to use."""


def checkout_root() -> Path | None:
    """The repository root when running from a checkout (``pyproject.toml`` and ``data/`` beside
    ``helpers/``), else ``None`` (an installed wheel)."""
    root = _PACKAGE_PARENT
    return root if (root / "pyproject.toml").is_file() and (root / "data").is_dir() else None


def data_dir() -> Path:
    """The data folder (``models/``, ``prompts/``): ``$T2I_DATA_DIR``, else the checkout's ``data/``.

    Raises:
        DataNotFoundError: neither exists.
    """
    setting = os.environ.get(DATA_ENV_VAR, "").strip()
    if setting:
        path = Path(setting).expanduser().resolve()
        if not path.is_dir():
            raise DataNotFoundError(f"{DATA_ENV_VAR}={setting} is not a folder: point it at the data/ folder of a clone of this repository.")
        return path
    root = checkout_root()
    if root is None:
        raise DataNotFoundError(
            f"This installed copy has no data folder (embedded model, prompt sets): set {DATA_ENV_VAR} "
            "to the data/ folder of a clone of this repository."
        )
    return root / "data"


def model_dir(name: str = EMBEDDED_MODEL) -> Path:
    """The folder of a model shipped in ``<data>/models/`` (default: the embedded model)."""
    return data_dir() / "models" / name


def prompt_dir() -> Path:
    """The folder of the prompt sets, ``<data>/prompts/``."""
    return data_dir() / "prompts"


def results_dir() -> Path:
    """Where results go: ``$T2I_RESULTS_DIR``, else the checkout's ``results/``, else ``./results``
    in the current directory (not created here)."""
    setting = os.environ.get(RESULTS_ENV_VAR, "").strip()
    root = checkout_root()
    if setting:
        path = Path(setting).expanduser()
    elif root is not None:
        path = root / "results"
    else:
        path = Path.cwd() / "results"
    return path.resolve()
