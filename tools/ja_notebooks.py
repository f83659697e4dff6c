"""The Japanese edition of the course: notebooks/ja/ is generated from the English notebooks plus translations.

One source of truth: the English notebooks. A translation is kept per notebook in ``i18n/ja/<name>.json``,
keyed by the English cell's id, with a fingerprint (sha256) of the English text it translates. This script
rebuilds ``notebooks/ja/`` from the two, and ``check`` finds what ``tests/test_ja_notebooks.py`` asserts.

Workflow for a translator (one notebook each, so translators never touch the same file)::

    python tools/ja_notebooks.py status                 # which notebooks are translated, what is left
    python tools/ja_notebooks.py todo 03_gpt_block      # the work list (Markdown on stdout); placeholders
                                                        # are written into i18n/ja/03_gpt_block.json
    #   ... edit i18n/ja/03_gpt_block.json: fill every "ja", then delete the entry's "todo" key ...
    python tools/ja_notebooks.py build                  # regenerate notebooks/ja/ (never edit those by hand)
    python tools/ja_notebooks.py check                  # what the test asserts; prints each problem and its fix

``todo NAME`` also covers NAME's section of the solutions (``"solutions"`` in the same file); ``todo solutions``
covers the solutions notebook's opening cells. After the English notebook changes, ``todo NAME`` lists the
stale cells with a diff of the English since it was translated, and keeps the old translation to edit.

A translation file::

    {"notebook": "00_setup",
     "cells": {                        # the notebook's cells, by English cell id
       "c00": {"type": "markdown", "sha256": "<of the English source>",
               "en": ["# 00 · Set-up check", ...],          # the English translated (lines; do not edit)
               "ja": ["# 00 · セットアップの確認", ...]},     # the Japanese (lines)
       "c01": {"type": "code", "sha256": "<of the cell's comments and prose strings>",
               "replace": [["# why it is so", "# そうなる理由"],
                           ["\\"No GPU found\\"", "\\"GPU は見つかりませんでした\\""]]}},
     "solutions": {...}}               # the same, for the cells of the solutions' section NN

Rules (``check`` enforces them):

- Markdown cells are translated whole: natural です・ます Japanese for a beginner; technical terms as Japanese
  ML texts write them, with the English at first use (「埋め込み（embedding）」). Keep the headings' levels and
  numbers ("# 00 · ...", "## 1. ..."), every code span, link target and $math$, and the list structure. The
  first cell has 「**学習目標**」 where the English has "**Learning goals.**"; the last starts "## 演習" with the
  same numbered exercises and ends 「解答例は `solutions.ipynb` のセクション NN にあります。」 (the Japanese
  solutions, in the same folder).
- Code is never translated: a code cell is the English cell with the ``replace`` pairs applied *only inside
  its comments and string literals* (via Python's tokenize); the check compares tokens and the syntax tree,
  so a pair cannot change code. Translate comments and the text a learner reads (``print``, messages); never a
  string the code compares, looks up or parses (dict keys, column names, ``"hello world"`` in a check).
  ``todo`` proposes one pair per comment and per prose string; delete the pairs that need no translation.
  A code cell's fingerprint covers only its comments and prose strings: a code change alone needs no review.
  The English side of a pair may be part of a comment or string; where pairs overlap the longest wins, and
  every pair must match somewhere. Plot text stays English (titles, axis and legend labels, run labels):
  matplotlib's default font has no Japanese glyphs.
- Terms: use GLOSSARY below (``todo`` prints it), so that notebooks translated by different people agree.
- Each generated notebook gets one extra code cell after its title (id ``ja-lang``) that sets
  ``LLMLAB_LANG=ja``, so the package's labels and messages that ``llmlab.i18n`` knows appear in Japanese.

When a notebook is done, remove its name from NOT_YET_TRANSLATED in tests/test_ja_notebooks.py. Whoever
changes an English notebook of the edition (even its code only) runs ``build`` too: the committed
notebooks/ja/ must equal the build's output, and ``check`` says which translations went stale.

A notebook belongs to the Japanese edition once its translation file exists; notebooks/ja/solutions.ipynb
holds the solutions' opening cells and the sections of those notebooks. The generated notebooks run in
notebooks/ja/, so in full mode they keep their own data/ and out/ there (git-ignored), and 05 finds the
model that the Japanese 04 trained. In fast mode (CI) both editions write under $LLMLAB_FAST_ROOT.
"""

