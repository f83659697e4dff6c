"""Practice progress: which pieces pass, kept in one small JSON file on this machine and never sent anywhere.

Where the file lives, first match wins:

- ``$LLMLAB_PROGRESS``: that path (``off`` turns recording off); tests point it at a temporary folder.
- fast mode (``LLMLAB_FAST=1``, the CI runs of the notebooks): ``progress.json`` under the fast root, like
  :func:`llmlab.config.course_path`, so a test run never marks a learner's pieces as passing.
- otherwise ``~/.llmlab/progress.json``. The home folder rather than the course's ``out/``: the English and the
  Japanese notebooks (``notebooks/`` and ``notebooks/ja/``, each with its own ``out/``) and the ``llmlab progress``
  command run from different folders and should show one learner one record; ``out/`` holds training runs that
  a learner deletes or overwrites freely; and a file outside the repository is never seen by git.

This module imports no torch and none of the checks (``llmlab.check`` loads those on first use), so
``llmlab progress`` reads the file without loading any model code.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llmlab.config import FAST_ROOT_ENV, fast_mode
from llmlab.i18n import language

__all__ = ["PROGRESS_ENV", "NOTEBOOKS", "progress_file", "load_progress", "record", "progress_lines"]

PROGRESS_ENV = "LLMLAB_PROGRESS"

# The pieces a learner writes, by notebook, in the order the notebooks teach them. The names are what the
# learner defines (a function or a class); llmlab.check has one check per piece (tests keep the two equal).
NOTEBOOKS: dict[str, tuple[str, ...]] = {
    "01_tokenization": ("merge", "bpe_step", "bpe_encode", "bigram_table", "bigram_loss"),
    "02_attention": ("attention_weights", "Head", "MultiHead", "multi_head_attention"),
    "03_gpt_block": ("layer_norm", "mlp", "block", "gpt_forward"),
    "04_training_loop": ("get_batch", "lr_schedule", "estimate_loss", "train_step"),
    "04b_optimisation": ("adamw_step", "accumulate_gradients"),
    "05_sampling": ("keep_top_k", "keep_top_p", "choose", "generate", "attend_one"),
    "07_modern_gpt": ("rope", "rms_norm", "newton_schulz_step", "newton_schulz"),
    "08_finetuning": ("collate",),
}

_TEXT = {
    "heading": {
        "en": "Practice progress ({path}): {passed} of {total} pieces pass",
        "ja": "練習の進み具合（{path}）：{total} 個中 {passed} 個が合格",
    },
    "off": {
        "en": "Practice progress is not recorded ({env}=off).",
        "ja": "練習の進み具合は記録していません（{env}=off）。",
    },
    "legend": {
        "en": "✓ passes   ✗ tried, not passing yet   · not tried",
        "ja": "✓ 合格   ✗ 挑戦中（まだ不合格）   · 未挑戦",
    },
}


def progress_file() -> Path | None:
    """The progress file (see the module's docstring), or None when ``LLMLAB_PROGRESS=off``."""
    chosen = os.environ.get(PROGRESS_ENV, "").strip()
    if chosen.lower() == "off":
        return None
    if chosen:
        return Path(chosen).expanduser()
    if fast_mode():
        root = os.environ.get(FAST_ROOT_ENV) or os.path.join(tempfile.gettempdir(), "llmlab-fast")
        return Path(root) / "progress.json"
    return Path.home() / ".llmlab" / "progress.json"


def load_progress(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """Piece name -> ``{"passed": bool, "tries": int, "last": ISO time}``; empty when there is no file yet.

    A damaged file reads as empty (the next record starts it again): progress is a convenience, never a reason
    for a check to fail.
    """
    path = path if path is not None else progress_file()
    if path is None or not path.is_file():
        return {}
    try:
        pieces = json.loads(path.read_text(encoding="utf-8")).get("pieces", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {name: entry for name, entry in pieces.items() if isinstance(entry, dict)}


def record(piece: str, passed: bool) -> bool:
    """Note that ``piece`` was checked and whether it passed; False when nothing was written (off, or unwritable)."""
    path = progress_file()
    if path is None:
        return False
    pieces = load_progress(path)
    entry = pieces.get(piece, {})
    pieces[piece] = {
        "passed": bool(passed),
        "tries": int(entry.get("tries", 0)) + 1,
        "last": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write a sibling file, then rename: a notebook interrupted mid-write leaves the old file whole.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": 1, "pieces": pieces}, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        return False  # a read-only home folder must not stop the notebook: the check's line was already printed
    return True


def _shown(path: Path) -> str:
    try:
        return "~/" + path.relative_to(Path.home()).as_posix()
    except ValueError:
        return str(path)


def progress_lines(lang: str | None = None) -> list[str]:
    """The lines ``llmlab.check.progress()`` and ``llmlab progress`` print: a heading, one line per notebook."""
    lang = lang or language()
    path = progress_file()
    if path is None:
        return [_TEXT["off"][lang].format(env=PROGRESS_ENV)]
    pieces = load_progress(path)
    total = sum(len(names) for names in NOTEBOOKS.values())
    passed = sum(1 for names in NOTEBOOKS.values() for n in names if pieces.get(n, {}).get("passed"))
    lines = [_TEXT["heading"][lang].format(path=_shown(path), passed=passed, total=total)]
    width = max(len(nb) for nb in NOTEBOOKS)
    for notebook, names in NOTEBOOKS.items():
        marks = []
        for name in names:
            entry = pieces.get(name)
            marks.append(f"{'·' if entry is None else '✓' if entry.get('passed') else '✗'} {name}")
        done = sum(1 for n in names if pieces.get(n, {}).get("passed"))
        lines.append(f"  {notebook:<{width}}  {done}/{len(names)}  " + "  ".join(marks))
    lines.append(_TEXT["legend"][lang])
    return lines
