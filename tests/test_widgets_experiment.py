"""The course's experiments: repeated seeds and their spread, the noise-aware best run, counting-baseline
reference lines, the step/seconds axis, predictions, the T² memory term, and several samples at once."""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from llmlab import widgets
from llmlab.analysis import memory_estimate
from llmlab.callbacks import EvalInfo, StepInfo
from llmlab.config import ModelConfig
from llmlab.metrics import distinct_n
from llmlab.model import GPT
from llmlab.tokenizers import get_tokenizer
from llmlab.widgets.live import lead

SETTINGS = {"embedding_size": 64, "num_heads": 4, "depth": 2, "max_lr": 1e-3, "steps": 10}


def _record(label: str, losses: list[float], prediction: str = "") -> widgets.RunRecord:
    mean = statistics.fmean(losses)
    return widgets.RunRecord(
        label,
        dict(SETTINGS),
        1000,
        5000.0,
        mean,
        mean * 1.44,
        3.0,
        seeds=list(range(len(losses))),
        val_losses=list(losses),
        val_bpbs=[v * 1.44 for v in losses],
        prediction=prediction,
    )


def _bold_rows(html: str) -> list[int]:
    return [i for i, row in enumerate(html.split("<tr")[2:]) if "font-weight:bold" in row]


# ---- RunRecord: mean, spread, the best-run rule, the table ----------------------------------------------


def test_a_record_of_one_seed_has_no_spread() -> None:
    r = widgets.RunRecord("one", dict(SETTINGS), 1000, 5000.0, 2.1, 3.0, 3.0)  # the old positional form
    assert r.num_seeds == 1 and r.val_losses == [2.1] and r.spread == 0.0 and r.prediction == ""
    assert _record("two", [2.0, 2.3]).spread == pytest.approx(0.3 / math.sqrt(2))  # sample sd of two values


def _italic_rows(html: str) -> list[int]:
    return [i for i, row in enumerate(html.split("<tr")[2:]) if "font-style:italic" in row]


def _footnote(html: str) -> str:
    return html.split("</table>")[1]


def test_best_run_follows_the_courses_rule_for_better() -> None:
    # Two seeds far apart: a suggestive lead, never "better" (the review's "clearly best" at n = 2).
    a, b = _record("a", [2.0, 2.02]), _record("b", [2.5, 2.52])
    assert widgets.best_run([b, a]) is None
    found = lead([b, a])
    assert found is not None and found.best is a and found.rival is b and found.verdict == "suggestive"
    assert "only suggestive" in found.says() and found.says().startswith("a is lower than b by 0.500")
    # Three seeds far apart: better.
    a3, b3 = _record("a", [2.0, 2.02, 2.01]), _record("b", [2.5, 2.52, 2.51])
    assert widgets.best_run([b3, a3]) is a3 and lead([b3, a3]).verdict == "better"
    # Overlapping seeds: noise, no winner.
    noisy = [_record("a", [2.0, 2.2, 2.1]), _record("b", [2.05, 2.25, 2.15])]
    assert widgets.best_run(noisy) is None and lead(noisy).verdict == "noise"
    # One seed: however large the gap, nothing is known.
    single = [_record("a", [2.0]), _record("b", [3.0])]
    assert widgets.best_run(single) is None and lead(single).verdict == "unknown"
    # The leader must beat every run: a third run whose seeds overlap the leader's decides the verdict.
    c = _record("c", [2.0, 2.05, 2.1])
    found = lead([_record("b", [2.5, 2.52, 2.51]), a3, c])
    assert found.best is a3 and found.rival is c and found.verdict == "noise"
    assert widgets.best_run([_record("b", [2.5, 2.52, 2.51]), a3, c]) is None
    # A diverged run is never the leader nor a rival; one run alone has no lead.
    assert widgets.best_run([_record("nan", [math.nan, math.nan, math.nan]), a3]) is None
    assert lead([_record("nan", [math.nan] * 3), a3]) is None and lead([a3]) is None


