"""The sampling panel (notebook 05): temperature, top-k and top-p over one prompt's next-token distribution,
and several samples at once with a diversity score, so the effect of a setting is seen on more than one draw."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W
import torch

from llmlab import plots
from llmlab.i18n import tr
from llmlab.metrics import distinct_n
from llmlab.model import GPT
from llmlab.sampling import apply_temperature, top_k_filter, top_p_filter
from llmlab.validate import check_int
from llmlab.widgets.base import Panel, in_notebook, show_in

__all__ = ["SamplingPanel"]


class SamplingPanel(Panel):
    """Temperature, top-k and top-p sliders over a model's next-token distribution for one prompt.

    ``update(temperature, top_k, top_p)`` returns ``{stage: probs (V,)}`` for the stages
    original -> temperature -> top-k -> top-p, redraws the bar chart, and samples ``num_samples``
    continuations, sample ``i`` from its own ``torch.Generator`` seeded ``seed + i`` (independent of each
    other, and the same again for the same settings). After it, ``samples`` holds the texts and
    ``diversity`` their distinct-2 score over words (:func:`llmlab.metrics.distinct_n` of the
    continuations, prompt left out). ``top_k=0`` and ``top_p=1.0`` mean "off". The model's train/eval
    mode is left as the caller had it.
    """

    DIVERSITY_N = 2

    def __init__(
        self,
        model: GPT,
        tokenizer: Any,
        prompt: str,
        max_new_tokens: int = 120,
        seed: int = 0,
        num_samples: int = 4,
    ) -> None:
        if not prompt:
            raise ValueError("prompt is empty: give a few words to continue, e.g. 'ROMEO:'.")
        check_int("num_samples", num_samples, 1, "show at least 1 sample; 4 compare well side by side.")
        check_int("seed", seed, 0, "use a whole number >= 0, e.g. 0.")
        self.model, self.tokenizer, self.prompt = model, tokenizer, prompt
        self.max_new_tokens, self.seed, self.num_samples = max_new_tokens, seed, num_samples
        self.samples: list[str] = []
        self.diversity = 0.0
        self.device = next(model.parameters()).device
        ids = tokenizer.encode(prompt)[-model.config.block_size :]
        was_training = model.training
        try:
            model.eval()  # no dropout in the distribution we show
            with torch.no_grad():
                logits, _ = model(torch.tensor([ids], device=self.device))  # (1, T, V)
        finally:
            model.train(was_training)
        self.logits = logits[0, -1].float().cpu()  # (V,) the next token after the prompt
        self.labels = [tokenizer.decode([i]) for i in range(self.logits.numel())]
        style = {"description_width": "100px"}
        self.temperature = W.FloatSlider(
            value=1.0, min=0.05, max=2.0, step=0.05, description="temperature", style=style
        )
        self.top_k = W.IntSlider(
            value=0, min=0, max=min(100, self.logits.numel()), description="top_k (0=off)", style=style
        )
        self.top_p = W.FloatSlider(value=1.0, min=0.05, max=1.0, step=0.05, description="top_p (1=off)", style=style)
        self.plot = W.Output()
        self.message = W.HTML()
        for w in (self.temperature, self.top_k, self.top_p):
            # Resample when the slider is released, not at every value it passes while dragged: each
            # update draws num_samples full continuations.
            w.continuous_update = False
            w.observe(lambda _change: self.guarded(self.update), names="value")
        self.widget = W.VBox([self.temperature, self.top_k, self.top_p, self.plot, self.message])
        self.guarded(self.update)

    @property
    def sample(self) -> W.HTML:
        """The samples and their diversity (or the error)."""
        return self.message

    def values(self) -> dict[str, Any]:
        return {
            "temperature": float(self.temperature.value),
            "top_k": int(self.top_k.value),
            "top_p": float(self.top_p.value),
        }

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
        """Redraw the distributions and sample ``num_samples`` continuations with these settings."""
        stages = self.distributions(temperature, top_k, top_p)
        self.samples = [
            self.model.generate_sentence(  # generate() restores the model's mode itself
                self.prompt,
                self.model.config.block_size,
                self.max_new_tokens,
                self.tokenizer,
                self.device,
                temperature=temperature,
                top_k=top_k or None,
                top_p=top_p if top_p < 1.0 else None,
                generator=torch.Generator(device=self.device).manual_seed(self.seed + i),
            )
            for i in range(self.num_samples)
        ]
        self.last_text = self.samples[0]
        # Score the continuations only: the shared prompt would count as repetition in every sample.
        self.diversity = distinct_n([t[len(self.prompt) :] for t in self.samples], self.DIVERSITY_N, "word")
        shown = "".join(
            f"<div><b>{tr('label.sample', i=i + 1)}</b> ({tr('label.seed', seed=self.seed + i)})"
            f"<pre style='white-space:pre-wrap;margin-top:2px'>{html.escape(text)}</pre></div>"
            for i, text in enumerate(self.samples)
        )
        note = tr("note.diversity", score=f"{self.diversity:.2f}", n=self.DIVERSITY_N, count=self.num_samples)
        self.message.value = note + shown
        if in_notebook():
            show_in(
                self.plot,
                plots.next_token_bars(stages, self.labels, top=12, title=f"Next token after {self.prompt[-30:]!r}"),
            )
        return stages
