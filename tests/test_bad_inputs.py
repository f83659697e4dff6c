"""Bad inputs to the `llmlab` command, one by one: settings, flags, data files, tokenizer files, prompts and
checkpoints. For every one the command must

- exit with a non-zero status,
- print exactly one line, ``error: ...``, that names the problem and a fix (the expected words below),
- print no traceback,
- leave every file beside it byte for byte as it was (and create none).

Each case runs ``llmlab.cli.main`` in-process in a fresh copy of a small workspace (prepared data, a trained
run, a tiny corpus): quick, and one case cannot damage another's files.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from llmlab.cli import main
from llmlab.data.batches import TokenBatches

# A tiny run: every setting given, so that the only output of a refused command is its error line.
TRAIN = [
    *("--set", "block_size=16", "--set", "embedding_size=32", "--set", "num_heads=2", "--set", "depth=2"),
    *("--set", "batch_size=4", "--set", "max_iters=12", "--set", "warmup_iters=2", "--set", "eval_interval=6"),
    *("--set", "eval_iters=2", "--set", "device=cpu", "--quiet"),
]


@pytest.fixture(scope="module")
def template(char_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data/ (prepared, character level), run/ (a finished tiny run) and small/ (a 3,000-character corpus)."""
    from llmlab import data
    from llmlab.corpus import shakespeare_text

    root = tmp_path_factory.mktemp("template")
    shutil.copytree(char_data, root / "data")
    assert main(["train", "--data", str(root / "data"), "--out", str(root / "run"), *TRAIN]) == 0
    (root / "small.txt").write_text(shakespeare_text()[:3000], encoding="utf-8")
    data.prepare(source=str(root / "small.txt"), tokenizer="char", out_dir=root / "small", split="tail", progress=False)
    return root


