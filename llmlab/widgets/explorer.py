"""Panels that compute without training: the model-size explorer (notebook 03) and the learning-rate
schedule (notebook 04)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ipywidgets as W

from llmlab import plots
from llmlab.analysis import format_bytes, memory_estimate, minimum_step_memory, parameters_by_component
from llmlab.config import Config, ModelConfig, TrainConfig, get_preset
from llmlab.i18n import tr
from llmlab.schedule import budget_step, planned_lrs
from llmlab.validate import check_number
from llmlab.widgets.base import Panel, divisors, in_notebook, max_lr_slider, nearest_heads, show_in

__all__ = ["ParameterExplorer", "LRSchedulePanel"]


class ParameterExplorer(Panel):
    """Sliders for embedding_size, num_heads, depth and block_size; shows parameters by component and
    training memory live, with the attention scores (one T x T matrix per head) as their own entry.

    ``update(embedding_size, num_heads, depth, block_size=None)`` returns ``(counts, memory)`` and redraws;
    the sliders call it, and so can a plain cell. ``memory`` (bytes) splits
    :func:`llmlab.analysis.memory_estimate`'s activations into :attr:`SCORES` and ``"other activations"``:
    the scores grow with num_heads and the square of block_size, while the parameters depend on neither.
    """

    SCORES = "attention scores (B·heads·T²)"
    BLOCK_SIZES = tuple(2**k for k in range(4, 11))  # 16 ... 1024

    def __init__(self, base: ModelConfig | None = None, batch_size: int = 16) -> None:
        self.base = base or get_preset("cpu_small").model
        self.batch_size = batch_size
        style = {"description_width": "120px"}
        emb = self.base.embedding_size
        self.embedding_size = W.IntSlider(
            value=emb, min=32, max=1536, step=32, description="embedding_size", style=style
        )
        self.num_heads = W.SelectionSlider(
            options=divisors(emb, 32), value=self.base.num_heads, description="num_heads", style=style
        )
        self.depth = W.IntSlider(value=self.base.depth, min=1, max=48, description="depth", style=style)
        self.block_size = W.SelectionSlider(
            options=sorted({*self.BLOCK_SIZES, self.base.block_size}),
            value=self.base.block_size,
            description="block_size",
            style=style,
        )
        self.message = W.HTML()
        self.plot = W.Output()
        for w in (self.embedding_size, self.num_heads, self.depth, self.block_size):
            w.observe(self._changed, names="value")
        self.widget = W.VBox(
            [self.embedding_size, self.num_heads, self.depth, self.block_size, self.message, self.plot]
        )
        self._changed(None)

    @property
    def text(self) -> W.HTML:
        """The panel's text (counts, memory, or the error)."""
        return self.message

    def values(self) -> dict[str, int]:
        return {
            "embedding_size": int(self.embedding_size.value),
            "num_heads": int(self.num_heads.value),
            "depth": int(self.depth.value),
            "block_size": int(self.block_size.value),
        }

    def _changed(self, change: Mapping[str, Any] | None) -> None:
        if change is not None and change.get("owner") is self.embedding_size:
            emb, wanted = int(self.embedding_size.value), int(self.num_heads.value)
            self.num_heads.options = divisors(emb, 32)
            # Setting the value fires no event when it stays the same (e.g. 1), so update below in any case.
            self.num_heads.value = nearest_heads(emb, wanted, 32)
        self.guarded(self.update)

    def memory(self, config: ModelConfig) -> dict[str, float]:
        """Training memory in bytes for ``config`` at this panel's batch size, the attention scores apart.

        Both numbers come from :mod:`llmlab.analysis`: the scores are what :func:`memory_estimate` counts
        beyond :func:`minimum_step_memory` (which leaves exactly the T x T scores out).
        """
        estimate = memory_estimate(config, self.batch_size)
        scores = sum(estimate.values()) - minimum_step_memory(config, self.batch_size)
        return {
            "weights": estimate["weights"],
            "gradients": estimate["gradients"],
            "optimizer": estimate["optimizer"],
            "other activations": estimate["activations"] - scores,
            self.SCORES: scores,
        }

    def update(
        self, embedding_size: int, num_heads: int, depth: int, block_size: int | None = None
    ) -> tuple[dict[str, int], dict[str, float]]:
        """Parameter counts by component and a memory estimate for this shape; redraws the panel.

        ``block_size=None`` keeps ``base.block_size``.
        """
        config = ModelConfig(
            vocab_size=self.base.vocab_size,
            block_size=self.base.block_size if block_size is None else block_size,
            embedding_size=embedding_size,
            num_heads=num_heads,
            depth=depth,
            dropout=0.0,
            bias=self.base.bias,
        )  # ModelConfig validates (e.g. num_heads must divide embedding_size)
        counts = parameters_by_component(config)
        memory = self.memory(config)
        total = sum(counts.values())
        rows = "".join(f"<tr><td>{k}</td><td style='text-align:right'>{v:,}</td></tr>" for k, v in counts.items())
        T = config.block_size
        self.message.value = (
            f"<b>{total:,} parameters</b> ({plots.human_count(total)}); head size {embedding_size // num_heads}. "
            f"Training memory, batch {self.batch_size} x {T} tokens, fp32: about "
            f"<b>{format_bytes(sum(memory.values()))}</b> (weights {format_bytes(memory['weights'])}, gradients "
            f"{format_bytes(memory['gradients'])}, AdamW {format_bytes(memory['optimizer'])}, activations "
            f"{format_bytes(memory['other activations'])}, attention scores {format_bytes(memory[self.SCORES])}: "
            f"{self.batch_size} x {num_heads} heads x {T}² per layer, so doubling block_size quadruples them)."
            f"<br>num_heads changes activation memory (the scores term) but not the parameter count: the heads "
            f"split the same embedding_size channels. (Fused attention kernels such as flash attention never "
            f"store the scores; the from-scratch attention does.)"
            f"<table>{rows}</table>"
        )
        if in_notebook():
            show_in(self.plot, plots.parameter_counts({"this model": counts}, title="This model's parameters"))
        return counts, memory


