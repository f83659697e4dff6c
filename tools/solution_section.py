"""Read or replace one section of notebooks/solutions.ipynb, so each notebook's answers can be edited on their own.

    python tools/solution_section.py export NN out.ipynb    # the section "## NN · ..." as a small notebook
    python tools/solution_section.py replace NN in.ipynb    # put that notebook's cells in place of the section

A section runs from its "## NN · ..." markdown heading to the next "## " heading (or the end). Outputs and
execution counts are cleared on the way in, so the course notebook stays committed clean.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

SOLUTIONS = Path(__file__).resolve().parent.parent / "notebooks" / "solutions.ipynb"


def section_bounds(nb: nbformat.NotebookNode, number: str) -> tuple[int, int]:
    """(first, end) cell indices of section ``number`` ("04"): the heading up to the next section."""
    heads = [i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and c.source.startswith("## ")]
    mine = [i for i in heads if nb.cells[i].source.startswith(f"## {number} ·")]
    if len(mine) != 1:
        raise SystemExit(f"solutions.ipynb has {len(mine)} sections '## {number} · ...'; expected exactly one")
    later = [i for i in heads if i > mine[0]]
    return mine[0], later[0] if later else len(nb.cells)


def main(argv: list[str]) -> None:
    if len(argv) != 3 or argv[0] not in ("export", "replace"):
        raise SystemExit(__doc__)
    action, number, path = argv
    nb = nbformat.read(SOLUTIONS, as_version=4)
    first, end = section_bounds(nb, number)
    if action == "export":
        part = nbformat.v4.new_notebook(cells=nb.cells[first:end], metadata=nb.metadata)
        nbformat.write(part, path)
        return
    cells = nbformat.read(path, as_version=4).cells
    if not (cells and cells[0].cell_type == "markdown" and cells[0].source.startswith(f"## {number} ·")):
        raise SystemExit(f"{path} must start with the markdown heading '## {number} · ...'")
    for cell in cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.cells[first:end] = cells
    nbformat.validate(nb)
    nbformat.write(nb, SOLUTIONS)


if __name__ == "__main__":
    main(sys.argv[1:])
