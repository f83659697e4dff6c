"""llmlab.plots: each figure draws exactly the numbers it is given, and bad input is refused clearly."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from llmlab import plots


def _png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def test_loss_curves_overlay_keeps_data_and_one_colour_per_run() -> None:
    runs = {
        "a": {"train": ([0, 10, 20], [4.0, 3.0, 2.5]), "val": ([0, 20], [4.1, 2.7])},
        "b": {"train": (np.array([0, 10]), torch.tensor([4.2, 3.3])), "val": ([0, 10], [4.3, 3.5])},
    }
    fig = plots.loss_curves(runs, baseline=float(np.log(65)))
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["a val"].get_xdata()) == [0, 20]
    assert list(lines["a val"].get_ydata()) == [4.1, 2.7]
    np.testing.assert_allclose(lines["b train"].get_ydata(), [4.2, 3.3], rtol=1e-6)
    # A run keeps its colour for train and val, and the two runs differ.
    assert lines["a train"].get_color() == lines["a val"].get_color()
    assert lines["a val"].get_color() != lines["b val"].get_color()
    assert any("uniform guess" in label for label in lines)
    assert _png_bytes(fig)[:8] == b"\x89PNG\r\n\x1a\n"


def test_loss_curves_accepts_an_existing_axes_and_partial_runs() -> None:
    fig, ax = plots.new_figure()
    out = plots.loss_curves({"live": {"train": ([1, 2], [3.0, 2.0]), "val": ([], [])}}, ax=ax)
    assert out is fig
    assert [line.get_label() for line in ax.get_lines()] == ["live train"]


def test_loss_curves_refuses_nan_and_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="nan.*max_lr"):
        plots.loss_curves({"x": {"train": ([0, 1], [1.0, float("nan")])}})
    with pytest.raises(ValueError, match="3 steps but 2 values"):
        plots.loss_curves({"x": {"val": ([0, 1, 2], [1.0, 2.0])}})


def test_loss_curves_draws_labelled_references_and_the_seed_band() -> None:
    runs = {
        "a": {"val": ([0, 10, 20], [4.0, 3.0, 2.5]), "val_band": ([0, 10, 20], [3.9, 2.8, 2.4], [4.1, 3.3, 2.7])},
        "b": {"val": ([0, 20], [4.2, 3.1])},
    }
    fig = plots.loss_curves(runs, references={"unigram counts": 3.27, "bigram counts": 2.47})
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    uni, bi = lines["unigram counts 3.27"], lines["bigram counts 2.47"]
    assert list(uni.get_ydata()) == [3.27, 3.27] and list(bi.get_ydata()) == [2.47, 2.47]  # horizontal
    assert uni.get_linestyle() != "-" and (uni.get_color(), uni.get_linestyle()) != (bi.get_color(), bi.get_linestyle())
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "unigram counts 3.27" in legend and "bigram counts 2.47" in legend and "a seed range" in legend
    (band,) = ax.collections  # only run "a" has a band
    vertices = band.get_paths()[0].vertices
    assert vertices[:, 1].min() == pytest.approx(2.4) and vertices[:, 1].max() == pytest.approx(4.1)
    np.testing.assert_allclose(band.get_facecolor()[0][:3], lines["a val"].get_color()[:3])  # the run's colour
    with pytest.raises(ValueError, match="low values exceed high"):
        plots.loss_curves({"a": {"val_band": ([0, 1], [2.0, 3.0], [2.5, 2.9])}})
    with pytest.raises(ValueError, match="triple"):
        plots.loss_curves({"a": {"val_band": ([0, 1], [2.0, 3.0])}})


def test_lr_schedule_plots_values_and_shades_warmup() -> None:
    steps = list(range(100))
    lrs = [1e-3 * min(1.0, (s + 1) / 10) for s in steps]
    fig = plots.lr_schedule({"max_lr=1e-3": (steps, lrs)}, warmup=10)
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), lrs)
    assert len(ax.patches) == 1  # the warm-up band
    with pytest.raises(ValueError, match="non-empty"):
        plots.lr_schedule({})
    budget = plots.lr_schedule({"max_lr=1e-3": (steps, lrs)}, stop=60).axes[0]
    marker = budget.get_lines()[-1]
    assert list(marker.get_xdata()) == [60, 60] and "time budget ends (step 60)" in marker.get_label()


def test_token_bars_heights_and_labels() -> None:
    fig = plots.token_bars({"char": 1000.0, "bpe": 412.3, "gpt2": 287.9})
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    np.testing.assert_allclose(heights, [1000.0, 412.3, 287.9])
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["1,000", "412", "288"]
    with pytest.raises(ValueError, match="empty"):
        plots.token_bars({})


def test_attention_heatmap_shows_the_matrix_with_token_labels() -> None:
    w = torch.tril(torch.ones(4, 4))
    w = w / w.sum(dim=-1, keepdim=True)
    fig = plots.attention_heatmap(w, ["T", "o", " ", "\n"])
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.images[0].get_array(), w.numpy())
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["T", "o", "␣", "\\n"]  # space and line break made visible
    with pytest.raises(ValueError, match="4x4 but got 4 query and 3 key labels"):
        plots.attention_heatmap(w, ["a", "b", "c"], query_tokens=["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="2-D"):
        plots.attention_heatmap(torch.ones(2, 4, 4), list("abcd"))


def test_next_token_bars_orders_by_the_first_distribution_in_every_panel() -> None:
    labels = ["a", "b", "c", "d"]
    original = np.array([0.1, 0.6, 0.05, 0.25])
    sharpened = np.array([0.0, 0.9, 0.0, 0.1])
    fig = plots.next_token_bars({"original": original, "T=0.5": sharpened}, labels, top=3)
    panels = [ax for ax in fig.axes if ax.patches]
    assert len(panels) == 2
    # Top-3 of the first distribution, most likely first: b, d, a — same order in both panels.
    assert [t.get_text() for t in panels[0].get_yticklabels()] == ["b", "d", "a"]
    for ax, probs in zip(panels, (original, sharpened)):
        np.testing.assert_allclose([p.get_width() for p in ax.patches], probs[[1, 3, 0]])
    with pytest.raises(ValueError, match="4 probabilities"):
        plots.next_token_bars({"x": [0.5, 0.5]}, labels)


def test_parameter_counts_totals_and_shares() -> None:
    counts = {
        "tiny": {"embeddings": 100, "attention": 300, "mlp": 600},
        "big": {"embeddings": 1_000_000, "attention": 2_000_000, "mlp": 7_000_000},
    }
    fig = plots.parameter_counts(counts)
    left, right = fig.axes[:2]
    np.testing.assert_allclose([p.get_width() for p in left.patches], [1000, 10_000_000])
    assert [t.get_text() for t in left.texts] == ["1.00k", "10.0M"]
    # Stacked shares: each model's slices add up to 1 and match component / total.
    widths = np.array([p.get_width() for p in right.patches]).reshape(3, 2)  # component-major
    np.testing.assert_allclose(widths.sum(axis=0), [1.0, 1.0])
    np.testing.assert_allclose(widths[:, 0], [0.1, 0.3, 0.6])


def test_timing_curves_and_human_count() -> None:
    fig = plots.timing_curves([64, 128, 256], {"explicit": [1.0, 3.0, 11.0], "sdpa": [0.5, 1.2, 4.0]}, logy=True)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), [0.5, 1.2, 4.0])
    with pytest.raises(ValueError, match="2 values for 3 x positions"):
        plots.timing_curves([1, 2, 3], {"a": [1.0, 2.0]})
    assert plots.human_count(124_439_808) == "124M"
    assert plots.human_count(812_345) == "812k"
    assert plots.human_count(85) == "85"
    with pytest.raises(ValueError, match="number"):
        plots.human_count("12")  # type: ignore[arg-type]


def test_figures_are_not_registered_with_pyplot() -> None:
    import matplotlib.pyplot as plt

    before = len(plt.get_fignums())
    plots.token_bars({"a": 1.0})
    assert len(plt.get_fignums()) == before  # no leak during hundreds of live updates


def test_figures_display_as_png_inside_ipython() -> None:
    # Without this a notebook that never touches pyplot prints "<Figure size ...>" instead of the image.
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        plots._register_notebook_display()
        data, _ = shell.display_formatter.format(plots.token_bars({"a": 1.0}))
        assert data["image/png"][:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        InteractiveShell.clear_instance()


def test_next_token_bars_share_one_zoomed_scale() -> None:
    fig = plots.next_token_bars({"a": [0.2, 0.1, 0.7], "b": [0.1, 0.3, 0.6]}, ["x", "y", "z"])
    limits = [ax.get_xlim() for ax in fig.axes if ax.patches]
    # 1.15 x the largest shown probability, the same in every panel
    assert len(limits) == 2 and all(lo == 0.0 and hi == pytest.approx(0.805) for lo, hi in limits)


def test_a_long_loss_legend_moves_outside_the_axes_so_it_hides_no_curve() -> None:
    def legend_inside(n_runs: int) -> bool:
        runs = {f"r{i}": {"train": ([0, 5], [4.0, 3.0]), "val": ([0, 5], [4.1, 3.2])} for i in range(n_runs)}
        fig = plots.loss_curves(runs)
        fig.canvas.draw()
        ax = fig.axes[0]
        box, frame = ax.get_legend().get_window_extent(), ax.get_window_extent()
        return frame.x0 <= box.x0 and box.x1 <= frame.x1

    assert legend_inside(2)  # 4 entries: upper right, inside
    assert not legend_inside(5)  # 10 entries: beside the chart
