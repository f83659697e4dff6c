"""The `llmlab` command: train -> generate -> info, prepare, and one-line errors for bad input."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmlab.cli import main
from llmlab.cli_args import build_parser, parse_overrides
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


def test_a_run_shorter_than_log_interval_does_not_claim_0_tokens_per_s(
    char_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = [
        "train",
        "--data",
        str(char_data),
        "--out",
        str(out),
        *TINY,
        "--set",
        "max_iters=3",
        "--set",
        "log_interval=10",
    ]
    assert main(args) == 0
    done = capsys.readouterr().out
    assert "done: 3 steps" in done and "tokens/s not measured (fewer steps than log_interval=10)" in done
    assert " 0 tokens/s" not in done
    assert main([*args[:-4], "--set", "max_iters=4", "--set", "log_interval=2", "--overwrite"]) == 0
    assert re.search(r"bits/byte, [\d,]+ tokens/s\.", capsys.readouterr().out)  # measured: a number


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


def test_prepare_vocab_size_names_its_folder_and_the_rebuild_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from llmlab.data.batches import _prepare_command

    monkeypatch.chdir(tmp_path)
    (tmp_path / "fox.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 300)
    args = ["prepare", "--source", "fox.txt", "--tokenizer", "bpe", "--vocab-size", "300", "--split", "tail"]
    assert main(args) == 0
    assert "data/fox_bpe300" in capsys.readouterr().out
    assert (tmp_path / "data" / "fox_bpe300" / "train.bin").is_file()
    # A missing folder of that name is rebuilt with the same size (the error message's command).
    command = _prepare_command(Path("data/shakespeare_bpe4096"))
    assert command == "llmlab prepare --out data/shakespeare_bpe4096 --tokenizer bpe --vocab-size 4096"
    assert "--vocab-size" not in _prepare_command(Path("data/shakespeare_bpe"))
    assert main(["prepare", "--tokenizer", "char", "--vocab-size", "300"]) == 1
    assert "vocab_size=300 is not valid" in _one_error_line(capsys)


def test_train_without_data_prepares_the_bpe_size_its_config_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `llmlab train` with no --data looks for (and prepares) a BPE of the config's vocab_size in its own folder.
    import llmlab.data

    asked: dict = {}

    class Stop(Exception):
        pass

    def fake_prepare(**kwargs):
        asked.update(kwargs)
        raise Stop

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(llmlab.data, "prepare", fake_prepare)
    with pytest.raises(Stop):
        main(["train", *TINY, "--set", "tokenizer=bpe", "--set", "vocab_size=300", "--quiet"])
    assert asked["out_dir"] == Path("data/shakespeare_bpe300") and asked["vocab_size"] == 300
    assert asked["tokenizer"] == "bpe"
    with pytest.raises(Stop):
        main(["train", "--preset", "cpu_small", "--quiet"])
    assert asked["out_dir"] == Path("data/shakespeare_bpe")  # cpu_small: the default 1,024 tokens


def test_parser_and_overrides() -> None:
    args = build_parser().parse_args(["generate", "--prompt", "hi", "--top-p", "0.9"])
    assert args.top_p == 0.9 and args.checkpoint is None  # out/best_checkpoint.bin, resolved when it runs
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


# ---- robustness: refusals, advice a command-line user can act on, Ctrl-C ---------------------------------


def test_prepare_defaults_make_the_data_that_train_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from llmlab import data
    from llmlab.config import get_preset
    from llmlab.data.sources import DEFAULT_TOKENIZER

    parser = build_parser()
    args = parser.parse_args(["prepare"])
    assert (args.split, args.tokenizer) == ("auto", DEFAULT_TOKENIZER) == ("auto", get_preset().train.tokenizer)
    help_text = " ".join(parser._subparsers._group_actions[0].choices["prepare"].format_help().split())  # type: ignore[union-attr]
    assert "auto (default): whole documents when there are at least 10, else the tail of the text" in help_text
    with pytest.raises(SystemExit):
        parser.parse_args(["prepare", "--split", "random"])
    calls: list[dict] = []
    monkeypatch.setattr(data, "prepare", lambda **kw: calls.append(kw))
    monkeypatch.chdir(tmp_path)
    assert main(["prepare"]) == 0
    # The folder and settings `llmlab train` (no --data) prepares and reads by itself.
    assert calls == [
        {
            "source": None,
            "tokenizer": DEFAULT_TOKENIZER,
            "vocab_size": None,  # the default BPE size: cpu_small's
            "out_dir": data.default_data_dir(None, get_preset().train.tokenizer),
            "num_proc": 1,
            "val_fraction": 0.1,
            "split": "auto",
            "force": False,
        }
    ]


def test_max_iters_alone_scales_the_presets_warmup_down(
    char_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    smoke = [a for a in TINY if a not in ("warmup_iters=2", "max_iters=12")]
    smoke = [a for i, a in enumerate(smoke) if not (a == "--set" and smoke[i + 1].startswith("--"))]
    out = tmp_path / "out"
    assert main(["train", "--data", str(char_data), "--out", str(out), *smoke, "--set", "max_iters=20"]) == 0
    err = capsys.readouterr().err
    assert err.count("warmup_iters=50 does not fit max_iters=20: using warmup_iters=2") == 1
    assert torch.load(out / "last_checkpoint.bin")["config"]["train"]["warmup_iters"] == 2
    # Both written by the user and contradictory: refused, one line.
    args = ["train", "--data", str(char_data), "--out", str(tmp_path / "o2"), "--set", "max_iters=20"]
    assert main([*args, "--set", "warmup_iters=50"]) == 1
    assert "warmup_iters=50 is not valid" in _one_error_line(capsys)


def test_a_second_train_into_the_same_out_is_refused_until_overwrite(
    char_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["train", "--data", str(char_data), "--out", str(out), *TINY]
    assert main(args) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main([*args, "--set", "seed=9"]) == 1
    line = _one_error_line(capsys)
    assert f"error: {out} holds a finished run (step 12 of 12;" in line
    assert "--resume it" in line and "choose another --out" in line and "pass --overwrite" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # best_checkpoint.bin, metrics.csv untouched
    assert main([*args, "--resume", "--overwrite"]) == 1
    assert "contradict" in _one_error_line(capsys)
    assert main([*args, "--set", "seed=9", "--overwrite"]) == 0
    assert (out / "best_checkpoint.bin").read_bytes() != before["best_checkpoint.bin"]


def test_resume_says_where_it_continues_and_a_damaged_last_checkpoint_has_a_way_out(
    char_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    base = ["train", "--data", str(char_data), "--out", str(out), "--quiet"]
    assert main([*base, *TINY, "--set", "eval_interval=5"]) == 0  # best at 5 or 10, last at 12
    capsys.readouterr()
    last = out / "last_checkpoint.bin"
    last.write_bytes(last.read_bytes()[:1000])  # a copy cut short
    assert main([*base, "--resume"]) == 1
    line = _one_error_line(capsys)
    assert f"replace --resume with --resume-from {out / 'best_checkpoint.bin'}" in line
    best_step = torch.load(out / "best_checkpoint.bin")["iter"]
    assert main([*base, "--resume-from", str(out / "best_checkpoint.bin"), "--set", "max_iters=14"]) == 0
    captured = capsys.readouterr()
    assert f"continuing from step {best_step} of 14 ({out / 'best_checkpoint.bin'})" in captured.err
    assert "done: 14 steps" in captured.out and torch.load(last)["iter"] == 14


def test_an_emoji_prompt_on_a_character_model_says_what_a_cli_user_can_do(
    char_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["train", "--data", str(char_data), "--out", str(out), *TINY]) == 0
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(out / "best_checkpoint.bin"), "--prompt", "ROMEO: 🙂 hi"]) == 1
    line = _one_error_line(capsys)
    assert "'🙂' (U+1F642)" in line and "never saw" in line
    assert "Remove them from the prompt" in line and "BPE" in line and "llmlab train --set tokenizer=bpe" in line
    assert "get_tokenizer" not in line  # Python advice a command-line user cannot act on


def test_a_batch_too_large_for_the_memory_is_one_line_before_anything_is_allocated(
    char_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from llmlab.data.batches import TokenBatches

    # Drawing a batch is where the old code began to allocate 100 million windows: fail loudly instead.
    monkeypatch.setattr(TokenBatches, "batch_at", lambda *a, **k: pytest.fail("a batch was drawn"))
    args = ["train", "--data", str(char_data), "--out", str(tmp_path / "out"), *TINY, "--set", "batch_size=100000000"]
    assert main(args) == 1
    line = _one_error_line(capsys)
    assert "batch_size=100000000 at block_size=16 needs at least" in line and "Try --set batch_size=" in line
    assert not (tmp_path / "out").exists()


def test_an_out_folder_that_cannot_exist_is_named_with_the_fix(
    char_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--data", str(char_data), "--out", "/proc/llmlab-x", *TINY]) == 1
    line = _one_error_line(capsys)
    assert "cannot create the output folder /proc/llmlab-x" in line and "--out" in line
    assert "[Errno" not in line


def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(
    char_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno

    from llmlab.callbacks import MetricsLogger

    out = tmp_path / "out"
    real_on_eval = MetricsLogger.on_eval

    def on_eval(self: MetricsLogger, trainer: object, info: object) -> None:
        real_on_eval(self, trainer, info)
        if info.step == 6:  # type: ignore[attr-defined]
            monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space")))

    monkeypatch.setattr(MetricsLogger, "on_eval", on_eval)
    assert main(["train", "--data", str(char_data), "--out", str(out), *TINY]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: could not write the checkpoint {out / 'last_checkpoint.bin'}: the disk is full")
    assert "free some space" in err[-1] and "Traceback" not in "".join(err)
    monkeypatch.undo()
    assert torch.load(out / "last_checkpoint.bin")["iter"] == 6
    assert not list(out.glob(".*.tmp"))


def test_ctrl_c_saves_the_step_and_prints_the_command_that_continues(
    char_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import os
    import shlex
    import signal

    from llmlab.callbacks import MetricsLogger

    real_on_step_end = MetricsLogger.on_step_end

    def on_step_end(self: MetricsLogger, trainer: object, info: object) -> None:
        real_on_step_end(self, trainer, info)
        if info.step == 10:  # type: ignore[attr-defined]  # a log step (log_interval=10)
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, delivered to this process

    monkeypatch.setattr(MetricsLogger, "on_step_end", on_step_end)
    out = tmp_path / "out"
    assert main(["train", "--data", str(char_data), "--out", str(out), *TINY]) == 130
    err = capsys.readouterr().err
    assert err.count("interrupted") == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith(
        f"interrupted (SIGINT) at step 10: this run's state is saved in {out / 'last_checkpoint.bin'}"
    )
    command = line.split("Continue with: ")[1]
    assert command == shlex.join(["llmlab", "train", "--data", str(char_data), "--out", str(out), *TINY, "--resume"])
    assert torch.load(out / "last_checkpoint.bin")["iter"] == 10
    monkeypatch.undo()
    assert main(shlex.split(command)[1:]) == 0
    captured = capsys.readouterr()
    assert "continuing from step 10 of 12" in captured.err and "done: 12 steps" in captured.out