@pytest.fixture
def ws(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the template, as the current directory."""
    work = tmp_path / "ws"
    shutil.copytree(template, work)
    monkeypatch.chdir(work)
    return work


def _train(*extra: str, data: str = "data", out: str = "new") -> list[str]:
    return ["train", "--data", data, "--out", out, *TRAIN, *extra]


def _resume(*extra: str, data: str = "data") -> list[str]:
    return ["train", "--data", data, "--out", "run", "--resume", "--quiet", *extra]


def _generate(*extra: str, checkpoint: str = "run/best_checkpoint.bin") -> list[str]:
    return ["generate", "--checkpoint", checkpoint, "--max-new-tokens", "5", *extra]


def _edit_json(path: Path, change: Callable[[dict], object]) -> None:
    value = json.loads(path.read_text())
    change(value)  # changes the dict in place
    path.write_text(json.dumps(value))


def _save(path: Path, change: Callable[[dict], dict]) -> None:
    payload = torch.load(path, weights_only=True)
    torch.save(change(payload), path)


class Sneaky:
    """Stands in for pickled code: weights_only must refuse it."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os.getcwd, ())


@dataclass
class Case:
    id: str
    setup: Callable[[Path], list[str]]  # damages the workspace if needed; returns the command's arguments
    says: tuple[str, ...]  # words of the error line: the problem, then the fix


def _write(path: str, data: bytes | str) -> Callable[[Path], None]:
    def write(ws: Path) -> None:
        target = ws / path
        target.write_bytes(data) if isinstance(data, bytes) else target.write_text(data)

    return write


def then(action: Callable[[Path], object], argv: list[str]) -> Callable[[Path], list[str]]:
    return lambda ws: (action(ws), argv)[1]


def just(argv: list[str]) -> Callable[[Path], list[str]]:
    return lambda ws: argv


CASES = [
    # ---- settings (--set)
    Case("depth-zero", just(_train("--set", "depth=0")), ("depth=0 is not valid", "whole number >= 1")),
    Case("negative-max-lr", just(_train("--set", "max_lr=-1")), ("max_lr=-1.0 is not valid", "max_lr must be > 0")),
    Case("nan-max-lr", just(_train("--set", "max_lr=nan")), ("max_lr=nan is not valid", "finite number")),
    Case("dropout-above-one", just(_train("--set", "dropout=1.5")), ("dropout=1.5", "in [0, 1)")),
    Case(
        "heads-do-not-divide",
        just(_train("--set", "embedding_size=100", "--set", "num_heads=3")),
        ("num_heads=3", "divisible", "choose num_heads from"),
    ),
    Case(
        "warmup-longer-than-run",
        just(_train("--set", "max_iters=20", "--set", "warmup_iters=50")),
        ("warmup_iters=50", "must not exceed max_iters=20"),
    ),
    Case("min-lr-above-max-lr", just(_train("--set", "min_lr=0.5")), ("min_lr=0.5", "try min_lr=")),
    Case("misspelt-setting", just(_train("--set", "embeding_size=64")), ("'embeding_size'", "'embedding_size'")),
    Case("unknown-tokenizer", just(_train("--set", "tokenizer=wordpiece")), ("tokenizer='wordpiece'", "char, bpe")),
    Case("unknown-device", just(_train("--set", "device=tpu")), ("device='tpu'", "auto, cpu, cuda")),
    Case("words-for-a-number", just(_train("--set", "batch_size=lots")), ("batch_size='lots'", "whole number")),
    Case("set-without-value", just(_train("--set", "depth")), ("NAME=VALUE", "--set embedding_size=256")),
    Case(
        "batch-too-large-for-memory",
        just(_train("--set", "batch_size=100000000")),
        ("batch_size=100000000 at block_size=16 needs at least", "Try --set batch_size="),
    ),
    Case(
        "batch-larger-than-the-data",
        just(_train("--set", "batch_size=5000", data="small")),
        ("does not fit the train split", "windows of block_size+1 = 17 tokens", "To fix it, use --set batch_size="),
    ),
    Case(
        "context-longer-than-the-data",
        just(_train("--set", "block_size=5000", data="small")),
        ("0 windows of block_size+1 = 5001 tokens", "--set block_size="),
    ),
    # ---- command-line flags
    Case("out-cannot-exist", just(_train(out="/proc/llmlab-x")), ("cannot create the output folder", "--out")),
    Case("out-is-a-file", then(_write("notes.txt", "x"), _train(out="notes.txt")), ("is a file", "--out")),
    Case("out-holds-a-finished-run", just(_train(out="run")), ("run holds a finished run", "--overwrite")),
    Case("resume-with-nothing-to-resume", just(_train("--resume")), ("no checkpoint to resume", "without --resume")),
    Case("resume-and-overwrite", just(_train("--resume", "--overwrite", out="run")), ("contradict", "choose one")),
    Case("unknown-preset", just(_train("--preset", "huge")), ("unknown preset 'huge'", "cpu_small")),
    Case("threads-in-words", just(_train("--threads", "many")), ("--threads='many'", "whole number")),
    Case(
        "resume-into-another-architecture",
        just(_resume("--set", "embedding_size=64")),
        ("another architecture (embedding_size: checkpoint 32, now 64)", "new --out"),
    ),
    Case(
        "resume-from-a-missing-file",
        just(["train", "--data", "data", "--out", "run", "--resume-from", "nope.bin"]),
        ("nope.bin does not exist", "existing best_checkpoint.bin"),
    ),
    Case("no-new-tokens", just(_generate("--max-new-tokens", "0")), ("--max-new-tokens=0", "at least 1")),
    Case("negative-temperature", just(_generate("--temperature", "-1")), ("--temperature=-1.0", ">= 0")),
    Case("top-p-above-one", just(_generate("--top-p", "1.5")), ("top_p=1.5 is not valid", "(0, 1]")),
    Case("top-k-zero", just(_generate("--top-k", "0")), ("top_k=0 is not valid", "whole number >= 1")),
    Case("generate-on-a-tpu", just(_generate("--device", "tpu")), ("device='tpu' is not valid", "auto, cpu")),
    Case("val-fraction-above-one", just(["prepare", "--val-fraction", "1.5"]), ("val_fraction=1.5", "e.g. 0.1")),
    Case("no-worker-processes", just(["prepare", "--num-proc", "0"]), ("num_proc=0 is not valid", ">= 1")),
    Case("missing-source", just(["prepare", "--source", "nothere.txt"]), ("'nothere.txt'", "use a path to a .txt")),
    # ---- prepared data files
    Case("data-folder-missing", just(_train(data="nodata")), ("no prepared data in nodata", "llmlab prepare")),
    Case(
        "train-bin-missing",
        then(lambda ws: (ws / "data" / "train.bin").unlink(), _train()),
        ("train.bin is missing", "llmlab prepare"),
    ),
    Case("train-bin-empty", then(_write("data/train.bin", b""), _train()), ("train.bin has 0 bytes", "--force")),
    Case(
        "val-bin-truncated",
        then(lambda ws: _write("data/val.bin", (ws / "data" / "val.bin").read_bytes()[:100])(ws), _train()),
        ("val.bin has 100 bytes", "truncated", "--force"),
    ),
    Case(
        "meta-json-garbage", then(_write("data/meta.json", "{not json"), _train()), ("meta.json is damaged", "--force")
    ),
    Case("meta-json-empty", then(_write("data/meta.json", ""), _train()), ("meta.json is damaged", "--force")),
    Case(
        "meta-json-from-the-future",
        then(lambda ws: _edit_json(ws / "data" / "meta.json", lambda m: m.update(format_version=99)), _train()),
        ("format_version 99", "--force"),
    ),
    Case(
        "meta-json-missing-entries",
        then(lambda ws: _edit_json(ws / "data" / "meta.json", lambda m: m.pop("train_tokens")), _train()),
        ("meta.json is damaged (missing or wrong entry 'train_tokens')", "--force"),
    ),
    Case(
        "meta-json-wrong-dtype",
        then(lambda ws: _edit_json(ws / "data" / "meta.json", lambda m: m.update(dtype="float64")), _train()),
        ("dtype 'float64'", "--force"),
    ),
    Case("meta-json-a-list", then(_write("data/meta.json", "[1, 2]"), _train()), ("format_version None", "--force")),
    # ---- tokenizer files
    Case(
        "tokenizer-json-garbage",
        then(_write("data/tokenizer.json", "garbage"), _train()),
        ("tokenizer.json cannot be used", "not a JSON tokenizer file", "--force"),
    ),
    Case(
        "tokenizer-json-missing",
        then(lambda ws: (ws / "data" / "tokenizer.json").unlink(), _train()),
        ("tokenizer.json cannot be used", "not found", "--force"),
    ),
    Case(
        "tokenizer-json-of-other-data",
        then(lambda ws: shutil.copy(ws / "small" / "tokenizer.json", ws / "data" / "tokenizer.json"), _train()),
        ("tokenizer mismatch", "--force"),
    ),
    Case(
        "tokenizer-json-unknown-kind",
        then(_write("data/tokenizer.json", '{"name": "wordpiece"}'), _train()),
        ("not a tokenizer definition (name 'wordpiece')", "--force"),
    ),
    Case(
        "tokenizer-json-missing-entry",
        then(_write("data/tokenizer.json", '{"name": "char", "format_version": 1}'), _train()),
        ("missing entry 'chars'", "--force"),
    ),
    # ---- prompts
    Case(
        "emoji-prompt-on-a-character-model",
        just(_generate("--prompt", "ROMEO: 🙂")),
        ("'🙂' (U+1F642)", "never saw", "Remove them from the prompt", "BPE"),
    ),
    Case(
        "control-character-prompt",
        just(_generate("--prompt", "bell\x07")),
        ("'\\x07' (U+0007)", "Remove them from the prompt"),
    ),
    # ---- checkpoints
    Case(
        "checkpoint-truncated",
        then(
            lambda ws: _write("cut.bin", (ws / "run" / "best_checkpoint.bin").read_bytes()[:5000])(ws),
            _generate(checkpoint="cut.bin"),
        ),
        ("cut.bin is truncated or corrupt", "other checkpoint"),
    ),
    Case(
        "checkpoint-garbage",
        then(_write("junk.bin", b"\x00" * 100), ["info", "junk.bin"]),
        ("not a PyTorch checkpoint", "written by llmlab"),
    ),
    Case(
        "checkpoint-from-the-future",
        then(lambda ws: _save(ws / "run" / "best_checkpoint.bin", lambda p: {**p, "format_version": 99}), _generate()),
        ("format_version 99", "Upgrade llmlab"),
    ),
    Case(
        "checkpoint-config-disagrees-with-its-weights",
        then(
            lambda ws: _save(
                ws / "run" / "best_checkpoint.bin",
                lambda p: {**p, "config": {**p["config"], "model": {**p["config"]["model"], "embedding_size": 64}}},
            ),
            _generate(),
        ),
        ("does not match its own config", "another architecture", "use another checkpoint"),
    ),
    Case("checkpoint-is-a-folder", just(_generate(checkpoint="run")), ("run is a directory", "pass a file such as")),
    Case(
        "checkpoint-of-another-program",
        then(lambda ws: torch.save(torch.zeros(3), ws / "tensor.bin"), ["info", "tensor.bin"]),
        ("not an llmlab checkpoint", "written by llmlab"),
    ),
    Case(
        "checkpoint-with-pickled-code",
        then(lambda ws: _save(ws / "run" / "best_checkpoint.bin", lambda p: {**p, "x": Sneaky()}), _generate()),
        ("refused to load", "weights_only", "only if you trust it"),
    ),
    Case(
        "resume-from-a-truncated-last-checkpoint",
        then(
            lambda ws: _write("run/last_checkpoint.bin", (ws / "run" / "last_checkpoint.bin").read_bytes()[:5000])(ws),
            _resume(),
        ),
        ("last_checkpoint.bin is truncated or corrupt", "replace --resume with --resume-from run/best_checkpoint.bin"),
    ),
    Case(
        "resume-from-a-garbage-last-checkpoint",
        then(_write("run/last_checkpoint.bin", "not a checkpoint"), _resume()),
        ("not a PyTorch checkpoint", "--resume-from run/best_checkpoint.bin"),
    ),
    Case(
        "resume-a-checkpoint-from-the-future",
        then(lambda ws: _save(ws / "run" / "last_checkpoint.bin", lambda p: {**p, "format_version": 99}), _resume()),
        ("newer llmlab", "Upgrade llmlab"),
    ),
    Case(
        "resume-on-other-data",
        just(_resume(data="small")),
        ("another architecture (vocab_size: checkpoint", "new --out"),
    ),
]


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def test_there_are_at_least_30_cases() -> None:
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, ws: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Refusals come before training: drawing a batch would mean the bad input got through.
    monkeypatch.setattr(TokenBatches, "batch_at", lambda *a, **k: pytest.fail("training started"))
    argv = case.setup(ws)
    before = _snapshot(ws)
    status = main(argv)
    out, err = capsys.readouterr()
    assert status != 0
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines  # one line, nothing else
    for words in case.says:
        assert words in lines[0], f"{words!r} not in {lines[0]!r}"
    assert _snapshot(ws) == before  # every file beside it unchanged, nothing new written