from __future__ import annotations

import ast
import copy
import difflib
import hashlib
import io
import json
import re
import sys
import tokenize
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

REPO = Path(__file__).resolve().parent.parent
SOLUTIONS = "solutions"
LANG_CELL_ID = "ja-lang"
LANG_CELL_SOURCE = (
    '# 日本語版の設定：llmlab が表示するボタン名やメッセージを日本語にします（英語に戻すなら "en"）。\n'
    "import os\n"
    "\n"
    'os.environ["LLMLAB_LANG"] = "ja"'
)
# English term -> how the Japanese edition writes it (at first use in a notebook add the English in （）).
GLOSSARY = {
    "token / tokenizer": "トークン / トークナイザ",
    "vocabulary": "語彙",
    "embedding": "埋め込み",
    "attention": "注意機構（attention）; attention weights 注意の重み; attention score 注意スコア",
    "query / key / value": "クエリ / キー / バリュー",
    "head": "ヘッド",
    "causal mask": "因果マスク",
    "residual stream": "残差ストリーム",
    "logits": "ロジット",
    "loss": "損失",
    "gradient": "勾配",
    "learning rate (schedule)": "学習率（スケジュール）",
    "warm-up": "ウォームアップ",
    "optimizer": "オプティマイザ",
    "weight decay": "重み減衰",
    "training / validation (held-out) data": "学習データ / 検証データ（学習に使っていないデータ）",
    "overfitting": "過学習",
    "parameter": "パラメータ",
    "step / batch": "ステップ / バッチ",
    "seed": "シード",
    "sampling / temperature / greedy": "サンプリング / 温度（temperature） / 貪欲法（greedy）",
    "fine-tuning": "ファインチューニング",
    "checkpoint": "チェックポイント",
    "bits per byte": "1 バイトあたりのビット数（bits/byte）",
    "from scratch": "ゼロから",
    "fast mode / full mode": "高速モード / 通常モード",
    "learning goals / exercises / solutions": "学習目標 / 演習 / 解答例",
    "baseline / rung": "ベースライン / 段",
}
GOALS_EN, GOALS_JA = "**Learning goals.**", "**学習目標**"
EXERCISES_JA = "## 演習"
JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff]")  # kana and kanji
PROSE = re.compile(r"[A-Za-z]{2,}[^A-Za-z0-9\n]*\s[^A-Za-z0-9\n]*[A-Za-z]{2,}")  # two words: text a person reads
TEXT_TOKENS = (tokenize.COMMENT, tokenize.STRING)
HELP = "run `python tools/ja_notebooks.py todo {name}`, translate, then `python tools/ja_notebooks.py build`"


@dataclass(frozen=True)
class Paths:
    """Where the English notebooks, the Japanese notebooks and the translations live (a test uses a tmp copy)."""

    root: Path = REPO

    @property
    def english(self) -> Path:
        return self.root / "notebooks"

    @property
    def japanese(self) -> Path:
        return self.root / "notebooks" / "ja"

    @property
    def store(self) -> Path:
        return self.root / "i18n" / "ja"

    def translation_file(self, name: str) -> Path:
        return self.store / f"{name}.json"


# ---- reading the English ------------------------------------------------------------------------------


def section_number(name: str) -> str:
    """The number a notebook's name starts with and its solutions section is titled by: "04b" for 04b_optimisation."""
    return name.split("_")[0]


