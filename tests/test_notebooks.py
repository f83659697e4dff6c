"""The course notebooks, read as files: committed clean, and built the way the course promises.

Running them is nbmake's job (`LLMLAB_FAST=1 pytest --nbmake notebooks/`); these checks are instant and
catch what a run would not: saved outputs, a missing goals/exercises section, no fast-mode switch, a
notebook that copies instead of importing llmlab, or a panel whose real path is never exercised.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
COURSE = [
    "00_setup",
    "01_tokenization",
    "02_attention",
    "03_gpt_block",
    "04_training_loop",
    "04b_optimisation",
    "05_sampling",
    "06_gpt2_weights",
    "07_modern_gpt",
    "08_finetuning",
]
ALL = [*COURSE, "solutions"]


def _number(name: str) -> str:
    """The section number a notebook's name starts with: "04" for 04_training_loop, "04b" for 04b_optimisation."""
    return name.split("_")[0]


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def _code(nb: nbformat.NotebookNode) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


def _markdown(nb: nbformat.NotebookNode) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "markdown"]


def test_every_notebook_is_there_and_nothing_else() -> None:
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(ALL)


@pytest.mark.parametrize("name", ALL)
def test_committed_without_outputs_and_valid(name: str) -> None:
    nb = _read(name)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name}.ipynb cell {i} has saved outputs: clear them before committing"
            assert cell.execution_count is None, f"{name}.ipynb cell {i} has an execution count"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    assert "widgets" not in nb.metadata, f"{name}.ipynb stores widget state: clear it"


@pytest.mark.parametrize("name", COURSE)
def test_opens_with_goals_and_ends_with_exercises(name: str) -> None:
    nb = _read(name)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith(f"# {_number(name)} ·")
    assert "**Learning goals.**" in first.source
    last = nb.cells[-1]
    assert last.cell_type == "markdown" and last.source.startswith("## Exercises"), f"{name} must end with exercises"
    exercises = re.findall(r"^(\d)\. ", last.source, flags=re.M)
    assert 2 <= len(exercises) <= 4 and exercises == [str(i + 1) for i in range(len(exercises))]
    assert f"`solutions.ipynb`, section {_number(name)}" in last.source


@pytest.mark.parametrize("name", COURSE)
def test_solutions_cover_every_exercise(name: str) -> None:
    exercises = re.findall(r"^(\d)\. ", _read(name).cells[-1].source, flags=re.M)
    solutions = _read("solutions")
    headings = [md for md in _markdown(solutions) if md.startswith(f"## {_number(name)} ·")]
    assert len(headings) == 1, f"solutions.ipynb needs one section '## {_number(name)} · ...'"
    # Answers are numbered "**1.", "**2." ... in markdown cells after that heading, before the next section.
    start = solutions.cells.index(next(c for c in solutions.cells if c.source == headings[0]))
    answered = []
    for cell in solutions.cells[start:]:
        if cell is not solutions.cells[start] and cell.cell_type == "markdown" and cell.source.startswith("## "):
            break
        if cell.cell_type == "markdown":
            answered += re.findall(r"\*\*(\d)\.", cell.source)
    assert answered == exercises, f"{name}: exercises {exercises}, solutions {answered}"


@pytest.mark.parametrize("name", ALL)
def test_fast_mode_switch_and_llmlab_imports(name: str) -> None:
    code = _code(_read(name))
    assert "FAST = fast_mode()" in code, "every notebook reads LLMLAB_FAST through llmlab.config.fast_mode()"
    assert re.search(r"^(from llmlab|import llmlab)", code, flags=re.M)
    assert "%matplotlib widget" not in code and "ipympl" not in code  # breaks without its package and in Colab
    assert "plt.show()" not in code  # figures come from llmlab.plots and display themselves
    assert not re.search(r"^\s*!pip", code, flags=re.M)  # installation belongs in `make install`


@pytest.mark.parametrize("name", COURSE)
def test_checks_against_llmlab_and_plots(name: str) -> None:
    code = _code(_read(name))
    wanted = 1 if name == "00_setup" else 3  # 00 checks the environment; the others check code against llmlab
    assert len(re.findall(r"^\s*assert ", code, flags=re.M)) >= wanted, (
        f"{name}: assert the from-scratch code against llmlab"
    )
    assert re.search(r"plots\.\w+\(", code), f"{name}: at least one figure from llmlab.plots"


MAX_CODE_LINES, MAX_MARKDOWN_WORDS = 25, 150


@pytest.mark.parametrize("name", ALL)
def test_cells_stay_readable(name: str) -> None:
    # One idea per cell: a learner reads a screenful at a time (course v3's limits, for every notebook).
    for i, cell in enumerate(_read(name).cells):
        if cell.cell_type == "code":
            lines = len(cell.source.splitlines())
            assert lines <= MAX_CODE_LINES, f"{name}.ipynb cell {i} ({cell.id}) has {lines} lines: split it"
        else:
            words = len(re.findall(r"\w+", cell.source))  # "GPT-2's" is three words, as a reader's eye counts them
            assert words <= MAX_MARKDOWN_WORDS, f"{name}.ipynb cell {i} ({cell.id}) has {words} words: shorten or split"


