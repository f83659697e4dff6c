"""The `llmlab` command: train -> generate -> info, prepare, and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmlab.cli import build_parser, main, parse_overrides
from llmlab.config import preset_names

TINY = [
    "--set",
    "block_size=16",
    "--set",
    "embedding_size=32",
    "--set",
    "num_heads=2",
    "--set",
    "depth=2",
    "--set",
    "batch_size=4",
    "--set",
    "max_iters=12",
    "--set",
    "warmup_iters=2",
    "--set",
    "eval_interval=6",
    "--set",
    "eval_iters=2",
    "--set",
    "device=cpu",
    "--quiet",
]


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err  # one clear line, no traceback
    return err[0]


def test_train_generate_info(char_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["train", "--data", str(char_data), "--out", str(out), *TINY]) == 0
    assert "best val" in capsys.readouterr().out
    assert (out / "best_checkpoint.bin").exists() and (out / "metrics.csv").exists()

    args = [
        "generate",
        "--checkpoint",
        str(out / "best_checkpoint.bin"),
        "--prompt",
        "ROMEO:",
        "--max-new-tokens",
        "20",
        "--seed",
        "3",
        "--top-k",
        "10",
        "--temperature",
        "0.9",
    ]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert first.startswith("ROMEO:") and len(first.rstrip("\n")) > len("ROMEO:")
    assert main(args) == 0
    assert capsys.readouterr().out == first  # same seed, same text
    assert main([*args[:-4], "--temperature", "0"]) == 0  # greedy works too

    assert main(["info", str(out / "best_checkpoint.bin")]) == 0
    info = capsys.readouterr().out
    assert "depth=2" in info and "embedding=32" in info and "bits/byte" in info


def test_resume_extends_a_run(char_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["train", "--data", str(char_data), "--out", str(out), *TINY]) == 0
    # --resume takes the run's own settings; --set on top raises the step budget.
    assert (
        main(["train", "--resume", "--data", str(char_data), "--out", str(out), "--set", "max_iters=18", "--quiet"])
        == 0
    )
    assert "done: 18 steps" in capsys.readouterr().out
    assert torch.load(out / "last_checkpoint.bin")["iter"] == 18


def test_resume_reads_the_checkpoint_once(
    char_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["train", "--data", str(char_data), "--out", str(out), *TINY]) == 0
    loads: list[object] = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a[0]) or real_load(*a, **k))
    assert (
        main(["train", "--resume", "--data", str(char_data), "--out", str(out), "--set", "max_iters=14", "--quiet"])
        == 0
    )
    assert "done: 14 steps" in capsys.readouterr().out
    assert len(loads) == 1  # the CLI's settings and the Trainer's state come from one read


def test_resume_without_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--resume", "--out", str(tmp_path / "nothing")]) == 1
    line = _one_error_line(capsys)
    assert "no checkpoint to resume from" in line and "without --resume" in line


def test_bad_settings_are_one_line_errors(char_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["train", "--data", str(char_data), "--out", str(tmp_path / "o")]
    assert main([*base, "--preset", "huge"]) == 1
    line = _one_error_line(capsys)
    assert all(name in line for name in preset_names())
    assert main([*base, "--set", "embeding_size=64"]) == 1
    line = _one_error_line(capsys)
    assert "Did you mean 'embedding_size'" in line and "max_lr" in line  # lists the valid settings
    assert main([*base, "--set", "depth=four"]) == 1
    assert "depth='four'" in _one_error_line(capsys)
    assert main([*base, "--threads", "many"]) == 1
    assert "--threads='many'" in _one_error_line(capsys)
    assert main([*base, "--set", "depth"]) == 1
    assert "NAME=VALUE" in _one_error_line(capsys)
    assert main([*base, "--set", "embedding_size=100", "--set", "num_heads=3"]) == 1
    assert "divisible" in _one_error_line(capsys)
    assert not (tmp_path / "o").exists()  # nothing written for a bad configuration


def test_missing_inputs_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data", str(tmp_path / "nodata"), "--out", str(tmp_path / "o")]) == 1
    assert "llmlab prepare" in _one_error_line(capsys)
    assert main(["generate", "--checkpoint", str(tmp_path / "none.bin")]) == 1
    assert "does not exist" in _one_error_line(capsys)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 100)
    assert main(["info", str(junk)]) == 1
    assert "not a PyTorch checkpoint" in _one_error_line(capsys)


def test_prepare_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "tiny.txt"
    src.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 200)
    out = tmp_path / "prepared"
    assert (
        main(
            [
                "prepare",
                "--source",
                str(src),
                "--tokenizer",
                "char",
                "--out",
                str(out),
                "--split",
                "tail",
                "--val-fraction",
                "0.2",
            ]
        )
        == 0
    )
    assert (out / "train.bin").exists() and (out / "meta.json").exists()
    assert "train" in capsys.readouterr().out


def test_prepare_without_out_names_the_folder_after_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A user's corpus must not land in (or be mistaken for) the embedded corpus's folder.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_book.txt").write_text("To be, or not to be, that is the question.\n" * 300)
    assert main(["prepare", "--source", "my_book.txt", "--tokenizer", "char", "--split", "tail"]) == 0
    assert (tmp_path / "data" / "my_book_char" / "train.bin").exists()
    assert not (tmp_path / "data" / "shakespeare_char").exists()
    assert "data/my_book_char" in capsys.readouterr().out


def test_parser_and_overrides() -> None:
    args = build_parser().parse_args(["generate", "--prompt", "hi", "--top-p", "0.9"])
    assert args.top_p == 0.9 and args.checkpoint.endswith("best_checkpoint.bin")
    assert parse_overrides(["a=1", " b = x=y "]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_overrides(["=3"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["prepare", "--tokenizer", "wordpiece"])


def test_train_with_no_data_flag_prepares_embedded_corpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `llmlab train` with no --data: prepares data/shakespeare_char from the embedded corpus, then trains.
    # (tokenizer=char: the same path as the preset's BPE, without training a BPE inside a unit test.)
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            [
                "train",
                *TINY[:-1],
                "--set",
                "max_iters=2",
                "--set",
                "eval_interval=2",
                "--set",
                "tokenizer=char",
                "--quiet",
            ]
        )
        == 0
    )
    assert (tmp_path / "data" / "shakespeare_char" / "train.bin").exists()
    assert (tmp_path / "out" / "best_checkpoint.bin").exists()


@pytest.mark.slow  # a subprocess
def test_python_dash_m_entry_point(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "llmlab", "info", str(tmp_path / "x.bin")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: checkpoint") and "Traceback" not in done.stderr