def test_runs_table_marks_the_lead_by_its_verdict() -> None:
    # One seed each: no mark, and the footnote asks for seeds.
    html = widgets.runs_table_html([_record("<b>a</b>", [2.5], "<i>worse</i>"), _record("b", [2.1])])
    assert "&lt;b&gt;a&lt;/b&gt;" in html and "&lt;i&gt;worse&lt;/i&gt;" in html and "<i>worse</i>" not in html
    rows = html.split("<tr")[2:]
    assert "2.500 (1 seed)" in rows[0] and "2.100 (1 seed)" in rows[1] and "3.024" in rows[1]
    assert _bold_rows(html) == [] and _italic_rows(html) == []
    assert "No run is marked" in html and "1 and 1 seeds" in html and "repeat ×3 or more" in html

    # Two seeds far apart: italic (suggestive), never bold, and the footnote says so.
    html = widgets.runs_table_html([_record("a", [2.5, 2.52]), _record("b", [2.0, 2.02])])
    assert _bold_rows(html) == [] and _italic_rows(html) == [1]
    assert "Italic" in _footnote(html) and "only suggestive" in _footnote(html)
    assert "b is lower than a by 0.500" in _footnote(html)

    # Three seeds far apart: bold, with the interval in the footnote.
    html = widgets.runs_table_html([_record("a", [2.5, 2.52, 2.51]), _record("b", [2.0, 2.02, 2.01])])
    assert "2.010 ± 0.010 (3 seeds)" in html and "2.510 ± 0.010 (3 seeds)" in html
    assert _bold_rows(html) == [1] and _italic_rows(html) == []
    assert "Bold: b is lower than a by 0.500 (95% interval of the gap" in _footnote(html)

    # Overlapping seeds: no mark, no winner.
    html = widgets.runs_table_html([_record("a", [2.0, 2.2, 2.1]), _record("b", [2.05, 2.25, 2.15])])
    assert _bold_rows(html) == [] and _italic_rows(html) == []
    assert "No run is marked" in html and "within the noise" in html and "no winner" in html
    assert "No runs yet" in widgets.runs_table_html([])


def test_mean_curves_and_the_band_over_seeds() -> None:
    def seed_curves(val: list[float], seconds: list[float]) -> dict:
        steps = [0, 5, 10]
        return {
            "step": {"train": (steps, val), "val": (steps, val)},
            "seconds": {"train": (seconds, val), "val": (seconds, val)},
        }

    r = _record("a", [2.0, 2.4])
    r.curves_per_seed = [seed_curves([4.0, 3.0, 2.0], [0.0, 1.0, 2.0]), seed_curves([4.2, 3.4, 2.4], [0.0, 3.0, 4.0])]
    curves = r.curves("step")
    assert curves["val"] == ([0, 5, 10], pytest.approx([4.1, 3.2, 2.2]))
    assert curves["val_band"] == ([0, 5, 10], [4.0, 3.0, 2.0], [4.2, 3.4, 2.4])
    assert r.curves("seconds")["val"][0] == pytest.approx([0.0, 2.0, 3.0])  # mean time of each evaluation
    r.curves_per_seed = r.curves_per_seed[:1]
    assert "val_band" not in r.curves("step")  # one seed: no band
    bare = _record("bare", [2.0])
    with pytest.raises(ValueError, match="x='seconds' is not valid for run 'bare'.*x='step'"):
        bare.curves("seconds")


def test_liveplot_records_both_axes_and_draws_references() -> None:
    live = widgets.LivePlot(label="run", show=False, references={"bigram counts": 2.5})
    live.on_step_end(None, StepInfo(step=1, loss=4.0, lr=1e-3, tokens_per_sec=1.0, elapsed=0.5))
    live.on_eval(None, EvalInfo(step=1, train_loss=4.0, val_loss=4.1, val_bpb=5.0, elapsed=0.75))
    assert live.curves_on("step") == {"train": ([1], [4.0]), "val": ([1], [4.1])}
    assert live.curves_on("seconds") == {"train": ([0.5], [4.0]), "val": ([0.75], [4.1])}
    labels = [line.get_label() for line in live.figure().axes[0].get_lines()]
    assert "bigram counts 2.50" in labels


# ---- the panel: real training, headless ------------------------------------------------------------------


def _brute_force_references(data_dir: Path) -> dict[str, float]:
    meta = json.loads((data_dir / "meta.json").read_text(encoding="utf-8"))
    ids = np.fromfile(data_dir / "train.bin", dtype=meta["dtype"]).tolist()
    pairs = Counter(zip(ids[:-1], ids[1:]))
    first = Counter(a for a, _ in zip(ids[:-1], ids[1:]))
    n = len(ids) - 1
    unigram = -sum(c / len(ids) * math.log(c / len(ids)) for c in Counter(ids).values())
    bigram = -sum(c / n * math.log(c / first[a]) for (a, _), c in pairs.items())
    return {"unigram counts": unigram, "bigram counts": bigram}


@pytest.fixture
def panel(char_data: Path, tmp_path: Path, tiny_config) -> widgets.ExperimentPanel:
    base = tiny_config(depth=1, eval_iters=1)
    return widgets.ExperimentPanel(char_data, tmp_path / "runs", base=base, steps=8, evals_per_run=4)