def english_names(paths: Paths) -> list[str]:
    """The course notebooks (solutions excluded), in course order."""
    return sorted(p.stem for p in paths.english.glob("*.ipynb") if p.stem != SOLUTIONS)


def read_english(paths: Paths, name: str) -> nbformat.NotebookNode:
    path = paths.english / f"{name}.ipynb"
    if not path.exists():
        raise SystemExit(f"no English notebook {path}; names are {english_names(paths)} or {SOLUTIONS!r}")
    return nbformat.read(path, as_version=4)


def solution_sections(solutions: nbformat.NotebookNode) -> tuple[list[Any], dict[str, list[Any]]]:
    """The solutions' opening cells, and each section's cells by number ("## 03 · ..." -> "03")."""
    preamble: list[Any] = []
    sections: dict[str, list[Any]] = {}
    current: list[Any] = preamble
    for cell in solutions.cells:
        if cell.cell_type == "markdown" and cell.source.startswith("## "):
            number = cell.source[3:].split(" ·")[0].strip()
            current = sections.setdefault(number, [])
        current.append(cell)
    return preamble, sections


def units(paths: Paths, name: str) -> dict[str, list[Any]]:
    """The English cells a translation file covers: {"cells": [...], "solutions": [...]} (key -> cells)."""
    solutions = read_english(paths, SOLUTIONS)
    preamble, sections = solution_sections(solutions)
    if name == SOLUTIONS:
        return {"cells": preamble}
    return {"cells": list(read_english(paths, name).cells), "solutions": sections.get(section_number(name), [])}


# ---- code cells: only comments and strings may change -------------------------------------------------


def text_tokens(source: str) -> list[tuple[int, int, int, str]] | None:
    """(start, end, type, text) of every comment and string literal in ``source``; None if it is not Python."""
    starts = [0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    try:
        ast.parse(source)  # IPython syntax (%magic, !shell) is not translated: such a cell is copied as it is
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError, ValueError):
        return None
    return [
        (starts[t.start[0] - 1] + t.start[1], starts[t.end[0] - 1] + t.end[1], t.type, t.string)
        for t in tokens
        if t.type in TEXT_TOKENS
    ]


def is_prose(token_type: int, text: str) -> bool:
    """A comment, or a string with at least two words outside its {fields}: text a learner reads."""
    return token_type == tokenize.COMMENT or bool(PROSE.search(re.sub(r"\{[^{}]*\}", " ", text)))


def translatable(source: str) -> list[str]:
    """The comments and prose strings of a code cell, in order: what a translator looks at."""
    return [text for _, _, kind, text in text_tokens(source) or [] if is_prose(kind, text)]


def apply_pairs(source: str, pairs: list[list[str]]) -> tuple[str, list[int]]:
    """``source`` with each [english, japanese] pair replaced inside comments and strings only.

    Each comment or string is scanned once: where several pairs match, the longest English wins, and a
    replacement is never matched again. Returns the new source and the indices of the pairs that matched
    nowhere (stale or mistyped).
    """
    tokens = text_tokens(source)
    usable = [i for i, (en, _) in enumerate(pairs) if en]
    if tokens is None or not usable:
        return source, list(range(len(pairs)))
    first = {}  # English text -> the first pair that has it
    for i in usable:
        first.setdefault(pairs[i][0], i)
    pattern = re.compile("|".join(re.escape(en) for en in sorted(first, key=len, reverse=True)))
    used: set[int] = set()

    def swap(match: re.Match[str]) -> str:
        used.add(first[match.group()])
        return pairs[first[match.group()]][1]

    out = source
    for start, end, _, text in reversed(tokens):
        out = out[:start] + pattern.sub(swap, text) + out[end:]
    return out, [i for i in range(len(pairs)) if i not in used]


