"""Notebook panels: sliders wired to the model, the trainer and the sampler, plus a live loss plot.

Every panel follows one pattern, so the same code runs with and without a browser:

- the panel object holds plain Python state and a pure method that does the work
  (:meth:`ExperimentPanel.run`, :meth:`ParameterExplorer.update`, :meth:`LRSchedulePanel.update`,
  :meth:`SamplingPanel.update`);
- the sliders only call that method; an error raised there is shown in the panel (ipywidgets would
  otherwise swallow it silently);
- a notebook cell can call the same method with the sliders' current values (``panel.values()``) and
  assert on the result, which is how CI (no frontend, buttons never fire) tests the real path.

Live plots never need ``ipympl``: at the top level of a cell :class:`LivePlot` shows one PNG through a
display handle and replaces it on each update; inside a button callback it draws into an
``ipywidgets.Output`` with ``clear_output(wait=True)``.
"""

from __future__ import annotations

import html
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import ipywidgets as W
import torch
from IPython.display import clear_output, display
from matplotlib.figure import Figure

from llmlab import plots
from llmlab.config import Config, ModelConfig, TrainConfig, get_preset
from llmlab.model import GPT
from llmlab.sampling import apply_temperature, top_k_filter, top_p_filter
from llmlab.train import Callback, Trainer, lr_at

__all__ = [
    "LivePlot",
    "RunRecord",
    "run_experiment",
    "runs_table_html",
    "ExperimentPanel",
    "parameters_by_component",
    "memory_estimate",
    "ParameterExplorer",
    "LRSchedulePanel",
    "SamplingPanel",
    "divisors",
]


def _in_notebook() -> bool:
    """True inside an IPython kernel/shell; outside, displaying would only print reprs to stdout."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with ipywidgets
        return False
    return get_ipython() is not None


def divisors(n: int, limit: int = 32) -> list[int]:
    """Head counts that split ``n`` channels evenly (up to ``limit``): ``divisors(192) -> [1, 2, 3, 4, 6, 8, ...]``."""
    return [h for h in range(1, min(n, limit) + 1) if n % h == 0]


def nearest_heads(embedding_size: int, wanted: int, limit: int = 16) -> int:
    """The valid head count closest to ``wanted`` (ties: the smaller), so a slider never offers a bad pair."""
    return min(divisors(embedding_size, limit), key=lambda h: (abs(h - wanted), h))


# --------------------------------------------------------------------------------------------------
# Live loss plot (a trainer callback)


class LivePlot(Callback):
    """Redraws train/val loss while the trainer runs; ``previous`` runs stay on the chart for comparison.

    ``output=None`` displays at the top level of the running cell (one PNG, updated in place through a
    display handle); pass an ``ipywidgets.Output`` to draw into a panel instead (inside a button
    callback). ``min_interval`` (seconds) limits redraws between evaluations, since a PNG costs
    ~0.1 s. Outside IPython, or with ``show=False``, nothing is displayed, but the curves are still
    recorded in ``train`` / ``val`` (lists of ``(step, loss)``).
    """

    def __init__(
        self,
        label: str = "run",
        output: W.Output | None = None,
        previous: Sequence["RunRecord"] = (),
        min_interval: float = 2.0,
        title: str = "Training",
        seen_messages: set[str] | None = None,
        show: bool = True,
    ) -> None:
        self.label = label
        self.show = show
        self.output = output
        self.previous = list(previous)
        self.min_interval = min_interval
        self.title = title
        self.train: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []
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
        self.train.append((int(info.step), float(info.loss)))
        if time.perf_counter() - self._last_draw >= self.min_interval:
            self.redraw()

    def on_eval(self, trainer: Any, info: Any) -> None:
        self.val.append((int(info.step), float(info.val_loss)))
        self.redraw()

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
        subtitle = f" — step {self.train[-1][0]}, loss {self.train[-1][1]:.3f}" if self.train else ""
        return plots.loss_curves(self.curves(), title=f"{self.title}{subtitle}", baseline=self.baseline)

    def redraw(self) -> None:
        """Show the current chart: in the Output widget, or replace this cell's image in place."""
        self._last_draw = time.perf_counter()
        self.redraws += 1
        if not (self.show and _in_notebook()):
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


