"""The learner's language for the package's labels and messages: English, or Japanese with ``LLMLAB_LANG=ja``.

The Japanese notebooks (``notebooks/ja/``, built by ``tools/ja_notebooks.py``) set ``LLMLAB_LANG=ja`` in
their first code cell; nothing else changes with it. Package code asks for a message by key::

    from llmlab.i18n import tr
    W.Button(description=tr("button.train"))                       # "Train" / "学習開始"
    raise FileNotFoundError(tr("error.no_data", path=d, what=what, command=cmd))

Only what a learner reads goes here: widget labels, status lines, hints and the most common errors. Plot
text stays English (matplotlib's default font has no Japanese glyphs), and so do names a learner types
(``max_lr``, ``embedding_size``) and commands. A key missing from a language falls back to English.
"""

from __future__ import annotations

import os
import string

LANG_ENV = "LLMLAB_LANG"
LANGUAGES = ("en", "ja")

# key -> {language: text}; ``{fields}`` are filled by tr(). Both languages must use the same fields.
MESSAGES: dict[str, dict[str, str]] = {
    # widgets/experiment.py
    "button.train": {"en": "Train", "ja": "学習開始"},
    "label.repeat": {"en": "repeat ×N", "ja": "繰り返し ×N"},
    "label.x_axis": {"en": "x axis", "ja": "横軸"},
    "label.prediction": {"en": "prediction", "ja": "予想"},
    "placeholder.prediction": {
        "en": "Before you press Train: what do you expect, and why?",
        "ja": "学習開始を押す前に：どうなると思いますか？その理由は？",
    },
    "status.ready": {"en": "Ready.", "ja": "準備ができました。"},
    # widgets/race.py
    "button.race": {"en": "Race", "ja": "レース開始"},
    "label.seconds_each": {"en": "seconds each", "ja": "各秒数"},
    # data/batches.py: load_meta
    "error.no_data": {
        "en": "no prepared data in {path} ({what}); create it with: {command}",
        "ja": "{path} に準備済みのデータがありません（{what}）。次のコマンドで作成してください: {command}",
    },
    "error.no_data.folder": {"en": "folder does not exist", "ja": "フォルダがありません"},
    "error.no_data.file": {"en": "{name} is missing", "ja": "{name} がありません"},
    # failures.py: diverged (the advice that follows stays as the package words it)
    "error.diverged": {
        "en": "{what} became {value} at step {step} (lr={lr}): training diverged.",
        "ja": "ステップ {step} で {what} が {value} になりました（lr={lr}）。学習が発散しています。",
    },
    # failures.py: interrupted, with the state saved
    "note.interrupted_saved": {
        "en": "interrupted{how} at step {step} of {total}: this run's state is saved in {path}; resume=True "
        "(CLI: --resume) continues exactly from there.",
        "ja": "ステップ {step}/{total} で中断しました{how}。この実行の状態は {path} に保存されています。resume=True"
        "（CLI では --resume）で、ちょうどその続きから再開できます。",
    },
}


def language() -> str:
    """The language chosen by ``LLMLAB_LANG`` ("en" when unset); "ja_JP.UTF-8"-style values are accepted."""
    raw = os.environ.get(LANG_ENV, "").strip()
    lang = raw.lower().replace("-", "_").split("_")[0].split(".")[0] or "en"
    if lang not in LANGUAGES:
        raise ValueError(f"{LANG_ENV}={raw!r} is not a language llmlab speaks: set one of {LANGUAGES}, or unset it")
    return lang


def tr(key: str, lang: str | None = None, **fields: object) -> str:
    """The message ``key`` in ``lang`` (default: :func:`language`), with ``fields`` filled in."""
    if key not in MESSAGES:
        raise KeyError(f"no message {key!r} in llmlab.i18n.MESSAGES; add it there with an 'en' and a 'ja' text")
    lang = lang or language()
    if lang not in LANGUAGES:
        raise ValueError(f"lang={lang!r} is not a language llmlab speaks: use one of {LANGUAGES}")
    texts = MESSAGES[key]
    return texts.get(lang, texts["en"]).format(**fields)


def fields(text: str) -> set[str]:
    """The names of the ``{fields}`` in ``text`` (what tr() must be given)."""
    return {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(text) if name}