@pytest.mark.parametrize("name", ALL)
def test_fast_switches_go_through_full_or_fast(name: str) -> None:
    assert not re.search(r"\bif FAST else\b", _code(_read(name))), f"{name}: use full_or_fast(full=..., fast=...)"


def test_experiment_panel_is_exercised_without_a_browser() -> None:
    # Button callbacks never fire headless and interact() swallows errors: the notebook must call the
    # panel's run() with the sliders' values in a plain cell, and press the button from code.
    cells = [c.source for c in _read("04b_optimisation").cells if c.cell_type == "code"]
    build = next(i for i, src in enumerate(cells) if "ExperimentPanel(" in src)
    assert cells[build].rstrip().endswith("panel")  # the panel is displayed by its own cell
    assert "panel.run(**panel.values())" in cells[build + 1] and "assert" in cells[build + 1]
    assert any("panel.button.click()" in src and "assert len(panel.runs)" in src for src in cells[build + 1 :])
    assert "interact(" not in "\n".join(cells)
    code = "\n".join(cells)
    for slider in ("embedding_size", "num_heads", "depth", "max_lr"):
        assert f"panel.{slider}" in code or slider in code


def _paths(name: str) -> dict[str, Path]:
    """The notebook's top-level path assignments (``OUT = course_path(...)``, ``CHECKPOINT = OUT / ...``), evaluated
    with llmlab's own course_path: where the notebook really reads and writes, not how its source spells it."""
    from llmlab.config import course_path

    space: dict[str, object] = {"course_path": course_path, "Path": Path}
    for cell in _read(name).cells:
        if cell.cell_type != "code":
            continue
        for node in ast.parse(_plain_python(cell.source)).body:
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
                continue
            target, value = node.targets[0], node.value
            pairs = [(target, value)]
            if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) and len(target.elts) == len(value.elts):
                pairs = list(zip(target.elts, value.elts))  # DATA, OUT = course_path(...), course_path(...)
            for t, v in pairs:
                if not isinstance(t, ast.Name):
                    continue
                try:
                    result = eval(compile(ast.Expression(v), name, "eval"), space)  # noqa: S307
                except Exception:  # noqa: BLE001 - not a path expression (a model, a tensor...)
                    continue
                if isinstance(result, Path):
                    space[t.id] = result
    return {k: v for k, v in space.items() if isinstance(v, Path) and k != "Path"}


def _plain_python(source: str) -> str:
    """A cell's code without IPython's magics and shell escapes (ast cannot parse them)."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def _calls(name: str, function: str) -> list[ast.Call]:
    tree = ast.parse(_plain_python(_code(_read(name))))
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == function]


def test_04_trains_where_05_and_06_read(monkeypatch, tmp_path) -> None:
    """04 saves its model where 05 samples it and 06 compares with it (in fast mode too: one root for all)."""
    monkeypatch.setenv("LLMLAB_FAST", "1")
    monkeypatch.setenv("LLMLAB_FAST_ROOT", str(tmp_path))
    out = _paths("04_training_loop")["OUT"]
    assert [
        ast.unparse(k.value) for c in _calls("04_training_loop", "Trainer") for k in c.keywords if k.arg == "out_dir"
    ]
    out_dirs = [
        ast.unparse(k.value) for c in _calls("04_training_loop", "Trainer") for k in c.keywords if k.arg == "out_dir"
    ]
    assert out_dirs[-1] == "OUT", out_dirs  # the last Trainer (the course model) writes OUT; earlier ones are checks
    assert _paths("05_sampling")["CHECKPOINT"] == out / "best_checkpoint.bin"
    assert _paths("06_gpt2_weights")["MY_CHECKPOINT"] == out / "best_checkpoint.bin"
    assert str(out).startswith(str(tmp_path))  # fast mode never writes into a learner's folders


def test_gpt2_is_loaded_through_llmlab_and_never_downloaded_in_fast_mode() -> None:
    # Without the hub (CI, no network) 06 must neither hang nor fail: llmlab.hf.load_gpt2 answers offline within
    # seconds (tests/test_hf.py), and fast mode asks it not to download at all.
    for name in ("06_gpt2_weights", "solutions"):
        calls = _calls(name, "load_gpt2")
        assert calls and all(
            any(k.arg == "download" and ast.unparse(k.value) == "not FAST" for k in c.keywords) for c in calls
        ), name
        assert not [
            n
            for n in ast.walk(ast.parse(_plain_python(_code(_read(name)))))
            if isinstance(n, ast.FunctionDef) and n.name == "load_gpt2"
        ]


def test_data_and_outputs_stay_out_of_git() -> None:
    ignore = (NOTEBOOKS.parent / ".gitignore").read_text().split()
    assert "notebooks/data/" in ignore and "notebooks/out/" in ignore
