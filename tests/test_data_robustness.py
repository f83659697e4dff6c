"""prepare() on the rough edges: small corpora (split "auto"), failures, interruptions, two runs at once, a full
disk or a read-only folder, and one default tokenizer for the library and the default training preset.

Each test fails on the pipeline before these guarantees: "documents" was the only default split (three books
failed), a failed run left its empty folder behind, a failure while writing removed the earlier meta.json, two
runs wrote the same folder at once, and errors from the OS came through raw.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import llmlab.data as data
from llmlab.config import DEFAULT_PRESET, get_preset
from llmlab.corpus import shakespeare, shakespeare_text
from llmlab.data import (
    OutputFolderBusyError,
    OutputFolderError,
    create_memmap_files,
    load_and_process_dataset,
    load_meta,
    load_tokenizer_for,
    prepare,
)
from llmlab.data.tokenizing import AUTO_MIN_DOCUMENTS, _auto_split
from llmlab.tokenizers import Tokenizer, get_tokenizer

prepare_module = importlib.import_module("llmlab.data.prepare")  # the module (llmlab.data.prepare is the function)
outputs_module = importlib.import_module("llmlab.data.outputs")  # the output folder's lock, swap and cleanup

TEXT = shakespeare_text()
DOCS = [f"Document {i}: " + TEXT[i * 700 : (i + 1) * 700] for i in range(12)]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """datasets' cache and the default output folder (./data) both inside tmp_path."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    monkeypatch.chdir(tmp_path)


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def books(folder: Path, n: int = 3, chars: int = 20_000) -> Path:
    """A folder of ``n`` .txt books (one document each)."""
    folder.mkdir()
    for i in range(n):
        (folder / f"book{i}.txt").write_text(TEXT[i * chars : (i + 1) * chars], encoding="utf-8")
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def complete_outputs(out: Path) -> Path:
    """A folder holding complete outputs of an earlier run."""
    prepare(write_jsonl(out.parent / f"{out.name}_earlier.jsonl", DOCS), tokenizer="char", out_dir=out, progress=False)
    assert load_meta(out)["split"] == "documents"
    return out


def one_sentence(err: BaseException) -> str:
    """The message, checked to be short and free of raw OS wording and chained tracebacks."""
    msg = str(err)
    short = re.sub(r"/\S+", "PATH", msg)
    assert "[Errno" not in msg and "Traceback" not in msg and "\n" not in msg and len(short) < 300, msg
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
    return msg


# ---------------------------------------------------------------------------------------------- 1: split="auto"


def test_auto_split_rule():
    assert AUTO_MIN_DOCUMENTS == 10
    assert _auto_split(3, 0.1)[0] == "tail" and "fewer than 10" in _auto_split(3, 0.1)[1]
    assert _auto_split(1, 0.1)[0] == "tail"
    assert _auto_split(9, 0.5)[0] == "tail"  # enough for val, but too few documents
    assert _auto_split(10, 0.1)[0] == "documents"
    assert _auto_split(10, 0.04)[0] == "tail"  # round(0.4) = 0 documents: val would be empty
    assert _auto_split(10, 0.96)[0] == "tail"  # round(9.6) = 10 documents: train would be empty
    assert _auto_split(12, 0.5) == ("documents", "12 documents, 6 held out whole")


def test_embedded_corpus_keeps_its_documents_split():
    """The 42 works get the split they always had by default (llmlab train, the manual's calls): whole works."""
    works = [t for t in shakespeare()["text"] if t]
    assert len(works) == 42 and _auto_split(len(works), 0.1)[0] == "documents"


