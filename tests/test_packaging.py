"""Packaging (issue 22): an installed wheel works outside the checkout, every third-party import
is declared, the notebooks' install cell finds this distribution, and the Makefile's real-model
path leaves the hub online and never writes over notebooks/."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DIST_NAME = PYPROJECT["project"]["name"]
REPO_URL = PYPROJECT["project"]["urls"]["Repository"]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

#: Import name -> distribution name where they differ (or the package is not installed here).
IMPORT_TO_DIST = {
    "PIL": "pillow",
    "yaml": "pyyaml",
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "cv2": "opencv-python",
    "IPython": "ipython",
    "torch_fidelity": "torch-fidelity",
    "dateutil": "python-dateutil",
    "attr": "attrs",
    "bs4": "beautifulsoup4",
}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement(req: str) -> tuple[str, str]:
    """(normalized name, the rest: version specifiers / markers) of a requirement string."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)", req)
    return _normalize(match.group(1)), match.group(2).strip()


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0])[:3])


BASE = dict(_requirement(r) for r in PYPROJECT["project"]["dependencies"])
EXTRAS = {name: dict(_requirement(r) for r in reqs) for name, reqs in PYPROJECT["project"]["optional-dependencies"].items()}
DECLARED = set(BASE).union(*EXTRAS.values())


# --- (b) every third-party import is declared ---------------------------------------------------


def _imported_names(path: Path) -> set[str]:
    """Top-level names of absolute imports, plus optional packages probed by
    ``find_spec("x")`` / ``import_module("x")`` (string literals)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if func in ("find_spec", "import_module") and isinstance(node.args[0].value, str):
                names.add(node.args[0].value.split(".")[0])
    return names


def _distribution(import_name: str) -> str:
    if import_name in IMPORT_TO_DIST:
        return _normalize(IMPORT_TO_DIST[import_name])
    installed = importlib.metadata.packages_distributions().get(import_name)
    return _normalize(installed[0] if installed else import_name)


#: Found (never imported) and installed by the Makefile with ``pip install --no-deps``: declared there, not in
#: pyproject, because its own dependencies (torchvision) do not load beside the CPU torch.
NO_DEPS = {"open_clip": "open_clip_torch (the real CLIP BPE merges for helpers.text.sd_tokenizer)"}


def test_every_third_party_import_is_declared():
    files = sorted((ROOT / "helpers").rglob("*.py")) + sorted((ROOT / "scripts").glob("*.py"))
    first_party = {"helpers"} | {p.stem for p in (ROOT / "scripts").glob("*.py")}
    missing = {}
    for path in files:
        for name in _imported_names(path) - first_party - set(sys.stdlib_module_names) - {"__future__"} - set(NO_DEPS):
            if _distribution(name) not in DECLARED:
                missing.setdefault(f"{name} (distribution {_distribution(name)})", []).append(str(path.relative_to(ROOT)))
    assert not missing, f"imported but not declared in pyproject.toml (dependencies or an extra): {missing}"


def test_requirements_pin_every_declared_dependency():
    """requirements.txt (the tested set) pins each run-time and [peers] dependency, at or above
    pyproject's floor."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            name, spec = _requirement(line)
            assert spec.startswith("=="), f"requirements.txt must pin exact versions: {line}"
            pins[name] = spec[2:]
    for name, spec in {**BASE, **EXTRAS["peers"]}.items():
        assert name in pins, f"{name} is declared in pyproject.toml but not pinned in requirements.txt"
        floor = re.search(r">=\s*([\w.]+)", spec)
        if floor:
            assert _version(pins[name]) >= _version(floor.group(1)), f"{name}: pin {pins[name]} below floor {spec}"


def test_torch_floor_stays_low():
    """A GPU machine (Colab) must keep its own CUDA torch: no upper bound, a low floor."""
    spec = BASE["torch"]
    assert "<" not in spec and "==" not in spec
    assert _version(re.search(r">=\s*([\w.]+)", spec).group(1)) <= (2, 1)


# --- (c) the notebooks' install cell --------------------------------------------------------------


