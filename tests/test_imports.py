"""The package's import structure as pyproject.toml's [tool.importlinter] contracts state it, checked by import-linter's
`lint-imports`: the layers (models <- data <- training <- evaluation <- app, with the tools between), no import cycle
among the modules and subpackages of any package, no module importing the `dwgn` facade."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONTRACTS = ("Layers", "No import cycle", "No module imports the dwgn facade")  # how each contract's name begins


def lint_imports(root: Path) -> tuple[dict[str, str], str]:
    """`lint-imports` on the dwgn package under `root` with `root`'s pyproject.toml (no cache written):
    ({contract: KEPT or BROKEN}, the report)."""
    command = "from importlinter.cli import lint_imports_command; lint_imports_command()"
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "300"}  # that dwgn; one line per contract
    done = subprocess.run([sys.executable, "-c", command, "--no-cache", "--no-logo"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    report = done.stdout + done.stderr
    status = {}
    for line in report.splitlines():
        name = next((c for c in CONTRACTS if line.startswith(c)), None)
        if name and line.endswith((" KEPT", " BROKEN")) and name not in status:
            status[name] = line.rsplit(" ", 1)[1]
    assert done.returncode == (1 if "BROKEN" in status.values() else 0), report
    return status, report


def test_the_package_keeps_its_import_contracts():
    status, report = lint_imports(REPO)
    assert status == dict.fromkeys(CONTRACTS, "KEPT"), report


@pytest.mark.parametrize("module, line, broken, named", [
    # a lower layer importing a higher one (it also closes a cycle between the two subpackages)
    ("dwgn/models/network.py", "import dwgn.training.config", {"Layers", "No import cycle"},
     "dwgn.models.network -> dwgn.training.config"),
    # a cycle inside one subpackage: sampler.py imports config.py
    ("dwgn/training/config.py", "from dwgn.training import sampler", {"No import cycle"}, "sampler"),
    # the top layer importing the facade: no layer broken, but dwgn/__init__.py imports the layers below
    ("dwgn/app/service.py", "import dwgn", {"No module imports the dwgn facade"}, "dwgn.app.service"),
])
def test_each_contract_is_broken_by_the_import_it_forbids(tmp_path, module, line, broken, named):
    shutil.copytree(REPO / "dwgn", tmp_path / "dwgn", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    path = tmp_path / module
    path.write_text(path.read_text() + f"\n{line}\n")
    status, report = lint_imports(tmp_path)
    assert status == {c: "BROKEN" if c in broken else "KEPT" for c in CONTRACTS}, report
    assert named in report.split("Broken contracts")[1], report