def skeleton(source: str, tokens: list[tuple[int, int, int, str]]) -> str:
    """``source`` with every comment and string literal cut out: the code itself."""
    ends = [0] + [end for _, end, _, _ in tokens]
    starts = [start for start, _, _, _ in tokens] + [len(source)]
    return "\u0000".join(source[e:s] for e, s in zip(ends, starts))


class _Texts(ast.NodeTransformer):
    """Blanks every string constant; keeps an f-string's fields (their order may change in Japanese)."""

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        return ast.Constant(value="") if isinstance(node.value, str) else node

    def visit_JoinedStr(self, node: ast.JoinedStr) -> ast.AST:
        fields = [self.visit(v) for v in node.values if isinstance(v, ast.FormattedValue)]
        return ast.JoinedStr(values=sorted(fields, key=ast.dump))


def code_difference(english: str, japanese: str) -> str | None:
    """Why ``japanese`` is not ``english`` up to comments and string text (None when it is)."""
    if english == japanese:
        return None
    a, b = text_tokens(english), text_tokens(japanese)
    if a is None or b is None:
        return "the cell is not plain Python, so it must equal the English exactly"
    if [t[2] for t in a] != [t[2] for t in b]:
        return "the comments and strings do not line up with the English (a pair added or removed a token)"
    if skeleton(english, a) != skeleton(japanese, b):
        return "code outside comments and strings differs from the English"
    try:
        same = ast.dump(_Texts().visit(ast.parse(english))) == ast.dump(_Texts().visit(ast.parse(japanese)))
    except SyntaxError as e:
        return f"does not parse: {e}"
    return None if same else "an f-string's {fields} differ from the English"


# ---- fingerprints and entries ---------------------------------------------------------------------------


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fingerprint(cell: Any) -> str:
    """What a translation depends on: a markdown cell's source, a code cell's comments and prose strings."""
    if cell.cell_type == "markdown":
        return sha256(cell.source)
    return sha256("\n".join(translatable(cell.source)))


def needs_entry(cell: Any) -> bool:
    """Markdown always; code only with comments or prose strings (other code cells are copied as they are)."""
    return cell.cell_type == "markdown" or bool(translatable(cell.source))


def lines(text: str) -> list[str]:
    return text.split("\n")


def joined(value: Any) -> str:
    return "\n".join(value) if isinstance(value, list) else str(value or "")


def load(paths: Paths, name: str) -> dict[str, Any] | None:
    path = paths.translation_file(name)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SystemExit(f"{path} is not valid JSON ({e}); fix the file (a missing comma or quote?)") from None
    data.setdefault("cells", {})
    if name != SOLUTIONS:
        data.setdefault("solutions", {})
    return data


def save(paths: Paths, name: str, data: dict[str, Any]) -> None:
    paths.store.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, ensure_ascii=False, indent=1) + "\n"
    paths.translation_file(name).write_text(text, encoding="utf-8")


def translate_cell(cell: Any, entry: dict[str, Any] | None) -> Any:
    """The Japanese cell: the English one with the translation applied (English where none is usable yet)."""
    out = copy.deepcopy(cell)
    if cell.cell_type == "code":
        out.outputs, out.execution_count = [], None
        if entry and entry.get("type") == "code":
            out.source, _ = apply_pairs(cell.source, [p for p in entry.get("replace", []) if len(p) == 2 and p[1]])
    elif entry and entry.get("type") == "markdown" and joined(entry.get("ja")).strip():
        out.source = joined(entry["ja"])
    out.metadata.pop("widgets", None)
    return out


# ---- build ----------------------------------------------------------------------------------------------


def in_edition(paths: Paths) -> list[str]:
    """The course notebooks that have a translation file, in course order."""
    return [n for n in english_names(paths) if paths.translation_file(n).exists()]


def lang_cell() -> Any:
    cell = nbformat.v4.new_code_cell(LANG_CELL_SOURCE)
    cell.id = LANG_CELL_ID
    return cell


