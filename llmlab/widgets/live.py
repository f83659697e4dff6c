"""The live loss plot (a trainer callback) and one training run recorded for comparison.

Live plots never need ``ipympl``: at the top level of a cell :class:`LivePlot` shows one PNG through a
display handle and replaces it on each update; inside a button callback it draws into an
``ipywidgets.Output`` with ``clear_output(wait=True)``.
"""

from __future__ import annotations

import html
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ipywidgets as W
from IPython.display import clear_output, display
from matplotlib.figure import Figure

from llmlab import plots
from llmlab.callbacks import Callback
from llmlab.compare import Comparison, compare
from llmlab.config import Config
from llmlab.i18n import tr
from llmlab.train import Trainer
from llmlab.trainer_view import TrainerView
from llmlab.validate import check_choice
from llmlab.widgets.base import in_notebook

__all__ = ["LivePlot", "RunRecord", "run_experiment", "combine_runs", "Lead", "lead", "best_run", "runs_table_html"]

AXES = ("step", "seconds")
XLABELS = {"step": "step", "seconds": "training time (s)"}
Curves = dict[str, tuple[list[float], list[float]]]  # {"train": (xs, losses), "val": (xs, losses)}


class LivePlot(Callback):
    """Redraws train/val loss while the trainer runs; ``previous`` runs stay on the chart for comparison.

    ``output=None`` displays at the top level of the running cell (one PNG, updated in place through a
    display handle); pass an ``ipywidgets.Output`` to draw into a panel instead (inside a button
    callback). ``min_interval`` (seconds) limits redraws between evaluations, since a PNG costs
    ~0.1 s. Outside IPython, or with ``show=False``, nothing is displayed, but the curves are still
    recorded in ``train`` / ``val`` (lists of ``(x, loss)``). ``x="step"`` plots against optimizer steps;
    ``x="seconds"`` against training time, the fair axis when runs differ in speed (equal wall-clock).
    Both axes are recorded (:meth:`curves_on`), so a run can be re-plotted on the other one later.
    ``references`` (``{name: loss}``) are drawn as labelled dashed lines, e.g. the counting baselines.
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
        references: Mapping[str, float] | None = None,
    ) -> None:
        self.x = check_choice("x", x, AXES)
        self.label = label
        self.show = show
        self.output = output
        self.previous = list(previous)
        self.min_interval = min_interval
        self.title = title
        self.references = dict(references or {})
        self.train: list[tuple[float, float]] = []
        self.val: list[tuple[float, float]] = []
        # (step, seconds, loss) of every logged step / evaluation: both axes, whichever one is plotted.
        self.points: dict[str, list[tuple[int, float, float]]] = {"train": [], "val": []}
        self.redraws = 0
        self.baseline: float | None = None
        self.messages: list[str] = []
        # Messages already shown (shared between the runs of a panel, so the device note appears once).
        self.seen_messages = seen_messages if seen_messages is not None else set()
        self._handle: Any = None
        self._last_draw = 0.0

    # The trainer's hooks ------------------------------------------------------------------------
    def on_train_start(self, trainer: TrainerView) -> None:
        self.train.clear()
        self.val.clear()
        for points in self.points.values():
            points.clear()
        # The first chart comes after min_interval too: a run shorter than that is drawn once, at its end
        # (each PNG costs ~0.1-0.3 s, more than a whole short run's steps).
        self._last_draw = time.perf_counter()
        # ln(vocab_size): the loss of a uniform guess, the line an untrained model starts on.
        vocab = getattr(getattr(getattr(trainer, "config", None), "model", None), "vocab_size", None)
        self.baseline = math.log(vocab) if vocab else None

    def on_step_end(self, trainer: TrainerView, info: Any) -> None:
        self.train.append((self._x(info), float(info.loss)))
        self.points["train"].append((int(info.step), float(info.elapsed), float(info.loss)))
        self._redraw_if_due()

    def on_eval(self, trainer: TrainerView, info: Any) -> None:
        self.val.append((self._x(info), float(info.val_loss)))
        self.points["val"].append((int(info.step), float(info.elapsed), float(info.val_loss)))
        self._redraw_if_due()

    def _redraw_if_due(self) -> None:
        # Steps and evaluations alike: a chart at most every min_interval; what waits shows in the next one.
        if time.perf_counter() - self._last_draw >= self.min_interval:
            self.redraw()

    def _x(self, info: Any) -> float:
        return int(info.step) if self.x == "step" else float(info.elapsed)

    def on_message(self, trainer: TrainerView, message: str) -> None:
        # Trainer hints (device, divergence, "loss is stuck"): printed at the top level, kept under the
        # chart inside a panel (where a print would be wiped by the next redraw).
        if message in self.seen_messages:
            return
        self.seen_messages.add(message)
        self.messages.append(message)
        if self.output is None:
            print(message)

    def on_train_end(self, trainer: TrainerView, result: Any) -> None:
        self.redraw()

    # Drawing --------------------------------------------------------------------------------------
    def curves_on(self, x: str) -> Curves:
        """This run's recorded curves against ``x`` (``"step"`` or ``"seconds"``)."""
        column = AXES.index(check_choice("x", x, AXES))
        return {kind: ([p[column] for p in points], [p[2] for p in points]) for kind, points in self.points.items()}

    def curves(self) -> dict[str, dict[str, Any]]:
        """Earlier runs' curves then this run's, in the shape :func:`llmlab.plots.loss_curves` takes."""
        # A run recorded against the other axis only (a hand-made record) is left out: never fail mid-training.
        runs = {r.label: r.curves(self.x) for r in self.previous if r.curves_per_seed or r.axis == self.x}
        runs[self.label] = {
            "train": ([s for s, _ in self.train], [v for _, v in self.train]),
            "val": ([s for s, _ in self.val], [v for _, v in self.val]),
        }
        return runs

    def figure(self) -> Figure:
        """The current chart (a new Figure each call)."""
        where = "step {}" if self.x == "step" else "{:.0f} s"
        subtitle = f" — {where.format(self.train[-1][0])}, loss {self.train[-1][1]:.3f}" if self.train else ""
        return plots.loss_curves(
            self.curves(),
            title=f"{self.title}{subtitle}",
            baseline=self.baseline,
            xlabel=XLABELS[self.x],
            references=self.references,
        )

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
    """What a learner compares between runs: settings, size, speed, and how good the model got.

    One record may stand for several trainings of the same settings with different seeds: then
    ``final_val_loss`` / ``val_bpb`` / ``tokens_per_sec`` / ``seconds`` are means over the seeds,
    ``val_losses`` / ``val_bpbs`` hold each seed's final value, and :attr:`spread` says how much the seeds
    disagree, the size of a difference that means nothing. ``train_curve`` / ``val_curve`` are
    ``(x, loss)`` pairs against ``axis`` (the axis its live plot used); ``curves_per_seed`` keeps each
    seed's curves against both axes, ``{"step": {"train": (xs, ys), "val": ...}, "seconds": {...}}``.
    """

    label: str
    settings: dict[str, Any]
    num_parameters: int
    tokens_per_sec: float
    final_val_loss: float
    val_bpb: float
    seconds: float
    train_curve: list[tuple[float, float]] = field(default_factory=list)
    val_curve: list[tuple[float, float]] = field(default_factory=list)
    out_dir: str = ""
    result: Any = None  # the (first seed's) TrainResult, for anything not summarised here
    seeds: list[int] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    val_bpbs: list[float] = field(default_factory=list)
    prediction: str = ""
    curves_per_seed: list[dict[str, Curves]] = field(default_factory=list)
    axis: str = "step"
    results: list[Any] = field(default_factory=list)  # every seed's TrainResult

    def __post_init__(self) -> None:
        check_choice("axis", self.axis, AXES)
        # A record built by hand with only the means stands for one training.
        if not self.val_losses:
            self.val_losses = [float(self.final_val_loss)]
        if not self.val_bpbs:
            self.val_bpbs = [float(self.val_bpb)]

    @property
    def num_seeds(self) -> int:
        """How many trainings this record averages."""
        return len(self.val_losses)

    @property
    def spread(self) -> float:
        """Sample standard deviation of the final val losses over seeds (0.0 for one seed)."""
        finite = [v for v in self.val_losses if math.isfinite(v)]
        if len(finite) < len(self.val_losses):
            return math.nan  # a diverged seed: no meaningful spread
        return statistics.stdev(finite) if len(finite) >= 2 else 0.0

    def curves(self, x: str | None = None) -> dict[str, Any]:
        """``{"train": (xs, losses), "val": (xs, losses)}`` for :func:`llmlab.plots.loss_curves`.

        ``x``: ``"step"`` or ``"seconds"`` (default: ``axis``). Over several seeds the curves are the
        means at each logged step / evaluation, and ``"val_band"`` is ``(xs, min, max)`` over the seeds.
        """
        axis = self.axis if x is None else check_choice("x", x, AXES)
        if not self.curves_per_seed:
            if axis != self.axis:
                raise ValueError(
                    f"x={axis!r} is not valid for run {self.label!r}: only its {self.axis!r} curves were recorded; "
                    f"plot it with x={self.axis!r}."
                )
            return {
                "train": ([s for s, _ in self.train_curve], [v for _, v in self.train_curve]),
                "val": ([s for s, _ in self.val_curve], [v for _, v in self.val_curve]),
            }
        per_seed = [c[axis] for c in self.curves_per_seed]
        if len(per_seed) == 1:
            return {kind: (list(xs), list(ys)) for kind, (xs, ys) in per_seed[0].items()}
        out: dict[str, Any] = {}
        for kind in ("train", "val"):
            # Seeds log at the same steps; a time budget may stop some earlier: keep the common prefix.
            n = min(len(c[kind][0]) for c in per_seed)
            xs = [c[kind][0][:n] for c in per_seed]
            ys = [c[kind][1][:n] for c in per_seed]
            mean_x = list(xs[0]) if axis == "step" else [statistics.fmean(col) for col in zip(*xs)]
            out[kind] = (mean_x, [statistics.fmean(col) for col in zip(*ys)])
            if kind == "val":
                out["val_band"] = (mean_x, [min(col) for col in zip(*ys)], [max(col) for col in zip(*ys)])
        return out


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
    trainer = Trainer(config, data=data_dir, out_dir=out_dir, callbacks=[*callbacks, recorder], overwrite=overwrite)
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
        seeds=[int(config.train.seed)],
        curves_per_seed=[{x: recorder.curves_on(x) for x in AXES}],
        axis=recorder.x,
        results=[result],
    )