# --------------------------------------------------------------------------------------------------
# One training run, recorded for comparison


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
) -> RunRecord:
    """Train ``config`` on the prepared data in ``data_dir`` with llmlab's Trainer; return a :class:`RunRecord`.

    ``live`` (a :class:`LivePlot`) is added to ``callbacks`` and its recorded curves are kept in the
    record. Checkpoints go to ``out_dir``.
    """
    label = label or f"C={config.model.embedding_size} h={config.model.num_heads} d={config.model.depth}"
    recorder = live if live is not None else LivePlot(label=label, show=False)  # records the curves
    recorder.label = label
    trainer = Trainer(config, data_dir=data_dir, out_dir=out_dir, callbacks=[*callbacks, recorder])
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
    best = min(range(len(records)), key=lambda i: records[i].final_val_loss if math.isfinite(records[i].final_val_loss) else math.inf)
    head = ["#", "run", "embedding_size", "num_heads", "depth", "max_lr", "steps", "parameters", "tokens/s",
            "seconds", "val loss", "val bits/byte"]
    rows = []
    for i, r in enumerate(records):
        s = r.settings
        cells = [str(i + 1), html.escape(r.label), str(s["embedding_size"]), str(s["num_heads"]), str(s["depth"]),
                 f"{s['max_lr']:.1e}", str(s["steps"]), plots.human_count(r.num_parameters),
                 f"{r.tokens_per_sec:,.0f}", f"{r.seconds:.0f}", f"{r.final_val_loss:.3f}", f"{r.val_bpb:.3f}"]
        color = plots.color_for(i)
        swatch = f"<span style='color:rgb({','.join(str(int(255 * c)) for c in color)})'>&#9632;</span> "
        cells[1] = swatch + cells[1]
        style = " style='font-weight:bold'" if i == best else ""
        rows.append(f"<tr{style}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ("<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


# --------------------------------------------------------------------------------------------------
# The experiment panel (notebook 04)


class ExperimentPanel:
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
        self.embedding_size = W.SelectionSlider(options=list(self.EMBEDDING_SIZES), value=emb,
                                                description="embedding_size", style=style, layout=layout)
        self.num_heads = W.SelectionSlider(options=divisors(emb, 16), value=nearest_heads(emb, m.num_heads),
                                           description="num_heads", style=style, layout=layout)
        self.depth = W.IntSlider(value=m.depth, min=1, max=8, description="depth", style=style, layout=layout)
        self.max_lr = W.FloatLogSlider(value=t.max_lr, base=10, min=-4.5, max=-1.5, step=0.25,
                                       readout_format=".1e", description="max_lr", style=style, layout=layout)
        self.steps = W.IntSlider(value=steps, min=min(steps, 20), max=max(max_steps, steps), step=10,
                                 description="steps", style=style, layout=layout)
        self.button = W.Button(description="Train", button_style="success", icon="play")
        self.note = W.HTML()
        self.status = W.HTML("<i>Ready.</i>")
        self.live = W.Output(layout=W.Layout(min_height="300px"))
        self.chart = W.Output()
        self.table = W.HTML(runs_table_html([]))
        self.embedding_size.observe(self._on_embedding_change, names="value")
        self.button.on_click(self._on_click)
        controls = W.VBox([self.embedding_size, self.num_heads, self.depth, self.max_lr, self.steps,
                           W.HBox([self.button, self.status]), self.note])
        self.widget = W.VBox([controls, self.live, W.HTML("<b>All runs</b>"), self.chart, self.table])

    def _ipython_display_(self) -> None:
        display(self.widget)

    def _on_embedding_change(self, change: Mapping[str, Any]) -> None:
        emb, wanted = int(change["new"]), int(self.num_heads.value)
        options = divisors(emb, 16)
        chosen = nearest_heads(emb, wanted)
        self.num_heads.options = options  # resets value: set it back explicitly
        self.num_heads.value = chosen
        if chosen != wanted:
            self.note.value = (f"<span style='color:#b35900'>num_heads={wanted} does not divide embedding_size={emb} "
                               f"(each head gets embedding_size / num_heads channels), so num_heads is now {chosen}. "
                               f"Possible: {options}.</span>")
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
            embedding_size=embedding_size, num_heads=num_heads, depth=depth,
            max_lr=float(max_lr), min_lr=float(max_lr) / 10, max_iters=steps, warmup_iters=warmup,
            eval_interval=interval, log_interval=max(1, min(self.base.train.log_interval, interval)),
        )

    def run(self, embedding_size: int, num_heads: int, depth: int, max_lr: float, steps: int,
            output: W.Output | None = None) -> RunRecord:
        """Train one run with these settings, plot it live, add it to the comparison chart and table.

        ``output=None`` (a plain cell) plots at the top level of the cell; the Train button passes the
        panel's own Output widget.
        """
        config = self.config_for(embedding_size, num_heads, depth, max_lr, steps)  # validates first
        index = len(self.runs) + 1
        label = f"#{index} C={embedding_size} h={num_heads} d={depth} lr={max_lr:.0e}"
        live = LivePlot(label=label, output=output, previous=self.runs, title="Live loss",
                        seen_messages=self._seen_messages)
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
        if self.runs and _in_notebook():
            with self.chart:
                clear_output(wait=True)
                display(self.compare_figure())

    def _on_click(self, _button: Any) -> None:
        # Runs in the kernel when the button is pressed in a browser (never headless). Exceptions raised
        # in a widget callback are swallowed by ipywidgets, so they are shown in the panel instead.
        self.button.disabled = True
        values = self.values()
        self.status.value = f"<i>Training {values['steps']} steps...</i>"
        try:
            record = self.run(**values, output=self.live)
        except Exception as exc:  # noqa: BLE001 - shown to the learner, not hidden
            self.status.value = f"<span style='color:#c00'>{html.escape(type(exc).__name__)}: {html.escape(str(exc))}</span>"
        else:
            self.status.value = (f"Run #{len(self.runs)} done: val loss {record.final_val_loss:.3f} "
                                 f"({record.val_bpb:.3f} bits/byte), {record.tokens_per_sec:,.0f} tokens/s.")
        finally:
            self.button.disabled = False


