"""Make every course notebook open and run in Google Colab: a badge, and a cell that installs llmlab there.

    python tools/colab.py                          # refresh notebooks/*.ipynb in place
    python tools/colab.py --check                  # exit 1 (naming them) if a notebook is not up to date
    python tools/colab.py --repo OWNER/NAME --branch main  notebooks/04_training_loop.ipynb

In each notebook it puts, and on every run refreshes (running it twice changes nothing):

- an "Open in Colab" badge on its own line right after the title line of the first markdown cell (the title
  stays the cell's first line, as tests/test_notebooks.py expects);
- as the second cell, a code cell that installs llmlab from the repository only when ``import llmlab``
  fails (Colab; nowhere else: where the course is installed it does nothing), through
  ``sys.executable -m pip`` (no ``!pip`` line), and in Colab turns on the widget manager that ipywidgets
  needs there (``google.colab.output.enable_custom_widget_manager()``).

The repository comes from ``--repo`` or :data:`REPOSITORY` (set it once for the course's GitHub home).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
# The course's GitHub home, OWNER/NAME: the repository records no URL (pyproject.toml, README), so it is set here.
REPOSITORY = "OWNER/llmlab-course"
PLACEHOLDER = "OWNER/"
BRANCH = "main"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
INSTALL_TAG = "colab-install"  # the install cell's tag: how a later run finds it to refresh it
INSTALL_FIRST_LINE = "# In Colab (or a Python without the course) this installs llmlab once; elsewhere: nothing."


def badge(repo: str, branch: str, filename: str) -> str:
    """The markdown of the "Open in Colab" badge for ``notebooks/<filename>``."""
    url = f"https://colab.research.google.com/github/{repo}/blob/{branch}/notebooks/{filename}"
    return f"[![Open In Colab]({BADGE_IMAGE})]({url})"


def install_source(repo: str, branch: str) -> str:
    """The install cell's code (pip only when ``import llmlab`` fails; Colab's widget manager in Colab)."""
    spec = f"llmlab @ git+https://github.com/{repo}@{branch}"
    return f'''{INSTALL_FIRST_LINE}
import importlib
import subprocess
import sys

try:
    import llmlab  # noqa: F401
except ImportError:
    print("installing llmlab from https://github.com/{repo} (a minute or two) ...")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "{spec}"], check=True)
    importlib.invalidate_caches()
    import llmlab  # noqa: F401

    widgets = sys.modules.get("ipywidgets")
    if widgets is not None and int(widgets.__version__.split(".")[0]) < 8:
        print("ipywidgets 8 was installed while an older one is loaded: Runtime > Restart session, then run again.")
if "google.colab" in sys.modules:
    from google.colab import output

    output.enable_custom_widget_manager()  # Colab draws ipywidgets (the course's panels) only with this on'''


def update(nb: nbformat.NotebookNode, filename: str, repo: str, branch: str) -> None:
    """Put the current badge and install cell into ``nb`` (an existing install cell keeps its id)."""
    first = next((c for c in nb.cells if c.cell_type == "markdown"), None)
    if first is None:
        raise ValueError(f"{filename} has no markdown cell to carry the Colab badge; give it a title cell first.")
    lines = [line for line in first.source.split("\n") if BADGE_IMAGE not in line]
    title, rest = lines[0], lines[1:]
    while rest and not rest[0].strip():  # the blank line(s) around an older badge
        rest.pop(0)
    first.source = "\n".join([title, "", badge(repo, branch, filename), "", *rest]).rstrip("\n")

    tagged = [c for c in nb.cells if INSTALL_TAG in c.get("metadata", {}).get("tags", [])]
    cell = tagged[0] if tagged else nbformat.v4.new_code_cell(metadata={"tags": [INSTALL_TAG]})
    nb.cells = [c for c in nb.cells if c not in tagged]
    cell.source = install_source(repo, branch)
    cell.outputs, cell.execution_count = [], None
    nb.cells.insert(nb.cells.index(first) + 1, cell)


def refresh(path: Path, repo: str, branch: str, write: bool = True) -> bool:
    """Bring the notebook at ``path`` up to date; True when it was not (``write=False``: only check)."""
    nb = nbformat.read(path, as_version=4)
    before = nbformat.writes(nb)
    update(nb, path.name, repo, branch)
    if nbformat.writes(nb) == before:
        return False
    if write:
        nbformat.validate(nb)
        nbformat.write(nb, path)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    parser.add_argument("--repo", default=REPOSITORY, help=f"GitHub OWNER/NAME (default {REPOSITORY})")
    parser.add_argument("--branch", default=BRANCH, help=f"branch the badge and the install use (default {BRANCH})")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook is not up to date")
    args = parser.parse_args(argv)
    if args.repo.startswith(PLACEHOLDER) or args.repo.count("/") != 1 or not all(args.repo.split("/")):
        parser.error(
            f"--repo={args.repo!r}: give the course's GitHub repository as OWNER/NAME (or set REPOSITORY in "
            f"tools/colab.py once), e.g. --repo someone/llmlab-course"
        )
    paths = args.paths or sorted(NOTEBOOKS.glob("*.ipynb"))
    if args.check:
        stale = [p.name for p in paths if refresh(p, args.repo, args.branch, write=False)]
        if stale:
            print(f"not up to date (run python tools/colab.py): {', '.join(stale)}")
            return 1
        print(f"{len(paths)} notebooks have the Colab badge and install cell for {args.repo}@{args.branch}")
        return 0
    changed = [p.name for p in paths if refresh(p, args.repo, args.branch)]
    print(f"updated {len(changed)} of {len(paths)} notebooks" + (f": {', '.join(changed)}" if changed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