class LRSchedulePanel(Panel):
    """A ``max_lr`` slider (and warm-up) redrawing the schedule the Trainer will apply (:mod:`llmlab.schedule`).

    Without a time budget that is the warm-up + cosine of ``lr_at`` over ``max_iters`` steps. When ``base``
    has ``max_seconds > 0`` the Trainer's cosine follows the larger of step progress and ``elapsed /
    max_seconds``, and the run stops when the time is up: give ``steps_per_second`` (steps per second on
    this machine, evaluations included, e.g. :func:`llmlab.schedule.measured_steps_per_second` of an earlier
    run of the same settings) and the panel draws that schedule per step, marks the step where the time
    runs out (:attr:`stop`) and shows the steps-only curve for comparison. Without a speed it draws the
    steps-only curve and says that the budget may end the run earlier.
    """

    def __init__(self, base: TrainConfig | None = None, steps_per_second: float | None = None) -> None:
        self.base = base or get_preset("cpu_small").train
        if steps_per_second is not None:
            check_number("steps_per_second", steps_per_second, 0, low_open=True, fix="use a speed > 0, e.g. 10.0.")
        self.steps_per_second = steps_per_second
        self.stop: int | None = None  # where the last drawn schedule ends (the budget's step, or max_iters)
        style = {"description_width": "100px"}
        self.max_lr = max_lr_slider(self.base.max_lr, style=style)
        self.warmup_iters = W.IntSlider(
            value=self.base.warmup_iters, min=0, max=self.base.max_iters // 2, description="warmup_iters", style=style
        )
        self.plot = W.Output()
        self.message = W.HTML()
        for w in (self.max_lr, self.warmup_iters):
            w.observe(lambda _change: self.guarded(self.update), names="value")
        self.widget = W.VBox([self.max_lr, self.warmup_iters, self.message, self.plot])
        self.guarded(self.update)

    @property
    def note(self) -> W.HTML:
        """The line under the sliders (peak and final learning rate, where the run ends, or the error)."""
        return self.message

    def values(self) -> dict[str, Any]:
        return {"max_lr": float(self.max_lr.value), "warmup_iters": int(self.warmup_iters.value)}

    def config_for(self, max_lr: float, warmup_iters: int) -> TrainConfig:
        """``base`` with these settings (min_lr = max_lr / 10): the TrainConfig the schedule is drawn for."""
        return Config(train=self.base).override(max_lr=max_lr, min_lr=max_lr / 10, warmup_iters=warmup_iters).train

    def update(self, max_lr: float, warmup_iters: int) -> list[float]:
        """The learning rate at every step as the Trainer will apply it (min_lr = max_lr / 10), up to the step
        where the run stops (:func:`llmlab.schedule.planned_lrs`); redraws the plot."""
        config = self.config_for(max_lr, warmup_iters)
        lrs = planned_lrs(config, self.steps_per_second)
        self.stop = len(lrs) - 1
        peak = max(lrs)
        note = tr("schedule.peak", peak=f"{peak:.2e}", step=lrs.index(peak), end=f"{lrs[-1]:.2e}")
        budget = (
            budget_step(config, self.steps_per_second)
            if self.steps_per_second is not None and config.max_seconds > 0
            else None
        )
        fields = dict(seconds=f"{config.max_seconds:g}", max_iters=config.max_iters)
        if config.max_seconds > 0 and budget is None:
            note += tr("schedule.budget_unknown", **fields)
        elif budget is not None and budget < config.max_iters:
            note += tr("schedule.budget_first", stop=budget, sps=f"{self.steps_per_second:.1f}", **fields)
        elif budget is not None:
            note += tr("schedule.steps_first", budget=budget, sps=f"{self.steps_per_second:.1f}", **fields)
        self.message.value = note
        if in_notebook():
            steps = list(range(len(lrs)))
            schedules = {f"max_lr={max_lr:.1e}": (steps, lrs)}
            if budget is not None:  # the curve max_iters alone would give, for comparison
                by_steps = planned_lrs(config)
                schedules = {
                    f"max_lr={max_lr:.1e}, {config.max_seconds:g} s budget at {self.steps_per_second:.1f} steps/s": (
                        steps,
                        lrs,
                    ),
                    "max_iters alone (no time budget)": (list(range(len(by_steps))), by_steps),
                }
            stop = budget if budget is not None and budget <= config.max_iters else None
            show_in(self.plot, plots.lr_schedule(schedules, warmup=warmup_iters, stop=stop))
        return lrs
