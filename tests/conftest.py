"""Shared fixtures: tiny prepared data and tiny configs for the trainer / checkpoint / CLI / DDP tests.

Everything a test writes goes under pytest's temporary folders: a test run never touches a learner's
``out/``, ``data/`` or notebook outputs.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from llmlab.config import Config, get_preset

# A shell starts a background job (`make test &`, `nohup make test &`) with SIGINT ignored, and an ignored signal
# stays ignored in every process started from it: the tests that press Ctrl-C on a child (a prepare, a training
# run) would then test nothing. Python's own default makes the suite independent of how it was launched; the
# children then get the default disposition at exec and install Python's handler themselves.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# ~60 KB of the embedded corpus: enough windows for block 16, small enough to prepare in well under a second.
CORPUS_CHARS = 60_000


def make_data(root: Path, tokenizer: str = "char") -> Path:
    """A prepared data directory (train.bin, val.bin, meta.json, tokenizer.json) from a slice of Shakespeare."""
    from llmlab import data
    from llmlab.corpus import shakespeare_text

    src = root / "corpus.txt"
    src.write_text(shakespeare_text()[:CORPUS_CHARS], encoding="utf-8")
    out = root / f"data_{tokenizer}"
    data.prepare(source=str(src), tokenizer=tokenizer, out_dir=out, split="tail", val_fraction=0.1, progress=False)
    return out


def tiny_config(**overrides: object) -> Config:
    """A model small enough that a step takes a few milliseconds on one CPU thread."""
    base = get_preset("cpu_small").override(
        block_size=16,
        embedding_size=32,
        num_heads=2,
        depth=2,
        dropout=0.0,
        batch_size=4,
        grad_accum_steps=1,
        max_iters=20,
        warmup_iters=2,
        max_lr=3e-3,
        min_lr=3e-4,
        eval_interval=10,
        eval_iters=2,
        log_interval=1,
        max_seconds=0.0,
        device="cpu",
        compile="false",
        tokenizer="char",
    )
    return base.override(overrides)


@pytest.fixture(scope="session")
def char_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One prepared character-level data directory shared by the whole session (read-only by convention)."""
    return make_data(tmp_path_factory.mktemp("char_data"))


@pytest.fixture
def data_factory(tmp_path: Path) -> Callable[[str], Path]:
    """``data_factory("bpe")``: a fresh prepared data directory with that tokenizer, in this test's tmp folder."""
    return lambda tokenizer="char": make_data(tmp_path, tokenizer)


@pytest.fixture(name="tiny_config")
def tiny_config_fixture() -> Callable[..., Config]:
    """``tiny_config(max_iters=5)``: the tiny test config with overrides."""
    return tiny_config


# ---- a test run leaves the learner's files alone ---------------------------------------------------
# Fast-mode notebooks write under $LLMLAB_FAST_ROOT (llmlab.config.course_path) and tests under tmp_path;
# this check fails the session if anything a learner keeps changed anyway.
_REPO = Path(__file__).resolve().parents[1]
_LEARNER_PATHS = ("out", "data", "notebooks/out", "notebooks/data")


def learner_files_fingerprint(root: Path = _REPO) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under the learner's run/data folders, and of the notebooks themselves."""
    files = [p for rel in _LEARNER_PATHS for p in (root / rel).rglob("*") if p.is_file()]
    files += sorted((root / "notebooks").glob("**/*.ipynb"))
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in files
        if ".ipynb_checkpoints" not in p.parts
    }


@pytest.fixture(autouse=True)
def _english_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests read the package's English messages unless they ask for another language: LLMLAB_LANG set in the
    shell (a Japanese learner's) must not change what the tests see."""
    monkeypatch.delenv("LLMLAB_LANG", raising=False)


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config._llmlab_learner_files = learner_files_fingerprint()  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = getattr(session.config, "_llmlab_learner_files", None)
    if before is None:
        return
    after = learner_files_fingerprint()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        print(f"\nERROR: the test run changed a learner's files (tests must write to tmp folders): {changed[:10]}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