def combine_runs(records: Sequence[RunRecord], label: str | None = None, prediction: str = "") -> RunRecord:
    """One record for several trainings of the same settings (one per seed): means, per-seed values, curves.

    ``records`` come from :func:`run_experiment`, one per seed; the result's ``settings``, parameter
    count and output folder are the first one's.
    """
    if not records:
        raise ValueError("records is empty: pass the RunRecords of one setting's seeds (at least one).")
    first = records[0]
    losses = [v for r in records for v in r.val_losses]
    bpbs = [v for r in records for v in r.val_bpbs]
    mean = statistics.fmean
    combined = RunRecord(
        label=label or first.label,
        settings=dict(first.settings),
        num_parameters=first.num_parameters,
        tokens_per_sec=mean(r.tokens_per_sec for r in records),
        final_val_loss=mean(losses),
        val_bpb=mean(bpbs),
        seconds=mean(r.seconds for r in records),
        out_dir=first.out_dir,
        result=first.result,
        seeds=[s for r in records for s in r.seeds],
        val_losses=losses,
        val_bpbs=bpbs,
        prediction=prediction,
        curves_per_seed=[c for r in records for c in r.curves_per_seed],
        axis=first.axis,
        results=[res for r in records for res in (r.results or [r.result])],
    )
    if combined.curves_per_seed:  # the mean curves, against the axis the runs were watched on
        mean_curves = combined.curves()
        combined.train_curve = list(zip(*mean_curves["train"]))
        combined.val_curve = list(zip(*mean_curves["val"]))
    else:
        combined.train_curve, combined.val_curve = list(first.train_curve), list(first.val_curve)
    return combined


