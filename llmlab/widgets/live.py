"""The live loss plot (a trainer callback) and one training run recorded for comparison.

Live plots never need ``ipympl``: at the top level of a cell :class:`LivePlot` shows one PNG through a
display handle and replaces it on each update; inside a button callback it draws into an
``ipywidgets.Output`` with ``clear_output(wait=True)``.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ipywidgets as W
from IPython.display import clear_output, display
from matplotlib.figure import Figure

from llmlab import plots
from llmlab.config import Config
from llmlab.train import Callback, Trainer
from llmlab.validate import check_choice
from llmlab.widgets.base import in_notebook

__all__ = ["LivePlot", "RunRecord", "run_experiment", "runs_table_html"]


class LivePlot(Callback):
    """Redraws train/val loss while the trainer runs; ``previous`` runs stay on the chart for comparison.

    ``output=None`` displays at the top level of the running cell (one PNG, updated in place through a
    display handle); pass an ``ipywidgets.Output`` to draw into a panel instead (inside a button
    callback). ``min_interval`` (seconds) limits redraws between evaluations, since a PNG costs
    ~0.1 s. Outside IPython, or with ``show=False``, nothing is displayed, but the curves are still
    recorded in ``train`` / ``val`` (lists of ``(x, loss)``). ``x="step"`` plots against optimizer steps;
    ``x="seconds"`` against training time, the fair axis when runs differ in speed (equal wall-clock).
    """

    def __init__(
        self,
        label: str = "run",
        output: W.Output | None = None,
        previous: Sequence[RunRecord] = (),
        min_interval: float = 2.0,
        title: str = "Training",
        seen_messages: set[str] | None = None,
        show: bool = True,
        x: str = "step",
    ) -> None:
        self.x = check_choice("x", x, ("step", "seconds"))
        self.label = label
        self.show = show
        self.output = output
        self.previous = list(previous)
        self.min_interval = min_interval
        self.title = title
        self.train: list[tuple[float, float]] = []
        self.val: list[tuple[float, float]] = []
        self.redraws = 0
        self.baseline: float | None = None
        self.messages: list[str] = []
        # Messages already shown (shared between the runs of a panel, so the device note appears once).
        self.seen_messages = seen_messages if seen_messages is not None else set()
        self._handle: Any = None
        self._last_draw = 0.0

    # The trainer's hooks ------------------------------------------------------------------------
    def on_train_start(self, trainer: Any) -> None:
        self.train.clear()
        self.val.clear()
        self._last_draw = 0.0
        # ln(vocab_size): the loss of a uniform guess, the line an untrained model starts on.
        vocab = getattr(getattr(getattr(trainer, "config", None), "model", None), "vocab_size", None)
        self.baseline = math.log(vocab) if vocab else None

    def on_step_end(self, trainer: Any, info: Any) -> None:
        self.train.append((self._x(info), float(info.loss)))
        if time.perf_counter() - self._last_draw >= self.min_interval:
            self.redraw()

    def on_eval(self, trainer: Any, info: Any) -> None:
        self.val.append((self._x(info), float(info.val_loss)))
        self.redraw()

    def _x(self, info: Any) -> float:
        return int(info.step) if self.x == "step" else float(info.elapsed)

    def on_message(self, trainer: Any, message: str) -> None:
        # Trainer hints (device, divergence, "loss is stuck"): printed at the top level, kept under the
        # chart inside a panel (where a print would be wiped by the next redraw).
        if message in self.seen_messages:
            return
        self.seen_messages.add(message)
        self.messages.append(message)
        if self.output is None:
            print(message)

    def on_train_end(self, trainer: Any, result: Any) -> None:
        self.redraw()

    # Drawing --------------------------------------------------------------------------------------
    def curves(self) -> dict[str, dict[str, Any]]:
        """Earlier runs' curves then this run's, in the shape :func:`llmlab.plots.loss_curves` takes."""
        runs = {r.label: r.curves() for r in self.previous}
        runs[self.label] = {
            "train": ([s for s, _ in self.train], [v for _, v in self.train]),
            "val": ([s for s, _ in self.val], [v for _, v in self.val]),
        }
        return runs

    def figure(self) -> Figure:
        """The current chart (a new Figure each call)."""
        where = "step {}" if self.x == "step" else "{:.0f} s"
        subtitle = f" — {where.format(self.train[-1][0])}, loss {self.train[-1][1]:.3f}" if self.train else ""
        xlabel = "step" if self.x == "step" else "training time (s)"
        return plots.loss_curves(self.curves(), title=f"{self.title}{subtitle}", baseline=self.baseline, xlabel=xlabel)

    def redraw(self) -> None:
        """Show the current chart: in the Output widget, or replace this cell's image in place."""
        self._last_draw = time.perf_counter()
        self.redraws += 1
        if not (self.show and in_notebook()):
            return
        fig = self.figure()
        if self.output is not None:
            with self.output:
                clear_output(wait=True)  # wait: swap images without a flicker
                display(fig)
                for message in self.messages:
                    print(message)
        elif self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)