# --------------------------------------------------------------------------------------------------
# Model size (notebook 03)


def _component(name: str) -> str:
    """GPT-2 parameter name -> the part of the model it belongs to."""
    if ".wte." in f".{name}" or name.startswith("lm_head"):
        return "token embedding"
    if ".wpe." in f".{name}":
        return "position embedding"
    if ".attn." in name:
        return "attention"
    if ".mlp." in name:
        return "MLP"
    return "LayerNorm"


def parameters_by_component(model_or_config: GPT | ModelConfig | Config) -> dict[str, int]:
    """Parameter count per component (token/position embedding, attention, MLP, LayerNorm); sums to
    ``GPT.num_parameters()``. A config is instantiated on the ``meta`` device: no memory, instant even
    for GPT-2 sizes."""
    if isinstance(model_or_config, GPT):
        model = model_or_config
    else:
        with torch.device("meta"):
            model = GPT(model_or_config)
    counts = {"token embedding": 0, "position embedding": 0, "attention": 0, "MLP": 0, "LayerNorm": 0}
    for name, p in model.named_parameters():  # the tied lm_head/wte matrix is yielded once
        counts[_component(name)] += p.numel()
    return counts


def memory_estimate(config: ModelConfig, batch_size: int, bytes_per_value: int = 4) -> dict[str, float]:
    """Rough training memory in bytes: weights, gradients, AdamW's two moments, and activations.

    Activations follow Korthikanti et al. (2022) per layer, ``T*B*C*(34 + 5*nh*T/C)`` values at 2 bytes,
    scaled to ``bytes_per_value``; the attention matrix term ``5*nh*T^2`` dominates for long contexts.
    Real use differs by allocator overhead and the kernels chosen: treat it as an order of magnitude.
    """
    n = sum(parameters_by_component(config).values())
    T, B, C, nh, L = config.block_size, batch_size, config.embedding_size, config.num_heads, config.depth
    activations = L * T * B * C * (34 + 5 * nh * T / C) / 2 * bytes_per_value
    logits = 2 * B * T * config.vocab_size * bytes_per_value  # logits and their gradient
    return {
        "weights": n * bytes_per_value,
        "gradients": n * bytes_per_value,
        "optimizer": 2 * n * 4,  # AdamW keeps two fp32 moments per parameter
        "activations": activations + logits,
    }


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB" if n < 2**30 else f"{n / 2**30:,.2f} GiB"