def _ranked(records: Sequence[RunRecord]) -> list[RunRecord]:
    return sorted((r for r in records if math.isfinite(r.final_val_loss)), key=lambda r: r.final_val_loss)


# From the weakest verdict to the strongest: a lead is only as strong as its comparison with the closest rival.
_STRENGTH = {"unknown": 0, "noise": 1, "suggestive": 2, "better": 3}


@dataclass(frozen=True)
class Lead:
    """The run with the lowest mean final val loss and how it compares with its closest rival.

    ``comparison`` is :func:`llmlab.compare.compare` of the leader's seeds against the rival's (A = the
    leader), and the rival is the run against which that comparison is weakest (ties: the smaller gap).
    ``verdict`` is therefore what the leader is against every other run: ``"better"`` only when it beats
    each of them under the course's rule.
    """

    best: RunRecord
    rival: RunRecord
    comparison: Comparison

    @property
    def verdict(self) -> str:
        return self.comparison.verdict

    def says(self) -> str:
        """The comparison as one sentence, naming both runs by their labels (in the learner's language)."""
        return self.comparison.says(self.best.label, self.rival.label)


def lead(records: Sequence[RunRecord]) -> Lead | None:
    """The lowest-mean run compared with its closest rival (:class:`Lead`); None with fewer than 2 finite runs.

    Each comparison uses the seeds' final val losses (``RunRecord.val_losses``) under
    :func:`llmlab.compare.compare`; a diverged run (non-finite mean) is never the leader nor a rival.
    """
    ranked = _ranked(records)
    if len(ranked) < 2:
        return None
    best = ranked[0]
    rivals = [(r, compare(best.val_losses, r.val_losses)) for r in ranked[1:]]
    rival, comparison = min(rivals, key=lambda rc: (_STRENGTH[rc[1].verdict], rc[1].difference))
    return Lead(best, rival, comparison)