def _install_cell(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    return "".join(next(c for c in cells if c["cell_type"] == "code")["source"])


def _string_literals(code: str) -> list[str]:
    """Every string constant of the code, f-strings' literal parts included (comments excluded)."""
    return [node.value for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_install_cell_is_the_same_in_every_notebook():
    cells = {path.name: _install_cell(path) for path in NOTEBOOKS}
    assert len(NOTEBOOKS) >= 7
    assert len(set(cells.values())) == 1, f"the first code cells differ: {sorted(cells)}"


def test_install_cell_detects_this_distribution_and_uses_the_pyproject_url():
    cell = _install_cell(NOTEBOOKS[0])
    ast.parse(cell)
    assert f'distribution("{DIST_NAME}")' in cell, "detect the package by its distribution name"
    assert "find_spec" not in cell, "find_spec('helpers') also finds PyPI's unrelated `helpers` package"
    strings = _string_literals(cell)
    urls = [s for s in strings if s.startswith(("http://", "https://", "git@"))]
    assert urls == [REPO_URL], f"the cell's repository URL must be pyproject's [project.urls] Repository: {urls}"
    # never replaces the machine's (CUDA) torch: installs the package (torch>=2.1 kept), not torch
    assert not any("torch" in s or "requirements" in s for s in strings), "the cell must not install torch"
    extras = {e for s in strings for group in re.findall(r"\[([\w,\s-]+)\]$", s) for e in group.split(",")}
    assert extras <= set(EXTRAS), f"unknown extras in the install cell: {extras - set(EXTRAS)}"


def test_colab_badges_point_at_the_repository():
    repo_path = REPO_URL.removeprefix("https://github.com/")
    for path in NOTEBOOKS:
        first = "".join(json.loads(path.read_text())["cells"][0]["source"])
        badges = re.findall(r"colab\.research\.google\.com/github/([^)\s]+)", first)
        assert badges, f"{path.name}: no Colab badge in the first cell"
        assert all(b.startswith(f"{repo_path}/blob/") and b.endswith(f"/notebooks/{path.name}") for b in badges), badges


# --- (d) the Makefile's real-model path (dry run) -----------------------------------------------


def _make_dry_run(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    drop = {"T2I_MODEL_ID", "NB_OUT", "HF_HUB_OFFLINE", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PROFILE"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return subprocess.run(["make", "-n", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def _notebook_recipe(out: str) -> tuple[str, str]:
    """(the papermill part of the printed recipe, the output folder it writes to)."""
    recipe = out[out.index("for nb in"):]
    folders = re.findall(r"\$nb\s+(\S+)/\$\(basename \$nb\)", recipe)
    assert len(folders) == 1, recipe
    return recipe, folders[0]


def test_make_notebooks_with_a_model_id_goes_online_and_elsewhere():
    run = _make_dry_run("notebooks", "T2I_MODEL_ID=some/model")
    assert run.returncode == 0, run.stderr
    recipe, folder = _notebook_recipe(run.stdout)
    assert "HF_HUB_OFFLINE=1" not in run.stdout
    assert "T2I_MODEL_ID='some/model'" in recipe
    assert (ROOT / folder).resolve() != (ROOT / "notebooks").resolve()
    assert "some--model" in folder
    assert "-p PROFILE" not in recipe and " -p " not in recipe, "papermill must not inject parameters"


def test_make_notebooks_on_the_embedded_model_stays_offline():
    for args in [(), ("T2I_MODEL_ID=embedded",)]:
        run = _make_dry_run("notebooks", *args)
        assert run.returncode == 0, run.stderr
        recipe, folder = _notebook_recipe(run.stdout)
        assert "HF_HUB_OFFLINE=1" in recipe
        assert (ROOT / folder).resolve() == (ROOT / "notebooks").resolve()


def test_make_test_stays_offline_and_notebooks_are_never_overwritten_by_a_model():
    run = _make_dry_run("test", "T2I_MODEL_ID=some/model")
    assert run.returncode == 0, run.stderr
    assert "HF_HUB_OFFLINE=1" in run.stdout
    run = _make_dry_run("notebooks", "T2I_MODEL_ID=some/model", "NB_OUT=notebooks")
    assert run.returncode != 0 and "overwrite" in run.stderr


# --- (a) the wheel, installed outside the checkout ----------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of a copy of the working tree (built in the copy, so stale build/ folders of the
    checkout cannot leak into it and the checkout gets no build output)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "results", "outputs", "__pycache__", ".pytest_cache",
        ".cache", ".ipynb_checkpoints"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", ".",
                    "-w", str(work / "dist")], cwd=src, check=True, timeout=300)
    (path,) = (work / "dist").glob("*.whl")
    return path


def test_wheel_carries_every_module_and_the_metadata(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "helpers").rglob("*.py")}
    assert modules - names == set(), "modules missing from the wheel (subpackage discovery?)"
    outside = {n.split("/")[0] for n in names} - {"helpers"} - {n.split("/")[0] for n in names if ".dist-info/" in n}
    assert outside == set(), f"the wheel must carry only helpers/: {outside}"
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert f"Project-URL: Repository, {REPO_URL}" in text
    assert "Requires-Dist: pandas" in text and "Requires-Dist: tabulate" in text


@pytest.mark.slow
def test_wheel_install_loads_the_embedded_model_outside_the_checkout(wheel, tmp_path):
    """pip install of the wheel (no checkout around it) + T2I_DATA_DIR: load_pipeline() works,
    results would go to ./results, and without the setting the error names T2I_DATA_DIR."""
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(env_dir)], check=True, timeout=180)
    python = env_dir / ("Scripts" if os.name == "nt" else "bin") / "python"
    # A venv made from a venv sees the *base* interpreter's site-packages only: add those of the
    # interpreter running the tests (.venv: torch, diffusers, ...) by a .pth file.
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    parent_sites = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (Path(site) / "_t2i_test_parent_env.pth").write_text("\n".join(parent_sites) + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, timeout=300)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = textwrap.dedent("""
        import json, os
        import helpers
        from helpers import load_pipeline, resources
        data = os.environ.pop("T2I_DATA_DIR")
        try:
            resources.data_dir()
            error = ""
        except FileNotFoundError as err:
            error = str(err)
        os.environ["T2I_DATA_DIR"] = data
        pipe = load_pipeline()
        print(json.dumps({"helpers": helpers.__file__, "pipe": type(pipe).__name__, "error": error,
                          "results": str(resources.results_dir()), "model": str(resources.model_dir())}))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("T2I_MODEL_ID", "T2I_RESULTS_DIR", "PYTHONPATH")}
    env.update(T2I_DATA_DIR=str(ROOT / "data"), HF_HUB_OFFLINE="1")
    run = subprocess.run([str(python), "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    info = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(info["helpers"]).resolve().is_relative_to(env_dir.resolve()), "imported the checkout, not the wheel"
    assert info["pipe"] == "StableDiffusionPipeline"
    assert "T2I_DATA_DIR" in info["error"]
    assert Path(info["results"]) == elsewhere.resolve() / "results"
    assert Path(info["model"]) == (ROOT / "data" / "models" / "tiny-shapes-sd").resolve()
