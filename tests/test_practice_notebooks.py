"""The practice edition (notebooks/practice/, notebooks/practice/ja/): generated from the teaching notebooks by
tools/practice_notebooks.py, fresh, with at least 20 pieces each followed by its check, and runnable unwritten.

The teaching notebooks themselves run under nbmake (``make test``) with every check strict, so a teaching
solution that fails its own check fails the build: that is "the practice edition with its solutions filled back
in passes its checks", because filling the stubs back in gives the teaching notebook (tested here).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import nbformat
import pytest

from llmlab import check

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("practice_notebooks", REPO / "tools" / "practice_notebooks.py")
practice = importlib.util.module_from_spec(_spec)
sys.modules["practice_notebooks"] = practice  # dataclasses look the module up while the class is built
_spec.loader.exec_module(practice)

PATHS = practice.Paths(REPO)
FIX = "run `python tools/practice_notebooks.py build` (after `python tools/ja_notebooks.py build`)"


def _pieces(lang: str = "en") -> list[tuple[str, str, int]]:
    """(notebook, piece, cell index) for every solution cell of the teaching notebooks."""
    found = []
    for source in practice.sources(PATHS, lang):
        nb = nbformat.read(source, as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code" and practice.regions(cell.source):
                found.append((source.stem, cell.metadata.get("nbgrader", {}).get("grade_id", ""), i))
    return found


def test_practice_edition_is_fresh() -> None:
    problems = practice.check(PATHS)
    assert not problems, f"{FIX}:\n" + "\n".join(problems)


def test_at_least_twenty_pieces_each_followed_by_its_check() -> None:
    pieces = _pieces()
    names = [piece for _, piece, _ in pieces]
    assert len(names) >= 20, names
    assert len(set(names)) == len(names), "a grade_id twice: nbgrader needs them unique"
    assert set(names) <= set(check.pieces()), set(names) - set(check.pieces())
    for notebook, piece, i in pieces:
        nb = nbformat.read(PATHS.teaching("en") / f"{notebook}.ipynb", as_version=4)
        cell, after = nb.cells[i], nb.cells[i + 1]
        assert practice.is_solution_cell(cell), f"{notebook} cell {i}: solution metadata missing"
        grading = after.metadata.get("nbgrader", {})
        assert grading.get("grade") and grading.get("grade_id") == f"check_{piece}", f"{notebook} cell {i + 1}"
        call = f"check.{check._check_name(piece)}("
        assert call in after.source and ".or_llmlab()" in after.source, f"{notebook} cell {i + 1}: {after.source}"


def test_the_japanese_teaching_notebooks_have_the_same_pieces() -> None:
    assert [(n, p) for n, p, _ in _pieces("ja")] == [(n, p) for n, p, _ in _pieces("en")]


@pytest.mark.parametrize("lang", practice.LANGS)
def test_filling_the_stubs_back_gives_the_teaching_notebook(lang: str) -> None:
    for source in practice.sources(PATHS, lang):
        teaching = nbformat.read(source, as_version=4)
        made = nbformat.read(PATHS.practice(lang) / source.name, as_version=4)
        cells = [c for c in made.cells if c.id not in (practice.NOTE_ID, practice.SETUP_ID)]
        assert [c.id for c in cells] == [c.id for c in teaching.cells], source.name
        for ours, theirs in zip(cells, teaching.cells):
            filled = ours.source
            for body in practice.regions(theirs.source):
                stub = practice.REGION.search(theirs.source)  # the region's indentation, from the teaching cell
                indent = stub.group(1) if stub else ""
                written = practice.STUB[lang].format(indent=indent)
                assert written.rstrip("\n") in filled, f"{source.name} cell {ours.id}: stub missing"
                if written not in filled:  # the region ended the cell: no line break after the stub
                    written = written.rstrip("\n")
                filled = filled.replace(written, f"{indent}{practice.BEGIN}\n{body}{indent}{practice.END}\n", 1)
            assert filled.rstrip("\n") == theirs.source.rstrip("\n"), f"{source.name} cell {ours.id}"


def test_regions_become_nbgrader_stubs_at_their_indentation() -> None:
    source = "def f(x):\n    y = 1\n    ### BEGIN SOLUTION\n    return x + y\n    ### END SOLUTION\n"
    stripped, n = practice.strip_regions(source)
    assert n == 1
    assert stripped == "def f(x):\n    y = 1\n    # YOUR CODE HERE\n    raise NotImplementedError()\n"
    at_the_end = "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION"  # as nbgrader: no added break
    assert practice.strip_regions(at_the_end)[0] == "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()"
    assert practice.regions(source) == ["    return x + y\n"]
    with pytest.raises(ValueError, match="unbalanced"):
        practice.strip_regions("### BEGIN SOLUTION\nx = 1\n")
    with pytest.raises(ValueError, match="malformed"):
        practice.strip_regions("x = 1  ### BEGIN SOLUTION\ny = 2\n### END SOLUTION\n")


def test_a_region_outside_a_solution_cell_is_refused(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")])
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(ValueError, match="nbgrader solution metadata"):
        practice.build_notebook(path, "en")


@pytest.mark.slow
def test_an_unwritten_practice_notebook_says_what_to_write_and_runs_to_the_end(tmp_path: Path) -> None:
    from nbclient import NotebookClient

    path = PATHS.practice("en") / "02_attention.ipynb"
    nb = nbformat.read(path, as_version=4)
    env = {"LLMLAB_FAST": "1", "LLMLAB_FAST_ROOT": str(tmp_path), "LLMLAB_PROGRESS": str(tmp_path / "progress.json")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        ).execute()
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    out = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "✎ write `attention_weights` above, then run this cell" in out
    assert "→ from here on this notebook uses llmlab's `attention_weights`" in out
    assert not any(o.output_type == "error" for c in nb.cells if c.cell_type == "code" for o in c.outputs)