def best_run(records: Sequence[RunRecord]) -> RunRecord | None:
    """The run with the lowest mean val loss when it is *better* than every other run; else None.

    "Better" is the course's one rule (:func:`llmlab.compare.compare`): at least 3 seeds a side and a 95%
    Welch t-interval of the difference that excludes 0. Two seeds are never enough, however far apart;
    :func:`lead` says how strong a weaker lead is ("suggestive", "noise", "unknown").
    """
    found = lead(records)
    return found.best if found is not None and found.verdict == "better" else None


def _val_loss_cell(r: RunRecord) -> str:
    if r.num_seeds < 2:
        return f"{r.final_val_loss:.3f} (1 seed)"
    return f"{r.final_val_loss:.3f} ± {r.spread:.3f} ({r.num_seeds} seeds)"


def runs_table_html(records: Sequence[RunRecord]) -> str:
    """An HTML table of runs: settings, parameters, tokens/s, seconds, val loss ± spread over seeds,
    bits per byte and the learner's prediction.

    The lowest-mean run is marked by :func:`lead`'s verdict: **bold** only when it is better than every
    other run (:func:`best_run`), *italic* when its lead is only suggestive; a footnote says the
    comparison in words (:meth:`llmlab.compare.Comparison.says`), or why no run is marked.
    """
    if not records:
        return f"<p><i>{tr('table.empty')}</i></p>"
    found = lead(records)
    marked = found.best if found is not None and found.verdict in ("better", "suggestive") else None
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
        "prediction",
    ]
    rows = []
    for i, r in enumerate(records):
        s = r.settings
        max_lr = s.get("max_lr")
        cells = [
            str(i + 1),
            html.escape(r.label),
            html.escape(str(s.get("embedding_size", ""))),
            html.escape(str(s.get("num_heads", ""))),
            html.escape(str(s.get("depth", ""))),
            f"{max_lr:.1e}" if isinstance(max_lr, (int, float)) else "",
            html.escape(str(s.get("steps", ""))),
            plots.human_count(r.num_parameters),
            f"{r.tokens_per_sec:,.0f}",
            f"{r.seconds:.0f}",
            _val_loss_cell(r),
            f"{r.val_bpb:.3f}",
            html.escape(r.prediction),
        ]
        color = plots.color_for(i)
        swatch = f"<span style='color:rgb({','.join(str(int(255 * c)) for c in color)})'>&#9632;</span> "
        cells[1] = swatch + cells[1]
        style = ""
        if r is marked:
            style = " style='font-weight:bold'" if found.verdict == "better" else " style='font-style:italic'"
        rows.append(f"<tr{style}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    table = (
        "<table><thead><tr>"
        + "".join(f"<th>{h}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )
    if found is not None:
        table += f"<p style='font-size:90%'><i>{html.escape(_footnote(found))}</i></p>"
    return table


def _footnote(found: Lead) -> str:
    """Why the lowest-mean run is bold, italic or not marked: the verdict's sentence."""
    says = found.says()
    if found.verdict == "better":
        return tr("table.best", says=says)
    if found.verdict == "suggestive":
        return tr("table.suggestive", says=says)
    if found.verdict == "noise":
        return tr("table.no_best", says=says)
    return tr("table.no_best_one_seed", says=says)