def build_notebook(paths: Paths, name: str) -> nbformat.NotebookNode:
    """The Japanese notebook ``name`` as the build writes it (nothing is written here)."""
    data = load(paths, name) or {}
    english = read_english(paths, name)
    if name == SOLUTIONS:
        preamble, sections = solution_sections(english)
        cells = [translate_cell(c, data.get("cells", {}).get(c.id)) for c in preamble]
        for other in in_edition(paths):
            section = sections.get(section_number(other), [])
            entries = (load(paths, other) or {}).get("solutions", {})
            cells += [translate_cell(c, entries.get(c.id)) for c in section]
    else:
        cells = [translate_cell(c, data.get("cells", {}).get(c.id)) for c in english.cells]
    cells.insert(1, lang_cell())
    metadata = copy.deepcopy(english.metadata)
    metadata.pop("widgets", None)
    metadata["llmlab"] = {
        "generated_by": "tools/ja_notebooks.py build: do not edit; change the English notebook or the translation",
        "english": f"notebooks/{name}.ipynb",
        "translation": f"i18n/ja/{name}.json",
    }
    nb = nbformat.v4.new_notebook(cells=cells, metadata=metadata)
    nb.nbformat, nb.nbformat_minor = english.nbformat, english.nbformat_minor
    nbformat.validate(nb)
    return nb


def edition(paths: Paths) -> list[str]:
    """Every notebook of the Japanese edition: the translated course notebooks, plus the solutions with them."""
    names = in_edition(paths)
    return [*names, SOLUTIONS] if names or paths.translation_file(SOLUTIONS).exists() else names


def is_generated(path: Path) -> bool:
    """True for a notebook this script wrote (its metadata says so)."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
    except (OSError, json.JSONDecodeError):
        return False
    return str(meta.get("llmlab", {}).get("generated_by", "")).startswith("tools/ja_notebooks.py")


def build(paths: Paths) -> list[Path]:
    """Write every notebook of the edition into notebooks/ja/ and remove generated ones that left it."""
    paths.japanese.mkdir(parents=True, exist_ok=True)
    wanted = edition(paths)
    for old in paths.japanese.glob("*.ipynb"):
        if old.stem not in wanted and is_generated(old):  # a learner's own notebook there is left alone
            old.unlink()
    written = []
    for name in wanted:
        path = paths.japanese / f"{name}.ipynb"
        path.write_text(nbformat.writes(build_notebook(paths, name)) + "\n", encoding="utf-8")
        written.append(path)
    return written


# ---- check ----------------------------------------------------------------------------------------------

FENCE = re.compile(r"^```.*?^```", flags=re.M | re.S)
SPAN = re.compile(r"`[^`]+`")  # Markdown lets a code span run across a line break
LINK = re.compile(r"\]\(([^)\s]+)\)")
MATH = re.compile(r"\$[^$\n]+\$")
HEADING = re.compile(r"^(#{1,6}) +(\d+[a-z]?(?: ·|\.)?)?", flags=re.M)
NUMBERED = re.compile(r"^ *(\d+)\. ", flags=re.M)
BULLET = re.compile(r"^ *[-*] ", flags=re.M)
ANSWER = re.compile(r"\*\*(\d)\.")


def markdown_problems(en: str, ja: str) -> list[str]:
    """Structure a translation must keep: headings, lists, answers' numbers, code, links and math."""
    problems = []
    if not JAPANESE.search(ja):
        problems.append("has no Japanese text")
    en_fences, ja_fences = FENCE.findall(en), FENCE.findall(ja)
    if Counter(en_fences) - Counter(ja_fences):
        problems.append("a ``` code block differs from the English (copy code blocks exactly)")
    en_rest, ja_rest = FENCE.sub("", en), FENCE.sub("", ja)
    for what, pattern in (("code span", SPAN), ("link target", LINK), ("$math$", MATH)):
        # Whitespace inside a span is compared collapsed: a translation may rewrap a span the English broke.
        found_en = [" ".join(x.split()) for x in pattern.findall(en_rest)]
        found_ja = [" ".join(x.split()) for x in pattern.findall(ja_rest)]
        missing = Counter(found_en) - Counter(found_ja)
        if missing:
            problems.append(f"{what}s of the English are missing: {sorted(missing)}")
    heads = [(h, n.replace(" ·", "").rstrip(".")) for h, n in HEADING.findall(en_rest)]
    if heads != [(h, n.replace(" ·", "").rstrip(".")) for h, n in HEADING.findall(ja_rest)]:
        problems.append(f"headings must keep the English levels and numbers: {HEADING.findall(en_rest)}")
    if NUMBERED.findall(en_rest) != NUMBERED.findall(ja_rest):
        problems.append(f"numbered list items differ: English {NUMBERED.findall(en_rest)}")
    if len(BULLET.findall(en_rest)) != len(BULLET.findall(ja_rest)):
        problems.append(f"the English has {len(BULLET.findall(en_rest))} bullet items, the Japanese a different count")
    if ANSWER.findall(en_rest) != ANSWER.findall(ja_rest):
        problems.append(f'the "**N." answer numbers differ: English {ANSWER.findall(en_rest)}')
    return problems