@dataclass
class RunRecord:
    """What a learner compares between runs: settings, size, speed, and how good the model got."""

    label: str
    settings: dict[str, Any]
    num_parameters: int
    tokens_per_sec: float
    final_val_loss: float
    val_bpb: float
    seconds: float
    train_curve: list[tuple[int, float]] = field(default_factory=list)
    val_curve: list[tuple[int, float]] = field(default_factory=list)
    out_dir: str = ""
    result: Any = None  # the trainer's TrainResult, for anything not summarised here

    def curves(self) -> dict[str, Any]:
        """``{"train": (steps, losses), "val": (steps, losses)}`` for :func:`llmlab.plots.loss_curves`."""
        return {
            "train": ([s for s, _ in self.train_curve], [v for _, v in self.train_curve]),
            "val": ([s for s, _ in self.val_curve], [v for _, v in self.val_curve]),
        }


def run_experiment(
    config: Config,
    data_dir: str | Path,
    out_dir: str | Path,
    label: str | None = None,
    callbacks: Sequence[Callback] = (),
    live: LivePlot | None = None,
    overwrite: bool = True,
) -> RunRecord:
    """Train ``config`` on the prepared data in ``data_dir`` with llmlab's Trainer; return a :class:`RunRecord`.

    ``live`` (a :class:`LivePlot`) is added to ``callbacks`` and its recorded curves are kept in the
    record. Checkpoints go to ``out_dir``; an earlier run there is replaced (``overwrite``), since a
    re-executed notebook numbers its runs from 1 again.
    """
    label = label or f"C={config.model.embedding_size} h={config.model.num_heads} d={config.model.depth}"
    recorder = live if live is not None else LivePlot(label=label, show=False)  # records the curves
    recorder.label = label
    trainer = Trainer(config, data_dir=data_dir, out_dir=out_dir, callbacks=[*callbacks, recorder], overwrite=overwrite)
    result = trainer.fit()
    last = result.evals[-1]  # the trainer always evaluates at the final step
    settings = {
        "embedding_size": config.model.embedding_size,
        "num_heads": config.model.num_heads,
        "depth": config.model.depth,
        "max_lr": config.train.max_lr,
        "steps": config.train.max_iters,
    }
    return RunRecord(
        label=label,
        settings=settings,
        num_parameters=int(trainer.raw_model.num_parameters()),
        tokens_per_sec=float(result.tokens_per_sec),
        final_val_loss=float(last.val_loss),
        val_bpb=float(last.val_bpb),
        seconds=float(result.seconds),
        train_curve=list(recorder.train),
        val_curve=list(recorder.val),
        out_dir=str(out_dir),
        result=result,
    )


def runs_table_html(records: Sequence[RunRecord]) -> str:
    """An HTML table of runs: settings, parameters, tokens/s, final val loss and bits-per-byte (best in bold)."""
    if not records:
        return "<p><i>No runs yet: choose settings and press <b>Train</b>.</i></p>"
    best = min(
        range(len(records)),
        key=lambda i: records[i].final_val_loss if math.isfinite(records[i].final_val_loss) else math.inf,
    )
    head = [
        "#",
        "run",
        "embedding_size",
        "num_heads",
        "depth",
        "max_lr",
        "steps",
        "parameters",
        "tokens/s",
        "seconds",
        "val loss",
        "val bits/byte",
    ]
    rows = []
    for i, r in enumerate(records):
        s = r.settings
        cells = [
            str(i + 1),
            html.escape(r.label),
            str(s["embedding_size"]),
            str(s["num_heads"]),
            str(s["depth"]),
            f"{s['max_lr']:.1e}",
            str(s["steps"]),
            plots.human_count(r.num_parameters),
            f"{r.tokens_per_sec:,.0f}",
            f"{r.seconds:.0f}",
            f"{r.final_val_loss:.3f}",
            f"{r.val_bpb:.3f}",
        ]
        color = plots.color_for(i)
        swatch = f"<span style='color:rgb({','.join(str(int(255 * c)) for c in color)})'>&#9632;</span> "
        cells[1] = swatch + cells[1]
        style = " style='font-weight:bold'" if i == best else ""
        rows.append(f"<tr{style}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (
        "<table><thead><tr>"
        + "".join(f"<th>{h}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )
