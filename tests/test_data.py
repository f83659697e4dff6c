"""Data pipeline: sources -> tokens -> train.bin/val.bin/meta.json, splits, idempotence, bad input.

Every corpus is a few kB written into tmp_path; expected tokens come from encoding the text directly with the
tokenizer (an independent path from datasets.map + the .bin writer).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import llmlab.data as data
from llmlab.config import DEFAULT_PRESET, get_preset
from llmlab.data import (
    SourceUnavailableError,
    check_compatible,
    check_utf8,
    create_memmap_files,
    default_data_dir,
    load_and_process_dataset,
    load_meta,
    load_tokenizer_for,
    prepare,
)
from llmlab.data.batches import _dtype_for
from llmlab.tokenizers import CharTokenizer, Tokenizer, get_tokenizer

# The module behind llmlab.data.prepare(): monkeypatch its globals to intercept what prepare() calls.
# (`llmlab.data.prepare` as an attribute is the function, which shadows the submodule of that name.)
prepare_module = importlib.import_module("llmlab.data.prepare")

DOCS = [
    "First Citizen:\nBefore we proceed any further, hear me speak.\n",
    "All:\nSpeak, speak.\n",
    "Second Citizen:\nWould you proceed especially against Caius Marcius?\n",
    "MENENIUS:\nWhat work's, my countrymen, in hand? where go you\nWith bats and clubs?\n",
    "Caf\u00e9 cr\u00e8me, na\u00efve \u2014 unicode text: \u00e6\u00f8\u00e5 \u4e2d\u6587.\n",
    "BRUTUS:\nMark'd you his lip and eyes?\n",
    "SICINIUS:\nNay, but his taunts.\n",
    "CORIOLANUS:\nThey bid us to the Volscian lords.\n",
    "VOLUMNIA:\nThou art my warrior; I holp to frame thee.\n",
    "AUFIDIUS:\nI have ravish'd Rome.\n",
]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """datasets' cache and the default output folder (./data) both inside tmp_path."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    monkeypatch.chdir(tmp_path)


def write_jsonl(path: Path, texts: list[str], **extra: list) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": i, "text": t, **{k: v[i] for k, v in extra.items()}}) + "\n")
    return path