def test_repeats_train_each_seed_and_keep_one_record(panel: widgets.ExperimentPanel, char_data: Path) -> None:
    panel.seed.value, panel.repeats.value = 3, 2
    panel.prediction.value = "<b>lower</b>: more seeds, same mean"
    record = panel.run(**panel.values())
    assert len(panel.runs) == 1 and record.seeds == [3, 4] and record.settings["repeats"] == 2
    finals = [res.evals[-1].val_loss for res in record.results]
    assert record.val_losses == finals and finals[0] != finals[1]  # different seeds, different runs
    assert record.final_val_loss == pytest.approx(statistics.fmean(finals))
    assert record.spread == pytest.approx(abs(finals[0] - finals[1]) / math.sqrt(2))
    assert record.val_bpb == pytest.approx(statistics.fmean(res.evals[-1].val_bpb for res in record.results))
    assert (Path(record.out_dir) / "best_checkpoint.bin").exists()
    assert (Path(record.out_dir).parent / "run-1-seed-4" / "best_checkpoint.bin").exists()

    per_seed_val = [[e.val_loss for e in res.evals] for res in record.results]
    curves = record.curves("step")
    assert curves["val"][0] == [e.step for e in record.results[0].evals]
    assert curves["val"][1] == pytest.approx([statistics.fmean(col) for col in zip(*per_seed_val)])
    assert curves["val_band"][1] == [min(col) for col in zip(*per_seed_val)]
    assert curves["val_band"][2] == [max(col) for col in zip(*per_seed_val)]

    # The seed really is the training seed: one run with seed 4 reproduces the second repeat exactly.
    alone = panel.run(**{**panel.values(), "seed": 4, "repeats": 1})
    assert alone.seeds == [4] and alone.final_val_loss == record.val_losses[1] and alone.spread == 0.0

    table = panel.table.value
    assert f"{record.final_val_loss:.3f} ± {record.spread:.3f} (2 seeds)" in table and "(1 seed)" in table
    assert "&lt;b&gt;lower&lt;/b&gt;: more seeds, same mean" in table and record.prediction.startswith("<b>")
    assert panel.best() is None  # the runner-up has one seed
    assert panel.lead().verdict == "unknown" and "at least 2" in panel.status.value  # the status compares too


def test_x_axis_references_and_the_button(panel: widgets.ExperimentPanel, char_data: Path) -> None:
    expected = _brute_force_references(char_data)
    assert panel.references == pytest.approx(expected, rel=1e-9)
    panel.repeats.value = 2
    panel.button.click()
    assert len(panel.runs) == 1, panel.status.value
    record = panel.runs[0]
    assert "Run #1 done" in panel.status.value and "over 2 seeds" in panel.status.value
    assert panel.prediction.value == ""  # cleared for the next run's prediction

    def val_line(fig):  # noqa: ANN001, ANN202
        ax = fig.axes[0]
        return ax, {line.get_label(): line for line in ax.get_lines()}[f"{record.label} val"]

    ax, line = val_line(panel.compare_figure())
    assert ax.get_xlabel() == "step" and list(line.get_xdata()) == [e.step for e in record.result.evals]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"unigram counts {expected['unigram counts']:.2f}" in labels
    assert f"bigram counts {expected['bigram counts']:.2f}" in labels
    assert len(ax.collections) == 1  # the seed band

    panel.x_axis.value = "seconds"  # the buttons redraw the chart; compare_figure follows them
    ax, line = val_line(panel.compare_figure())
    times = [statistics.fmean(col) for col in zip(*[[e.elapsed for e in r.evals] for r in record.results])]
    assert ax.get_xlabel() == "training time (s)" and list(line.get_xdata()) == pytest.approx(times)
    assert panel.compare_figure(x="step").axes[0].get_xlabel() == "step"


def test_panel_references_can_be_given_or_turned_off(tmp_path: Path, tiny_config) -> None:
    given = widgets.ExperimentPanel(tmp_path / "none", tmp_path, base=tiny_config(), references={"mine": 1.5})
    assert given.references == {"mine": 1.5}
    off = widgets.ExperimentPanel(tmp_path / "none", tmp_path, base=tiny_config(), references=False)
    assert off.references == {}
    lazy = widgets.ExperimentPanel(tmp_path / "none", tmp_path, base=tiny_config())  # no data yet: fine
    with pytest.raises(FileNotFoundError, match="none"):
        _ = lazy.references
    with pytest.raises(ValueError, match="repeats=0 is not valid"):
        lazy.run(**{**lazy.values(), "repeats": 0})
    lazy.runs = [_record("a", [2.0, 2.02]), _record("b", [2.5, 2.52])]
    assert lazy.best() is None and lazy.lead().verdict == "suggestive"  # two seeds: never "better"
    lazy.runs = [_record("a", [2.0, 2.02, 2.01]), _record("b", [2.5, 2.52, 2.51])]
    assert lazy.best() is lazy.runs[0] and lazy.lead().best is lazy.runs[0]
    assert lazy.versus(lazy.runs[1]).startswith("a is lower than b by 0.500")


