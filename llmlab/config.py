"""Configuration: what a model is and how it is trained, validated once when built.

The names follow the original (Japanese) user manual: ``embedding_size``, ``num_heads``, ``depth``,
``batch_size``, ``max_lr``, ``min_lr``. A :class:`Config` bundles a :class:`ModelConfig` and a
:class:`TrainConfig`; :func:`get_preset` returns a named one and :meth:`Config.override` changes
fields by name (the CLI's ``--set embedding_size=256``).

Every check runs in ``__post_init__``, before anything allocates memory, and a bad value raises
``ValueError`` naming the field, the value and a fix.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from llmlab.i18n import tr
from llmlab.validate import check_choice, check_int, check_number, invalid

__all__ = [
    "ModelConfig",
    "TrainConfig",
    "Config",
    "PRESETS",
    "get_preset",
    "preset_names",
    "fast_mode",
    "full_or_fast",
    "course_path",
    "MODERN_TECHNIQUES",
    "modern_settings",
]


def _fail(name: str, value: Any, fix: str) -> None:
    raise invalid(name, value, fix)


# A realistic value for each whole-number setting, for the example in its error message.
_EXAMPLES = {
    "vocab_size": 1024,
    "block_size": 128,
    "embedding_size": 128,
    "num_heads": 4,
    "depth": 4,
    "batch_size": 16,
    "grad_accum_steps": 1,
    "max_iters": 2000,
    "eval_interval": 250,
    "eval_iters": 20,
    "log_interval": 10,
}


def _positive_int(obj: Any, *names: str) -> None:
    for name in names:
        example = _EXAMPLES.get(name, 4)
        check_int(name, getattr(obj, name), 1, f"{name} must be a whole number >= 1, e.g. {name}={example}.")


def _number(obj: Any, name: str) -> float:
    value = getattr(obj, name)
    return check_number(name, value, fix=f"{name} must be a finite number, e.g. {name}=0.001.")


@dataclass(frozen=True)
class ModelConfig:
    """The shape of a GPT.

    ``vocab_size`` is set from the tokenizer when training starts; ``block_size`` is the longest
    context (in tokens) the model sees. The fields after ``bias`` choose the modern variants (notebook
    07); their defaults are GPT-2's, so a config that leaves them alone is GPT-2's architecture:

    - ``position``: ``"learned"`` position embeddings (GPT-2) or ``"rope"`` (rotary, applied to q and k)
    - ``norm``: ``"layernorm"`` (GPT-2) or ``"rmsnorm"`` (no mean, no bias)
    - ``qk_norm``: RMS-normalise queries and keys per head before attention
    - ``activation``: ``"gelu"`` (GPT-2, tanh approximation), ``"gelu_exact"`` (the erf form nanoGPT uses; about
      twice as fast as the tanh form in torch's CPU kernels) or ``"relu2"`` (ReLU squared): the activation of the
      ``"standard"`` MLP; SwiGLU ignores it
    - ``mlp``: ``"standard"`` (GPT-2: Linear -> activation -> Linear) or ``"swiglu"`` (Llama, Qwen: SiLU-gated,
      ``c_proj(silu(w_gate(x)) * w_up(x))``, three matrices; with bias only when ``bias`` is True)
    - ``mlp_hidden``: the MLP's hidden width; 0 picks the default (``mlp_hidden_size``): 4 x embedding_size for
      the standard MLP, and for SwiGLU Llama's rule, int(2/3 x 4 x embedding_size) rounded up to a multiple of 64,
      which keeps the parameter count near the standard MLP's although SwiGLU has three matrices, not two
    - ``tie_embeddings``: one matrix for token embedding and output head (GPT-2), or two
    - ``zero_init``: output projections (and an untied head) start at zero, so each block starts as identity
    - ``logit_softcap``: 0 (off) or c, logits become ``c * tanh(logits / c)``
    - ``unet_skips``: U-net style skips (modded-nanogpt): the output of each block of the first half is added,
      times a learned weight (starting at 1), to the input of its mirror block in the second half
    - ``value_embeds``: value embeddings (modded-nanogpt): that many extra token tables whose rows are added,
      times a learned weight per block, to the attention values of the first ``value_embeds`` blocks and again of
      the last ones (table i feeds block i and block depth - value_embeds + i); 0 (off) up to depth // 2

    ``vocab_multiple`` pads the token table and the output layer to a multiple of it (``padded_vocab_size``):
    GPUs often multiply matrices faster when their sizes are multiples of 64, and GPT-2's 50,257 is odd (nanoGPT
    pads to 50,304). The padding is invisible: the rows are never read, logits keep ``vocab_size`` columns, and
    the export drops them. Measure before using it: on an H200 with torch 2.11 it made ``gpt2_124m`` 1-2%
    slower (``bench/gpu_mfu.py``; docs/gpu.md), so no preset sets it.
    """

    vocab_size: int = 50257
    block_size: int = 256
    embedding_size: int = 384
    num_heads: int = 6
    depth: int = 6
    dropout: float = 0.0
    bias: bool = True
    position: str = "learned"
    norm: str = "layernorm"
    qk_norm: bool = False
    activation: str = "gelu"
    tie_embeddings: bool = True
    zero_init: bool = False
    logit_softcap: float = 0.0
    unet_skips: bool = False
    value_embeds: int = 0
    vocab_multiple: int = 1
    mlp: str = "standard"
    mlp_hidden: int = 0

    def __post_init__(self) -> None:
        _positive_int(self, "vocab_size", "block_size", "embedding_size", "num_heads", "depth")
        check_int(
            "vocab_multiple",
            self.vocab_multiple,
            1,
            "vocab_multiple must be a whole number >= 1: 1 (no padding) or 64.",
        )
        if self.embedding_size % self.num_heads != 0:
            divisors = [h for h in range(1, min(self.embedding_size, 64) + 1) if self.embedding_size % h == 0]
            raise ValueError(
                tr(
                    "error.not_divisible",
                    num_heads=self.num_heads,
                    embedding_size=self.embedding_size,
                    divisors=divisors,
                )
            )
        dropout = _number(self, "dropout")
        if not 0.0 <= dropout < 1.0:
            _fail("dropout", self.dropout, "dropout must be in [0, 1); 0.0 turns it off, 0.1-0.2 is typical.")
        for name in ("bias", "qk_norm", "tie_embeddings", "zero_init", "unet_skips"):
            if not isinstance(getattr(self, name), bool):
                _fail(name, getattr(self, name), f"{name} must be True or False.")
        check_choice("position", self.position, ("learned", "rope"))
        check_choice("norm", self.norm, ("layernorm", "rmsnorm"))
        check_choice("activation", self.activation, ("gelu", "gelu_exact", "relu2"))
        check_choice("mlp", self.mlp, ("standard", "swiglu"))
        most = self.depth // 2  # each table feeds one block of the first half and one of the second
        fix = f"value_embeds must be a whole number from 0 (off) to depth // 2 = {most}, e.g. value_embeds={most}."
        if check_int("value_embeds", self.value_embeds, 0, fix) > most:
            _fail("value_embeds", self.value_embeds, fix)
        check_int(
            "mlp_hidden",
            self.mlp_hidden,
            0,
            f"mlp_hidden must be a whole number >= 0: 0 (the default width, {self._default_mlp_hidden()} here) or "
            f"a width such as {4 * self.embedding_size}.",
        )
        check_number(
            "logit_softcap",
            self.logit_softcap,
            0.0,
            fix="logit_softcap must be 0 (off) or a positive cap such as 15 or 30.",
        )
        if self.position == "rope" and self.head_size % 2:
            _fail(
                "num_heads",
                self.num_heads,
                f"rotary embeddings need an even head size, but embedding_size / "
                f"num_heads = {self.head_size}; choose num_heads so that the head size is even.",
            )

    @property
    def is_gpt2(self) -> bool:
        """True when every architecture choice is GPT-2's (so the weights map onto GPT2LMHeadModel)."""
        return not self.gpt2_differences()

    def gpt2_differences(self) -> list[str]:
        """The settings that GPT-2's architecture cannot express, as ``name=value`` strings."""
        gpt2 = {
            "position": "learned",
            "norm": "layernorm",
            "qk_norm": False,
            "mlp": "standard",
            "activation": "gelu",
            "tie_embeddings": True,
            "logit_softcap": 0.0,
        }
        return [f"{k}={getattr(self, k)!r}" for k, v in gpt2.items() if getattr(self, k) != v]

    @property
    def head_size(self) -> int:
        """Channels per attention head."""
        return self.embedding_size // self.num_heads

    @property
    def mlp_hidden_size(self) -> int:
        """The MLP's hidden width: ``mlp_hidden``, or the default for the MLP when it is 0 (see the class doc)."""
        return self.mlp_hidden or self._default_mlp_hidden()

    def _default_mlp_hidden(self) -> int:
        if self.mlp == "swiglu":
            # Llama's FeedForward: 2/3 of 4C (three matrices cost what two 4C ones do), rounded up to a multiple of
            # 64 so that the matrix products stay fast (Llama rounds to 256).
            return -(-(8 * self.embedding_size // 3) // 64) * 64
        return 4 * self.embedding_size

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the token table and the output layer: ``vocab_size`` rounded up to ``vocab_multiple``."""
        return -(-self.vocab_size // self.vocab_multiple) * self.vocab_multiple


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained: batch, learning-rate schedule, evaluation, device.

    The learning rate warms up linearly to ``max_lr`` over ``warmup_iters`` steps, then follows a
    cosine down to ``min_lr`` at ``max_iters``. One optimizer step sees
    ``batch_size * grad_accum_steps`` sequences (times the number of processes under torchrun).
    ``max_seconds`` (0 = no limit) stops a run on wall-clock time, for fixed-budget comparisons.
    ``optimizer="muon"`` trains the hidden weight matrices with Muon at ``muon_lr`` (following the same
    schedule, scaled by ``muon_lr / max_lr``) and everything else with AdamW at ``max_lr``.
    ``embedding_lr_scale`` multiplies AdamW's rate for the embedding tables (token and position
    embeddings): a row is read alone (its input is one-hot), so at the matrices' rate it moves the model's
    output far less per step than a matrix does (notebook 07, section 8).
    """

    batch_size: int = 16
    grad_accum_steps: int = 1
    max_iters: int = 2000
    max_seconds: float = 0.0
    max_lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    schedule: str = "cosine"
    decay_fraction: float = 0.3
    weight_decay: float = 0.1
    optimizer: str = "adamw"
    muon_lr: float = 0.02
    embedding_lr_scale: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    seed: int = 1337
    tokenizer: str = "char"
    device: str = "auto"
    dtype: str = "auto"
    compile: str = "auto"

    def __post_init__(self) -> None:
        _positive_int(
            self, "batch_size", "grad_accum_steps", "max_iters", "eval_interval", "eval_iters", "log_interval"
        )
        for name in ("warmup_iters", "seed"):
            check_int(name, getattr(self, name), 0, f"{name} must be a whole number >= 0.")
        max_lr, min_lr = _number(self, "max_lr"), _number(self, "min_lr")
        if max_lr <= 0:
            _fail("max_lr", self.max_lr, "max_lr must be > 0; 2e-3 suits cpu_small (its default), 6e-4 GPT-2 small.")
        if min_lr < 0:
            _fail("min_lr", self.min_lr, "min_lr must be >= 0; a tenth of max_lr is usual.")
        if min_lr > max_lr:
            _fail("min_lr", self.min_lr, f"min_lr must not exceed max_lr={self.max_lr}; try min_lr={max_lr / 10:g}.")
        if self.warmup_iters > self.max_iters:
            _fail("warmup_iters", self.warmup_iters, f"warmup_iters must not exceed max_iters={self.max_iters}.")
        if _number(self, "weight_decay") < 0:
            _fail("weight_decay", self.weight_decay, "weight_decay must be >= 0 (0.1 is usual).")
        check_number(
            "embedding_lr_scale",
            self.embedding_lr_scale,
            0.0,
            low_open=True,
            fix="embedding_lr_scale must be > 0; 1 keeps max_lr for the embeddings.",
        )
        for name in ("beta1", "beta2"):
            if not 0.0 <= _number(self, name) < 1.0:
                _fail(name, getattr(self, name), f"{name} must be in [0, 1).")
        if _number(self, "grad_clip") < 0:
            _fail("grad_clip", self.grad_clip, "grad_clip must be >= 0 (0 turns clipping off, 1.0 is usual).")
        if _number(self, "max_seconds") < 0:
            _fail("max_seconds", self.max_seconds, "max_seconds must be >= 0 (0 means no time limit).")
        check_number("muon_lr", self.muon_lr, 0.0, low_open=True, fix="muon_lr must be > 0; 0.02 is usual.")
        if not 0.0 < _number(self, "decay_fraction") <= 1.0:
            _fail("decay_fraction", self.decay_fraction, "decay_fraction must be in (0, 1]; 0.3 is usual for wsd.")
        choices = {
            "schedule": ("cosine", "wsd"),
            "optimizer": ("adamw", "muon"),
            "tokenizer": ("char", "bpe", "gpt2"),
            "dtype": ("auto", "float32", "bfloat16", "float16"),
            "compile": ("auto", "true", "false"),
        }
        for name, allowed in choices.items():
            check_choice(name, getattr(self, name), allowed)
        device = self.device
        if not isinstance(device, str) or not (device in ("auto", "cpu", "cuda", "mps") or device.startswith("cuda:")):
            _fail("device", device, "device must be auto, cpu, cuda, cuda:N or mps.")


_MODEL_FIELDS = {f.name: f for f in fields(ModelConfig)}
_TRAIN_FIELDS = {f.name: f for f in fields(TrainConfig)}


_KIND_WORDS = {bool: "true or false", int: "a whole number", float: "a number"}


def _parse_value(name: str, text: str, current: Any) -> Any:
    """Turn the text of ``--set name=text`` into the type of the field's current value."""
    kind = type(current)
    try:
        if kind is bool:
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            number = float(text)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if kind is float:
            return float(text)
    except ValueError:
        raise ValueError(
            f"{name}={text!r} is not valid: {name} takes {_KIND_WORDS.get(kind, kind.__name__)}, "
            f"e.g. {name}={current!r}."
        ) from None
    return text


@dataclass(frozen=True)
class Config:
    """A model and the way to train it."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def override(self, values: Mapping[str, Any] | None = None, **kwargs: Any) -> Config:
        """A copy with fields changed by name, e.g. ``override(embedding_size=256, max_lr=3e-4)``.

        String values are converted to the field's type (so CLI text works). Unknown names raise
        ``ValueError`` listing the valid ones.
        """
        changes = {**(values or {}), **kwargs}
        model_changes: dict[str, Any] = {}
        train_changes: dict[str, Any] = {}
        for name, value in changes.items():
            if name in _MODEL_FIELDS:
                target, current = model_changes, getattr(self.model, name)
            elif name in _TRAIN_FIELDS:
                target, current = train_changes, getattr(self.train, name)
            else:
                valid = sorted(_MODEL_FIELDS) + sorted(_TRAIN_FIELDS)
                lower = name.lower()
                close = [SYNONYMS[lower]] if lower in SYNONYMS else difflib.get_close_matches(name, valid, n=1)
                hint = tr("hint.did_you_mean", name=repr(close[0])) if close else ""
                raise ValueError(tr("error.unknown_setting", name=repr(name), hint=hint, valid=", ".join(valid)))
            if isinstance(value, str) and not isinstance(current, str):
                value = _parse_value(name, value, current)
            elif isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            target[name] = value
        return Config(
            model=dataclasses.replace(self.model, **model_changes),
            train=dataclasses.replace(self.train, **train_changes),
        )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict (safe inside a ``weights_only`` checkpoint and in JSON)."""
        return {"model": dataclasses.asdict(self.model), "train": dataclasses.asdict(self.train)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        base = cls()
        flat = {**dict(data.get("model", {})), **dict(data.get("train", {}))}
        return base.override(flat)


# Names other courses and libraries use (nanoGPT, Hugging Face) for the manual's settings.
SYNONYMS = {
    "lr": "max_lr",
    "learning_rate": "max_lr",
    "min_learning_rate": "min_lr",
    "n_layer": "depth",
    "n_layers": "depth",
    "num_layers": "depth",
    "n_head": "num_heads",
    "n_heads": "num_heads",
    "n_embd": "embedding_size",
    "d_model": "embedding_size",
    "hidden_size": "embedding_size",
    "context_length": "block_size",
    "seq_len": "block_size",
    "n_positions": "block_size",
    "warmup_steps": "warmup_iters",
    "max_steps": "max_iters",
    "gradient_accumulation_steps": "grad_accum_steps",
}


def _preset_cpu_small() -> Config:
    # Tuned for quality per wall-clock second on 2 CPU cores (bench/train.py quality; docs/results.md):
    # byte-level BPE (1,024 tokens, ~2.4 bytes each) lets a 0.9 M-parameter model see ~2.4x more text per
    # step than characters; 1,250 steps of 16 x 128 tokens take ~2-4 minutes, with the cosine ending there.
    # max_lr 2e-3 beat 3e-3 in a 137 s budget (2.458 vs 2.487 bits/byte, BPE trained on train text only).
    return Config(
        model=ModelConfig(vocab_size=1024, block_size=128, embedding_size=128, num_heads=4, depth=4, dropout=0.0),
        train=TrainConfig(
            batch_size=16,
            max_iters=1250,
            max_lr=2e-3,
            min_lr=2e-4,
            warmup_iters=50,
            eval_interval=250,
            eval_iters=20,
            tokenizer="bpe",
        ),
    )


# The modern techniques of notebook 07, in the order its speedrun ladder adds them: label -> settings.
MODERN_TECHNIQUES: dict[str, dict[str, Any]] = {
    "rotary positions": {"position": "rope"},
    "RMSNorm": {"norm": "rmsnorm", "bias": False},
    "QK-norm": {"qk_norm": True},
    "ReLU squared": {"activation": "relu2"},
    "untied, zero-init head": {"tie_embeddings": False, "zero_init": True},
    "logit soft-cap": {"logit_softcap": 15.0},
    "Muon": {"optimizer": "muon"},
    "embedding learning rate": {"embedding_lr_scale": 10.0},
}


def modern_settings(techniques: list[str] | tuple[str, ...] | None = None) -> dict[str, Any]:
    """The settings of the chosen :data:`MODERN_TECHNIQUES` (all of them for None), merged."""
    chosen = list(MODERN_TECHNIQUES) if techniques is None else list(techniques)
    unknown = [t for t in chosen if t not in MODERN_TECHNIQUES]
    if unknown:
        raise ValueError(f"unknown technique(s) {unknown}; choose from {list(MODERN_TECHNIQUES)}.")
    merged: dict[str, Any] = {}
    for t in chosen:
        merged.update(MODERN_TECHNIQUES[t])
    return merged


def _preset_cpu_modern() -> Config:
    # cpu_small's size, data and budget with every technique of notebook 07 (MODERN_TECHNIQUES, so the
    # preset, the notebook's ladder and the race panel cannot drift apart). AdamW's rate (embeddings, head,
    # gains) tuned for the 137 s budget with `bench/train.py quality --preset cpu_modern --set ...` on
    # 2026-11-27: max_lr 3e-3 -> 6e-3 was the largest gain (2.285 -> 2.210 bits/byte); muon_lr 0.04, batch 8
    # and max_lr 1e-2 did not beat it. The embedding tables at 10x that rate (the last technique) gave 2.270 ->
    # 2.216 and 2.269 -> 2.209 bits/byte (seeds 0, 1; 400 steps); 3x and 30x less. docs/modern-gpt.md has
    # the run against nanoGPT. eval_iters 20 -> 10: each evaluation (train and val, at steps 0, 250, 500 and the
    # end) took ~3.3 s of the budget; in one run against nanoGPT (two seeds) the preset made 649 / 643 steps
    # instead of 589 / 651 and reached 2.130 / 2.135 bits/byte instead of 2.146 / 2.135.
    # vocab_size 1,024 -> 4,096 (a BPE trained on the train text only; 2.90 instead of 2.33 val bytes per token):
    # 2.1250 against 2.1817 bits/byte, medians of 3 seeds at 60 s, 95% interval of the gap +0.038 to +0.070
    # (`python bench/levers.py --levers bpe4096`, 2026-12-05; 2,048 gained 0.036, 8,192 nothing: its head is 8x).
    # `llmlab train --preset cpu_modern` prepares data/shakespeare_bpe4096; on other data the data decides.
    return _preset_cpu_small().override(
        **modern_settings(), vocab_size=4096, max_lr=6e-3, min_lr=6e-4, weight_decay=0.0, eval_iters=10
    )


def _preset_seed_manual() -> Config:
    # The values printed in the original manual.
    return Config(
        model=ModelConfig(vocab_size=50257, block_size=1024, embedding_size=768, num_heads=6, depth=6, dropout=0.1),
        train=TrainConfig(
            batch_size=6,
            max_iters=5000,
            max_lr=2.5e-5,
            min_lr=2.5e-6,
            warmup_iters=100,
            eval_interval=500,
            eval_iters=50,
            tokenizer="gpt2",
        ),
    )


def _preset_gpt2_124m() -> Config:
    # GPT-2 small as in the GPT-2 paper / nanoGPT's OpenWebText run (about 0.5M tokens per step).
    return Config(
        # vocab_multiple stays 1: padding 50,257 -> 50,304 rows measured 1-2% slower on an H200 (docs/gpu.md).
        model=ModelConfig(vocab_size=50257, block_size=1024, embedding_size=768, num_heads=12, depth=12, dropout=0.0),
        train=TrainConfig(
            batch_size=12,
            grad_accum_steps=40,
            max_iters=600000,
            max_lr=6e-4,
            min_lr=6e-5,
            warmup_iters=2000,
            weight_decay=0.1,
            beta2=0.95,
            eval_interval=1000,
            eval_iters=200,
            tokenizer="gpt2",
        ),
    )


PRESETS = {
    "cpu_small": _preset_cpu_small,
    "cpu_modern": _preset_cpu_modern,
    "seed_manual": _preset_seed_manual,
    "gpt2_124m": _preset_gpt2_124m,
}
DEFAULT_PRESET = "cpu_small"


def preset_names() -> list[str]:
    """Names accepted by :func:`get_preset`."""
    return list(PRESETS)


def get_preset(name: str = DEFAULT_PRESET) -> Config:
    """A named configuration: ``cpu_small`` (default), ``seed_manual`` or ``gpt2_124m``."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}.") from None


FAST_ENV = "LLMLAB_FAST"


def fast_mode() -> bool:
    """True when ``LLMLAB_FAST`` is set to 1/true: notebooks then use tiny step counts (CI), same code path."""
    import os

    return os.environ.get(FAST_ENV, "").strip().lower() in ("1", "true", "yes", "on")


T = TypeVar("T")


def full_or_fast(full: T, fast: T) -> T:
    """``full`` normally, ``fast`` in fast mode: one switch for a notebook's step counts, text sizes and seconds.

    ``steps = full_or_fast(full=500, fast=20)`` reads as what the learner gets, with the test-run value beside it.
    """
    return fast if fast_mode() else full


FAST_ROOT_ENV = "LLMLAB_FAST_ROOT"


def course_path(relative: str) -> Path:
    """Where a notebook keeps ``relative`` (e.g. ``"out/shakespeare_char"``).

    Normally the path itself, next to the notebooks, where a learner's models stay between sessions. In
    fast mode (tests, CI) the same relative path under ``$LLMLAB_FAST_ROOT`` (default
    ``<temp dir>/llmlab-fast``): a test run never overwrites a model the learner trained.
    """
    import os
    import tempfile

    if not fast_mode():
        return Path(relative)
    root = os.environ.get(FAST_ROOT_ENV) or os.path.join(tempfile.gettempdir(), "llmlab-fast")
    return Path(root) / relative
