"""The Japanese edition (notebooks/ja/): generated from the English notebooks and i18n/ja/, complete and fresh.

A failure here names the notebook and cell; the fix is always the same workflow (tools/ja_notebooks.py):
``python tools/ja_notebooks.py todo NAME`` -> translate in i18n/ja/NAME.json -> ``build`` -> ``check``.
Running the notebooks is nbmake's job (``pytest --nbmake notebooks`` recurses into notebooks/ja/).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from llmlab import i18n

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("ja_notebooks", REPO / "tools" / "ja_notebooks.py")
ja = importlib.util.module_from_spec(_spec)
sys.modules["ja_notebooks"] = ja  # dataclasses look the module up while the class is built
_spec.loader.exec_module(ja)

PATHS = ja.Paths(REPO)
# English notebooks without a Japanese edition yet. Translating one (its i18n/ja file appears) fails
# test_which_notebooks_are_translated until its name is removed here: the list cannot go stale.
NOT_YET_TRANSLATED: set[str] = set()
FIX = "run `python tools/ja_notebooks.py todo NAME`, translate in i18n/ja/NAME.json, then `... build` and `... check`"


# ---- the committed Japanese edition -----------------------------------------------------------------------


def test_which_notebooks_are_translated() -> None:
    translated = set(ja.in_edition(PATHS))
    missing = set(ja.english_names(PATHS)) - translated
    assert missing == NOT_YET_TRANSLATED & set(ja.english_names(PATHS)), (
        f"Japanese edition: translated {sorted(translated)}, not yet {sorted(missing)}; "
        "update NOT_YET_TRANSLATED in this test when a translation is added"
    )
    assert "solutions" in ja.edition(PATHS)  # the exercises point to notebooks/ja/solutions.ipynb
    assert sorted(p.stem for p in PATHS.japanese.glob("*.ipynb")) == sorted(ja.edition(PATHS))


@pytest.mark.parametrize("name", ja.edition(PATHS))
def test_japanese_notebook_is_built_complete_and_fresh(name: str) -> None:
    problems = ja.check(PATHS, [name])
    assert not problems, f"{len(problems)} problem(s); {FIX.replace('NAME', name)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("name", ja.edition(PATHS))
def test_generated_notebook_is_clean_and_switches_the_language(name: str) -> None:
    nb = nbformat.read(PATHS.japanese / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert "widgets" not in nb.metadata and nb.metadata["kernelspec"]["name"] == "python3"
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")
    assert nb.cells[1].id == ja.LANG_CELL_ID and 'os.environ["LLMLAB_LANG"] = "ja"' in nb.cells[1].source
    english = nbformat.read(PATHS.english / f"{name}.ipynb", as_version=4)
    assert [c.id for c in nb.cells if c.id != ja.LANG_CELL_ID] == [
        c.id for c in english.cells if name != "solutions" or c.id in {c.id for c in nb.cells}
    ]


def test_solutions_hold_the_sections_of_the_translated_notebooks() -> None:
    nb = nbformat.read(PATHS.japanese / "solutions.ipynb", as_version=4)
    headings = [c.source.split(" ·")[0] for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("## ")]
    assert headings == [f"## {ja.section_number(n)}" for n in ja.in_edition(PATHS)]


def test_full_mode_outputs_of_the_japanese_notebooks_stay_out_of_git() -> None:
    ignore = (REPO / ".gitignore").read_text().split()
    assert "notebooks/ja/data/" in ignore and "notebooks/ja/out/" in ignore


@pytest.mark.slow
def test_nbmake_runs_the_japanese_notebooks_too() -> None:
    # `make test` runs `pytest --nbmake notebooks`: the Japanese notebooks must be collected by that same command.
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "--nbmake", "notebooks"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    for name in ja.edition(PATHS):
        assert f"notebooks/ja/{name}.ipynb" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]


# ---- the machinery, on a small made-up course -----------------------------------------------------------


def _md(cid: str, text: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_markdown_cell(text)
    cell.id = cid
    return cell


def _code(cid: str, text: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(text)
    cell.id = cid
    return cell


def _write(path: Path, cells: list[nbformat.NotebookNode]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nb = nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "P"}})
    nbformat.write(nb, path)


CODE = 'x = 3  # x is the count\nprint(f"count: {x * 2} items")\nassert x == 3, "x"\n'
ENGLISH = [
    _md("m0", "# 00 · Demo\n\n**Learning goals.** You will\n\n- count things,\n- see `x`."),
    _code("k1", CODE),
    _md("m2", "## 1. Counting\n\nSee [the docs](https://example.org) and `print`."),
    _md("m3", "## Exercises\n\n1. Count.\n2. Count again.\n\nSolutions: `solutions.ipynb`, section 00."),
]
JAPANESE = {
    "m0": "# 00 · デモ\n\n**学習目標** 次のことをします。\n\n- 数を数える\n- `x` を見る",
    "m2": "## 1. 数える\n\n[ドキュメント](https://example.org) と `print` を見てください。",
    "m3": "## 演習\n\n1. 数えましょう。\n2. もう一度。\n\n解答例は `solutions.ipynb` のセクション 00 にあります。",
    "s0": "# 解答例",
    "s1": "## 00 · デモ\n\n**1.** 数えました。",
}
PAIRS = [["# x is the count", "# x は個数"], ["count: {x * 2} items", "個数: {x * 2} 個"]]


def _finish(paths: ja.Paths, name: str) -> None:
    """What a translator does after `todo`: fill every entry from the tables above, drop the todo marks."""
    data = json.loads(paths.translation_file(name).read_text(encoding="utf-8"))
    for key in ("cells", "solutions"):
        for cid, entry in data.get(key, {}).items():
            entry.pop("todo", None)
            if entry["type"] == "markdown":
                entry["ja"] = JAPANESE[cid].split("\n")
            else:
                entry["replace"] = [p for p in PAIRS if p[0] in "".join(ja.translatable(CODE))]
    paths.translation_file(name).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


@pytest.fixture
def course(tmp_path: Path) -> ja.Paths:
    """A course of one notebook and its solutions, translated and built: check() is clean."""
    paths = ja.Paths(tmp_path)
    _write(paths.english / "00_demo.ipynb", ENGLISH)
    _write(paths.english / "solutions.ipynb", [_md("s0", "# Solutions"), _md("s1", "## 00 · Demo\n\n**1.** Counted.")])
    for name in ("00_demo", "solutions"):
        ja.todo(paths, name)
        _finish(paths, name)
    ja.build(paths)
    assert ja.check(paths) == []
    return paths


def _edit_english(paths: ja.Paths, cid: str, source: str) -> None:
    path = paths.english / "00_demo.ipynb"
    nb = nbformat.read(path, as_version=4)
    next(c for c in nb.cells if c.id == cid).source = source
    nbformat.write(nb, path)


def test_build_applies_translations_and_keeps_code(course: ja.Paths) -> None:
    nb = nbformat.read(course.japanese / "00_demo.ipynb", as_version=4)
    assert [c.id for c in nb.cells] == ["m0", ja.LANG_CELL_ID, "k1", "m2", "m3"]
    assert nb.cells[0].source == JAPANESE["m0"]
    assert nb.cells[2].source == 'x = 3  # x は個数\nprint(f"個数: {x * 2} 個")\nassert x == 3, "x"\n'
    exec(compile(nb.cells[2].source, "ja", "exec"), {})  # the translated cell still runs
    solutions = nbformat.read(course.japanese / "solutions.ipynb", as_version=4)
    assert [c.source for c in solutions.cells if c.cell_type == "markdown"] == [JAPANESE["s0"], JAPANESE["s1"]]


def test_a_changed_english_cell_makes_its_translation_stale(course: ja.Paths) -> None:
    _edit_english(course, "m2", "## 1. Counting\n\nSee [the docs](https://example.org), `print` and `len`.")
    problems = ja.check(course)
    assert any("cell m2 (markdown): stale" in p for p in problems), problems
    report = ja.todo(course, "00_demo")
    assert "+See [the docs](https://example.org), `print` and `len`." in report  # the diff since translation
    entry = json.loads(course.translation_file("00_demo").read_text(encoding="utf-8"))["cells"]["m2"]
    assert entry["todo"] == "stale" and ja.joined(entry["ja"]) == JAPANESE["m2"]  # the old text kept to edit
    entry_check = ja.check(course)
    assert any("cell m2 (markdown): marked todo" in p for p in entry_check), entry_check


def test_a_code_only_change_needs_no_new_translation(course: ja.Paths) -> None:
    _edit_english(course, "k1", CODE.replace("x = 3", "x = 4").replace("x == 3", "x == 4"))
    assert any("not what the build writes" in p for p in ja.check(course))  # notebooks/ja must be rebuilt
    ja.build(course)
    assert ja.check(course) == []
    assert "x = 4  # x は個数" in nbformat.read(course.japanese / "00_demo.ipynb", as_version=4).cells[2].source


def test_a_new_english_cell_is_reported_untranslated(course: ja.Paths) -> None:
    nb = nbformat.read(course.english / "00_demo.ipynb", as_version=4)
    nb.cells.insert(3, _md("m9", "## 2. More"))
    nbformat.write(nb, course.english / "00_demo.ipynb")
    problems = ja.check(course)
    assert any("cell m9 (markdown): untranslated" in p for p in problems), problems
    assert "## cells/m9 (markdown): NEW" in ja.todo(course, "00_demo")


def test_a_hand_edit_of_the_generated_notebook_fails(course: ja.Paths) -> None:
    path = course.japanese / "00_demo.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[2].source = nb.cells[2].source.replace("x = 3", "x = 5")
    nbformat.write(nb, path)
    assert any("not what the build writes" in p for p in ja.check(course))


def test_pairs_change_only_comments_and_strings() -> None:
    source = 'count = 1  # count them\nprint("count")\n'
    out, unused = ja.apply_pairs(source, [["count", "個数"]])
    assert out == 'count = 1  # 個数 them\nprint("個数")\n' and unused == []  # the name `count` is untouched
    out, unused = ja.apply_pairs(source, [["count them", "数える"], ["count", "個数"], ["nowhere", "どこにも"]])
    assert out == 'count = 1  # 数える\nprint("個数")\n' and unused == [2]  # longest match wins, no cascade


def test_code_difference_allows_text_and_field_order_but_not_code() -> None:
    english = 'x = 2\nprint(f"{x} of {x + 1}", "done")  # ok\n'
    assert ja.code_difference(english, 'x = 2\nprint(f"{x + 1} のうち {x}", "完了")  # よし\n') is None
    assert "outside comments" in ja.code_difference(english, 'x = 3\nprint(f"{x} of {x + 1}", "done")  # ok\n')
    assert "f-string" in ja.code_difference(english, 'x = 2\nprint(f"{x} of {x + 2}", "done")  # ok\n')
    assert "line up" in ja.code_difference(english, 'x = 2\nprint(f"{x} of {x + 1}", "done")\n')
    assert "not plain Python" in ja.code_difference("%time x = 1  # a\n", "%time x = 1  # b\n")


def test_markdown_must_keep_structure_code_links_and_japanese() -> None:
    en = "## 2. Title\n\nUse `make lab`, see [docs](https://a.b).\n\n- one\n- two"

    def problems(heading: str, body: str, bullets: str = "- 一\n- 二") -> str:
        return " | ".join(ja.markdown_problems(en, f"{heading}\n\n{body}\n\n{bullets}"))

    assert problems("## 2. 題", "`make lab` を使い、[文書](https://a.b) を見ます。") == ""
    assert "code span" in problems("## 2. 題", "make lab を使い、[文書](https://a.b) を見ます。")
    assert "link" in problems("## 2. 題", "`make lab` を使い、[文書](https://x.y) を見ます。")
    assert "headings" in problems("## 3. 題", "`make lab` を使い、[文書](https://a.b) を見ます。")
    assert "bullet" in problems("## 2. 題", "`make lab` を使い、[文書](https://a.b) を見ます。", "- 一と二")
    assert ja.markdown_problems(en, en)[0] == "has no Japanese text"
    # A code span the English broke across lines may be rewrapped, but not changed.
    wrapped = "Try `f(a,\n b)` and its `g`."
    assert ja.markdown_problems(wrapped, "`f(a, b)` とその `g` を試します。") == []
    assert "code span" in " ".join(ja.markdown_problems(wrapped, "`f(a, c)` とその `g` を試します。"))


def test_conventions_goals_exercises_and_pointer_to_japanese_solutions(course: ja.Paths) -> None:
    data = json.loads(course.translation_file("00_demo").read_text(encoding="utf-8"))
    data["cells"]["m3"]["ja"] = ["## 演習", "", "1. 数えましょう。", "2. もう一度。", "", "解答例は英語版にあります。"]
    course.translation_file("00_demo").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    ja.build(course)
    assert any("`solutions.ipynb` のセクション 00" in p for p in ja.check(course))


def test_a_translation_without_english_cell_is_an_orphan(course: ja.Paths) -> None:
    nb = nbformat.read(course.english / "00_demo.ipynb", as_version=4)
    nb.cells = [c for c in nb.cells if c.id != "m2"]
    nbformat.write(nb, course.english / "00_demo.ipynb")
    ja.build(course)
    assert any("entry cells/m2 has no English cell" in p for p in ja.check(course))


def test_build_removes_notebooks_that_lost_their_translation(course: ja.Paths) -> None:
    course.translation_file("00_demo").unlink()
    course.translation_file("solutions").unlink()
    assert any("no translation file" in p for p in ja.check(course))
    _write(course.japanese / "mine.ipynb", [_md("a", "my notes")])  # a learner's own notebook stays
    ja.build(course)
    assert [p.name for p in course.japanese.glob("*.ipynb")] == ["mine.ipynb"]


# ---- llmlab.i18n: the package's messages -------------------------------------------------------------------


def test_every_message_has_both_languages_with_the_same_fields() -> None:
    for key, texts in i18n.MESSAGES.items():
        assert set(texts) == set(i18n.LANGUAGES), key
        assert i18n.fields(texts["en"]) == i18n.fields(texts["ja"]), key
        assert ja.JAPANESE.search(texts["ja"]), f"{key}: the 'ja' text is not Japanese"


def test_llmlab_lang_switches_the_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(i18n.LANG_ENV, raising=False)
    assert i18n.language() == "en" and i18n.tr("button.train") == "Train"
    monkeypatch.setenv(i18n.LANG_ENV, "ja_JP.UTF-8")
    assert i18n.language() == "ja" and i18n.tr("button.train") == "学習開始"
    message = i18n.tr("error.no_data", path="data/x", what="?", command="llmlab prepare")
    assert message.startswith("data/x に準備済みのデータがありません") and message.endswith("llmlab prepare")
    assert i18n.tr("button.train", lang="en") == "Train"


def test_a_bad_language_or_key_is_refused_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(i18n.LANG_ENV, "klingon")
    with pytest.raises(ValueError, match=r"LLMLAB_LANG='klingon'.*\('en', 'ja'\)"):
        i18n.tr("button.train")
    with pytest.raises(KeyError, match="add it there"):
        i18n.tr("button.nope", lang="en")


def test_the_generated_language_cell_sets_a_language_llmlab_speaks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(i18n.LANG_ENV, "en")  # registers the variable with monkeypatch, so teardown restores it
    monkeypatch.delenv(i18n.LANG_ENV)  # (the cell below sets os.environ itself: it must not leak into other tests)
    exec(ja.LANG_CELL_SOURCE, {})  # what the first code cell of every Japanese notebook runs
    assert i18n.language() == "ja"