# ---- the parameter explorer: block_size and the T² term --------------------------------------------------


def test_explorer_splits_the_attention_scores_and_counts_like_a_real_model() -> None:
    base = ModelConfig(vocab_size=85, block_size=64, embedding_size=96, num_heads=4, depth=2)
    explorer = widgets.ParameterExplorer(base=base, batch_size=8)
    scores = widgets.ParameterExplorer.SCORES
    assert explorer.values()["block_size"] == 64 and {16, 1024} <= set(explorer.block_size.options)
    counts, short = explorer.update(96, 4, 2, block_size=64)
    counts_long, long = explorer.update(96, 4, 2, block_size=128)
    assert long[scores] == pytest.approx(4 * short[scores])  # T²
    assert long["other activations"] == pytest.approx(2 * short["other activations"])  # linear in T
    config = ModelConfig(**{**base.__dict__, "block_size": 128})
    assert sum(long.values()) == pytest.approx(sum(memory_estimate(config, 8).values()))

    one_head, one = explorer.update(96, 1, 2, block_size=128)
    eight_heads, eight = explorer.update(96, 8, 2, block_size=128)
    assert one_head == eight_heads == counts_long  # heads split channels: no new parameters
    assert eight[scores] == pytest.approx(8 * one[scores]) and eight["weights"] == one["weights"]
    model = GPT(ModelConfig(**{**base.__dict__, "block_size": 128, "num_heads": 8}))
    assert sum(eight_heads.values()) == sum(p.numel() for p in model.parameters())
    assert sum(counts.values()) < sum(counts_long.values())  # the position table grows with block_size

    explorer.block_size.value = 256  # the slider path
    assert "x 256 tokens" in explorer.text.value and "not the parameter count" in explorer.text.value


# ---- the sampling panel: several independent, reproducible samples ----------------------------------------

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n" * 20


def test_sampling_panel_draws_independent_reproducible_samples_and_scores_diversity() -> None:
    torch.manual_seed(0)
    tok = get_tokenizer("char", text=TEXT)
    model = GPT(ModelConfig(vocab_size=tok.vocab_size, block_size=32, embedding_size=32, num_heads=2, depth=1))
    panel = widgets.SamplingPanel(model, tok, "First ", max_new_tokens=120, seed=3, num_samples=3)
    panel.update(temperature=1.0, top_k=0, top_p=1.0)
    samples, diverse = list(panel.samples), panel.diversity
    assert len(samples) == 3 and len(set(samples)) == 3  # each sample has its own generator
    for i, text in enumerate(samples):  # sample i is seed + i, whatever the other samples did
        expected = model.generate_sentence(
            "First ", 32, 120, tok, "cpu", generator=torch.Generator().manual_seed(3 + i)
        )
        assert text == expected
    assert diverse == distinct_n([s[len("First ") :] for s in samples], 2, "word") and diverse > 0.5
    assert "distinct-2 over words" in panel.sample.value
    panel.update(temperature=1.0, top_k=0, top_p=1.0)
    assert panel.samples == samples  # same seed, same samples
    panel.update(temperature=1.0, top_k=1, top_p=1.0)  # greedy: nothing left to chance
    assert len(set(panel.samples)) == 1 and panel.diversity <= 1 / 3 < diverse
    with pytest.raises(ValueError, match="num_samples=0 is not valid"):
        widgets.SamplingPanel(model, tok, "First ", num_samples=0)


@pytest.mark.parametrize("start", [6, 8, 100, 300])
def test_steps_slider_reaches_round_counts_from_any_start(char_data, tmp_path, start: int) -> None:
    """The browser check types 300 into the slider: it must take 300 whatever the notebook's start value (fast
    mode starts at 6; a slider from 6 in steps of 10 snapped 300 to 296)."""
    panel = widgets.ExperimentPanel(char_data, tmp_path / "runs", steps=start, max_steps=3000)
    s = panel.steps
    reachable = range(s.min, s.max + 1, s.step)
    assert start in reachable and 300 in reachable and 1000 in reachable
