"""The package layout holds its rules (issue: helpers/ as subpackages): the map, the toy import rule,
one definition per concept, module size, and a work tree small enough to travel."""

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "helpers"
#: Outside helpers/toy/, only these modules may import it (the default-model loader, the toy-world metrics).
TOY_IMPORTERS = {"helpers/loading.py", "helpers/analysis/metrics.py", "helpers/analysis/alignment.py"}
MAX_LINES = 480  # "about 400 lines at most"
MAX_TREE_MIB = 40.0


def modules() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def test_contributing_map_lists_every_module_and_nothing_else():
    text = (ROOT / "CONTRIBUTING.md").read_text()
    listed = set(re.findall(r"^\| `(helpers/[\w/]+\.py)` \|", text, flags=re.M))
    assert listed == set(modules()), (
        f"CONTRIBUTING.md map is out of date: missing {sorted(set(modules()) - listed)}, "
        f"stale {sorted(listed - set(modules()))}")


def _imports_toy(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])  # e.g. helpers.analysis
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [module] + [f"{module}.{a.name}" for a in node.names]
            if any(n == "helpers.toy" or n.startswith("helpers.toy.") for n in names):
                hits.append(f"line {node.lineno}: from {'.' * node.level}{node.module or ''} import ...")
        elif isinstance(node, ast.Import):
            hits += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name.startswith("helpers.toy")]
    return hits


def test_only_the_loader_and_the_toy_metrics_import_the_toy_world():
    offenders = {}
    for rel in modules():
        if rel.startswith("helpers/toy/") or rel in TOY_IMPORTERS:
            continue
        hits = _imports_toy(ROOT / rel)
        if hits:
            offenders[rel] = hits
    assert not offenders, f"modules outside helpers/toy/ that import it: {offenders}"
    assert all(_imports_toy(ROOT / rel) for rel in TOY_IMPORTERS), "an allowed importer no longer needs the rule"


@pytest.mark.parametrize("name", ["decode_latents", "encode_images", "Trajectory", "random_pipeline", "clip_fid",
                                  "uses_toy_world", "count_evaluations", "initial_latents", "denoiser_inputs",
                                  "EncodedPrompt", "Conditioning", "for_each_batch"])
def test_one_definition_per_concept(name):
    where = []
    for rel in modules():
        tree = ast.parse((ROOT / rel).read_text())
        where += [f"{rel}:{n.lineno}" for n in ast.walk(tree)
                  if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == name]
    assert len(where) <= 1, f"{name} is defined more than once: {where}"


def test_modules_stay_small():
    long = {rel: n for rel in modules() if (n := len((ROOT / rel).read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split by concept): {long}"


def test_the_tracked_tree_fits_the_limit():
    """The lent GPU machine copies at most 64 MiB of work tree: the tracked files stay under 40 MiB."""
    try:
        files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    paths = [ROOT / p for p in files.decode().split("\0") if p]
    sizes = {p: p.stat().st_size for p in paths if p.is_file()}
    total = sum(sizes.values()) / 2**20
    biggest = sorted(sizes, key=sizes.get, reverse=True)[:5]
    assert total < MAX_TREE_MIB, (f"tracked files take {total:.1f} MiB (limit {MAX_TREE_MIB}); largest: "
                                  + ", ".join(f"{p.relative_to(ROOT)} {sizes[p] / 2**20:.1f} MiB" for p in biggest))
