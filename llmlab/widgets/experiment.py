"""The experiment panel (notebook 04): sliders for the manual's settings, a Train button, a live plot,
and every run kept, overlaid on one chart and listed in a table.

A run can be repeated with several seeds (the spread between them is the noise a difference must beat),
and the counting baselines of the training text (:func:`llmlab.metrics.count_baselines`) are drawn as
reference lines: a model has learned something only once its loss is below them.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ipywidgets as W
import numpy as np
from matplotlib.figure import Figure

from llmlab import plots
from llmlab.compare import compare
from llmlab.config import Config, get_preset
from llmlab.data import load_meta
from llmlab.i18n import tr
from llmlab.metrics import count_baselines
from llmlab.validate import check_int
from llmlab.widgets.base import Panel, divisors, error_html, in_notebook, max_lr_slider, nearest_heads, show_in
from llmlab.widgets.live import (
    XLABELS,
    Lead,
    LivePlot,
    RunRecord,
    best_run,
    combine_runs,
    lead,
    run_experiment,
    runs_table_html,
)

__all__ = ["ExperimentPanel", "reference_losses"]

# Counting a prefix is enough for a reference line: 20M tokens take a few seconds, a whole web corpus would not.
MAX_REFERENCE_TOKENS = 20_000_000
_REFERENCE_CACHE: dict[tuple[str, int, int, int], dict[str, float]] = {}


def reference_losses(data_dir: str | Path, max_tokens: int = MAX_REFERENCE_TOKENS) -> dict[str, float]:
    """``{"unigram counts": H1, "bigram counts": H2}``: :func:`llmlab.metrics.count_baselines` of the prepared
    ``data_dir/train.bin`` (its first ``max_tokens`` tokens), in nats per token. Cached per file version."""
    check_int("max_tokens", max_tokens, 2, "count at least 2 tokens (a pair).")
    meta = load_meta(data_dir)  # checks the folder first: a missing one names the `llmlab prepare` command
    path = Path(data_dir) / "train.bin"
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, max_tokens)
    if key not in _REFERENCE_CACHE:
        tokens = np.memmap(path, dtype=np.dtype(meta["dtype"]), mode="r")[:max_tokens]
        counts = count_baselines(np.asarray(tokens), int(meta["vocab_size"]))
        _REFERENCE_CACHE[key] = {"unigram counts": counts["unigram"], "bigram counts": counts["bigram"]}
    return dict(_REFERENCE_CACHE[key])


class ExperimentPanel(Panel):
    """Sliders for embedding_size, num_heads, depth, max_lr and steps, a seed, "repeat ×N", a prediction
    box, a Train button, a live plot, and every run kept: overlaid on one chart and listed in a table.

    ``num_heads`` only offers values that divide ``embedding_size`` (the heads split the channels), so
    an impossible model cannot be requested from the sliders; :meth:`run` checks again and explains.
    ``repeats`` trains the same settings with seeds ``seed, seed + 1, ...`` and keeps them as one run:
    the table shows the mean ± the spread, and marks the lowest-mean run by the course's rule for "better
    than" (:func:`llmlab.compare.compare`): bold when better than every other run (3 seeds a side at least),
    italic when only suggestive. After each run the status line compares it with the best other run.

    ``base`` supplies everything the sliders do not set (block_size, batch_size, eval_interval, ...).
    Each run trains in ``out_dir/run-N`` (further seeds in ``run-N-seed-S``) on the prepared data in
    ``data_dir``. ``references``: ``True`` draws the counting baselines of ``data_dir``'s training text
    (:func:`reference_losses`), ``False`` none, or pass ``{name: loss}``.
    """

    EMBEDDING_SIZES = (32, 48, 64, 96, 128, 192, 256, 384)
    MAX_REPEATS = 5

    def __init__(
        self,
        data_dir: str | Path,
        out_dir: str | Path,
        base: Config | None = None,
        steps: int = 300,
        max_steps: int = 3000,
        evals_per_run: int = 6,
        references: bool | Mapping[str, float] = True,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.out_dir = Path(out_dir)
        self.base = base or get_preset("cpu_small")
        self.evals_per_run = evals_per_run
        self.runs: list[RunRecord] = []
        self._seen_messages: set[str] = set()
        if isinstance(references, bool):
            # Computed at first use: the data may not be prepared yet when the panel is built.
            self._references: dict[str, float] | None = None if references else {}
        elif isinstance(references, Mapping):
            self._references = {str(k): float(v) for k, v in references.items()}
        else:
            raise ValueError(
                f"references={references!r} is not valid: use True (counting baselines of the data), False, "
                "or a mapping {name: loss}."
            )
        m, t = self.base.model, self.base.train
        emb = m.embedding_size if m.embedding_size in self.EMBEDDING_SIZES else 128
        style = {"description_width": "120px"}
        layout = W.Layout(width="420px")
        self.embedding_size = W.SelectionSlider(
            options=list(self.EMBEDDING_SIZES), value=emb, description="embedding_size", style=style, layout=layout
        )
        self.num_heads = W.SelectionSlider(
            options=divisors(emb, 16),
            value=nearest_heads(emb, m.num_heads),
            description="num_heads",
            style=style,
            layout=layout,
        )
        self.depth = W.IntSlider(value=m.depth, min=1, max=8, description="depth", style=style, layout=layout)
        self.max_lr = max_lr_slider(t.max_lr, style=style, layout=layout)
        # Multiples of 10 (10, 20, ... 300 ...) when the start value is one; else every count from 1, so a
        # browser (or a learner) typing 300 gets 300, never a neighbour the slider snaps to.
        tens = steps % 10 == 0
        self.steps = W.IntSlider(
            value=steps,
            min=10 if tens else 1,
            max=max(max_steps, steps),
            step=10 if tens else 1,
            description="steps",
            style=style,
            layout=layout,
        )
        self.seed = W.IntText(value=0, description="seed", style=style, layout=W.Layout(width="220px"))
        self.repeats = W.IntSlider(
            value=1, min=1, max=self.MAX_REPEATS, description=tr("label.repeat"), style=style, layout=layout
        )
        self.x_axis = W.ToggleButtons(
            options=["step", "seconds"], value="step", description=tr("label.x_axis"), style=style
        )
        self.prediction = W.Text(
            value="",
            placeholder=tr("placeholder.prediction"),
            description=tr("label.prediction"),
            style=style,
            layout=W.Layout(width="640px"),
        )
        self.button = W.Button(description=tr("button.train"), button_style="success", icon="play")
        self.note = W.HTML()
        self.status = W.HTML(f"<i>{tr('status.ready')}</i>")
        self.message = self.status  # errors appear where the run's status does
        self.live = W.Output(layout=W.Layout(min_height="300px"))
        self.chart = W.Output()
        self.table = W.HTML(runs_table_html([]))
        self.embedding_size.observe(self._on_embedding_change, names="value")
        self.x_axis.observe(self._on_axis_change, names="value")
        self.button.on_click(self._on_click)
        controls = W.VBox(
            [
                self.embedding_size,
                self.num_heads,
                self.depth,
                self.max_lr,
                self.steps,
                W.HBox([self.seed, self.repeats]),
                self.prediction,
                W.HBox([self.button, self.status]),
                self.note,
            ]
        )
        self.widget = W.VBox(
            [controls, self.live, W.HTML(f"<b>{tr('heading.all_runs')}</b>"), self.x_axis, self.chart, self.table]
        )

    @property
    def references(self) -> dict[str, float]:
        """The reference lines drawn on the charts, ``{name: loss}`` (computed from the data at first use)."""
        if self._references is None:
            self._references = reference_losses(self.data_dir)
        return dict(self._references)

    def _on_embedding_change(self, change: Mapping[str, Any]) -> None:
        emb, wanted = int(change["new"]), int(self.num_heads.value)
        options = divisors(emb, 16)
        chosen = nearest_heads(emb, wanted)
        self.num_heads.options = options  # resets value: set it back explicitly
        self.num_heads.value = chosen
        if chosen != wanted:
            note = tr("note.heads_changed", wanted=wanted, emb=emb, chosen=chosen, options=options)
            self.note.value = f"<span style='color:#b35900'>{note}</span>"
        else:
            self.note.value = ""

    def values(self) -> dict[str, Any]:
        """The controls' current values, as keyword arguments for :meth:`run`."""
        return {
            "embedding_size": int(self.embedding_size.value),
            "num_heads": int(self.num_heads.value),
            "depth": int(self.depth.value),
            "max_lr": float(self.max_lr.value),
            "steps": int(self.steps.value),
            "seed": int(self.seed.value),
            "repeats": int(self.repeats.value),
            "prediction": str(self.prediction.value),
        }

    def config_for(
        self, embedding_size: int, num_heads: int, depth: int, max_lr: float, steps: int, seed: int | None = None
    ) -> Config:
        """The full training config of one run: ``base`` with these settings applied (``seed=None``: base's).

        Raises ``ValueError`` (before any training) when ``num_heads`` does not divide ``embedding_size``.
        """
        if embedding_size % num_heads != 0:
            raise ValueError(
                f"num_heads={num_heads} does not divide embedding_size={embedding_size}: each head gets "
                f"embedding_size / num_heads channels. Choose num_heads from {divisors(embedding_size, 16)}."
            )
        if steps < 1:
            raise ValueError(f"steps={steps} is not valid: train for at least 1 step.")
        warmup = min(self.base.train.warmup_iters, max(steps // 10, 0))
        interval = max(math.ceil(steps / self.evals_per_run), 1)  # about evals_per_run evaluations
        return self.base.override(
            embedding_size=embedding_size,
            num_heads=num_heads,
            depth=depth,
            max_lr=float(max_lr),
            min_lr=float(max_lr) / 10,
            max_iters=steps,
            warmup_iters=warmup,
            eval_interval=interval,
            log_interval=max(1, min(self.base.train.log_interval, interval)),
            seed=self.base.train.seed if seed is None else seed,
        )

    def run(
        self,
        embedding_size: int,
        num_heads: int,
        depth: int,
        max_lr: float,
        steps: int,
        seed: int = 0,
        repeats: int = 1,
        prediction: str = "",
        output: W.Output | None = None,
    ) -> RunRecord:
        """Train these settings ``repeats`` times (seeds ``seed``, ``seed + 1``, ...), plot each live, and
        keep them as one run (means, spread, band) on the comparison chart and in the table.

        ``prediction`` (what the learner expected) is kept with the run and shown in the table.
        ``output=None`` (a plain cell) plots at the top level of the cell; the Train button passes the
        panel's own Output widget.
        """
        check_int("seed", seed, 0, "use a whole number >= 0, e.g. 0.")
        check_int("repeats", repeats, 1, "train each setting at least once; 2 or more show the noise between seeds.")
        seeds = [seed + i for i in range(repeats)]
        configs = [self.config_for(embedding_size, num_heads, depth, max_lr, steps, seed=s) for s in seeds]
        references = self.references  # validates the data folder before anything trains
        index = len(self.runs) + 1
        label = f"#{index} C={embedding_size} h={num_heads} d={depth} lr={max_lr:.0e}"
        parts: list[RunRecord] = []
        for i, (s, config) in enumerate(zip(seeds, configs)):
            if repeats > 1:
                status = tr("status.training_seed", seed=s, i=i + 1, n=repeats, steps=steps)
                self.status.value = f"<i>{status}</i>"
            live = LivePlot(
                label=label if repeats == 1 else f"{label} seed {s}",
                output=output,
                previous=[*self.runs, *parts],
                title="Live loss",
                seen_messages=self._seen_messages,
                x=self.x_axis.value,
                references=references,
            )
            where = self.out_dir / (f"run-{index}" if i == 0 else f"run-{index}-seed-{s}")
            parts.append(run_experiment(config, self.data_dir, where, label=live.label, live=live))
        record = combine_runs(parts, label=label, prediction=prediction)
        record.settings.update(steps=steps, seed=seed, repeats=repeats)
        self.runs.append(record)
        noise = tr("status.noise", spread=f"{record.spread:.3f}", n=record.num_seeds) if record.num_seeds > 1 else ""
        status = tr(
            "status.run_done",
            index=len(self.runs),
            loss=f"{record.final_val_loss:.3f}",
            noise=noise,
            bpb=f"{record.val_bpb:.3f}",
            tps=f"{record.tokens_per_sec:,.0f}",
        )
        versus = self.versus(record)
        self.status.value = status + (f"<br>{html.escape(versus)}" if versus else "")
        self.refresh()
        return record

    def best(self) -> RunRecord | None:
        """The run that is *better* than every other one under :func:`llmlab.compare.compare` (at least 3 seeds a
        side, a 95% t-interval of the gap excluding 0; see :func:`~llmlab.widgets.live.best_run`), or None."""
        return best_run(self.runs)

    def lead(self) -> Lead | None:
        """The lowest-mean run against its closest rival, with the verdict and its sentence
        (:func:`~llmlab.widgets.live.lead`); None before two runs finished."""
        return lead(self.runs)

    def versus(self, record: RunRecord) -> str:
        """``record`` compared with the lowest-mean other run, as one sentence (``""`` when there is none)."""
        others = [r for r in self.runs if r is not record and math.isfinite(r.final_val_loss)]
        if not others or not math.isfinite(record.final_val_loss):
            return ""
        other = min(others, key=lambda r: r.final_val_loss)
        return compare(record.val_losses, other.val_losses).says(record.label, other.label)

    def compare_figure(self, x: str | None = None) -> Figure:
        """All runs' validation (and train) curves on one chart, with the seed bands and reference lines.

        ``x``: ``"step"`` or ``"seconds"``; None follows the panel's ``x_axis`` buttons.
        """
        x = self.x_axis.value if x is None else x
        runs = {r.label: r.curves(x) for r in self.runs}
        references = self.references if self.runs else (self._references or {})
        return plots.loss_curves(runs, title="All runs", xlabel=XLABELS[x], references=references)

    def _on_axis_change(self, _change: Mapping[str, Any]) -> None:
        try:  # an observer's exception would be swallowed by ipywidgets: show it instead
            self.refresh()
        except Exception as exc:  # noqa: BLE001 - shown to the learner, not hidden
            self.status.value = error_html(exc)

    def refresh(self) -> None:
        """Redraw the comparison chart and table inside the panel."""
        self.table.value = runs_table_html(self.runs)
        if self.runs and in_notebook():
            show_in(self.chart, self.compare_figure())

    def _on_click(self, _button: Any) -> None:
        # Runs in the kernel when the button is pressed in a browser (never headless). Exceptions raised
        # in a widget callback are swallowed by ipywidgets, so they are shown in the panel instead.
        self.button.disabled = True
        self.status.value = f"<i>{tr('status.training', steps=self.values()['steps'])}</i>"
        try:
            if self.guarded(lambda **v: self.run(**v, output=self.live)) is not None:
                self.prediction.value = ""  # the next run deserves its own prediction
        finally:
            self.button.disabled = False
