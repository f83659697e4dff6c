"""Figures for the course: loss curves, learning-rate schedules, token counts, attention, sampling, sizes.

Every function takes plain numbers (lists, NumPy arrays or CPU tensors) and returns a
:class:`matplotlib.figure.Figure`; none of them knows how a model is trained. Figures are built with
``Figure()`` rather than ``plt.figure()`` so they are not registered with pyplot: a notebook shows one
only when it is returned or passed to ``display`` (no duplicate images, no figures piling up in memory
during a long run of live updates). Pass ``ax=`` to draw into an axes you already have instead.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = [
    "new_figure",
    "figure_png",
    "color_for",
    "loss_curves",
    "lr_schedule",
    "token_bars",
    "attention_heatmap",
    "next_token_bars",
    "parameter_counts",
    "timing_curves",
    "human_count",
]

# One colour per run, in order, so a run keeps its colour across the live plot and the overlay chart.
_PALETTE = matplotlib.colormaps["tab10"].colors


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (what a notebook shows)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _register_notebook_display() -> None:
    """Inside IPython, show a bare ``Figure`` as a PNG.

    pyplot's inline backend registers this only once a pyplot figure is made (the backend loads
    lazily), so a notebook that only ever calls these functions would otherwise print
    ``<Figure size 750x420 with 1 Axes>``. Registering it here works under any backend, ipympl included.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        shell.display_formatter.formatters["image/png"].for_type(Figure, figure_png)


_register_notebook_display()


def color_for(index: int) -> tuple[float, float, float]:
    """The colour of the ``index``-th run (cycles through tab10)."""
    return tuple(_PALETTE[index % len(_PALETTE)])  # type: ignore[return-value]


def new_figure(
    width: float = 7.0, height: float = 4.0, ncols: int = 1, nrows: int = 1, **kwargs: Any
) -> tuple[Figure, Any]:
    """A pyplot-independent figure and its axes (an array when ``ncols * nrows > 1``)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, **kwargs)
    return fig, axes


def _visible(token: str) -> str:
    """A token as a tick label: spaces and line breaks made visible (' ' -> '␣', '\\n' -> '\\\\n')."""
    return token.replace(" ", "␣").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r") or "''"


def _as_array(values: Any, name: str) -> np.ndarray:
    """Lists, tuples, NumPy arrays and (CPU or GPU) tensors become a float NumPy array."""
    if hasattr(values, "detach"):  # a torch tensor: no torch import needed here
        values = values.detach().float().cpu().numpy()
    array = np.asarray(values, dtype=float)
    if array.size and not np.all(np.isfinite(array) | np.isneginf(array)):
        # NaN/+inf usually means a diverged run; plotting it silently would hide the problem.
        bad = array[~(np.isfinite(array) | np.isneginf(array))][0]
        raise ValueError(f"{name} contains {bad}: plot finite values (a NaN loss usually means max_lr is too high).")
    return array


def _target(ax: Axes | None, width: float, height: float) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax  # type: ignore[return-value]
    fig, new_ax = new_figure(width, height)
    return fig, new_ax


def _xy(pair: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Accept ``(steps, values)``; reject mismatched lengths with a clear message."""
    try:
        steps, values = pair
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a pair (steps, values), got {type(pair).__name__}.") from None
    x, y = _as_array(steps, f"{what} steps"), _as_array(values, f"{what} values")
    if x.shape != y.shape:
        raise ValueError(f"{what}: {x.size} steps but {y.size} values; pass one value per step.")
    return x, y


# Reference lines (counting baselines, ...): greys and dash patterns that no run's colour uses.
_REFERENCE_STYLES = (("0.25", "--"), ("0.55", "-."), ("0.4", (0, (5, 1, 1, 1, 1, 1))), ("0.65", (0, (1, 1))))