def test_three_books_just_work_with_the_defaults(tmp_path, capsys):
    """prepare(source="my_books/") on three books: no arguments needed; it holds out the tail and says so."""
    folder = books(tmp_path / "my_books")
    meta = prepare(source="my_books/")
    out = Path("data") / f"my_books_{data.DEFAULT_TOKENIZER}"
    assert load_meta(out) == meta
    assert (meta["split"], meta["split_request"], meta["documents"]) == ("tail", "auto", 3)
    printed = capsys.readouterr().out
    assert "split: tail (auto: 3 document(s), fewer than 10" in printed and "split tail (auto)" in printed
    text = "\n\n".join((folder / f"book{i}.txt").read_text() for i in range(3))
    cut = int(len(text) * 0.9)
    tok = load_tokenizer_for(out)
    val = np.fromfile(out / "val.bin", dtype=meta["dtype"])
    assert tok.decode(val.tolist()) == text[cut:]
    assert meta["train_bytes"] + meta["val_bytes"] == len(text.encode())


def test_one_file_just_works(tmp_path):
    src = tmp_path / "novel.txt"
    src.write_text(TEXT[:30_000], encoding="utf-8")
    meta = prepare(src, tokenizer="char", out_dir=tmp_path / "out", progress=False)
    assert (meta["split"], meta["documents"]) == ("tail", 1) and meta["val_tokens"] > 0


def test_auto_uses_documents_when_there_are_enough(tmp_path):
    src = write_jsonl(tmp_path / "c.jsonl", DOCS)
    meta = prepare(src, tokenizer="char", out_dir=tmp_path / "out", progress=False)
    assert (meta["split"], meta["split_request"], meta["documents"]) == ("documents", "auto", 12)
    assert (meta["train_documents"], meta["val_documents"]) == (11, 1)
    # too small a val_fraction to hold out one whole document: the tail instead
    meta = prepare(src, tokenizer="char", out_dir=tmp_path / "small_val", val_fraction=0.02, progress=False)
    assert meta["split"] == "tail" and meta["val_tokens"] > 0


def test_explicit_split_forces_either(tmp_path):
    few = write_jsonl(tmp_path / "few.jsonl", DOCS[:3])
    many = write_jsonl(tmp_path / "many.jsonl", DOCS)
    assert prepare(many, tokenizer="char", split="tail", out_dir=tmp_path / "t", progress=False)["split"] == "tail"
    with pytest.raises(ValueError) as e:  # still refused, with the way out
        prepare(few, tokenizer="char", split="documents", out_dir=tmp_path / "d", progress=False)
    assert "val_fraction=0.1 of 3 document(s) leaves val empty with split='documents'" in one_sentence(e.value)
    assert "split='tail'" in str(e.value) and "split='auto'" in str(e.value)
    with pytest.raises(ValueError, match=r"split='random' is not valid: use 'auto'"):
        prepare(few, tokenizer="char", split="random", progress=False)


def test_load_and_process_dataset_reports_the_split(tmp_path, capsys):
    folder = books(tmp_path / "b")
    tokenized, _ = load_and_process_dataset(folder, get_tokenizer("char", text=TEXT[:60_000] + "\n"))
    info = json.loads(tokenized["train"].info.description)["llmlab"]
    assert (info["split"], info["split_request"], info["documents"]) == ("tail", "auto", 3)
    assert "split: tail (auto: 3 document(s)" in capsys.readouterr().out
    meta = create_memmap_files(tokenized, tmp_path / "out", progress=False)
    assert (meta["split"], meta["split_request"]) == ("tail", "auto") and "train_documents" not in meta