def read_bins(out: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    meta = json.loads((out / "meta.json").read_text())
    dtype = np.dtype(meta["dtype"])
    return meta, np.fromfile(out / "train.bin", dtype=dtype), np.fromfile(out / "val.bin", dtype=dtype)


def split_docs(ids: np.ndarray, eot: int, tok: Tokenizer) -> list[str]:
    """Decode a documents-split token file into its documents (each ends with EOT)."""
    assert ids.size == 0 or ids[-1] == eot, "every document must end with the EOT token"
    cuts = np.flatnonzero(ids == eot)
    starts = np.concatenate([[0], cuts[:-1] + 1])
    return [tok.decode(ids[s:e].tolist()) for s, e in zip(starts, cuts)]


def char_tok(texts=DOCS) -> CharTokenizer:
    return get_tokenizer("char", text="".join(texts) + "\n")


# ---------------------------------------------------------------------------------------------- pipeline


def test_documents_split_keeps_whole_documents_with_eot(tmp_path):
    src = write_jsonl(tmp_path / "c.jsonl", DOCS)
    tok = char_tok()
    meta = prepare(src, tokenizer=tok, out_dir=tmp_path / "out", val_fraction=0.2, seed=3, progress=False)
    meta_file, train, val = read_bins(tmp_path / "out")
    assert meta == meta_file
    train_docs, val_docs = split_docs(train, tok.eot_token, tok), split_docs(val, tok.eot_token, tok)
    assert len(val_docs) == 2 and len(train_docs) == 8  # round(0.2 * 10)
    assert sorted(train_docs + val_docs) == sorted(DOCS)
    # within a split, documents keep corpus order
    assert train_docs == [d for d in DOCS if d in train_docs]
    # independent token counts: each document encoded directly, plus one EOT
    assert meta["train_tokens"] == sum(len(tok.encode(d)) + 1 for d in train_docs) == train.size
    assert meta["val_tokens"] == val.size
    assert meta["train_bytes"] == sum(len(d.encode("utf-8")) for d in train_docs)
    assert meta["val_bytes"] == sum(len(d.encode("utf-8")) for d in val_docs)
    assert (meta["tokenizer"], meta["fingerprint"], meta["vocab_size"], meta["eot_token"]) == (
        "char",
        tok.fingerprint,
        tok.vocab_size,
        tok.eot_token,
    )
    assert meta["dtype"] == "uint16" and meta["split"] == "documents" and meta["format_version"] == 1
    assert load_tokenizer_for(tmp_path / "out").fingerprint == tok.fingerprint


def test_split_is_seeded(tmp_path):
    src = write_jsonl(tmp_path / "c.jsonl", DOCS)
    tok = char_tok()

    def val_docs(seed, name):
        prepare(src, tokenizer=tok, out_dir=tmp_path / name, val_fraction=0.3, seed=seed, progress=False)
        return split_docs(read_bins(tmp_path / name)[2], tok.eot_token, tok)

    first = val_docs(1, "a")
    assert val_docs(1, "b") == first
    assert any(val_docs(s, f"s{s}") != first for s in (2, 3, 4))


def test_tail_split_equals_encoding_the_joined_text(tmp_path):
    """split='tail' = nanoGPT's reference: the joined text cut by position, each side encoded whole. Tiny
    pieces force many piece boundaries: the tokens must still equal encoding each side in one call."""
    tok = get_tokenizer("gpt2")
    docs = [d * 3 for d in DOCS] + ["  trailing   spaces\t\n\n\n", "x" * 300]
    src = tmp_path / "corpus"
    src.mkdir()
    for i, d in enumerate(docs):
        (src / f"{i:02d}.txt").write_text(d, encoding="utf-8")
    tokenized, _ = load_and_process_dataset(src, tok, split="tail", val_fraction=0.25, progress=False, _piece_chars=40)
    meta = create_memmap_files(tokenized, tmp_path / "out", progress=False)
    _, train, val = read_bins(tmp_path / "out")
    text = "\n\n".join(docs)
    cut = int(len(text) * 0.75)
    assert train.tolist() == tok.encode(text[:cut])
    assert val.tolist() == tok.encode(text[cut:])
    assert meta["train_bytes"] == len(text[:cut].encode()) and meta["val_bytes"] == len(text[cut:].encode())
    assert meta["dtype"] == "uint16" and meta["split"] == "tail"


@pytest.mark.slow  # worker processes
def test_num_proc_2_gives_the_same_files(tmp_path):
    src = write_jsonl(tmp_path / "c.jsonl", DOCS * 4)
    tok = char_tok()
    prepare(src, tokenizer=tok, out_dir=tmp_path / "one", progress=False)
    prepare(src, tokenizer=tok, out_dir=tmp_path / "two", num_proc=2, progress=False)
    folder = tmp_path / "plays"  # several files: datasets also reads them with 2 processes
    folder.mkdir()
    for i, d in enumerate(DOCS):
        (folder / f"{i:02d}.txt").write_text(d * 3, encoding="utf-8")
    prepare(folder, tokenizer=tok, out_dir=tmp_path / "f1", progress=False)
    prepare(folder, tokenizer=tok, out_dir=tmp_path / "f2", num_proc=2, progress=False)
    for a, b in (("one", "two"), ("f1", "f2")):
        for name in ("train.bin", "val.bin"):
            assert (tmp_path / a / name).read_bytes() == (tmp_path / b / name).read_bytes()


def test_long_document_is_encoded_in_pieces_exactly(tmp_path):
    tok = get_tokenizer("gpt2")
    doc = " ".join(DOCS) * 20
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "book.txt").write_text(doc, encoding="utf-8")
    (folder / "other.txt").write_text(DOCS[0], encoding="utf-8")
    tokenized, _ = load_and_process_dataset(
        folder, tok, val_fraction=0.5, seed=0, split="documents", progress=False, _piece_chars=64
    )
    create_memmap_files(tokenized, tmp_path / "out", progress=False)
    _, train, val = read_bins(tmp_path / "out")
    ids = train if len(train) > len(val) else val
    assert ids.tolist() == tok.encode(doc) + [tok.eot_token]


