"""tools/colab.py on a temporary copy of a course notebook: badge and install cell, idempotent, course rules kept."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("colab_tool", REPO / "tools" / "colab.py")
colab = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(colab)

ME = ["--repo", "someone/llmlab-course"]


@pytest.fixture
def notebook(tmp_path: Path) -> Path:
    path = tmp_path / "04_training_loop.ipynb"
    shutil.copy(REPO / "notebooks" / "04_training_loop.ipynb", path)
    return path


def _install_cells(nb: nbformat.NotebookNode) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if colab.INSTALL_TAG in c.get("metadata", {}).get("tags", [])]


def test_badge_and_install_cell_once_and_the_course_rules_still_hold(notebook: Path) -> None:
    original = nbformat.read(notebook, as_version=4)
    assert colab.main([*ME, "--check", str(notebook)]) == 1  # not there yet
    assert colab.main([*ME, str(notebook)]) == 0
    first_run = notebook.read_bytes()
    assert colab.main([*ME, str(notebook)]) == 0
    assert notebook.read_bytes() == first_run  # idempotent: the second run changes nothing
    assert colab.main([*ME, "--check", str(notebook)]) == 0

    nb = nbformat.read(notebook, as_version=4)
    nbformat.validate(nb)
    assert len(nb.cells) == len(original.cells) + 1 and _install_cells(nb) == [1]
    title = nb.cells[0].source
    # tests/test_notebooks.py's rules: the title first, the goals in it; no `!pip` line; committed clean.
    assert title.startswith("# 04 ·") and "**Learning goals.**" in title
    url = "https://colab.research.google.com/github/someone/llmlab-course/blob/main/notebooks/04_training_loop.ipynb"
    assert title.count("colab-badge.svg") == 1 and f"]({url})" in title
    assert title.replace(title.split("\n")[2] + "\n\n", "") == original.cells[0].source  # only the badge added
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert not re.search(r"^\s*!pip", code, flags=re.M)
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")
    assert [c.source for c in nb.cells[2:]] == [c.source for c in original.cells[1:]]  # the rest untouched
    compile(nb.cells[1].source, "install-cell", "exec")  # valid Python


def test_refresh_replaces_instead_of_adding(notebook: Path) -> None:
    colab.main([*ME, str(notebook)])
    nb = nbformat.read(notebook, as_version=4)
    cell_id = nb.cells[1].id
    nb.cells.append(nb.cells.pop(1))  # an editor moved the install cell to the end
    nbformat.write(nb, notebook)
    assert colab.main(["--repo", "other/fork", "--branch", "dev", str(notebook)]) == 0
    nb = nbformat.read(notebook, as_version=4)
    assert _install_cells(nb) == [1] and nb.cells[1].id == cell_id  # back in place, same cell
    assert "git+https://github.com/other/fork@dev" in nb.cells[1].source and "someone" not in nb.cells[1].source
    assert nb.cells[0].source.count("colab-badge.svg") == 1 and "other/fork/blob/dev/" in nb.cells[0].source


def test_the_placeholder_repository_is_refused(notebook: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = notebook.read_bytes()
    with pytest.raises(SystemExit):
        colab.main(["--repo", "OWNER/llmlab-course", str(notebook)])
    assert "give the course's GitHub repository as OWNER/NAME" in capsys.readouterr().err
    assert notebook.read_bytes() == before


def test_the_install_cell_does_nothing_where_llmlab_is_installed() -> None:
    source = colab.install_source("someone/llmlab-course", "main")
    done = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr


def test_the_install_cell_pip_installs_from_the_repository_where_llmlab_is_missing(tmp_path: Path) -> None:
    # No site-packages (-S), so `import llmlab` fails; a stand-in `subprocess` records the pip command and
    # leaves an empty llmlab package behind, as a real install would leave the real one.
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "subprocess.py").write_text(
        "import json, pathlib\n"
        "def run(command, check=False):\n"
        "    here = pathlib.Path(__file__).parent\n"
        "    (here / 'command.json').write_text(json.dumps(command))\n"
        "    (here / 'llmlab').mkdir()\n"
        "    (here / 'llmlab' / '__init__.py').write_text('')\n"
    )
    source = colab.install_source("someone/llmlab-course", "main")
    done = subprocess.run(
        [sys.executable, "-S", "-c", source],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(fake)},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "installing llmlab from https://github.com/someone/llmlab-course" in done.stdout
    command = json.loads((fake / "command.json").read_text())
    assert command[1:] == ["-m", "pip", "install", "-q", "llmlab @ git+https://github.com/someone/llmlab-course@main"]
    assert Path(command[0]).name.startswith("python")  # the kernel's own interpreter (sys.executable)
