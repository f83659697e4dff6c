"""The race panel (notebook 07): tick modern techniques, race the mix against the GPT-2 baseline live.

Both sides train for the same number of seconds on the same data, each ``repeats`` times with seeds
``base.seed``, ``base.seed + 1``, ...; the chart's x-axis is training time, each side's validation curve is
the mean over its seeds with the seeds' range as a shaded band, and the table says, by
:func:`llmlab.compare.compare`, whether the gap is larger than the seeds' spread. A technique that makes
steps slower has to earn its keep in loss per second, not per step.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import ipywidgets as W
from IPython.display import clear_output, display
from matplotlib.figure import Figure

from llmlab import plots
from llmlab.compare import compare
from llmlab.config import MODERN_TECHNIQUES, Config, modern_settings
from llmlab.i18n import tr
from llmlab.validate import check_int, check_number
from llmlab.widgets.base import Panel
from llmlab.widgets.live import XLABELS, LivePlot, RunRecord, combine_runs, run_experiment

__all__ = ["RacePanel"]

BASELINE = "GPT-2 baseline"
TITLE = "Race at equal wall-clock"


class RacePanel(Panel):
    """A checkbox per technique, a seconds slider, a repeats slider and a Race button; ``run(seconds,
    techniques, repeats)`` is the pure method (the button calls it with ``values()``) and returns
    ``(baseline, mix)`` records, each combining its ``repeats`` seeds (:func:`combine_runs`)."""

    def __init__(
        self, data_dir: str | Path, out_dir: str | Path, base: Config, seconds: float = 30.0, repeats: int = 2
    ) -> None:
        self.data_dir, self.out_dir, self.base = Path(data_dir), Path(out_dir), base
        self.races: list[tuple[RunRecord, RunRecord]] = []
        self._mixes: list[str] = []  # each race's techniques, in full, for the table
        self._seen: set[str] = set()  # trainer notes (device, data) shown once per panel, not once per run
        self.boxes = {t: W.Checkbox(value=True, description=t, indent=False) for t in MODERN_TECHNIQUES}
        self.seconds = W.FloatSlider(value=seconds, min=2, max=120, step=2, description=tr("label.seconds_each"))
        self.repeats = W.IntSlider(value=repeats, min=1, max=5, description=tr("label.repeat"))
        self.button = W.Button(description=tr("button.race"), button_style="success", icon="flag-checkered")
        self.message = W.HTML(f"<i>{tr('note.race_intro')}</i>")
        self.live = W.Output(layout=W.Layout(min_height="300px"))
        self.table = W.HTML()
        self.button.on_click(self._on_click)
        controls = W.VBox([self.seconds, self.repeats, self.button])
        self.widget = W.VBox(
            [W.HBox([W.VBox(list(self.boxes.values())), controls]), self.message, self.live, self.table]
        )

    def values(self) -> dict[str, Any]:
        return {
            "seconds": float(self.seconds.value),
            "techniques": [t for t, b in self.boxes.items() if b.value],
            "repeats": int(self.repeats.value),
        }

    def config_for(self, techniques: list[str], seconds: float) -> Config:
        """The base config with these techniques, trained for ``seconds`` (the step budget never binds first)."""
        check_number("seconds", seconds, 0.0, low_open=True, fix="race for a positive number of seconds, e.g. 30.")
        return self.base.override(max_seconds=float(seconds), max_iters=10**6, **modern_settings(techniques))

    def run(
        self, seconds: float, techniques: list[str], repeats: int = 1, output: W.Output | None = None
    ) -> tuple[RunRecord, RunRecord]:
        """Train the baseline, then the mix, ``repeats`` seeds each for ``seconds`` each; plot them live.

        ``output=None`` (a plain call in a cell) trains without live charts: show :meth:`figure` afterwards.
        """
        mix = self.config_for(techniques, seconds)  # validates before anything trains
        base = self.config_for([], seconds)
        check_int("repeats", repeats, 1, "race each side at least once; 3 or more seeds let compare say 'better'.")
        index = len(self.races) + 1
        label = _short_label(techniques)  # a legend entry that leaves room for the curves; the table lists all
        done: list[RunRecord] = []
        for key, name, config in (("base", BASELINE, base), ("mix", label, mix)):
            seeds = []
            for r in range(repeats):
                seed = base.train.seed + r
                live = LivePlot(
                    label=name if repeats == 1 else f"{name} (seed {seed})",
                    output=output,
                    previous=done,
                    title=TITLE,
                    x="seconds",
                    seen_messages=self._seen,
                    show=output is not None,
                )
                out = self.out_dir / f"race-{index}-{key}-seed{seed}"
                seeds.append(run_experiment(config.override(seed=seed), self.data_dir, out, name, live=live))
            done.append(combine_runs(seeds, label=name))
        first, second = done
        self.races.append((first, second))
        self._mixes.append(", ".join(techniques) or "none (baseline again)")
        self.table.value = self._table()
        return first, second

    def figure(self, race: int = -1) -> Figure:
        """The chart of a finished race (default: the last): each side's mean curves and its seeds' range."""
        if not self.races:
            raise ValueError("no race has run yet: press Race or call run(seconds, techniques, repeats) first.")
        first, second = self.races[race]
        fig = plots.loss_curves(
            {r.label: r.curves("seconds") for r in (first, second)}, title=TITLE, xlabel=XLABELS["seconds"]
        )
        # Outside, right: short races end high, where a legend inside the axes would sit on the curves.
        fig.axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
        return fig

    def _table(self) -> str:
        rows = []
        for i, (b, m) in enumerate(self.races):
            verdict = compare(m.val_bpbs, b.val_bpbs).says(m.label, BASELINE)
            rows.append(
                f"<tr><td>{i + 1}</td><td>{html.escape(self._mixes[i])}</td><td>{_cell(b)}</td><td>{_cell(m)}</td>"
                f"<td>{m.val_bpb - b.val_bpb:+.3f}</td><td>{html.escape(verdict)}</td></tr>"
            )
        return (
            "<table><thead><tr><th>#</th><th>mix</th><th>baseline bits/byte</th><th>mix bits/byte</th>"
            f"<th>difference</th><th>verdict</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )

    def _on_click(self, _button: Any) -> None:
        self.button.disabled = True
        self.message.value = f"<i>{tr('status.racing')}</i>"
        try:
            if self.guarded(lambda **v: self.run(**v, output=self.live)) is not None:
                b, m = self.races[-1]
                self.message.value = tr("status.race_done", baseline=f"{b.val_bpb:.3f}", mix=f"{m.val_bpb:.3f}")
                with self.live:  # the live charts showed one seed at a time: end on the means and their bands
                    clear_output(wait=True)
                    display(self.figure())
        finally:
            self.button.disabled = False


def _short_label(techniques: list[str]) -> str:
    """The mix's name on the chart: its techniques when there are one or two, else how many."""
    if not techniques:
        return "baseline again"
    if len(techniques) == len(MODERN_TECHNIQUES):
        return "+ all techniques"
    if len(techniques) <= 2:
        return "+ " + ", ".join(techniques)
    return f"+ {len(techniques)} techniques"


def _cell(r: RunRecord) -> str:
    """Mean bits/byte over the seeds, with their min-max range when there are several."""
    if r.num_seeds < 2:
        return f"{r.val_bpb:.3f}"
    return f"{r.val_bpb:.3f} ({min(r.val_bpbs):.3f}–{max(r.val_bpbs):.3f}, {r.num_seeds} seeds)"