def test_large_vocabulary_uses_uint32(tmp_path):
    class WideTokenizer(Tokenizer):  # ids above 65535: must not wrap around in uint16
        name = "wide"

        @property
        def vocab_size(self) -> int:
            return 70_000

        def encode(self, text):
            return [65_536 + ord(c) % 1000 for c in text]

        def to_dict(self):
            return {"name": "wide", "format_version": 1}

    tok = WideTokenizer()
    src = write_jsonl(tmp_path / "c.jsonl", DOCS)
    meta = prepare(src, tokenizer=tok, out_dir=tmp_path / "out", progress=False)
    _, train, val = read_bins(tmp_path / "out")
    assert meta["dtype"] == "uint32" and train.dtype == np.uint32
    assert sorted(np.concatenate([train, val]).tolist()) == sorted(
        sum((tok.encode(d) + [tok.eot_token] for d in DOCS), [])
    )
    assert _dtype_for(65_536) == np.uint16 and _dtype_for(65_537) == np.uint32
    with pytest.raises(ValueError, match="vocab_size=4,294,967,297 is too large"):
        _dtype_for(2**32 + 1)


# ---------------------------------------------------------------------------------------------- sources


def test_source_kinds(tmp_path):
    """.txt file, .txt folder (one document per file, CRLF -> LF), .jsonl with extra fields, .parquet."""
    tok = char_tok()
    folder = tmp_path / "plays"
    folder.mkdir()
    for i, d in enumerate(DOCS[:4]):
        (folder / f"{i}.txt").write_bytes(d.replace("\n", "\r\n").encode())
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "x.txt").write_text("hidden files are skipped")
    pq.write_table(pa.table({"text": DOCS, "n": list(range(len(DOCS)))}), tmp_path / "c.parquet")
    single = tmp_path / "one.txt"
    single.write_text(DOCS[0] + DOCS[1], encoding="utf-8")
    cases = {
        folder: DOCS[:4],
        write_jsonl(tmp_path / "c.jsonl", DOCS, title=[f"t{i}" for i in range(len(DOCS))]): DOCS,
        tmp_path / "c.parquet": DOCS,
    }
    for source, expected in cases.items():
        tokenized, _ = load_and_process_dataset(source, tok, val_fraction=0.25, split="documents", progress=False)
        assert tokenized["train"].column_names == ["ids", "n_tokens", "n_bytes", "is_val"]
        docs = [tok.decode(r) for part in ("train", "val") for r in tokenized[part]["ids"]]
        assert sorted(d[: -len("<|endoftext|>")] for d in docs) == sorted(expected), source
    meta = prepare(single, tokenizer=tok, split="tail", out_dir=tmp_path / "single", progress=False)
    text = DOCS[0] + DOCS[1]
    assert meta["train_bytes"] + meta["val_bytes"] == len(text.encode())
    assert meta["source"] == str(single.resolve())


def test_char_tokenizer_is_built_from_the_source(tmp_path):
    src = write_jsonl(tmp_path / "c.jsonl", ["abc" * 30, "cab" * 30, "bca" * 30, "zzz" * 30])  # enough to train on
    meta = prepare(
        src, tokenizer="char", out_dir=tmp_path / "out", val_fraction=0.25, split="documents", progress=False
    )
    tok = load_tokenizer_for(tmp_path / "out")
    assert tok.vocab_size == 5 == meta["vocab_size"]  # a, b, c, z + EOT
    assert tok.decode(tok.encode("zab")) == "zab"


def test_default_data_dir(tmp_path):
    # the library's default tokenizer is the default training preset's (cpu_small: "bpe")
    assert data.DEFAULT_TOKENIZER == get_preset(DEFAULT_PRESET).train.tokenizer == "bpe"
    assert default_data_dir() == Path(f"data/shakespeare_{data.DEFAULT_TOKENIZER}")
    assert default_data_dir("shakespeare", "char") == Path("data/shakespeare_char")
    assert default_data_dir("shakespeare", "gpt2") == Path("data/shakespeare_gpt2")
    (tmp_path / "My Corpus.jsonl").write_text('{"text": "x"}\n')
    char = get_tokenizer("char", text="x")
    assert default_data_dir(tmp_path / "My Corpus.jsonl", char) == Path("data/my_corpus_char")
    assert default_data_dir("openwebtext", "gpt2") == Path("data/openwebtext_gpt2")
    assert default_data_dir("hf:someone/Fine-Web", "bpe") == Path("data/fine_web_bpe")


