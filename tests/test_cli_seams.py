"""The CLI's seams, as a newcomer following the README meets them: defaults, fallbacks, advice that works,
and the common errors in the learner's language (issue: the first hour)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from llmlab.cli import _interrupted_line, main
from llmlab.cli_args import build_parser
from llmlab.failures import TrainingInterrupted

TINY = ["block_size=16", "embedding_size=32", "num_heads=2", "depth=2", "batch_size=4", "max_iters=12"]
TINY += ["warmup_iters=2", "eval_interval=6", "eval_iters=2", "device=cpu"]


def _train(char_data: Path, out: str = "out", *extra: str) -> int:
    args = ["train", "--data", str(char_data), "--out", out, "--quiet"]
    for item in [*TINY, *extra]:
        args += ["--set", item]
    return main(args)


@pytest.fixture
def run_dir(char_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> Path:
    """A finished tiny run in ./out, with the working directory where a README reader stands."""
    monkeypatch.chdir(tmp_path)
    assert _train(char_data) == 0
    capsys.readouterr()
    return tmp_path / "out"


def test_train_says_where_checkpoints_go_and_when_the_first_comes(char_data, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert _train(char_data) == 0
    err = capsys.readouterr().err
    assert "checkpoints go to out/: last_checkpoint.bin at every evaluation (every 6 steps)" in err
    assert "the first at step 6" in err and "Ctrl-C saves" in err


def test_generate_takes_the_prompt_as_its_first_argument(run_dir: Path, capsys) -> None:
    assert main(["generate", "ROMEO:", "--max-new-tokens", "8", "--seed", "1"]) == 0
    positional = capsys.readouterr().out
    assert main(["generate", "--prompt", "ROMEO:", "--max-new-tokens", "8", "--seed", "1"]) == 0
    assert positional == capsys.readouterr().out and positional.startswith("ROMEO:")
    assert main(["generate", "ROMEO:", "--prompt", "JULIET:"]) == 1
    assert "give the prompt once" in capsys.readouterr().err


def test_info_defaults_to_the_best_checkpoint_like_generate(run_dir: Path, capsys) -> None:
    assert main(["info"]) == 0
    assert capsys.readouterr().out.startswith(str(Path("out") / "best_checkpoint.bin"))


def test_without_a_best_checkpoint_generate_info_and_export_use_the_last_one(run_dir: Path, capsys) -> None:
    """After a Ctrl-C before the first evaluation only last_checkpoint.bin exists: it is used, with a note."""
    (run_dir / "best_checkpoint.bin").unlink()
    assert main(["generate", "--max-new-tokens", "5"]) == 0
    assert "using out/last_checkpoint.bin" in capsys.readouterr().err
    assert main(["info"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(str(Path("out") / "last_checkpoint.bin")) and "note:" in captured.err


def test_a_missing_checkpoint_in_a_run_folder_names_the_files_there(run_dir: Path, capsys) -> None:
    """The advice never points at `llmlab train --out out`, which a folder holding a run would refuse."""
    assert main(["train", "--resume-from", "out/nothing.bin", "--out", "out"]) == 1
    line = capsys.readouterr().err.strip()
    assert "out/nothing.bin does not exist" in line and "Train one first" not in line
    assert "out holds best_checkpoint.bin and last_checkpoint.bin: pass out/best_checkpoint.bin" in line


def test_resume_never_advises_a_best_checkpoint_that_is_random_bytes(run_dir: Path, capsys) -> None:
    (run_dir / "last_checkpoint.bin").unlink()
    (run_dir / "best_checkpoint.bin").write_bytes(b"\x00\x01 not a checkpoint " * 50)
    assert main(["train", "--resume", "--out", "out"]) == 1
    line = capsys.readouterr().err.strip()
    assert "--resume-from" not in line and "Start a fresh run" in line


def test_the_interrupt_line_says_whether_a_best_checkpoint_exists(tmp_path: Path) -> None:
    args = build_parser().parse_args(["train", "--out", str(tmp_path)])
    last = tmp_path / "last_checkpoint.bin"
    stop = TrainingInterrupted("interrupted", 3, last, "SIGINT")
    line = _interrupted_line(stop, args, tmp_path / "data")
    assert "No best_checkpoint.bin yet" in line and "samples from last_checkpoint.bin" in line
    (tmp_path / "best_checkpoint.bin").write_bytes(b"x")
    assert f"Best so far: {tmp_path / 'best_checkpoint.bin'}" in _interrupted_line(stop, args, tmp_path / "data")


def test_the_interrupt_line_speaks_japanese(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LLMLAB_LANG", "ja")
    args = build_parser().parse_args(["train", "--out", str(tmp_path)])
    stop = TrainingInterrupted("interrupted", 3, tmp_path / "last_checkpoint.bin", "SIGINT")
    line = _interrupted_line(stop, args, tmp_path / "data")
    assert line.startswith("ステップ 3 で中断しました (SIGINT)。") and "best_checkpoint.bin はまだありません" in line
    assert "続きは: llmlab train --data" in line and line.rstrip().endswith("--resume")


@pytest.mark.parametrize(
    "name, meant",
    [
        ("learning_rate", "max_lr"),
        ("lr", "max_lr"),
        ("n_layer", "depth"),
        ("n_head", "num_heads"),
        ("n_embd", "embedding_size"),
        ("embeding_size", "embedding_size"),
    ],
)
def test_other_courses_names_suggest_the_manuals(name: str, meant: str, capsys) -> None:
    assert main(["train", "--set", f"{name}=3"]) == 1
    assert f"Did you mean '{meant}'?" in capsys.readouterr().err


def test_finetune_says_what_it_will_do_and_its_help_shows_defaults(run_dir: Path, monkeypatch, capsys) -> None:
    import llmlab.finetune

    seen = {}

    def fake(checkpoint, out, **kwargs):
        seen.update(kwargs, checkpoint=checkpoint)
        return SimpleNamespace(reply_bpb_before=3.0, reply_bpb_after=2.0)

    monkeypatch.setattr(llmlab.finetune, "finetune", fake)
    assert main(["finetune"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("fine-tuning out/best_checkpoint.bin on the dialogue of the embedded plays for 300 steps")
    assert seen["max_iters"] == 300
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    assert "(default: 300)" in capsys.readouterr().out


def test_top_p_help_says_what_the_cli_accepts(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    assert "0 < P <= 1" in " ".join(capsys.readouterr().out.split())


def test_a_corpus_too_small_to_train_on_is_refused_at_prepare(tmp_path: Path, capsys) -> None:
    src = tmp_path / "tiny.txt"
    src.write_text("to be or not", encoding="utf-8")
    assert main(["prepare", "--source", str(src), "--tokenizer", "char", "--out", str(tmp_path / "d")]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "too little to train on" in errors[0] and "training token(s)" in errors[0], errors
    assert not (tmp_path / "d").exists()


def test_settings_errors_give_realistic_examples(capsys) -> None:
    assert main(["train", "--set", "block_size=0"]) == 1
    assert "e.g. block_size=128" in capsys.readouterr().err
    assert main(["train", "--set", "max_lr=0"]) == 1
    assert "2e-3 suits cpu_small" in capsys.readouterr().err


def test_the_progress_bar_starts_after_the_first_evaluation() -> None:
    """Its rate, and so its ETA, counts steps only: the step-0 evaluation is not spread over the run."""
    import io

    from llmlab.callbacks import EvalInfo, ProgressBar, StepInfo

    bar = ProgressBar(file=io.StringIO())
    trainer = SimpleNamespace(config=SimpleNamespace(train=SimpleNamespace(max_iters=100)), start_iter=0)
    bar.on_train_start(trainer)
    bar.on_eval(trainer, EvalInfo(step=0, train_loss=4.0, val_loss=4.0, val_bpb=5.0))
    time.sleep(0.3)  # a slow first evaluation
    before = time.time()
    bar.on_step_start(trainer, 0)
    assert bar.bar is not None and bar.bar.start_t >= before
    bar.on_step_end(trainer, StepInfo(step=1, loss=4.0, lr=1e-3, tokens_per_sec=1.0))
    bar.on_train_end(trainer, None)


def test_common_cli_errors_speak_japanese(char_data, tmp_path, monkeypatch, capsys) -> None:
    """With LLMLAB_LANG=ja the prefix and the common errors come in Japanese (names and commands stay as typed)."""
    monkeypatch.setenv("LLMLAB_LANG", "ja")
    monkeypatch.chdir(tmp_path)
    cases = [
        (["train", "--set", "learning_rate=1"], "learning_rate' という設定はありません"),  # bad setting
        (["train", "--set", "embedding_size=30", "--set", "num_heads=4"], "num_heads で割り切れる"),  # not divisible
        (["train", "--data", str(tmp_path / "nothing")], ""),  # missing data: its own translated message
    ]
    for argv, words in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("エラー: ") and words in err, err
    monkeypatch.setenv("LLMLAB_LANG", "en")
    assert _train(char_data) == 0  # a run in ./out ...
    monkeypatch.setenv("LLMLAB_LANG", "ja")
    capsys.readouterr()
    assert _train(char_data) == 1  # ... and a second one refused
    err = capsys.readouterr().err.strip()
    assert err.startswith("エラー: out には最後まで終わった実行があります") and "--overwrite" in err, err
    assert main(["generate", "--prompt", "Ω≈"]) == 1  # characters the char model never saw
    err = capsys.readouterr().err.strip()
    assert err.startswith("エラー: --prompt に、この文字単位のモデルが学習で一度も見ていない文字が 2 個あります"), err
    shutil.rmtree(tmp_path / "out")


def test_a_reader_that_stops_early_is_no_error(run_dir: Path) -> None:
    """`llmlab info | head -1`: the pipe closes before llmlab is done writing; that is not a failure to report."""
    import subprocess
    import sys

    child = subprocess.Popen(
        [sys.executable, "-m", "llmlab", "info"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=run_dir.parent
    )
    child.stdout.close()  # the reader is gone before the first line
    err = child.stderr.read().decode()
    assert child.wait(timeout=120) == 0 and "error" not in err, err