class ParameterExplorer:
    """Sliders for embedding_size, num_heads and depth; shows parameters by component and memory live.

    ``update(embedding_size, num_heads, depth)`` returns ``(counts, memory)`` and redraws; the sliders
    call it, and so can a plain cell.
    """

    def __init__(self, base: ModelConfig | None = None, batch_size: int = 16) -> None:
        self.base = base or get_preset("cpu_small").model
        self.batch_size = batch_size
        style = {"description_width": "120px"}
        emb = self.base.embedding_size
        self.embedding_size = W.IntSlider(value=emb, min=32, max=1536, step=32, description="embedding_size", style=style)
        self.num_heads = W.SelectionSlider(options=divisors(emb, 32), value=self.base.num_heads,
                                           description="num_heads", style=style)
        self.depth = W.IntSlider(value=self.base.depth, min=1, max=48, description="depth", style=style)
        self.text = W.HTML()
        self.plot = W.Output()
        for w in (self.embedding_size, self.num_heads, self.depth):
            w.observe(self._changed, names="value")
        self.widget = W.VBox([self.embedding_size, self.num_heads, self.depth, self.text, self.plot])
        self._changed(None)

    def _ipython_display_(self) -> None:
        display(self.widget)

    def values(self) -> dict[str, int]:
        """The sliders' current values."""
        return {"embedding_size": int(self.embedding_size.value), "num_heads": int(self.num_heads.value),
                "depth": int(self.depth.value)}

    def _changed(self, change: Mapping[str, Any] | None) -> None:
        emb = int(self.embedding_size.value)
        if change is not None and change.get("owner") is self.embedding_size:
            wanted = int(self.num_heads.value)
            self.num_heads.options = divisors(emb, 32)
            # Setting the value fires no event when it stays the same (e.g. 1), so update below in any case.
            self.num_heads.value = nearest_heads(emb, wanted, 32)
        try:
            self.update(**self.values())
        except ValueError as exc:
            self.text.value = f"<span style='color:#c00'>{html.escape(str(exc))}</span>"

    def update(self, embedding_size: int, num_heads: int, depth: int) -> tuple[dict[str, int], dict[str, float]]:
        """Parameter counts by component and a memory estimate for this shape; redraws the panel."""
        config = ModelConfig(
            vocab_size=self.base.vocab_size, block_size=self.base.block_size, embedding_size=embedding_size,
            num_heads=num_heads, depth=depth, dropout=0.0, bias=self.base.bias,
        )  # ModelConfig validates (e.g. num_heads must divide embedding_size)
        counts = parameters_by_component(config)
        memory = memory_estimate(config, self.batch_size)
        total = sum(counts.values())
        rows = "".join(f"<tr><td>{k}</td><td style='text-align:right'>{v:,}</td></tr>" for k, v in counts.items())
        self.text.value = (
            f"<b>{total:,} parameters</b> ({plots.human_count(total)}); head size {embedding_size // num_heads}. "
            f"Training memory, batch {self.batch_size} x {config.block_size} tokens, fp32: about "
            f"<b>{_mib(sum(memory.values()))}</b> (weights {_mib(memory['weights'])}, gradients "
            f"{_mib(memory['gradients'])}, AdamW {_mib(memory['optimizer'])}, activations {_mib(memory['activations'])})."
            f"<table>{rows}</table>"
        )
        if _in_notebook():
            with self.plot:
                clear_output(wait=True)
                display(plots.parameter_counts({"this model": counts}, title="This model's parameters"))
        return counts, memory


# --------------------------------------------------------------------------------------------------
# Learning-rate schedule (notebook 04)


class LRSchedulePanel:
    """A ``max_lr`` slider (and warm-up) redrawing the warm-up + cosine schedule of ``llmlab.train.lr_at``."""

    def __init__(self, base: TrainConfig | None = None) -> None:
        self.base = base or get_preset("cpu_small").train
        style = {"description_width": "100px"}
        self.max_lr = W.FloatLogSlider(value=self.base.max_lr, base=10, min=-4.5, max=-1.5, step=0.25,
                                       readout_format=".1e", description="max_lr", style=style)
        self.warmup_iters = W.IntSlider(value=self.base.warmup_iters, min=0, max=self.base.max_iters // 2,
                                        description="warmup_iters", style=style)
        self.plot = W.Output()
        self.note = W.HTML()
        for w in (self.max_lr, self.warmup_iters):
            w.observe(lambda _change: self._safe_update(), names="value")
        self.widget = W.VBox([self.max_lr, self.warmup_iters, self.note, self.plot])
        self._safe_update()

    def _ipython_display_(self) -> None:
        display(self.widget)

    def values(self) -> dict[str, Any]:
        """The sliders' current values."""
        return {"max_lr": float(self.max_lr.value), "warmup_iters": int(self.warmup_iters.value)}

    def _safe_update(self) -> None:
        try:
            self.update(**self.values())
        except ValueError as exc:
            self.note.value = f"<span style='color:#c00'>{html.escape(str(exc))}</span>"

    def update(self, max_lr: float, warmup_iters: int) -> list[float]:
        """The learning rate at every step for this ``max_lr`` (min_lr = max_lr / 10); redraws the plot."""
        config = Config(train=self.base).override(max_lr=max_lr, min_lr=max_lr / 10, warmup_iters=warmup_iters).train
        steps = list(range(config.max_iters + 1))
        lrs = [lr_at(s, config) for s in steps]
        self.note.value = f"peak {max(lrs):.2e} at step {warmup_iters}, ending at {lrs[-1]:.2e}"
        if _in_notebook():
            with self.plot:
                clear_output(wait=True)
                display(plots.lr_schedule({f"max_lr={max_lr:.1e}": (steps, lrs)}, warmup=warmup_iters))
        return lrs