def entry_problems(cell: Any, entry: dict[str, Any] | None) -> list[str]:
    """Why ``entry`` is not a finished, fresh translation of ``cell`` (empty when it is)."""
    if entry is None:
        return ["untranslated"] if needs_entry(cell) else []
    wanted = fingerprint(cell)
    if entry.get("type") != cell.cell_type:
        return [f"the entry says {entry.get('type')!r}, the English cell is {cell.cell_type!r}"]
    if "todo" in entry:
        return [f'marked todo ({entry["todo"]}): finish it, then delete the "todo" key']
    if entry.get("sha256") != wanted:
        return ["stale: the English changed since it was translated"]
    if cell.cell_type == "markdown":
        if sha256(joined(entry.get("en"))) != wanted:
            return ['"en" is not the English text any more: do not edit it (todo rewrites it)']
        return markdown_problems(cell.source, joined(entry.get("ja")))
    pairs = entry.get("replace", [])
    if not all(isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p) for p in pairs):
        return ['"replace" must be a list of ["English", "日本語"] pairs']
    problems = [f"pair {i + 1} has no translation: fill it or delete the pair" for i, p in enumerate(pairs) if not p[1]]
    problems += [f"pair {i + 1} translates nothing (the same text twice)" for i, p in enumerate(pairs) if p[0] == p[1]]
    _, unused = apply_pairs(cell.source, pairs)
    problems += [f"pair {i + 1} ({pairs[i][0][:40]!r}) matches no comment or string of the cell" for i in unused]
    return problems


def conventions(name: str, english: nbformat.NotebookNode, japanese: nbformat.NotebookNode) -> list[str]:
    """The Japanese edition's own conventions: goals, exercises and the pointer to the Japanese solutions."""
    number = section_number(name)
    first, last = japanese.cells[0].source, japanese.cells[-1].source
    problems = []
    if not first.startswith(f"# {number} · "):
        problems.append(f'the first cell must start "# {number} · " like the English')
    if GOALS_EN in english.cells[0].source and GOALS_JA not in first:
        problems.append(f"the first cell must say {GOALS_JA} where the English says {GOALS_EN}")
    if english.cells[-1].source.startswith("## Exercises"):
        if not last.startswith(EXERCISES_JA):
            problems.append(f'the last cell must start "{EXERCISES_JA}"')
        pointer = f"`solutions.ipynb` のセクション {number}"
        if pointer not in last:
            problems.append(f"the exercises must point to the Japanese solutions: 「解答例は {pointer} にあります。」")
    return problems


