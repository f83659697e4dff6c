"""Notebook panels: sliders wired to the model, the trainer and the sampler, plus a live loss plot.

- :mod:`~llmlab.widgets.base`        the pattern every panel follows (pure method + error display)
- :mod:`~llmlab.widgets.live`        :class:`LivePlot` (a trainer callback), :class:`RunRecord` (one setting,
                                     one or several seeds), :func:`best_run` (a lead larger than the noise)
- :mod:`~llmlab.widgets.experiment`  :class:`ExperimentPanel` (notebook 04), :func:`reference_losses`
- :mod:`~llmlab.widgets.explorer`    :class:`ParameterExplorer` (03) and :class:`LRSchedulePanel` (04)
- :mod:`~llmlab.widgets.sampling`    :class:`SamplingPanel` (05)
- :mod:`~llmlab.widgets.race`        :class:`RacePanel` (07)

``parameters_by_component`` and ``memory_estimate`` live in :mod:`llmlab.analysis` and are re-exported
here for the notebooks.
"""

from __future__ import annotations

from llmlab.analysis import memory_estimate, parameters_by_component
from llmlab.widgets.base import Panel, divisors, nearest_heads
from llmlab.widgets.experiment import ExperimentPanel, reference_losses
from llmlab.widgets.explorer import LRSchedulePanel, ParameterExplorer
from llmlab.widgets.live import Lead, LivePlot, RunRecord, best_run, combine_runs, lead, run_experiment, runs_table_html
from llmlab.widgets.race import RacePanel
from llmlab.widgets.sampling import SamplingPanel

__all__ = [
    "Panel",
    "LivePlot",
    "RunRecord",
    "run_experiment",
    "runs_table_html",
    "combine_runs",
    "best_run",
    "Lead",
    "lead",
    "ExperimentPanel",
    "reference_losses",
    "parameters_by_component",
    "memory_estimate",
    "ParameterExplorer",
    "LRSchedulePanel",
    "SamplingPanel",
    "RacePanel",
    "divisors",
    "nearest_heads",
]
