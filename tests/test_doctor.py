"""llmlab doctor: the one-line answer without CUDA, and the report's numbers (MFU, peaks, verdict) with fakes.

There is no GPU here: the GPU-only parts (gpu_facts, the cuda tests) are faked, while the training
measurement and the report run for real on a tiny CPU model.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from llmlab import doctor
from llmlab.cli import main
from llmlab.config import get_preset
from llmlab.model import GPT

FAKE_FACTS = {
    "card": "NVIDIA A100-SXM4-80GB",
    "capability": "8.0",
    "memory_gib": 79.2,
    "gpus_visible": 1,
    "driver": "550.54",
    "torch": "2.13.0",
    "cuda": "12.6",
    "triton": "3.5.0",
    "python": "3.11.7",
    "platform": "Linux",
    "dtype": "bfloat16",
    "compile": True,
    "plan_note": "",
    "gpt2_vocab": "/x/vocab.bpe",
}


def _training(**changes: object) -> dict[str, object]:
    """A measured run as measure_training returns it (numbers made up, shape real)."""
    base: dict[str, object] = {
        "parameters": 124_439_808,
        "device": "cuda",
        "dtype": "bfloat16",
        "compiled": True,
        "steps": 50,
        "tokens_per_step": 12 * 1024,
        "batch_size": 12,
        "grad_accum_steps": 1,
        "tokens_per_sec": 100_000.0,
        "flops_per_token": 855_166_464.0,
        "peak_flops": 312e12,
        "peak_source": "table",
        "mfu": 855_166_464.0 * 100_000.0 / 312e12,
        "first_step_seconds": 41.0,
        "median_step_seconds": 0.12,
        "compile_seconds": 40.88,
        "peak_memory_gib": 21.3,
        "train_loss_first": 10.9,
        "train_loss_last": 6.4,
        "val_loss_first": 10.95,
        "val_loss_last": 6.8,
        "loss_fell": True,
    }
    base.update(changes)
    return base


PASSED = {"status": "passed", "summary": "3 passed in 40.1s"}


# ---- without CUDA -----------------------------------------------------------------------------------


def test_without_cuda_one_line_exit_0_in_seconds(tmp_path: Path) -> None:
    # CUDA_VISIBLE_DEVICES="" hides any GPU, so this is the CPU path on every machine.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "llmlab", "doctor", "--out", str(tmp_path / "report")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llmlab doctor: no CUDA GPU here")
    assert "make gpu-check" in lines[0] and "make test" in lines[0]  # what the learner can do
    assert list(tmp_path.iterdir()) == []  # nothing written
    assert seconds < 60  # import time only (generous for a loaded machine; ~5 s measured)


@pytest.mark.parametrize(
    "cuda_version, mps, expected",
    [
        (None, False, "CPU-only build"),
        ("12.6", False, "sees no GPU (check `nvidia-smi`)"),
        (None, True, "Apple MPS is available: `llmlab train` uses it"),
    ],
)
def test_no_cuda_line_says_why_and_what_to_do(
    monkeypatch: pytest.MonkeyPatch, cuda_version: str | None, mps: bool, expected: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", cuda_version)
    monkeypatch.setattr(doctor, "_mps_available", lambda: mps)
    line = doctor.no_cuda_line()
    assert line is not None and expected in line and "\n" not in line
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert doctor.no_cuda_line() is None


def test_bad_steps_is_one_line_even_without_a_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--steps", "5"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: steps=5 is not valid") and ">= 20" in err[0]


# ---- the numbers ----------------------------------------------------------------------------------------


def test_gpt2_flops_per_token_and_mfu_against_a_hand_count() -> None:
    # GPT-2 124M counted by hand: V*C token embedding (tied head) + 12 blocks of 12C^2 + 13C + final LayerNorm 2C;
    # position embeddings left out (nanoGPT's convention); FLOPs/token = 6N + 12 L C T.
    V, C, L, T = 50257, 768, 12, 1024
    n = V * C + L * (12 * C * C + 13 * C) + 2 * C
    assert n == 123_653_376
    with torch.device("meta"):
        model = GPT(get_preset("gpt2_124m").model)
    flops = model.estimate_flops_per_token()
    assert flops == 6 * n + 12 * L * C * T == 855_166_464
    # 100k tokens/s on an H100 SXM (989 dense bf16 TFLOP/s): 8.55e13 / 9.89e14.
    assert doctor.mfu(flops, 100_000, 989e12) == pytest.approx(0.086468, rel=1e-4)
    assert doctor.mfu(flops, 100_000, None) is None  # unknown card: no figure rather than a wrong one


def test_doctor_config_is_gpt2_124m_shortened() -> None:
    cfg, gpt2 = doctor.doctor_config(40), get_preset("gpt2_124m")
    assert cfg.model == gpt2.model and cfg.train.tokenizer == "gpt2"
    assert (cfg.train.max_iters, cfg.train.eval_interval, cfg.train.grad_accum_steps) == (40, 40, 1)
    assert (cfg.train.device, cfg.train.dtype, cfg.train.compile) == ("cuda", "auto", "auto")
    for bad in (19, 0, True, 30.5):
        with pytest.raises(ValueError, match="steps="):
            doctor.doctor_config(bad)  # type: ignore[arg-type]


# ---- the report -------------------------------------------------------------------------------------


def test_report_on_a_known_card(tmp_path: Path) -> None:
    report = doctor.build_report(FAKE_FACTS, PASSED, _training())
    assert report["ok"] and report["problems"] == [] and report["goal"]["met"] is False  # 27% < 50%
    md = doctor.render_markdown(report)
    assert "| MFU | 27.4% of 312 TFLOP/s (dense peak of the card) |" in md
    assert "| tokens/s | 100,000 " in md and "| peak memory | 21.3 GiB |" in md
    assert "| compile time (training step) | 40.9 s (first step 41.0 s, then 120 ms/step) |" in md
    assert "val 10.950 -> 6.800 (fell)" in md and "| verdict | OK |" in md
    assert "NVIDIA A100-SXM4-80GB (compute capability 8.0, 79.2 GiB)" in md and "2.13.0 / 12.6 / 3.5.0" in md
    assert ">= 50% MFU (GPT-2 124M, bf16 + torch.compile, one H100): not met on this card" in md
    md_path, json_path = doctor.write_report(report, tmp_path / "reports" / "doctor_report.md")
    assert md_path == tmp_path / "reports" / "doctor_report.md" and md_path.read_text() == md
    assert json.loads(json_path.read_text())["training"]["mfu"] == pytest.approx(report["training"]["mfu"])


def test_report_on_an_unknown_card_says_unknown_peak() -> None:
    report = doctor.build_report(FAKE_FACTS, PASSED, _training(peak_flops=None, mfu=None))
    md = doctor.render_markdown(report)
    assert "| MFU | unknown peak (" in md and "LLMLAB_PEAK_FLOPS" in md and "%" not in md.split("| MFU |")[1][:30]
    assert report["goal"]["met"] is None and "not measurable (unknown peak)" in md
    assert report["ok"]  # an unknown peak is not a fault of the card


@pytest.mark.parametrize(
    "tests, training, problem",
    [
        ({"status": "failed", "summary": "1 failed, 2 passed"}, _training(), "CUDA tests failed: 1 failed"),
        (PASSED, _training(val_loss_last=11.0, loss_fell=False), "the validation loss did not fall"),
        (PASSED, {"error": "ValueError: a step needs 30 GiB"}, "training failed: ValueError"),
    ],
)
def test_problems_make_the_verdict(tests: dict, training: dict, problem: str) -> None:
    report = doctor.build_report(FAKE_FACTS, tests, training)
    assert not report["ok"] and any(problem in p for p in report["problems"])
    md = doctor.render_markdown(report)
    assert "| verdict | PROBLEMS: " in md
    # A failed run says so in the goal line too (it is not the card's peak that is unknown).
    failed = "error" in training
    assert ("not measured (training failed)" in md) == failed and ("unknown peak" in md) is False


# ---- the measurement, for real on a tiny CPU model --------------------------------------------------


def test_measure_training_reports_what_the_trainer_did(
    char_data: Path, tiny_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMLAB_PEAK_FLOPS", "1e12")
    cfg = tiny_config(max_iters=40, log_interval=10, eval_interval=40, warmup_iters=4)
    m = doctor.measure_training(cfg, char_data, tmp_path / "out")
    assert m["steps"] == 40 and m["tokens_per_step"] == 4 * 16 and m["compiled"] is False
    assert m["tokens_per_sec"] > 0 and m["median_step_seconds"] > 0
    assert m["mfu"] == pytest.approx(m["flops_per_token"] * m["tokens_per_sec"] / 1e12)
    assert m["peak_source"] == "LLMLAB_PEAK_FLOPS" and m["compile_seconds"] is None  # eager: nothing compiled
    assert m["peak_memory_gib"] is None  # CPU
    assert m["loss_fell"] and m["val_loss_last"] < m["val_loss_first"]
    # tokens/s: the median of the log windows after the first (which holds the compile / warm-up).
    windows = m["window_tokens_per_sec"]
    assert len(windows) == 4 and m["tokens_per_sec"] == statistics.median(windows[1:])


@pytest.mark.slow  # two pytest subprocesses
def test_cuda_tests_run_only_the_cuda_marked_ones(tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_a.py").write_text(
        "import pytest\n\n@pytest.mark.cuda\ndef test_on_gpu():\n    assert True\n\n"
        "def test_not_marked():\n    assert False\n"
    )
    ran = doctor.run_cuda_tests(tests)
    assert ran["status"] == "passed" and "1 passed, 1 deselected" in ran["summary"]  # the unmarked one never ran
    (tests / "test_b.py").write_text("import pytest\n\n@pytest.mark.cuda\ndef test_broken():\n    assert 1 == 2\n")
    ran = doctor.run_cuda_tests(tests)
    assert ran["status"] == "failed" and "1 failed" in ran["summary"] and "test_broken" in ran["output_tail"]
    assert doctor.run_cuda_tests(tmp_path / "nowhere")["status"] == "skipped"


def test_run_end_to_end_with_the_gpu_parts_faked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_config, capsys: pytest.CaptureFixture[str]
) -> None:
    # No GPU here: the card's facts and the cuda tests are faked; the GPT-2 BPE data, the training and the
    # report are real (a slice of the corpus, a tiny model with GPT-2's vocabulary, on the CPU).
    from llmlab import data
    from llmlab.corpus import shakespeare_text

    real_prepare = data.prepare
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(shakespeare_text()[:40_000], encoding="utf-8")
    monkeypatch.setattr(doctor, "no_cuda_line", lambda: None)
    monkeypatch.setattr(doctor, "gpu_facts", lambda device: FAKE_FACTS)
    monkeypatch.setattr(doctor, "run_cuda_tests", lambda: PASSED)
    monkeypatch.setattr(
        doctor,
        "doctor_config",
        lambda steps: tiny_config(tokenizer="gpt2", max_iters=steps, eval_interval=steps, log_interval=10),
    )
    monkeypatch.setattr(data, "prepare", lambda **kw: real_prepare(**{**kw, "source": str(corpus), "split": "tail"}))
    assert doctor.run(out=tmp_path / "doctor_report", steps=30) == 0
    md = (tmp_path / "doctor_report.md").read_text()
    report = json.loads((tmp_path / "doctor_report.json").read_text())
    assert report["training"]["steps"] == 30 and report["training"]["loss_fell"] and report["ok"]
    assert "| verdict | OK |" in md and "GPT-2 BPE" in md
    assert "report: " in capsys.readouterr().out