def check(paths: Paths, names: list[str] | None = None) -> list[str]:
    """Every problem of the Japanese edition, one line each with its fix (empty when all is well)."""
    problems = []
    wanted = edition(paths)
    generated = sorted(p.stem for p in paths.japanese.glob("*.ipynb")) if paths.japanese.exists() else []
    for stem in sorted(set(generated) - set(wanted)):
        problems.append(f"notebooks/ja/{stem}.ipynb has no translation file: run `python tools/ja_notebooks.py build`")
    if wanted and SOLUTIONS in wanted and not paths.translation_file(SOLUTIONS).exists():
        problems.append(f"the Japanese notebooks point to solutions.ipynb: {HELP.format(name=SOLUTIONS)}")
    for name in names or wanted:
        data = load(paths, name)
        if data is None:
            problems.append(f"{name}: no translation file i18n/ja/{name}.json: {HELP.format(name=name)}")
            continue
        for key, cells in units(paths, name).items():
            entries = data.get(key, {})
            ids = {c.id for c in cells}
            for cell in cells:
                for p in entry_problems(cell, entries.get(cell.id)):
                    where = f"{name}: {'solutions ' if key == 'solutions' else ''}cell {cell.id} ({cell.cell_type})"
                    problems.append(f"{where}: {p}: {HELP.format(name=name)}")
            for orphan in sorted(set(entries) - ids):
                problems.append(f"{name}: entry {key}/{orphan} has no English cell any more: delete it (or move it)")
        problems += file_problems(paths, name)
    return problems


def file_problems(paths: Paths, name: str) -> list[str]:
    """notebooks/ja/NAME.ipynb: equal to the build's output, clean, code as the English's, conventions kept."""
    path = paths.japanese / f"{name}.ipynb"
    fix = "run `python tools/ja_notebooks.py build`"
    if not path.exists():
        return [f"notebooks/ja/{name}.ipynb is missing: {fix}"]
    expected = build_notebook(paths, name)
    if path.read_text(encoding="utf-8") != nbformat.writes(expected) + "\n":
        return [f"notebooks/ja/{name}.ipynb is not what the build writes (edited by hand, or not rebuilt): {fix}"]
    japanese = nbformat.read(path, as_version=4)
    problems = []
    english = read_english(paths, name)
    by_id = {c.id: c for c in english.cells}
    for cell in japanese.cells:
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            problems.append(f"notebooks/ja/{name}.ipynb cell {cell.id} has outputs: {fix}")
        if cell.cell_type != "code" or cell.id == LANG_CELL_ID:
            continue
        why = code_difference(by_id[cell.id].source, cell.source) if cell.id in by_id else "has no English cell"
        if why:
            problems.append(f'notebooks/ja/{name}.ipynb code cell {cell.id}: {why}; fix its "replace" pairs')
    if name != SOLUTIONS:
        problems += [f"notebooks/ja/{name}.ipynb: {p}" for p in conventions(name, english, japanese)]
    return problems


# ---- todo -----------------------------------------------------------------------------------------------


def fenced(text: str, lang: str = "") -> str:
    return f"~~~~{lang}\n{text}\n~~~~"


