"""llmlab.widgets: the panels' pure methods, the real training path behind the Train button, the live plot."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from llmlab import widgets
from llmlab.callbacks import EvalInfo, StepInfo
from llmlab.config import Config, ModelConfig, TrainConfig
from llmlab.model import GPT
from llmlab.schedule import lr_at
from llmlab.tokenizers import get_tokenizer

TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\n"
) * 40


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llmlab.data import prepare

    root = tmp_path_factory.mktemp("widgets")
    src = root / "corpus"
    src.mkdir()
    for i in range(10):  # ten "documents", so the document-level split has a validation part
        (src / f"doc{i}.txt").write_text(TEXT[i * 300 :] + TEXT[: i * 300], encoding="utf-8")
    out = root / "data"
    prepare(source=str(src), tokenizer="char", out_dir=out, progress=False)
    return out


def _tiny_base() -> Config:
    return Config(
        model=ModelConfig(vocab_size=64, block_size=16, embedding_size=32, num_heads=2, depth=1),
        train=TrainConfig(
            batch_size=4,
            max_iters=6,
            max_lr=3e-3,
            min_lr=3e-4,
            warmup_iters=1,
            eval_interval=3,
            eval_iters=1,
            log_interval=1,
            device="cpu",
            compile="false",
        ),
    )


def test_divisors() -> None:
    assert widgets.divisors(12) == [1, 2, 3, 4, 6, 12]
    assert widgets.divisors(192, limit=16) == [1, 2, 3, 4, 6, 8, 12, 16]


def test_parameters_by_component_matches_a_hand_count_and_the_model() -> None:
    config = ModelConfig(vocab_size=85, block_size=32, embedding_size=48, num_heads=4, depth=3)
    C, L = 48, 3
    expected = {
        "token embedding": 85 * C,  # tied with lm_head: counted once
        "position embedding": 32 * C,
        "attention": L * (C * 3 * C + 3 * C + C * C + C),
        "MLP": L * (C * 4 * C + 4 * C + 4 * C * C + C),
        "LayerNorm": L * 4 * C + 2 * C,
    }
    model = GPT(config)
    assert widgets.parameters_by_component(model) == expected
    assert widgets.parameters_by_component(config) == expected  # the meta-device path
    assert sum(expected.values()) == model.num_parameters()


def test_memory_estimate() -> None:
    config = ModelConfig(vocab_size=85, block_size=64, embedding_size=48, num_heads=4, depth=2)
    n = sum(widgets.parameters_by_component(config).values())
    mem = widgets.memory_estimate(config, batch_size=8)
    assert mem["weights"] == mem["gradients"] == 4 * n
    assert mem["optimizer"] == 8 * n  # AdamW: two fp32 moments per parameter
    longer = widgets.memory_estimate(ModelConfig(**{**config.__dict__, "block_size": 128}), batch_size=8)
    assert longer["activations"] > 2 * mem["activations"]  # the T^2 attention term


def test_liveplot_records_curves_from_trainer_hooks() -> None:
    live = widgets.LivePlot(label="run", min_interval=math.inf)
    live.on_train_start(type("FakeTrainer", (), {"config": Config(model=ModelConfig(vocab_size=85))})())
    assert live.baseline == pytest.approx(math.log(85))
    live.on_eval(None, EvalInfo(step=0, train_loss=4.4, val_loss=4.5, val_bpb=6.5))
    for step, loss in ((1, 4.0), (2, 3.5)):
        live.on_step_end(None, StepInfo(step=step, loss=loss, lr=1e-3, tokens_per_sec=1.0))
    live.on_eval(None, EvalInfo(step=2, train_loss=3.4, val_loss=3.6, val_bpb=5.2))
    live.on_train_end(None, None)
    assert live.curves()["run"] == {"train": ([1, 2], [4.0, 3.5]), "val": ([0, 2], [4.5, 3.6])}
    assert live.redraws == 1  # only the end: steps and evals alike wait min_interval between charts
    fig = live.figure()
    assert "step 2, loss 3.500" in fig.axes[0].get_title()


def test_liveplot_draws_steps_and_evals_at_most_every_min_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmlab.widgets import live as live_module

    clock = [100.0]
    monkeypatch.setattr(live_module.time, "perf_counter", lambda: clock[0])
    live = widgets.LivePlot(label="run", min_interval=2.0)
    live.on_train_start(None)
    drawn = []
    for step in range(1, 11):  # one step per 0.5 s, an evaluation every 3 steps
        clock[0] += 0.5
        live.on_step_end(None, StepInfo(step=step, loss=1.0 / step, lr=1e-3, tokens_per_sec=1.0))
        if step % 3 == 0:
            live.on_eval(None, EvalInfo(step=step, train_loss=1.0, val_loss=1.0, val_bpb=1.0))
        drawn.append(live.redraws)
    live.on_train_end(None, None)
    assert drawn == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]  # at 2.0 s (step 4) and 4.0 s (step 8), never sooner
    assert live.redraws == 3 and len(live.val) == 3  # the end always draws; every eval is recorded


def test_liveplot_updates_one_display_in_place() -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    published: list[dict] = []
    shell.display_pub.publish = lambda data, metadata=None, **kw: published.append(kw)  # type: ignore[method-assign]
    try:
        live = widgets.LivePlot(label="run", min_interval=0.0)
        live.on_step_end(None, StepInfo(step=1, loss=4.0, lr=1e-3, tokens_per_sec=1.0))
        live.on_step_end(None, StepInfo(step=2, loss=3.0, lr=1e-3, tokens_per_sec=1.0))
    finally:
        InteractiveShell.clear_instance()
    assert len(published) == 2
    ids = {p["transient"]["display_id"] for p in published}
    assert len(ids) == 1  # the same output, replaced: one image in the saved notebook
    assert [p.get("update", False) for p in published] == [False, True]


def test_experiment_panel_keeps_num_heads_valid_and_explains() -> None:
    panel = widgets.ExperimentPanel("unused", "unused", base=_tiny_base(), steps=20)
    panel.embedding_size.value = 96
    panel.num_heads.value = 3
    panel.embedding_size.value = 128  # 3 does not divide 128
    assert 128 % panel.num_heads.value == 0
    assert panel.num_heads.value == 2  # the nearest valid count
    assert "num_heads=3 does not divide embedding_size=128" in panel.note.value
    assert set(panel.num_heads.options) == set(widgets.divisors(128, 16))
    with pytest.raises(ValueError, match="num_heads=5 does not divide embedding_size=96.*Choose num_heads from"):
        panel.config_for(embedding_size=96, num_heads=5, depth=1, max_lr=1e-3, steps=10)
    with pytest.raises(ValueError, match="steps=0"):
        panel.config_for(embedding_size=96, num_heads=4, depth=1, max_lr=1e-3, steps=0)
    cfg = panel.config_for(embedding_size=64, num_heads=4, depth=2, max_lr=2e-3, steps=60)
    assert (cfg.model.embedding_size, cfg.model.num_heads, cfg.model.depth) == (64, 4, 2)
    assert (cfg.train.max_lr, cfg.train.min_lr, cfg.train.max_iters) == (2e-3, 2e-4, 60)
    assert cfg.train.eval_interval == 10  # six evaluations per run


def test_experiment_panel_trains_through_run_and_through_the_button(data_dir: Path, tmp_path: Path) -> None:
    panel = widgets.ExperimentPanel(data_dir, tmp_path / "runs", base=_tiny_base(), steps=6)
    panel.embedding_size.value = 32
    record = panel.run(**panel.values())
    assert len(panel.runs) == 1 and record is panel.runs[0]
    assert math.isfinite(record.final_val_loss) and record.final_val_loss < record.result.evals[0].val_loss
    assert record.final_val_loss == record.result.evals[-1].val_loss
    assert record.val_bpb == pytest.approx(record.result.evals[-1].val_bpb)
    assert (
        record.num_parameters
        == GPT(
            ModelConfig(vocab_size=_vocab(data_dir), block_size=16, embedding_size=32, num_heads=2, depth=1)
        ).num_parameters()
    )
    assert [s for s, _ in record.val_curve] == list(range(7))  # 6 steps // 6 evaluations per run: every step
    assert (tmp_path / "runs" / "run-1" / "best_checkpoint.bin").exists()

    # The Train button's callback (what a click in the browser runs): same path, into the panel's Output.
    panel.depth.value = 2
    panel.button.click()
    assert len(panel.runs) == 2, panel.status.value
    assert panel.runs[1].settings["depth"] == 2
    assert "Run #2 done" in panel.status.value and not panel.button.disabled
    table = panel.table.value
    assert table.count("<tr") == 3 and "d=2" in table
    labels = [line.get_label() for line in panel.compare_figure().axes[0].get_lines()]
    references = [f"{name} {value:.2f}" for name, value in panel.references.items()]
    assert labels == [f"{r.label} {kind}" for r in panel.runs for kind in ("train", "val")] + references


def _vocab(data_dir: Path) -> int:
    from llmlab.data import load_meta

    return int(load_meta(data_dir)["vocab_size"])


def test_button_shows_errors_instead_of_swallowing_them(tmp_path: Path) -> None:
    panel = widgets.ExperimentPanel(tmp_path / "no-data", tmp_path / "runs", base=_tiny_base(), steps=6)
    panel.button.click()  # the data folder does not exist: the trainer raises FileNotFoundError
    assert panel.runs == []
    assert "FileNotFoundError" in panel.status.value and "no-data" in panel.status.value
    assert not panel.button.disabled


def test_parameter_explorer_updates_and_adjusts_heads() -> None:
    base = ModelConfig(vocab_size=85, block_size=64, embedding_size=192, num_heads=6, depth=4)
    explorer = widgets.ParameterExplorer(base=base, batch_size=8)
    counts, memory = explorer.update(**explorer.values())
    assert counts == widgets.parameters_by_component(base)
    assert f"{sum(counts.values()):,} parameters" in explorer.text.value
    explorer.embedding_size.value = 256  # 6 does not divide 256
    assert 256 % explorer.num_heads.value == 0
    shape = ModelConfig(**{**base.__dict__, "embedding_size": 256, "num_heads": explorer.num_heads.value})
    assert f"{sum(widgets.parameters_by_component(shape).values()):,}" in explorer.text.value
    with pytest.raises(ValueError, match="num_heads"):
        explorer.update(embedding_size=100, num_heads=3, depth=1)


def test_parameter_explorer_refreshes_when_num_heads_stays_the_same() -> None:
    # With num_heads=1 a new embedding_size leaves the head slider's value unchanged (no event of its own):
    # the shown count must still follow the new size.
    base = ModelConfig(vocab_size=85, block_size=64, embedding_size=128, num_heads=1, depth=2)
    explorer = widgets.ParameterExplorer(base=base, batch_size=8)
    explorer.embedding_size.value = 512
    assert explorer.num_heads.value == 1
    expected = sum(widgets.parameters_by_component(ModelConfig(**{**base.__dict__, "embedding_size": 512})).values())
    assert f"{expected:,} parameters" in explorer.text.value


def test_lr_schedule_panel_matches_lr_at() -> None:
    train = TrainConfig(max_iters=200, warmup_iters=20, max_lr=1e-3, min_lr=1e-4)
    panel = widgets.LRSchedulePanel(train)
    lrs = panel.update(max_lr=3e-3, warmup_iters=10)
    expected = Config(train=train).override(max_lr=3e-3, min_lr=3e-3 / 10, warmup_iters=10).train
    assert lrs == [lr_at(s, expected) for s in range(201)]
    assert max(lrs) == pytest.approx(3e-3, rel=1e-2)
    panel.max_lr.value = 1e-2  # the slider path: redraws without raising
    assert "peak 1.0" in panel.note.value or "peak 9.9" in panel.note.value


def test_lr_schedule_panel_draws_the_time_budget_the_trainer_will_apply() -> None:
    train = TrainConfig(max_iters=1000, warmup_iters=10, max_lr=1e-3, min_lr=1e-4, max_seconds=20.0)
    sps = 10.0  # 10 steps per second: the 20 s budget ends at step 200, long before max_iters
    panel = widgets.LRSchedulePanel(train, steps_per_second=sps)
    lrs = panel.update(max_lr=2e-3, warmup_iters=10)
    cfg = panel.config_for(max_lr=2e-3, warmup_iters=10)
    assert lrs == [lr_at(s, cfg, time_fraction=s / (sps * cfg.max_seconds)) for s in range(201)]
    assert panel.stop == 200 and lrs[-1] == pytest.approx(cfg.min_lr) and lrs[199] > cfg.min_lr
    assert "runs out at step 200 at 10.0 steps/s, before max_iters=1000" in panel.note.value
    # A budget longer than max_iters needs: the run ends at max_iters, still on the time-aware cosine.
    slow_budget = widgets.LRSchedulePanel(train, steps_per_second=100.0)
    lrs = slow_budget.update(max_lr=2e-3, warmup_iters=10)
    assert len(lrs) == 1001 and lrs == [lr_at(s, cfg, time_fraction=s / 2000.0) for s in range(1001)]
    assert "comes before the time budget" in slow_budget.note.value and "step 2000" in slow_budget.note.value
    # No speed given: the steps-only curve, and the line says the budget may end the run earlier.
    unknown = widgets.LRSchedulePanel(train)
    assert unknown.update(max_lr=2e-3, warmup_iters=10) == [lr_at(s, cfg) for s in range(1001)]
    assert "counts steps only" in unknown.note.value
    with pytest.raises(ValueError, match="steps_per_second=0"):
        widgets.LRSchedulePanel(train, steps_per_second=0)


def test_lr_schedule_panel_equals_the_lrs_a_budgeted_trainer_logs(
    char_data: Path, tiny_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import types

    import llmlab.train
    from llmlab.train import Trainer

    # A clock that advances 1/8 s per optimizer step and not at all otherwise: exactly 8 steps per second.
    clock = {"t": 0.0}
    monkeypatch.setattr(llmlab.train, "time", types.SimpleNamespace(perf_counter=lambda: clock["t"]))
    config = tiny_config(max_iters=100, warmup_iters=4, max_seconds=5.0, eval_interval=50)
    trainer = Trainer(config, char_data, tmp_path / "out", cpu_threads=1)
    step = trainer.train_step

    def timed_step(lr: float) -> torch.Tensor:
        clock["t"] += 0.125
        return step(lr)

    monkeypatch.setattr(trainer, "train_step", timed_step)
    result = trainer.fit()
    panel = widgets.LRSchedulePanel(config.train, steps_per_second=8.0)
    lrs = panel.update(**panel.values())
    assert result.stop_reason == "max_seconds" and result.final_step == panel.stop == 40
    used = [s.lr for s in result.steps]  # StepInfo.step counts steps done: s.lr was applied at step s.step - 1
    # Equal up to rounding: the panel sets min_lr = max_lr / 10, one ulp away from the config's 3e-4.
    assert [s.step for s in result.steps] == list(range(1, 41)) and used == pytest.approx(lrs[:-1], rel=1e-12)
    assert lrs[-1] == pytest.approx(config.train.min_lr)
    from llmlab.schedule import measured_steps_per_second

    assert measured_steps_per_second(result) == pytest.approx(8.0)


def test_lr_schedule_panel_follows_a_real_budgeted_run_on_the_wall_clock(
    char_data: Path, tiny_config, tmp_path: Path
) -> None:
    from llmlab.schedule import measured_steps_per_second
    from llmlab.train import Trainer

    config = tiny_config(max_iters=100_000, warmup_iters=5, max_seconds=1.5, eval_interval=100_000, eval_iters=1)
    result = Trainer(config, char_data, tmp_path / "out", cpu_threads=1).fit()
    assert result.stop_reason == "max_seconds" and result.final_step > 20
    panel = widgets.LRSchedulePanel(config.train, steps_per_second=measured_steps_per_second(result))
    lrs = panel.update(**panel.values())
    assert abs(panel.stop - result.final_step) <= 1  # the measured speed places the end of the budget
    span = config.train.max_lr - config.train.min_lr
    gaps = [abs(s.lr - lrs[min(s.step - 1, len(lrs) - 1)]) for s in result.steps]
    assert max(gaps) < 0.05 * span, max(gaps)  # timing jitter only (about 0.5% here): the same curve


def test_sampling_panel_stages_follow_the_transforms() -> None:
    torch.manual_seed(0)
    tok = get_tokenizer("char", text=TEXT)
    model = GPT(ModelConfig(vocab_size=tok.vocab_size, block_size=32, embedding_size=32, num_heads=2, depth=1))
    panel = widgets.SamplingPanel(model, tok, "First ", max_new_tokens=10)
    with torch.no_grad():
        logits = model(torch.tensor([tok.encode("First ")]))[0][0, -1]
    stages = panel.update(temperature=0.5, top_k=3, top_p=1.0)
    assert list(stages) == ["original", "temperature 0.5", "+ top-k 3"]
    torch.testing.assert_close(stages["temperature 0.5"], F.softmax(logits / 0.5, dim=-1))
    assert int((stages["+ top-k 3"] > 0).sum()) == 3
    assert set(torch.topk(logits, 3).indices.tolist()) == set(torch.nonzero(stages["+ top-k 3"]).flatten().tolist())
    stages = panel.update(temperature=1.0, top_k=0, top_p=0.5)
    kept = stages["+ top-p 0.5"] > 0
    original = stages["original"]
    assert original[kept].sum() >= 0.5 and original[kept].sum() - original[kept].min() < 0.5  # smallest nucleus
    assert panel.last_text.startswith("First ") and len(panel.last_text) >= len("First ") + 10
    assert "First " in panel.sample.value
    with pytest.raises(ValueError, match="prompt is empty"):
        widgets.SamplingPanel(model, tok, "")


def test_sampling_panel_leaves_the_callers_model_in_training_mode() -> None:
    tok = get_tokenizer("char", text=TEXT)
    model = GPT(
        ModelConfig(vocab_size=tok.vocab_size, block_size=16, embedding_size=16, num_heads=2, depth=1, dropout=0.1)
    )
    model.train()
    panel = widgets.SamplingPanel(model, tok, "First ", max_new_tokens=4)
    assert model.training  # the panel's forward pass and samples ran in eval mode, then restored train mode
    panel.update(temperature=0.8, top_k=5, top_p=1.0)
    assert model.training
    model.eval()
    widgets.SamplingPanel(model, tok, "First ", max_new_tokens=4)
    assert not model.training


def test_a_failing_slider_shows_the_error_and_the_next_change_works() -> None:
    panel = widgets.LRSchedulePanel(TrainConfig(max_iters=100, warmup_iters=10, max_lr=1e-3, min_lr=1e-4))
    panel.warmup_iters.max = 1000
    panel.warmup_iters.value = 500  # more warm-up than max_iters: TrainConfig refuses it
    assert "ValueError" in panel.note.value and "warmup_iters=500" in panel.note.value
    panel.warmup_iters.value = 20  # the panel is still alive and redraws
    assert panel.note.value.startswith("peak 1.00e-03 at step 20")


def test_every_panel_shares_the_panel_base() -> None:
    for cls in (widgets.ExperimentPanel, widgets.ParameterExplorer, widgets.LRSchedulePanel, widgets.SamplingPanel):
        assert issubclass(cls, widgets.Panel)
        assert "_ipython_display_" not in vars(cls) and "guarded" not in vars(cls)


def test_liveplot_can_plot_against_training_time() -> None:
    live = widgets.LivePlot(label="run", x="seconds", show=False)
    live.on_step_end(None, StepInfo(step=1, loss=4.0, lr=1e-3, tokens_per_sec=1.0, elapsed=0.5))
    live.on_eval(None, EvalInfo(step=1, train_loss=4.0, val_loss=4.1, val_bpb=5.0, elapsed=0.75))
    assert live.train == [(0.5, 4.0)] and live.val == [(0.75, 4.1)]
    assert live.figure().axes[0].get_xlabel() == "training time (s)"
    with pytest.raises(ValueError, match="x='tokens' is not valid"):
        widgets.LivePlot(x="tokens")


def test_race_panel_races_the_mix_against_the_baseline_for_equal_seconds(data_dir: Path, tmp_path: Path) -> None:
    from llmlab.config import MODERN_TECHNIQUES

    base = _tiny_base().override(eval_interval=2)
    panel = widgets.RacePanel(data_dir, tmp_path / "races", base=base, seconds=1.0)
    assert panel.values()["techniques"] == list(MODERN_TECHNIQUES)  # everything ticked to start
    panel.boxes["Muon"].value = False
    mix = panel.config_for(panel.values()["techniques"], 1.0)
    assert mix.model.position == "rope" and mix.train.optimizer == "adamw" and mix.train.max_seconds == 1.0
    baseline, run = panel.run(seconds=1.0, techniques=["rotary positions", "QK-norm"])
    for record in (baseline, run):
        assert record.result.stop_reason == "max_seconds" and math.isfinite(record.val_bpb)
        assert record.val_curve[-1][0] <= 1.0 + 2.0  # x is seconds: the last eval comes just after the budget
    assert "rotary positions, QK-norm" in panel.table.value
    panel.seconds.value = 2.0
    panel.repeats.value = 1
    panel.button.click()  # the button path trains a second race
    assert len(panel.races) == 2 and not panel.button.disabled


def test_race_panel_repeats_each_side_and_draws_the_seed_range(data_dir: Path, tmp_path: Path) -> None:
    base = _tiny_base().override(eval_interval=2, seed=5)
    panel = widgets.RacePanel(data_dir, tmp_path / "races", base=base, seconds=1.0, repeats=2)
    assert panel.values()["repeats"] == 2
    baseline, mix = panel.run(**panel.values())
    for record in (baseline, mix):
        assert record.seeds == [5, 6] and len(record.val_bpbs) == 2  # one record per side, both seeds in it
        assert "val_band" in record.curves("seconds")
    assert baseline.label == "GPT-2 baseline" and mix.label == "+ all techniques"  # short: the legend fits
    ax = panel.figure().axes[0]
    assert len(ax.collections) == 2  # a shaded seed range per side
    assert ax.get_legend().get_bbox_to_anchor().x0 > ax.get_window_extent().x1  # the legend is beside the axes
    assert "embedding learning rate" in panel.table.value  # the table names every technique of the mix
    assert "2 seeds" in panel.table.value and "verdict" in panel.table.value
    assert any(w in panel.table.value for w in ("lower than", "differ by"))  # compare's sentence
    with pytest.raises(ValueError, match="repeats"):
        panel.run(seconds=1.0, techniques=[], repeats=0)
    with pytest.raises(ValueError, match="unknown technique"):
        panel.run(seconds=1.0, techniques=["dropout"])
