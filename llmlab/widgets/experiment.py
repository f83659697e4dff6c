"""The experiment panel (notebook 04): sliders for the manual's settings, a Train button, a live plot,
and every run kept, overlaid on one chart and listed in a table."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ipywidgets as W
from matplotlib.figure import Figure

from llmlab import plots
from llmlab.config import Config, get_preset
from llmlab.widgets.base import Panel, divisors, in_notebook, max_lr_slider, nearest_heads, show_in
from llmlab.widgets.live import LivePlot, RunRecord, run_experiment, runs_table_html

__all__ = ["ExperimentPanel"]


class ExperimentPanel(Panel):
    """Sliders for embedding_size, num_heads, depth, max_lr and steps, a Train button, a live plot,
    and every run kept: overlaid on one chart and listed in a table.

    ``num_heads`` only offers values that divide ``embedding_size`` (the heads split the channels), so
    an impossible model cannot be requested from the sliders; :meth:`run` checks again and explains.

    ``base`` supplies everything the sliders do not set (block_size, batch_size, eval_interval, ...).
    Each run trains in ``out_dir/run-N`` on the prepared data in ``data_dir``.
    """

    EMBEDDING_SIZES = (32, 48, 64, 96, 128, 192, 256, 384)

    def __init__(
        self,
        data_dir: str | Path,
        out_dir: str | Path,
        base: Config | None = None,
        steps: int = 300,
        max_steps: int = 3000,
        evals_per_run: int = 6,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.out_dir = Path(out_dir)
        self.base = base or get_preset("cpu_small")
        self.evals_per_run = evals_per_run
        self.runs: list[RunRecord] = []
        self._seen_messages: set[str] = set()
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
        self.steps = W.IntSlider(
            value=steps,
            min=min(steps, 20),
            max=max(max_steps, steps),
            step=10,
            description="steps",
            style=style,
            layout=layout,
        )
        self.button = W.Button(description="Train", button_style="success", icon="play")
        self.note = W.HTML()
        self.status = W.HTML("<i>Ready.</i>")
        self.message = self.status  # errors appear where the run's status does
        self.live = W.Output(layout=W.Layout(min_height="300px"))
        self.chart = W.Output()
        self.table = W.HTML(runs_table_html([]))
        self.embedding_size.observe(self._on_embedding_change, names="value")
        self.button.on_click(self._on_click)
        controls = W.VBox(
            [
                self.embedding_size,
                self.num_heads,
                self.depth,
                self.max_lr,
                self.steps,
                W.HBox([self.button, self.status]),
                self.note,
            ]
        )
        self.widget = W.VBox([controls, self.live, W.HTML("<b>All runs</b>"), self.chart, self.table])

    def _on_embedding_change(self, change: Mapping[str, Any]) -> None:
        emb, wanted = int(change["new"]), int(self.num_heads.value)
        options = divisors(emb, 16)
        chosen = nearest_heads(emb, wanted)
        self.num_heads.options = options  # resets value: set it back explicitly
        self.num_heads.value = chosen
        if chosen != wanted:
            self.note.value = (
                f"<span style='color:#b35900'>num_heads={wanted} does not divide embedding_size={emb} "
                f"(each head gets embedding_size / num_heads channels), so num_heads is now {chosen}. "
                f"Possible: {options}.</span>"
            )
        else:
            self.note.value = ""

    def values(self) -> dict[str, Any]:
        """The sliders' current values, as keyword arguments for :meth:`run`."""
        return {
            "embedding_size": int(self.embedding_size.value),
            "num_heads": int(self.num_heads.value),
            "depth": int(self.depth.value),
            "max_lr": float(self.max_lr.value),
            "steps": int(self.steps.value),
        }

    def config_for(self, embedding_size: int, num_heads: int, depth: int, max_lr: float, steps: int) -> Config:
        """The full training config of one run: ``base`` with the five settings applied.

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
        )

    def run(
        self, embedding_size: int, num_heads: int, depth: int, max_lr: float, steps: int, output: W.Output | None = None
    ) -> RunRecord:
        """Train one run with these settings, plot it live, add it to the comparison chart and table.

        ``output=None`` (a plain cell) plots at the top level of the cell; the Train button passes the
        panel's own Output widget.
        """
        config = self.config_for(embedding_size, num_heads, depth, max_lr, steps)  # validates first
        index = len(self.runs) + 1
        label = f"#{index} C={embedding_size} h={num_heads} d={depth} lr={max_lr:.0e}"
        live = LivePlot(
            label=label, output=output, previous=self.runs, title="Live loss", seen_messages=self._seen_messages
        )
        record = run_experiment(config, self.data_dir, self.out_dir / f"run-{index}", label=label, live=live)
        record.settings["steps"] = steps
        self.runs.append(record)
        self.refresh()
        return record

    def compare_figure(self) -> Figure:
        """All runs' validation (and train) curves on one chart."""
        return plots.loss_curves({r.label: r.curves() for r in self.runs}, title="All runs")

    def refresh(self) -> None:
        """Redraw the comparison chart and table inside the panel."""
        self.table.value = runs_table_html(self.runs)
        if self.runs and in_notebook():
            show_in(self.chart, self.compare_figure())

    def _on_click(self, _button: Any) -> None:
        # Runs in the kernel when the button is pressed in a browser (never headless). Exceptions raised
        # in a widget callback are swallowed by ipywidgets, so they are shown in the panel instead.
        self.button.disabled = True
        self.status.value = f"<i>Training {self.values()['steps']} steps...</i>"
        try:
            record = self.guarded(lambda **v: self.run(**v, output=self.live))
            if record is not None:
                self.status.value = (
                    f"Run #{len(self.runs)} done: val loss {record.final_val_loss:.3f} "
                    f"({record.val_bpb:.3f} bits/byte), {record.tokens_per_sec:,.0f} tokens/s."
                )
        finally:
            self.button.disabled = False