# --------------------------------------------------------------------------------------------------
# Sampling (notebook 05)


class SamplingPanel:
    """Temperature, top-k and top-p sliders over a model's next-token distribution for one prompt.

    ``update(temperature, top_k, top_p)`` returns ``{stage: probs (V,)}`` for the stages
    original -> temperature -> top-k -> top-p, redraws the bar chart, and samples a continuation.
    ``top_k=0`` and ``top_p=1.0`` mean "off".
    """

    def __init__(self, model: GPT, tokenizer: Any, prompt: str, max_new_tokens: int = 120, seed: int = 0) -> None:
        if not prompt:
            raise ValueError("prompt is empty: give a few words to continue, e.g. 'ROMEO:'.")
        self.model, self.tokenizer, self.prompt = model, tokenizer, prompt
        self.max_new_tokens, self.seed = max_new_tokens, seed
        device = next(model.parameters()).device
        ids = tokenizer.encode(prompt)[-model.config.block_size:]
        with torch.no_grad():
            model.eval()
            logits, _ = model(torch.tensor([ids], device=device))
        self.logits = logits[0, -1].float().cpu()  # (V,) the next token after the prompt
        self.labels = [tokenizer.decode([i]) for i in range(self.logits.numel())]
        style = {"description_width": "100px"}
        self.temperature = W.FloatSlider(value=1.0, min=0.05, max=2.0, step=0.05, description="temperature", style=style)
        self.top_k = W.IntSlider(value=0, min=0, max=min(100, self.logits.numel()), description="top_k (0=off)", style=style)
        self.top_p = W.FloatSlider(value=1.0, min=0.05, max=1.0, step=0.05, description="top_p (1=off)", style=style)
        self.plot = W.Output()
        self.sample = W.HTML()
        for w in (self.temperature, self.top_k, self.top_p):
            w.observe(lambda _change: self._safe_update(), names="value")
        self.widget = W.VBox([self.temperature, self.top_k, self.top_p, self.plot, self.sample])
        self._safe_update()

    def _ipython_display_(self) -> None:
        display(self.widget)

    def values(self) -> dict[str, Any]:
        """The sliders' current values."""
        return {"temperature": float(self.temperature.value), "top_k": int(self.top_k.value),
                "top_p": float(self.top_p.value)}

    def _safe_update(self) -> None:
        try:
            self.update(**self.values())
        except ValueError as exc:
            self.sample.value = f"<span style='color:#c00'>{html.escape(str(exc))}</span>"

    def distributions(self, temperature: float, top_k: int, top_p: float) -> dict[str, torch.Tensor]:
        """Probabilities after each transform, in the order ``sample_next`` applies them."""
        stages = {"original": torch.softmax(self.logits, dim=-1)}
        logits = apply_temperature(self.logits, temperature)
        stages[f"temperature {temperature:g}"] = torch.softmax(logits, dim=-1)
        if top_k:
            logits = top_k_filter(logits, top_k)
            stages[f"+ top-k {top_k}"] = torch.softmax(logits, dim=-1)
        if top_p < 1.0:
            logits = top_p_filter(logits, top_p)
            stages[f"+ top-p {top_p:g}"] = torch.softmax(logits, dim=-1)
        return stages

    def update(self, temperature: float, top_k: int, top_p: float) -> dict[str, torch.Tensor]:
        """Redraw the distributions and sample a continuation with these settings."""
        stages = self.distributions(temperature, top_k, top_p)
        generator = torch.Generator(device=next(self.model.parameters()).device).manual_seed(self.seed)
        text = self.model.generate_sentence(
            self.prompt, self.model.config.block_size, self.max_new_tokens, self.tokenizer,
            next(self.model.parameters()).device, temperature=temperature, top_k=top_k or None,
            top_p=top_p if top_p < 1.0 else None, generator=generator,
        )
        self.last_text = text
        self.sample.value = f"<pre style='white-space:pre-wrap'>{html.escape(text)}</pre>"
        if _in_notebook():
            with self.plot:
                clear_output(wait=True)
                display(plots.next_token_bars(stages, self.labels, top=12,
                                              title=f"Next token after {self.prompt[-30:]!r}"))
        return stages