def todo(paths: Paths, name: str) -> str:
    """Write placeholders for every new or stale cell into the translation file; return the work list."""
    data = load(paths, name) or {"notebook": name, "cells": {}, **({} if name == SOLUTIONS else {"solutions": {}})}
    report, count = [], 0
    for key, cells in units(paths, name).items():
        old = data.get(key, {})
        new: dict[str, Any] = {}
        for cell in cells:
            entry, wanted = old.get(cell.id), fingerprint(cell)
            if entry is None and not needs_entry(cell):
                continue
            title = f"## {key}/{cell.id} ({cell.cell_type})"
            if entry is not None and "todo" not in entry and not entry_problems(cell, entry):
                new[cell.id] = entry
                continue
            count += 1
            if cell.cell_type == "markdown":
                fresh = {"type": "markdown", "sha256": wanted, "en": lines(cell.source)}
                was = joined(entry.get("en")) if entry else ""
                stale = bool(entry and entry.get("ja")) and was != cell.source
                if stale:
                    diff = difflib.unified_diff(lines(was), lines(cell.source), "translated", "now", lineterm="")
                    report.append(
                        f"{title}: STALE, the English changed\n\n{fenced(chr(10).join(diff), 'diff')}\n\n"
                        f"Current translation:\n\n{fenced(joined(entry['ja']))}"
                    )
                elif entry and entry.get("ja"):
                    why = "; ".join(entry_problems(cell, {k: v for k, v in entry.items() if k != "todo"} | fresh))
                    report.append(
                        f"{title}: to finish ({why or 'marked todo'})\n\n{fenced(cell.source)}\n\n"
                        f"Current translation:\n\n{fenced(joined(entry['ja']))}"
                    )
                else:
                    report.append(f"{title}: NEW\n\n{fenced(cell.source)}")
                fresh["ja"] = entry.get("ja", []) if entry else []
                fresh["todo"] = "stale" if stale else "new" if not (entry and entry.get("ja")) else "check"
            else:
                pairs = [p for p in (entry or {}).get("replace", []) if isinstance(p, list) and len(p) == 2]
                covered = {i for i, (en, _) in enumerate(pairs) if en}
                for text in translatable(cell.source):
                    if not any(en and en in text for en, _ in pairs):
                        pairs.append([text, ""])
                _, unused = apply_pairs(cell.source, pairs)
                notes = [f"pair {i + 1} matches nothing any more: fix or delete it" for i in unused if i in covered]
                report.append(
                    f"{title}: translate the comments and the text a learner reads; delete pairs that need none\n\n"
                    f"{fenced(cell.source, 'python')}\n\n" + "\n".join(f"- {n}" for n in notes)
                )
                fresh = {"type": "code", "sha256": wanted, "replace": pairs, "todo": "stale" if entry else "new"}
            new[cell.id] = fresh
        for orphan in sorted(set(old) - {c.id for c in cells}):
            report.append(f"## {key}/{orphan}: the English cell is gone; its translation is kept here for reuse")
            new[orphan] = old[orphan] | {"todo": "orphan: move the text to the new cell's entry, then delete this"}
            count += 1
        data[key] = new
    save(paths, name, data)
    head = f"# {name}: {count} cell(s) to do in i18n/ja/{name}.json"
    steps = (
        'Fill each "ja" (markdown: the whole cell; code: the second element of each pair), delete the "todo" keys, '
        "then run `python tools/ja_notebooks.py build` and `python tools/ja_notebooks.py check`."
    )
    terms = "Terms: " + "; ".join(f"{en} = {ja}" for en, ja in GLOSSARY.items())
    return "\n\n".join([head, steps, terms, *report]) + "\n"


def status(paths: Paths) -> str:
    """One line per notebook: translated cells out of translatable ones."""
    rows = []
    for name in [*english_names(paths), SOLUTIONS]:
        data = load(paths, name)
        if data is None:
            rows.append(f"{name:20s} not started")
            continue
        done = total = 0
        for key, cells in units(paths, name).items():
            for cell in cells:
                if needs_entry(cell) or cell.id in data.get(key, {}):
                    total += 1
                    done += not entry_problems(cell, data.get(key, {}).get(cell.id))
        rows.append(f"{name:20s} {done}/{total} cells done")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    paths = Paths()
    if not argv or argv[0] not in ("todo", "build", "check", "status") or (argv[0] == "todo" and len(argv) != 2):
        print(__doc__)
        return 2
    if argv[0] == "todo":
        read_english(paths, argv[1])
        print(todo(paths, argv[1]), end="")
    elif argv[0] == "build":
        for path in build(paths):
            print(f"wrote {path.relative_to(paths.root)}")
    elif argv[0] == "status":
        print(status(paths))
    else:
        problems = check(paths, argv[1:] or None)
        print("\n".join(problems) if problems else f"ok: {', '.join(edition(paths))}")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
