"""The layers (services <- core <- loadtests, deploy <- tuner <- bench) and no import cycles.

import-linter checks the contract in `.importlinter`; grimp (its import graph) finds cycles.
Function-level (lazy) imports count as imports for both.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("services", "core", "loadtests", "deploy", "tuner", "bench")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` over the packages under `root`, with the contract in root/.importlinter."""
    command = [
        sys.executable,
        "-c",
        "from importlinter.cli import lint_imports_command; lint_imports_command()",
    ]
    return subprocess.run(
        [*command, "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


CYCLES = """
import json, sys
import grimp
graph = grimp.build_graph(*sys.argv[1:], cache_dir=None)
found = []
for module in sorted(graph.modules):
    for imported in sorted(graph.find_modules_directly_imported_by(module)):
        back = graph.find_shortest_chain(importer=imported, imported=module)
        if back:
            found.append([module, *back])
print(json.dumps(found))
"""


def import_cycles(root: Path) -> list[tuple[str, ...]]:
    """Every module-level import cycle (as the shortest chain back) among the packages under
    `root` (in a subprocess, so the packages are read from `root`, not from this process)."""
    result = subprocess.run(
        [sys.executable, "-c", CYCLES, *PACKAGES],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [tuple(chain) for chain in json.loads(result.stdout)]


def copy_packages(target: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(REPO / package, target / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".importlinter", target / ".importlinter")
    return target


def test_imports_only_point_down() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    root = copy_packages(tmp_path)
    registry = root / "core" / "registry.py"
    registry.write_text(registry.read_text() + "\n\ndef _upward() -> None:\n    import tuner.space  # noqa\n")
    result = lint_imports(root)
    assert result.returncode != 0
    assert "core.registry -> tuner.space" in result.stdout


def test_there_is_no_import_cycle() -> None:
    assert import_cycles(REPO) == []


def test_a_cycle_inside_a_layer_is_found(tmp_path: Path) -> None:
    root = copy_packages(tmp_path)
    space = root / "tuner" / "space.py"
    space.write_text(space.read_text() + "\n\ndef _cycle() -> None:\n    import tuner.study  # noqa\n")
    cycles = import_cycles(root)
    assert ("tuner.space", "tuner.study", "tuner.space") in cycles
