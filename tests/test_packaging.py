"""The project's own files install everything, and they agree with each other."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    # tomllib is Python 3.11+; requires-python allows 3.10, where collection must still work (those tests skip).
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _environment_lines() -> list[str]:
    return [line.strip() for line in (ROOT / "environment.yml").read_text().splitlines()]


def test_environment_yml_matches_pyproject() -> None:
    project = _pyproject()["project"]
    lines = _environment_lines()
    python = next(line for line in lines if line.startswith("- python="))
    version = python.split("=", 1)[1]
    # requires-python is ">=X.Y": the conda python must satisfy it.
    minimum = tuple(int(p) for p in re.search(r">=\s*([\d.]+)", project["requires-python"]).group(1).split("."))
    assert tuple(int(p) for p in version.split(".")) >= minimum
    assert version == "3.11", "the course is written and tested for Python 3.11"
    assert "- pip" in lines
    # conda installs the package itself (with the dev extras) through pip, so the dependency lists cannot drift.
    assert "- -e .[dev]" in lines
    assert "dev" in project["optional-dependencies"]
    # Nothing else is pinned in environment.yml that pyproject does not know about.
    deps = lines[lines.index("dependencies:") + 1 :]
    conda_packages = {line[2:].split("=")[0] for line in deps if line.startswith("- ") and line != "- pip:"}
    assert conda_packages <= {"python", "pip", "-e .[dev]"}


def test_dependencies_are_the_chosen_ones() -> None:
    names = {re.split(r"[<>=\[ ]", dep)[0].lower() for dep in _pyproject()["project"]["dependencies"]}
    assert {"torch", "numpy", "datasets", "tiktoken", "matplotlib", "ipywidgets", "jupyterlab"} <= names
    dev = {re.split(r"[<>=\[ ]", dep)[0].lower() for dep in _pyproject()["project"]["optional-dependencies"]["dev"]}
    assert {"pytest", "nbmake"} <= dev


def test_torch_requirement_admits_the_local_cpu_wheel() -> None:
    # An exact or newer-only pin would make pip replace the CPU build with a multi-GB CUDA one.
    torch_dep = next(d for d in _pyproject()["project"]["dependencies"] if d.startswith("torch"))
    assert "==" not in torch_dep
    floor = re.search(r">=\s*([\d.]+)", torch_dep)
    assert floor and tuple(int(p) for p in floor.group(1).split(".")) <= (2, 13)


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci and "make test" in readme and "make lab" in readme
    assert "make test" in (ROOT / "README.ja.md").read_text()


def _make_dry_run(*args: str) -> str:
    """What `make` would run (make -n), without running it."""
    done = subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_test_lints_then_runs_units_and_notebooks_in_fast_mode() -> None:
    plan = _make_dry_run("-B", "test", "PYTHON=python3")  # -B: as on a fresh clone, install steps included
    lines = plan.splitlines()
    pytest_line = next(line for line in lines if "pytest" in line)
    assert (
        "LLMLAB_FAST=1" in pytest_line and "tests --nbmake notebooks/*.ipynb notebooks/ja/00_setup.ipynb" in pytest_line
    )
    # The other Japanese notebooks run in `make test-ja` (their code is the English code, tests/test_ja_notebooks.py).
    ja_line = next(line for line in _make_dry_run("-B", "test-ja", "PYTHON=python3").splitlines() if "pytest" in line)
    assert "LLMLAB_FAST=1" in ja_line and ja_line.rstrip().endswith("--nbmake notebooks/ja")
    ruff = [i for i, line in enumerate(lines) if "ruff check" in line or "ruff format --check" in line]
    assert len(ruff) == 2 and max(ruff) < lines.index(pytest_line)  # lint first: a lint error fails fast
    gpu_check, pin = plan.index("nvidia-smi -L"), plan.index('pip install "torch==2.13.0"')
    assert gpu_check < pin  # the pin is the branch taken where no NVIDIA GPU answers
    assert any('pip install -e ".[dev]"' in line for line in lines)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_installed_checkout_skips_the_install_step() -> None:
    if not (ROOT / ".venv" / ".llmlab-installed").exists():
        pytest.skip("not installed through `make install`")
    if (ROOT / "pyproject.toml").stat().st_mtime > (ROOT / ".venv" / ".llmlab-installed").stat().st_mtime:
        pytest.skip("pyproject.toml changed since the install: the next make reinstalls (as it should)")
    plan = _make_dry_run("test")
    assert "pip install" not in plan  # a second `make test` only checks the stamp file


def test_console_script_points_at_the_cli() -> None:
    assert _pyproject()["project"]["scripts"]["llmlab"] == "llmlab.cli:main"