def test_hub_offline_fails_fast_with_the_local_alternative(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SourceUnavailableError) as e:
        prepare("openwebtext", tokenizer="gpt2", progress=False)
    msg = str(e.value)
    assert data.OPENWEBTEXT_REPO in msg and "HF_HUB_OFFLINE" in msg and "llmlab prepare --source" in msg
    assert isinstance(e.value, ValueError)  # the CLI prints ValueErrors as one line
    err = e.value  # one message, no chained traceback
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
    assert not Path("data/openwebtext_gpt2/meta.json").exists()


def test_hub_unreachable_names_dataset_and_cause(monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)

    def unreachable(self, repo_id, **kwargs):
        assert kwargs["timeout"] <= 10  # never the default (long) timeout
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", unreachable)
    with pytest.raises(SourceUnavailableError, match=r"'someone/corpus' \(ConnectionError: Name or service not kn"):
        load_and_process_dataset("hf:someone/corpus", get_tokenizer("char", text="x"), progress=False)


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_sources(tmp_path):
    tok = char_tok()
    with pytest.raises(FileNotFoundError, match="'nope.txt' is neither an existing file"):
        prepare("nope.txt", tokenizer=tok, progress=False)
    with pytest.raises(ValueError, match="hf:OWNER/NAME"):
        prepare("hf:just-a-name", tokenizer=tok, progress=False)
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "a.txt").write_text("a")
    write_jsonl(tmp_path / "mixed" / "b.jsonl", ["b"])
    with pytest.raises(ValueError, match="mixes file types"):
        prepare(tmp_path / "mixed", tokenizer=tok, progress=False)
    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(FileNotFoundError, match="no corpus files in folder"):
        prepare(tmp_path / "empty_folder", tokenizer=tok, progress=False)
    (tmp_path / "notes.md").write_text("# x")
    with pytest.raises(ValueError, match=r"unsupported file type '\.md'"):
        prepare(tmp_path / "notes.md", tokenizer=tok, progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"content": "no text field"}\n{"content": "x"}\n')
    with pytest.raises(ValueError, match=r"has no 'text' column \(columns: content\)"):
        prepare(bad, tokenizer=tok, progress=False)


def test_empty_corpus(tmp_path):
    src = write_jsonl(tmp_path / "empty.jsonl", ["", "", ""])
    with pytest.raises(ValueError, match="is empty"):
        prepare(src, tokenizer=char_tok(), progress=False)
    (tmp_path / "void").mkdir()
    (tmp_path / "void" / "a.txt").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        prepare(tmp_path / "void", tokenizer="char", progress=False)


def test_split_that_leaves_val_empty(tmp_path):
    tok = char_tok()
    src = write_jsonl(tmp_path / "three.jsonl", DOCS[:3])
    with pytest.raises(ValueError, match=r"val_fraction=0.1 of 3 document\(s\) leaves val empty.*split='tail'"):
        prepare(src, tokenizer=tok, val_fraction=0.1, split="documents", progress=False)
    for bad in (0, 0.0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match="val_fraction=.* strictly between 0 and 1"):
            prepare(src, tokenizer=tok, val_fraction=bad, progress=False)
    tiny = write_jsonl(tmp_path / "tiny.jsonl", ["abc"])
    with pytest.raises(ValueError, match="of 3 characters leaves val empty"):
        prepare(tiny, tokenizer=tok, split="tail", val_fraction=1e-18, progress=False)
    with pytest.raises(ValueError, match="of 3 characters leaves train empty"):
        prepare(tiny, tokenizer=tok, split="tail", val_fraction=0.9, progress=False)
    with pytest.raises(ValueError, match="split='random' is not valid"):
        prepare(src, tokenizer=tok, split="random", progress=False)
    with pytest.raises(ValueError, match="num_proc=0 is not valid"):
        prepare(src, tokenizer=tok, num_proc=0, progress=False)


