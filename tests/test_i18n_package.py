"""LLMLAB_LANG=ja reaches what a learner reads from the package: panel labels, status lines, the runs table,
and the troubleshooting errors (missing data, divergence, interrupt, out of memory, no CUDA).

Each test builds the real object or raises the real error in Japanese, and checks the English default too, so
a message that is looked up but not wired (or wired to the wrong key) fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

from llmlab import i18n, runtime
from llmlab.config import Config, ModelConfig, TrainConfig
from llmlab.data import load_meta
from llmlab.widgets import ExperimentPanel, RacePanel, SamplingPanel
from llmlab.widgets.live import RunRecord, runs_table_html

PACKAGE = Path(__file__).resolve().parents[1] / "llmlab"


def _tiny_base() -> Config:
    return Config(
        model=ModelConfig(vocab_size=64, block_size=16, embedding_size=32, num_heads=2, depth=1),
        train=TrainConfig(
            batch_size=4, max_iters=6, warmup_iters=1, eval_interval=3, eval_iters=1, device="cpu", compile="false"
        ),
    )


@pytest.fixture
def japanese(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(i18n.LANG_ENV, "ja")


def _keys_used_in_the_package() -> set[str]:
    keys = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "tr"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                keys.add(node.args[0].value)
    return keys


def test_every_message_is_used_and_every_use_has_a_message() -> None:
    used = _keys_used_in_the_package()
    assert used - set(i18n.MESSAGES) == set(), "tr() asks for keys that MESSAGES lacks"
    assert set(i18n.MESSAGES) - used == set(), "MESSAGES holds keys no package code asks for"


def test_the_experiment_panel_speaks_japanese(japanese: None, monkeypatch: pytest.MonkeyPatch) -> None:
    panel = ExperimentPanel("unused", "unused", base=_tiny_base(), steps=20)
    assert panel.button.description == "学習開始"
    assert panel.repeats.description == "繰り返し ×N" and panel.prediction.description == "予想"
    assert "準備ができました" in panel.status.value
    assert "まだ実行がありません" in panel.table.value
    panel.num_heads.value = 2
    panel.embedding_size.value = 48  # 2 still divides 48: no note
    assert panel.note.value == ""
    monkeypatch.delenv(i18n.LANG_ENV)
    english = ExperimentPanel("unused", "unused", base=_tiny_base(), steps=20)
    assert english.button.description == "Train" and "Ready." in english.status.value


def test_the_runs_table_footnotes_speak_japanese(japanese: None) -> None:
    def record(label: str, losses: list[float]) -> RunRecord:
        mean = sum(losses) / len(losses)
        return RunRecord(label, {"max_lr": 1e-3}, 1000, 1.0, mean, mean / 0.7, 1.0, val_losses=losses)

    one_seed = runs_table_html([record("a", [2.0]), record("b", [2.1])])
    assert "印を付けた実行はありません" in one_seed and "「繰り返し ×N」を 3 以上" in one_seed
    clear = runs_table_html([record("a", [2.0, 2.01, 1.99]), record("b", [3.0, 3.01, 2.99])])
    assert "太字：a は b より 1.000 低い値です" in clear and "ノイズより大きな差" in clear
    thin = runs_table_html([record("a", [2.0, 2.01]), record("b", [3.0, 3.01])])
    assert "斜体：" in thin and "示唆にとどまります" in thin


def test_the_race_and_sampling_panels_speak_japanese(japanese: None, tmp_path: Path) -> None:
    race = RacePanel(tmp_path, tmp_path / "races", base=_tiny_base(), seconds=2.0)
    assert race.button.description == "レース開始" and race.seconds.description == "各秒数"
    assert "レース開始を押してください" in race.message.value
    torch.manual_seed(0)
    from llmlab.model import GPT
    from llmlab.tokenizers import get_tokenizer

    tok = get_tokenizer("char", text="abcdefgh ")
    model = GPT(_tiny_base().model.__class__(vocab_size=tok.vocab_size, block_size=16, embedding_size=32, num_heads=2))
    panel = SamplingPanel(model, tok, "abc", max_new_tokens=4, num_samples=2)
    panel.update(temperature=1.0, top_k=0, top_p=1.0)
    assert "<b>多様性 " in panel.message.value and "サンプル 1" in panel.message.value
    assert "シード" in panel.message.value


def test_missing_data_is_explained_in_japanese(japanese: None, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_meta(tmp_path / "nothing-here")
    message = str(info.value)
    assert "に準備済みのデータがありません（フォルダがありません）" in message
    assert "llmlab prepare" in message  # the command stays a command


def test_the_cpu_note_says_why_in_japanese(japanese: None) -> None:
    note = runtime.explain_device(torch.device("cpu"))
    assert note.startswith("CPU で学習します（") and "CUDA GPU が使えない理由" in note
    why = "CPU 専用版" if torch.version.cuda is None else "GPU が見えません"
    assert why in note


def test_divergence_and_interrupt_messages_speak_japanese(
    japanese: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from llmlab.failures import TrainingError, TrainingInterrupted, diverged, interrupted, oom_batch_size
    from llmlab.train import Trainer

    text = "To be, or not to be, that is the question.\n" * 200
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text(text, encoding="utf-8")
    (tmp_path / "src" / "b.txt").write_text(text[::-1], encoding="utf-8")
    from llmlab.data import prepare

    data = tmp_path / "data"
    prepare(source=str(tmp_path / "src"), tokenizer="char", out_dir=data, progress=False)
    config = _tiny_base().override(vocab_size=load_meta(data)["vocab_size"], batch_size=2)
    trainer = Trainer(config, data, tmp_path / "out", cpu_threads=1)
    error = diverged(trainer, float("nan"), 7, "loss", 3e-3)
    assert isinstance(error, TrainingError)
    assert str(error).startswith("ステップ 7 で loss が nan になりました（lr=0.003）。学習が発散しています。")
    assert "--set max_lr=" in str(error)  # the advice keeps the setting to type

    trainer.safe_step, trainer.saved_step = 3, None
    monkeypatch.setattr(trainer, "save", lambda step, is_best: setattr(trainer, "saved_step", step))
    stopped = interrupted(trainer, "SIGINT")
    assert isinstance(stopped, TrainingInterrupted)
    assert re.match(r"ステップ 3/6 で中断しました \(SIGINT\)。", str(stopped)), str(stopped)

    trainer.config = trainer.config.override(batch_size=1)
    with pytest.raises(TrainingError, match=r"でメモリが足りません（batch_size=1、.*--set block_size=8 を試して"):
        oom_batch_size(trainer, [])  # no callback chose a smaller batch