def _band(triple: Any, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accept ``(x, low, high)`` of equal lengths with ``low <= high``."""
    try:
        xs, lows, highs = triple
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a triple (x, low, high), got {type(triple).__name__}.") from None
    x, low, high = _as_array(xs, f"{what} x"), _as_array(lows, f"{what} low"), _as_array(highs, f"{what} high")
    if not x.shape == low.shape == high.shape:
        raise ValueError(f"{what}: {x.size} x, {low.size} low and {high.size} high values; pass one of each per x.")
    if (low > high).any():
        raise ValueError(f"{what}: some low values exceed high values; pass (x, min over seeds, max over seeds).")
    return x, low, high


def loss_curves(
    runs: Mapping[str, Mapping[str, Any]],
    ax: Axes | None = None,
    title: str = "Loss",
    ylabel: str = "cross-entropy (nats per token)",
    baseline: float | None = None,
    xlabel: str = "step",
    references: Mapping[str, float] | None = None,
) -> Figure:
    """Train and validation loss of one or several runs on one chart.

    ``runs`` maps a label to ``{"train": (steps, losses), "val": (steps, losses)}`` (either key may be
    missing or empty). Each run has one colour: train is a thin line, validation a thick line with
    markers, so several runs overlay legibly. A run may also carry ``"val_band": (x, low, high)``, drawn
    as a shaded band in its colour (e.g. the range of the validation loss over seeds: the noise).
    ``baseline`` draws a horizontal reference (e.g. ln(vocab), the loss of a uniform guess);
    ``references`` draws more, one labelled dashed grey line each, e.g.
    ``{"unigram counts": 3.27, "bigram counts": 2.47}`` (see :func:`llmlab.metrics.count_baselines`).
    """
    if not isinstance(runs, Mapping):
        raise ValueError("runs must map a label to {'train': (steps, losses), 'val': (steps, losses)}.")
    fig, ax = _target(ax, 7.5, 4.2)
    for i, (label, curves) in enumerate(runs.items()):
        color = color_for(i)
        if curves.get("train") is not None and len(curves["train"][0]):
            x, y = _xy(curves["train"], f"run {label!r} train")
            ax.plot(x, y, color=color, alpha=0.45, linewidth=1.0, label=f"{label} train")
        if curves.get("val") is not None and len(curves["val"][0]):
            x, y = _xy(curves["val"], f"run {label!r} val")
            ax.plot(x, y, color=color, linewidth=2.2, marker="o", markersize=4, label=f"{label} val")
        if curves.get("val_band") is not None:
            x, low, high = _band(curves["val_band"], f"run {label!r} val_band")
            if x.size:
                ax.fill_between(x, low, high, color=color, alpha=0.18, linewidth=0, label=f"{label} seed range")
    if baseline is not None:
        ax.axhline(baseline, color="0.5", linestyle=":", linewidth=1.0, label=f"uniform guess ({baseline:.2f})")
    for k, (name, value) in enumerate((references or {}).items()):
        grey, style = _REFERENCE_STYLES[k % len(_REFERENCE_STYLES)]
        value = float(_as_array([value], f"reference {name!r}")[0])
        ax.axhline(value, color=grey, linestyle=style, linewidth=1.3, label=f"{name} {value:.2f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if ax.has_data():
        _loss_legend(ax)
    return fig


def _loss_legend(ax: Axes, inside_max: int = 6) -> None:
    # Loss falls from the top left, so the upper right is usually empty: a short legend goes there. A long one
    # (several runs, seed bands, reference lines) would reach down over the curves, so it goes outside, right.
    entries = len(ax.get_legend_handles_labels()[0])
    if entries <= inside_max:
        ax.legend(fontsize=8, loc="upper right")
    else:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def lr_schedule(
    schedules: Mapping[str, Any],
    ax: Axes | None = None,
    warmup: int | None = None,
    title: str = "Learning-rate schedule",
    stop: int | None = None,
) -> Figure:
    """One or several learning-rate schedules: ``{label: (steps, lrs)}``; ``warmup`` shades the warm-up;
    ``stop`` marks the step where a wall-clock budget ends the run (a dashed vertical line)."""
    if not isinstance(schedules, Mapping) or not schedules:
        raise ValueError("schedules must be a non-empty mapping {label: (steps, lrs)}.")
    fig, ax = _target(ax, 7.0, 3.6)
    for i, (label, pair) in enumerate(schedules.items()):
        x, y = _xy(pair, f"schedule {label!r}")
        ax.plot(x, y, color=color_for(i), linewidth=2.0, label=label)
    if warmup:
        ax.axvspan(0, warmup, color="0.85", alpha=0.6, label=f"warm-up ({warmup} steps)")
    if stop is not None:
        ax.axvline(stop, color="0.3", linestyle="--", linewidth=1.2, label=f"time budget ends (step {stop})")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.set_title(title)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def token_bars(
    counts: Mapping[str, float],
    ax: Axes | None = None,
    ylabel: str = "tokens per 1,000 characters",
    title: str = "How many tokens does the same text take?",
) -> Figure:
    """A bar per tokenizer (or any label), with its value written on top."""
    if not counts:
        raise ValueError("counts is empty: pass e.g. {'char': 1000, 'gpt2': 290}.")
    fig, ax = _target(ax, 6.0, 3.6)
    labels = list(counts)
    values = _as_array([counts[k] for k in labels], "counts")
    bars = ax.bar(labels, values, color=[color_for(i) for i in range(len(labels))])
    ax.bar_label(bars, labels=[f"{v:,.0f}" if v >= 10 else f"{v:.2f}" for v in values], padding=2)
    if sum(len(str(label)) for label in labels) > 45:  # long labels would overlap: slant them
        ax.tick_params(axis="x", labelrotation=35)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_ylim(0, max(values.max() * 1.15, 1e-9))
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def attention_heatmap(
    weights: Any,
    tokens: Sequence[str],
    ax: Axes | None = None,
    title: str = "Attention weights",
    query_tokens: Sequence[str] | None = None,
) -> Figure:
    """A (T, T) attention matrix as an image: row = the query position, column = the key it looks at.

    ``tokens`` label the keys (and the queries unless ``query_tokens`` is given). Rows should sum to 1;
    masked (future) positions are 0 and show as the darkest colour.
    """
    w = _as_array(weights, "weights")
    if w.ndim != 2:
        raise ValueError(f"weights must be a 2-D (T, T) matrix, got shape {w.shape}; pick one batch element and head.")
    rows, cols = w.shape
    query_tokens = tokens if query_tokens is None else query_tokens
    if len(tokens) != cols or len(query_tokens) != rows:
        raise ValueError(
            f"weights are {rows}x{cols} but got {len(query_tokens)} query and {len(tokens)} key labels; "
            "pass one label per position."
        )
    size = min(max(4.0, 0.2 * max(rows, cols) + 2.0), 11.0)
    fig, ax = _target(ax, size + 1.0, size)
    image = ax.imshow(w, cmap="viridis", vmin=0.0, vmax=max(float(w.max()), 1e-9), aspect="equal")
    shown, shown_q = [_visible(t) for t in tokens], [_visible(t) for t in query_tokens]
    ax.set_xticks(range(cols), shown, rotation=90, fontsize=8, fontfamily="monospace")
    ax.set_yticks(range(rows), shown_q, fontsize=8, fontfamily="monospace")
    ax.set_xlabel("key (attended-to position)")
    ax.set_ylabel("query (position doing the looking)")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, shrink=0.8, label="weight")
    return fig


def next_token_bars(
    distributions: Mapping[str, Any],
    labels: Sequence[str],
    top: int = 15,
    title: str = "Next-token distribution",
) -> Figure:
    """Side-by-side panels of next-token probabilities: one panel per transform (``{name: probs (V,)}``).

    The ``top`` tokens of the *first* distribution are shown in every panel in the same order, so the
    eye sees how temperature / top-k / top-p move probability mass between the same tokens.
    ``labels[i]`` is how token ``i`` is printed.
    """
    if not distributions:
        raise ValueError("distributions is empty: pass {'original': probs, 'T=0.5': probs2, ...}.")
    arrays = {name: _as_array(p, f"distribution {name!r}").reshape(-1) for name, p in distributions.items()}
    sizes = {a.size for a in arrays.values()}
    if len(sizes) != 1 or sizes.pop() != len(labels):
        raise ValueError(
            f"every distribution needs {len(labels)} probabilities (one per label); got sizes "
            f"{[a.size for a in arrays.values()]}."
        )
    first = next(iter(arrays.values()))
    top = max(1, min(int(top), first.size))
    order = np.argsort(-first, kind="stable")[:top]
    names = [_visible(labels[i]) for i in order]
    # One x scale for every panel (so bar lengths compare across panels), zoomed to the largest bar.
    xmax = min(1.0, 1.15 * max(float(a[order].max()) for a in arrays.values()))
    fig, axes = new_figure(3.0 * len(arrays) + 1.0, 3.6, ncols=len(arrays), sharey=True, squeeze=False)
    for k, (ax, (name, probs)) in enumerate(zip(axes[0], arrays.items())):
        values = probs[order]
        ax.barh(range(top), values, color=color_for(k))
        ax.set_yticks(range(top), names, fontsize=8, fontfamily="monospace")
        ax.invert_yaxis()  # most likely token on top
        ax.set_xlim(0, max(xmax, 1e-9))
        ax.set_title(f"{name}\n(shown mass {values.sum():.2f})", fontsize=9)
        ax.set_xlabel("probability")
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(title)
    return fig


def parameter_counts(
    counts: Mapping[str, Mapping[str, int]],
    title: str = "Where the parameters are",
) -> Figure:
    """Parameter count by component for several models: ``{model: {component: n}}``.

    Left: the total per model on a log scale (sizes differ by orders of magnitude). Right: each
    component's share of its model, as 100 % stacked bars, so small and large models compare.
    """
    if not counts:
        raise ValueError("counts is empty: pass {'cpu_small': {'embeddings': n, 'attention': n, ...}}.")
    models = list(counts)
    components: list[str] = []
    for parts in counts.values():
        components += [c for c in parts if c not in components]
    table = np.array([[float(counts[m].get(c, 0)) for c in components] for m in models])
    if (table < 0).any():
        raise ValueError("parameter counts must be >= 0.")
    totals = table.sum(axis=1)
    fig, (left, right) = new_figure(11.0, 0.6 * len(models) + 2.4, ncols=2)
    bars = left.barh(models, totals, color="0.45")
    left.bar_label(bars, labels=[_human(t) for t in totals], padding=3)
    left.set_xscale("log")
    left.set_xlim(max(totals.min(), 1.0) / 2, totals.max() * 8)
    left.invert_yaxis()
    left.set_xlabel("parameters (log scale)")
    left.set_title("total")
    share = table / np.maximum(totals[:, None], 1.0)
    start = np.zeros(len(models))
    for j, component in enumerate(components):
        right.barh(models, share[:, j], left=start, color=color_for(j), label=component)
        for i, s in enumerate(share[:, j]):
            if s > 0.07:  # only label slices wide enough to hold the text
                right.text(start[i] + s / 2, i, f"{s:.0%}", ha="center", va="center", fontsize=8, color="white")
        start += share[:, j]
    right.set_xlim(0, 1)
    right.invert_yaxis()
    right.set_yticks(range(len(models)), [""] * len(models))
    right.set_xlabel("share of the model's parameters")
    right.set_title("by component")
    right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncols=min(len(components), 4))
    fig.suptitle(title)
    return fig


def timing_curves(
    x: Sequence[float],
    series: Mapping[str, Any],
    xlabel: str = "sequence length T (tokens)",
    ylabel: str = "time (ms)",
    title: str = "Time",
    logy: bool = False,
    ax: Axes | None = None,
) -> Figure:
    """Several measured timings against one x axis, e.g. ``{"explicit": ms, "SDPA": ms}``."""
    xs = _as_array(x, "x")
    if not series:
        raise ValueError("series is empty: pass {'label': [times...]}.")
    fig, ax = _target(ax, 6.5, 3.8)
    for i, (label, values) in enumerate(series.items()):
        ys = _as_array(values, f"series {label!r}")
        if ys.shape != xs.shape:
            raise ValueError(f"series {label!r} has {ys.size} values for {xs.size} x positions.")
        ax.plot(xs, ys, color=color_for(i), marker="o", linewidth=2.0, label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _human(n: float) -> str:
    """1234567 -> '1.23M' (parameter counts are easier to compare this way)."""
    if n <= 0:
        return "0"
    units = [(1e9, "B"), (1e6, "M"), (1e3, "k")]
    for scale, suffix in units:
        if n >= scale:
            value = n / scale
            digits = 2 if value < 10 else 1 if value < 100 else 0  # three significant figures
            return f"{value:.{digits}f}{suffix}"
    return f"{n:.0f}"


def human_count(n: float) -> str:
    """A parameter or token count for people: ``124439808 -> '124M'``, ``812_000 -> '812k'``."""
    if isinstance(n, bool) or not isinstance(n, (int, float)) or math.isnan(n):
        raise ValueError(f"human_count needs a number, got {n!r}.")
    return _human(float(n))