def test_non_utf8_file_names_file_and_offset(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\u00e9 ok\n".encode() + b"na\xefve\n")
    offset = len("caf\u00e9 ok\n".encode()) + 2
    with pytest.raises(ValueError, match=rf"latin1.txt is not valid UTF-8: byte ef at byte offset {offset};.*iconv"):
        prepare(bad, tokenizer="char", split="tail", progress=False)
    # a multi-byte character cut by a read-chunk boundary is fine; a truncated one at the end is not
    good = tmp_path / "good.txt"
    good.write_bytes("\u4e2d\u6587 \u00e6\u00f8\u00e5 \u2014 end".encode())
    for chunk in (1, 2, 3, 5):
        check_utf8(good, chunk_bytes=chunk)
        with pytest.raises(ValueError, match=f"byte offset {offset}"):
            check_utf8(bad, chunk_bytes=chunk)
    cut = tmp_path / "cut.txt"
    cut.write_bytes("ab\u4e2d".encode()[:-1])
    with pytest.raises(ValueError, match="byte offset 2"):
        check_utf8(cut, chunk_bytes=2)


def test_missing_data_names_path_and_command(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_meta(Path("data/shakespeare_char"))
    assert "data/shakespeare_char" in str(e.value)
    assert "llmlab prepare --out data/shakespeare_char --tokenizer char" in str(e.value)
    (tmp_path / "mine_gpt2").mkdir()
    with pytest.raises(
        FileNotFoundError,
        match=r"train.bin is missing.*llmlab prepare --out .*mine_gpt2 "
        r"--tokenizer gpt2 --source PATH_TO_YOUR_CORPUS",
    ):
        data.TokenBatches(tmp_path / "mine_gpt2", "train", block_size=8, batch_size=2)


def test_truncated_bin_is_detected(data_factory):
    out = data_factory("char")  # a fresh folder: this test damages it
    with open(out / "train.bin", "r+b") as f:
        f.truncate(10)
    with pytest.raises(ValueError, match="train.bin has 10 bytes but meta.json says .* truncated"):
        load_meta(out)


def test_fingerprint_mismatch(tmp_path):
    src = write_jsonl(tmp_path / "c.jsonl", DOCS)
    tok = char_tok()
    meta = prepare(src, tokenizer=tok, out_dir=tmp_path / "out", progress=False)
    check_compatible(meta, tok)  # same tokenizer: as object, as checkpoint dict, as fingerprint
    check_compatible(meta, tok.to_dict())
    check_compatible(meta, tok.fingerprint)
    other = get_tokenizer("char", text="abc")
    with pytest.raises(
        ValueError,
        match=r"tokenizer mismatch: the data was tokenized with 'char' .* but the "
        r"checkpoint uses 'char' .*llmlab prepare --tokenizer char",
    ):
        check_compatible(meta, other.to_dict(), what="the checkpoint")
    other.save(tmp_path / "out" / "tokenizer.json")  # tokenizer.json swapped behind meta.json's back
    with pytest.raises(ValueError, match="tokenizer mismatch"):
        load_tokenizer_for(tmp_path / "out")


# ---------------------------------------------------------------------------------------------- atomic, idempotent


def test_interrupted_prepare_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    src = write_jsonl(tmp_path / "c.jsonl", DOCS)
    tok = char_tok()
    out = tmp_path / "out"
    prepare(src, tokenizer=tok, out_dir=out, progress=False)  # a complete earlier run
    real_write = prepare_module._write_bin

    def crash_on_val(ds, path, *args):
        if path.name.startswith("val"):
            path.write_bytes(b"\x01\x00" * 5)  # half-written
            raise KeyboardInterrupt
        return real_write(ds, path, *args)

    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(prepare_module, "_write_bin", crash_on_val)
    with pytest.raises(KeyboardInterrupt):
        prepare(src, tokenizer=get_tokenizer("gpt2"), out_dir=out, progress=False)
    # the earlier complete outputs are untouched (the new ones never left their temporary names)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not list(out.glob("*.tmp")) and not list(out.glob(".prepare*"))
    assert load_meta(out)["tokenizer"] == "char"
    # fresh folder: no train.bin at all, and the folder it made is gone again
    with pytest.raises(KeyboardInterrupt):
        prepare(src, tokenizer=tok, out_dir=tmp_path / "fresh", progress=False)
    assert not (tmp_path / "fresh").exists()


def test_prepare_is_idempotent(tmp_path, monkeypatch):
    src = write_jsonl(tmp_path / "c.jsonl", DOCS)
    out = tmp_path / "out"
    first = prepare(src, tokenizer="char", out_dir=out, progress=False)
    calls = []
    real = prepare_module.load_and_process_dataset
    monkeypatch.setattr(prepare_module, "load_and_process_dataset", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert prepare(src, tokenizer="char", out_dir=out, progress=False) == first
    assert calls == []  # reused
    prepare(src, tokenizer="char", out_dir=out, force=True, progress=False)
    assert calls == [1]  # force rebuilds
    prepare(src, tokenizer="char", out_dir=out, seed=7, progress=False)
    assert calls == [1, 1]  # other split settings rebuild
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the source changed
    prepare(src, tokenizer="char", out_dir=out, seed=7, progress=False)
    assert calls == [1, 1, 1]
    assert prepare(src, tokenizer="char", out_dir=out, seed=7, progress=False)["seed"] == 7
    assert calls == [1, 1, 1]
    (out / ".prepare-999999999" / "cache").mkdir(parents=True)  # left by a killed run
    prepare(src, tokenizer="char", out_dir=out, force=True, progress=False)
    assert not list(out.glob(".prepare-*"))


@pytest.mark.parametrize("split", ["documents", "tail"])
def test_tokenized_cache_is_reused_only_for_the_same_text(tmp_path, split):
    """Called directly, load_and_process_dataset keeps its results in datasets' cache, named by a key of the
    source's content: the same text reuses them (not tokenized again), other text never does."""
    src = write_jsonl(tmp_path / "c.jsonl", DOCS)
    tok = char_tok()

    def run():
        tokenized, _ = load_and_process_dataset(src, tok, split=split, val_fraction=0.3, progress=False)
        files = {f["filename"]: os.stat(f["filename"]).st_mtime_ns for f in tokenized["train"].cache_files}
        return tokenized, files

    first, files = run()
    assert files and all(f.startswith(str(tmp_path / "hf_cache")) for f in files)
    again, files_again = run()
    assert files_again == files  # the same cache files, not written again
    assert again["train"]["ids"] == first["train"]["ids"]
    docs = DOCS[::-1]  # the same documents in another order: other text, same size
    write_jsonl(src, docs)
    changed, files_changed = run()
    assert not set(files_changed) & set(files)
    if split == "tail":
        text = "\n\n".join(docs)
        assert sum(changed["train"]["ids"], []) == tok.encode(text[: int(len(text) * (1 - 0.3))])
    else:
        train_docs = [tok.decode(r[:-1]) for r in changed["train"]["ids"]]  # without the EOT
        assert len(train_docs) == 7 and train_docs == [d for d in docs if d in train_docs]


@pytest.mark.slow  # a subprocess preparing the whole corpus with GPT-2 BPE
def test_manual_one_liner_runs_offline(tmp_path):
    """The manual's three calls with defaults: embedded Shakespeare, the default preset's tokenizer (BPE), no
    network; split "auto" holds out whole works (42 of them)."""
    code = (
        "from llmlab.data import load_and_process_dataset, save_processed_dataset, create_memmap_files; "
        "tokenized, _ = load_and_process_dataset(); save_processed_dataset(tokenized); "
        "create_memmap_files(tokenized)"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf_cache"), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=120)
    out = tmp_path / "data" / "shakespeare_bpe"
    meta, train, val = read_bins(out)
    assert (out / "tokenized" / "dataset_dict.json").is_file()
    assert meta["tokenizer"] == "bpe" and meta["dtype"] == "uint16" and meta["vocab_size"] == 1024
    assert meta["split"] == "documents" and meta["split_request"] == "auto" and meta["documents"] == 42
    from llmlab.corpus import shakespeare

    tok = load_tokenizer_for(out)
    texts = list(shakespeare()["text"])
    val_docs = split_docs(val, tok.eot_token, tok)  # whole works, decoded back to their exact text
    assert len(val_docs) == 4 == meta["val_documents"] and all(d in texts for d in val_docs)
    assert meta["val_tokens"] == sum(len(tok.encode(d)) + 1 for d in val_docs)
    assert meta["train_bytes"] + meta["val_bytes"] == sum(len(t.encode()) for t in texts) == 5_057_198
    assert (train == tok.eot_token).sum() == 38 and train[-1] == tok.eot_token


@pytest.mark.parametrize("split,vocab_size", [("tail", None), ("documents", None), ("tail", 265)])
def test_bpe_is_trained_on_the_training_text_only(tmp_path: Path, split: str, vocab_size: int | None) -> None:
    # Held-out text must not shape the vocabulary it is evaluated with: a word that occurs only in val
    # must not become a token, while a word as frequent in train does; at any vocabulary size.
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("walrus carpenter " * 400)
    (folder / "b.txt").write_text("zephyrquix " * 400)
    tokenized, tok = data.load_and_process_dataset(
        source=folder, tokenizer="bpe", split=split, val_fraction=0.5, seed=0, progress=False, vocab_size=vocab_size
    )
    if vocab_size is not None:
        assert tok.vocab_size == vocab_size
    val_text = tok.decode([i for row in tokenized["val"]["ids"] for i in row])
    train_word, val_word = ("walrus", "zephyrquix") if "zephyrquix" in val_text else ("zephyrquix", "walrus")
    tokens = set(tok.vocab)
    assert train_word.encode() in tokens or (b" " + train_word.encode()) in tokens
    assert not any(val_word[:6].encode() in t for t in tokens)


def test_bpe_vocab_size_gets_its_own_folder_and_is_not_reused_for_another_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # data/<source>_bpe300 for a 300-token BPE, so the default 1,024-token folder is never mistaken for it; the
    # request is recorded, and the same folder asked for another size is rebuilt rather than reused.
    monkeypatch.chdir(tmp_path)
    text = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog, said {i % 7}.\n" for i in range(400))
    (tmp_path / "fox.txt").write_text(text)
    meta = data.prepare(source="fox.txt", tokenizer="bpe", vocab_size=300, split="tail", progress=False)
    out = tmp_path / "data" / "fox_bpe300"
    assert (out / "train.bin").is_file() and not (tmp_path / "data" / "fox_bpe").exists()
    assert meta["vocab_size"] == 300 == load_tokenizer_for(out).vocab_size
    assert meta["tokenizer_request"] == "bpe:300"
    again = data.prepare(source="fox.txt", tokenizer="bpe", vocab_size=280, out_dir=out, split="tail", progress=False)
    assert again["vocab_size"] == 280 and again["tokenizer_request"] == "bpe:280"
    # The default size keeps the plain request, so folders made before sizes existed stay reusable.
    plain = data.prepare(source="fox.txt", tokenizer="bpe", vocab_size=1024, split="tail", progress=False)
    assert plain["tokenizer_request"] == "bpe" and (tmp_path / "data" / "fox_bpe" / "train.bin").is_file()


@pytest.mark.parametrize(
    "tokenizer,vocab_size,match",
    [("char", 300, "only tokenizer='bpe'"), ("gpt2", 50257, "only tokenizer='bpe'"), ("bpe", 100, ">= 257")],
)
def test_bad_vocab_size_is_refused_before_any_folder(
    tmp_path: Path, tokenizer: str, vocab_size: int, match: str
) -> None:
    out = tmp_path / "never"
    with pytest.raises(ValueError, match=f"vocab_size={vocab_size}.*{match}"):
        data.prepare(tokenizer=tokenizer, vocab_size=vocab_size, out_dir=out, progress=False)
    assert not out.exists()


def test_pieces_are_cut_only_where_the_pre_tokenizer_sees_whitespace():
    # Python's re counts \x1c-\x1f as whitespace, GPT-2's pre-tokenizer (the regex module) does not: "!\x1c" is
    # one punctuation run, so a cut between "!" and "\x1c" would split a token the whole text keeps together.
    from llmlab.data.tokenizing import _pieces

    text = "word!\x1c" * 40 + " tail"
    pieces = list(_pieces(text, size=8))
    assert "".join(pieces) == text
    assert all(not p.endswith("!") for p in pieces[:-1]), [p for p in pieces if p.endswith("!")]
    tok = get_tokenizer("gpt2")
    assert [i for p in pieces for i in tok.encode(p)] == tok.encode(text)