def _count_builds(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = prepare_module.load_and_process_dataset
    monkeypatch.setattr(prepare_module, "load_and_process_dataset", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_reuse_follows_the_split_used(tmp_path, monkeypatch):
    """Outputs are reused when the split that would be used now is the one used then, however it was asked."""
    calls = _count_builds(monkeypatch)
    few, many = books(tmp_path / "few"), write_jsonl(tmp_path / "many.jsonl", DOCS)
    out = tmp_path / "out"

    def run(source, split):
        return prepare(source, tokenizer="char", out_dir=out, split=split, progress=False)

    first = run(few, "auto")  # -> tail
    assert run(few, "tail") == first and run(few, "auto") == first and len(calls) == 1
    before = snapshot(out)
    with pytest.raises(ValueError, match="leaves val empty"):  # asked for documents: not reusable, and refused
        run(few, "documents")
    assert snapshot(out) == before and len(calls) == 2

    assert run(many, "documents")["split"] == "documents" and len(calls) == 3
    assert run(many, "auto")["split"] == "documents" and len(calls) == 3  # auto picks documents: reused
    assert run(many, "tail")["split"] == "tail" and len(calls) == 4
    assert run(many, "auto")["split"] == "documents" and len(calls) == 5  # auto would not pick tail: rebuilt

    # a folder from before split="auto" (no "documents" / "split_request" in meta.json) is still reused
    meta = json.loads((out / "meta.json").read_text())
    for key in ("documents", "split_request"):
        del meta[key]
    (out / "meta.json").write_text(json.dumps(meta))
    assert run(many, "auto")["split"] == "documents" and len(calls) == 5


# ---------------------------------------------------------------------------------------------- 2: failures clean up


class BrokenTokenizer(Tokenizer):
    name = "broken"

    @property
    def vocab_size(self) -> int:
        return 100

    def encode(self, text):
        raise ValueError("this tokenizer cannot encode")

    def to_dict(self):
        return {"name": "broken", "format_version": 1}


def failing_runs(tmp_path: Path) -> dict[str, tuple[type[BaseException], dict]]:
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"caf\xe9\n")
    return {
        "bad source": (FileNotFoundError, dict(source=tmp_path / "nope.txt")),
        "not UTF-8": (ValueError, dict(source=latin1, tokenizer="char")),
        "empty corpus": (ValueError, dict(source=write_jsonl(tmp_path / "empty.jsonl", ["", ""]), tokenizer="char")),
        "tokenizer error": (
            ValueError,
            dict(source=write_jsonl(tmp_path / "c.jsonl", DOCS), tokenizer=BrokenTokenizer()),
        ),
        "val empty": (
            ValueError,
            dict(source=write_jsonl(tmp_path / "few.jsonl", DOCS[:3]), tokenizer="char", split="documents"),
        ),
    }


def test_failed_runs_leave_no_folder_behind(tmp_path):
    for case, (error, kwargs) in failing_runs(tmp_path).items():
        with pytest.raises(error):
            prepare(out_dir=tmp_path / "data" / "new", progress=False, **kwargs)
        assert not (tmp_path / "data").exists(), case  # neither the folder nor the parent it made
    with pytest.raises(ValueError, match=r"tokenizer='nope' is not valid: use one of char, bpe, gpt2"):
        prepare(write_jsonl(tmp_path / "ok.jsonl", DOCS), tokenizer="nope", out_dir=tmp_path / "data" / "x")
    assert not (tmp_path / "data").exists()


def test_failed_runs_leave_earlier_outputs_byte_identical(tmp_path):
    out = complete_outputs(tmp_path / "out")
    before = snapshot(out)
    for case, (error, kwargs) in failing_runs(tmp_path).items():
        with pytest.raises(error):
            prepare(out_dir=out, progress=False, **kwargs)
        assert snapshot(out) == before, case
    empty = tmp_path / "mine"  # a folder the user made is theirs: kept, even empty
    empty.mkdir()
    with pytest.raises(ValueError):
        prepare(out_dir=empty, progress=False, **failing_runs(tmp_path)["not UTF-8"][1])
    assert empty.is_dir() and not any(empty.iterdir())


# ---------------------------------------------------------------------------------------------- 4: one writer at a time


def _hold_lock(out: Path) -> int:
    """Lock out/.prepare.lock as another prepare process would (flock locks are per open file, so this
    conflicts with prepare in this process too)."""
    import fcntl

    fd = os.open(out / ".prepare.lock", os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


@pytest.mark.skipif(outputs_module.fcntl is None, reason="POSIX flock")
def test_second_writer_fails_fast_naming_the_folder(tmp_path):
    src = write_jsonl(tmp_path / "c.jsonl", DOCS)
    out = complete_outputs(tmp_path / "out")
    fd = _hold_lock(out)
    before = snapshot(out)
    try:
        start = time.monotonic()
        with pytest.raises(OutputFolderBusyError) as e:
            prepare(src, tokenizer="gpt2", out_dir=out, progress=False)
        assert time.monotonic() - start < 5  # fails at once, before loading anything
        msg = one_sentence(e.value)
        assert f"another prepare is writing {out} now" in msg and "--out" in msg
        assert isinstance(e.value, ValueError)  # the CLI prints it as one line
        tokenized, _ = load_and_process_dataset(src, "char", progress=False)
        with pytest.raises(OutputFolderBusyError):  # the manual's create_memmap_files takes the lock too
            create_memmap_files(tokenized, out, progress=False)
        assert snapshot(out) == before
    finally:
        os.close(fd)
    prepare(src, tokenizer="gpt2", out_dir=out, progress=False)  # free again
    assert load_meta(out)["tokenizer"] == "gpt2" and not (out / ".prepare.lock").exists()


def test_lock_without_fcntl_uses_an_exclusive_file(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs_module, "fcntl", None)
    src = write_jsonl(tmp_path / "c.jsonl", DOCS)
    out = tmp_path / "out"
    prepare(src, tokenizer="char", out_dir=out, progress=False)
    assert not (out / ".prepare.lock").exists()  # removed at the end
    (out / ".prepare.lock").write_text("12345\n")  # left by a run that was killed
    with pytest.raises(OutputFolderBusyError) as e:
        prepare(src, tokenizer="char", out_dir=out, force=True, progress=False)
    msg = one_sentence(e.value)
    assert f"another prepare is writing {out} now (it holds the lock {out / '.prepare.lock'})" in msg
    assert "if no prepare is running, the lock was left by a killed run: delete it" in msg
    (out / ".prepare.lock").unlink()
    prepare(src, tokenizer="char", out_dir=out, force=True, progress=False)


# ---------------------------------------------------------------------------------------------- 5: full disk, read-only


class FailingFile:
    """A file that fills up: the first ``room`` bytes are written, then writing fails with ``error``."""

    def __init__(self, f, error: OSError, room: int = 64):
        self.f, self.error, self.room = f, error, room

    def write(self, b):
        b = b.encode() if isinstance(b, str) else bytes(memoryview(b).cast("B"))
        if len(b) > self.room:
            self.f.write(b[: self.room] if "b" in self.f.mode else b[: self.room].decode(errors="ignore"))
            self.f.flush()
            self.room = 0
            raise self.error
        self.room -= len(b)
        return self.f.write(b if "b" in self.f.mode else b.decode())

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def _fail_writing(monkeypatch, name: str, error: OSError, at_open: bool = False) -> None:
    """Make writing ``name`` (its temporary file) in prepare's module fail with ``error``."""
    import builtins

    def fake_open(path, mode="r", *args, **kwargs):
        if Path(path).name == name + ".tmp" and "w" in mode:
            if at_open:
                raise error
            return FailingFile(builtins.open(path, mode, *args, **kwargs), error)
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr(prepare_module, "open", fake_open, raising=False)


@pytest.mark.parametrize("case", ["disk full", "read-only", "disk full at meta.json"])
def test_write_errors_are_clear_and_keep_earlier_outputs(tmp_path, monkeypatch, case):
    src = write_jsonl(tmp_path / "c.jsonl", DOCS[::-1])
    out = complete_outputs(tmp_path / "out")
    before = snapshot(out)
    if case == "read-only":
        _fail_writing(monkeypatch, "train.bin", PermissionError(errno.EACCES, "Permission denied"), at_open=True)
    else:
        _fail_writing(
            monkeypatch,
            "meta.json" if "meta" in case else "train.bin",
            OSError(errno.ENOSPC, "No space left on device"),
        )
    with pytest.raises(OutputFolderError) as e:
        prepare(src, tokenizer="char", out_dir=out, progress=False)
    msg = one_sentence(e.value)
    target = out / ("meta.json" if "meta" in case else "train.bin")
    assert msg.startswith(f"cannot write {target}: ")
    if case == "read-only":
        assert f"permission denied: {out} is read-only" in msg and "choose another output folder" in msg
        assert e.value.errno == errno.EACCES
    else:
        assert "the disk is full; free disk space, or choose another output folder" in msg
        assert e.value.errno == errno.ENOSPC
    assert "--out DIR" in msg and "the earlier outputs there are unchanged" in msg
    assert snapshot(out) == before  # no partial file, no temporary file, the earlier outputs intact
    assert load_meta(out)["source"] == str((tmp_path / "out_earlier.jsonl").resolve())
    # in a fresh folder: nothing is left at all
    with pytest.raises(OutputFolderError):
        prepare(src, tokenizer="char", out_dir=tmp_path / "fresh", progress=False)
    assert not (tmp_path / "fresh").exists()


def test_disk_full_while_tokenizing_is_clear(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(prepare_module, "load_and_process_dataset", full)
    with pytest.raises(OutputFolderError, match=r"cannot write .*\.prepare-\d+: the disk is full; free disk space"):
        prepare(write_jsonl(tmp_path / "c.jsonl", DOCS), tokenizer="char", out_dir=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_unwritable_parent_is_clear(tmp_path, monkeypatch):
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if self.parent == tmp_path / "ro":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(OutputFolderError) as e:
        prepare(
            write_jsonl(tmp_path / "c.jsonl", DOCS),
            tokenizer="char",
            out_dir=tmp_path / "ro" / "a" / "b",
            progress=False,
        )
    assert one_sentence(e.value).startswith(f"cannot write {tmp_path / 'ro' / 'a'}: permission denied: ")
    assert not any((tmp_path / "ro").iterdir())


def test_output_folder_that_is_a_file(tmp_path):
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(OutputFolderError) as e:
        prepare(write_jsonl(tmp_path / "c.jsonl", DOCS), tokenizer="char", out_dir=tmp_path / "out", progress=False)
    assert one_sentence(e.value) == (
        f"the output folder {tmp_path / 'out'} is a file, not a folder; choose another "
        f"output folder (out_dir=..., CLI: --out DIR)"
    )


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="a read-only folder binds only non-root users")
def test_really_read_only_folder(tmp_path):
    out = complete_outputs(tmp_path / "out")
    before = snapshot(out)
    out.chmod(0o555)
    try:
        with pytest.raises(OutputFolderError, match="permission denied"):
            prepare(write_jsonl(tmp_path / "c.jsonl", DOCS[::-1]), tokenizer="char", out_dir=out, progress=False)
    finally:
        out.chmod(0o755)
    assert snapshot(out) == before


# -------------------------------------------------------------------------------------- 6: one default tokenizer


def test_default_tokenizer_is_the_default_presets(tmp_path, monkeypatch):
    import inspect

    preset = get_preset(DEFAULT_PRESET).train.tokenizer
    assert data.DEFAULT_TOKENIZER == preset
    for fn in (prepare, load_and_process_dataset):
        assert inspect.signature(fn).parameters["tokenizer"].default == preset
        assert inspect.signature(fn).parameters["split"].default == "auto"
    src = write_jsonl(tmp_path / "c.jsonl", [TEXT[i : i + 3000] for i in range(0, 36_000, 3000)])
    meta = prepare(src, progress=False)
    assert meta["tokenizer"] == preset and (Path("data") / f"c_{preset}" / "meta.json").is_file()


# -------------------------------------------------------------------------------------- 3 and 4: real processes

CHILD = """
import sys, time, importlib
pm = importlib.import_module("llmlab.data.prepare")
if sys.argv[3] == "slow-write":  # long enough a write phase to be hit by a signal: about 1 s per .bin file
    real, pm.WRITE_BATCH_DOCS = pm._write_bin, 1

    class SlowBar:
        def __init__(self, bar):
            self.bar = bar

        def update(self, n):
            time.sleep(0.004)
            self.bar.update(n)

    pm._write_bin = lambda ds, path, dtype, vocab, bar: real(ds, path, dtype, vocab, SlowBar(bar))
from llmlab.data import prepare
prepare(sys.argv[1], tokenizer="char", out_dir=sys.argv[2], progress=False)
print("done")
"""


def _child(tmp_path: Path, src: Path, out: Path, mode: str = "normal") -> subprocess.Popen:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_DATASETS_CACHE": str(tmp_path / "hf_cache"),
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(src), str(out), mode],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(proc: subprocess.Popen, found, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not found():
        if proc.poll() is not None:
            raise AssertionError(f"the child ended (rc {proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def _big_corpus(tmp_path: Path) -> Path:
    """About 12 MB in 240 documents: prepare takes a few seconds."""
    return write_jsonl(tmp_path / "big.jsonl", [TEXT[(i * 50_000) % 4_000_000 :][:50_000] for i in range(240)])


def _nothing_looks_complete(out: Path) -> None:
    if out.exists():
        assert not list(out.glob("*.tmp")) and not list(out.glob(".prepare*")), sorted(os.listdir(out))
        with pytest.raises(FileNotFoundError):
            load_meta(out)


@pytest.mark.slow  # child processes preparing ~12 MB
def test_real_signals_leave_nothing_that_looks_complete(tmp_path):
    big = _big_corpus(tmp_path)
    # SIGINT (Ctrl-C) while reading and tokenizing, into a fresh folder: the folder goes away
    fresh = tmp_path / "fresh"
    proc = _child(tmp_path, big, fresh, "slow-write")  # (slow writing: still running 0.3 s in, on any machine)
    _wait_for(proc, lambda: any(fresh.glob(".prepare-*")), "the run started")
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    _nothing_looks_complete(fresh)
    assert not fresh.exists()
    # SIGTERM while writing train.bin, into a folder with earlier outputs: they stay as they were
    out = complete_outputs(tmp_path / "out")
    before = snapshot(out)
    proc = _child(tmp_path, big, out, "slow-write")
    _wait_for(proc, lambda: (out / "train.bin.tmp").exists(), "train.bin was being written")
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM  # ended by the signal, after cleaning up
    assert snapshot(out) == before
    # SIGINT then SIGTERM into a fresh folder while writing val.bin: nothing that looks complete
    fresh2 = tmp_path / "fresh2"
    proc = _child(tmp_path, big, fresh2, "slow-write")
    _wait_for(proc, lambda: (fresh2 / "val.bin.tmp").exists(), "val.bin was being written")
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGTERM)  # waits for the cleanup that SIGINT started, then ends the process
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM
    _nothing_looks_complete(fresh2)
    assert not fresh2.exists()
    # and a rerun completes
    for folder in (fresh, out, fresh2):
        proc = _child(tmp_path, big, folder)
        stdout, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "done" in stdout, err[-2000:]
        meta = load_meta(folder)
        assert meta["source"] == str(big.resolve()) and meta["train_tokens"] > 10_000_000
        assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "tokenizer.json", "train.bin", "val.bin"]


@pytest.mark.slow  # child processes preparing ~12 MB
def test_two_processes_at_once(tmp_path):
    big = _big_corpus(tmp_path)
    out = tmp_path / "out"
    first = _child(tmp_path, big, out, "slow-write")
    _wait_for(first, lambda: (out / ".prepare.lock").exists(), "the first run took the lock")
    start = time.monotonic()
    second = _child(tmp_path, write_jsonl(tmp_path / "small.jsonl", DOCS), out)
    _, err = second.communicate(timeout=60)
    assert second.returncode != 0 and time.monotonic() - start < 30
    assert f"OutputFolderBusyError: another prepare is writing {out} now" in err
    assert first.poll() is None, "the second run must fail while the first is still writing"
    stdout, err = first.communicate(timeout=120)
    assert first.returncode == 0 and "done" in stdout, err[-2000:]
    assert load_meta(out)["source"] == str(big.resolve())
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "tokenizer.json", "train.bin", "val.bin"]
