"""The race panel (notebook 07): tick modern techniques, race the mix against the GPT-2 baseline live.

Both runs train for the same number of seconds on the same data, and the chart's x-axis is training
time: a technique that makes steps slower has to earn its keep in loss per second, not per step.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import ipywidgets as W

from llmlab.config import MODERN_TECHNIQUES, Config, modern_settings
from llmlab.i18n import tr
from llmlab.validate import check_number
from llmlab.widgets.base import Panel
from llmlab.widgets.live import LivePlot, RunRecord, run_experiment

__all__ = ["RacePanel"]


def _key(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label.lower()).strip("_")


class RacePanel(Panel):
    """A checkbox per technique, a seconds slider and a Race button; ``run(seconds, techniques)`` is the
    pure method (the button calls it with ``values()``) and returns ``(baseline, mix)`` records."""

    def __init__(self, data_dir: str | Path, out_dir: str | Path, base: Config, seconds: float = 30.0) -> None:
        self.data_dir, self.out_dir, self.base = Path(data_dir), Path(out_dir), base
        self.races: list[tuple[RunRecord, RunRecord]] = []
        self._seen: set[str] = set()  # trainer notes (device, data) shown once per panel, not once per run
        self.boxes = {t: W.Checkbox(value=True, description=t, indent=False) for t in MODERN_TECHNIQUES}
        self.seconds = W.FloatSlider(value=seconds, min=2, max=120, step=2, description=tr("label.seconds_each"))
        self.button = W.Button(description=tr("button.race"), button_style="success", icon="flag-checkered")
        self.message = W.HTML(f"<i>{tr('note.race_intro')}</i>")
        self.live = W.Output(layout=W.Layout(min_height="300px"))
        self.table = W.HTML()
        self.button.on_click(self._on_click)
        self.widget = W.VBox(
            [
                W.HBox([W.VBox(list(self.boxes.values())), W.VBox([self.seconds, self.button])]),
                self.message,
                self.live,
                self.table,
            ]
        )

    def values(self) -> dict[str, Any]:
        return {"seconds": float(self.seconds.value), "techniques": [t for t, b in self.boxes.items() if b.value]}

    def config_for(self, techniques: list[str], seconds: float) -> Config:
        """The base config with these techniques, trained for ``seconds`` (the step budget never binds first)."""
        check_number("seconds", seconds, 0.0, low_open=True, fix="race for a positive number of seconds, e.g. 30.")
        return self.base.override(max_seconds=float(seconds), max_iters=10**6, **modern_settings(techniques))

    def run(self, seconds: float, techniques: list[str], output: W.Output | None = None) -> tuple[RunRecord, RunRecord]:
        """Train the baseline, then the mix, for ``seconds`` each; plot both live against training time."""
        mix = self.config_for(techniques, seconds)  # validates before anything trains
        base = self.config_for([], seconds)
        index = len(self.races) + 1
        label = "+ " + ", ".join(techniques) if techniques else "baseline again"
        title = "Race at equal wall-clock"
        live = LivePlot(label="GPT-2 baseline", output=output, title=title, x="seconds", seen_messages=self._seen)
        first = run_experiment(base, self.data_dir, self.out_dir / f"race-{index}-base", "GPT-2 baseline", live=live)
        live = LivePlot(
            label=label, output=output, previous=[first], title=title, x="seconds", seen_messages=self._seen
        )
        second = run_experiment(mix, self.data_dir, self.out_dir / f"race-{index}-mix", label, live=live)
        self.races.append((first, second))
        self.table.value = self._table()
        return first, second

    def _table(self) -> str:
        rows = "".join(
            f"<tr><td>{i + 1}</td><td>{html.escape(m.label)}</td><td>{b.val_bpb:.3f}</td><td>{m.val_bpb:.3f}</td>"
            f"<td>{m.val_bpb - b.val_bpb:+.3f}</td></tr>"
            for i, (b, m) in enumerate(self.races)
        )
        return (
            "<table><thead><tr><th>#</th><th>mix</th><th>baseline bits/byte</th><th>mix bits/byte</th>"
            f"<th>difference</th></tr></thead><tbody>{rows}</tbody></table>"
        )

    def _on_click(self, _button: Any) -> None:
        self.button.disabled = True
        self.message.value = f"<i>{tr('status.racing')}</i>"
        try:
            if self.guarded(lambda **v: self.run(**v, output=self.live)) is not None:
                b, m = self.races[-1]
                self.message.value = tr("status.race_done", baseline=f"{b.val_bpb:.3f}", mix=f"{m.val_bpb:.3f}")
        finally:
            self.button.disabled = False
