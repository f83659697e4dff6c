"""Model analytics without training: parameters by component and a training-memory estimate.

Notebook 03's explorer shows these numbers; the trainer can use the same estimate to refuse a batch
that cannot fit before allocating it. A config is instantiated on the ``meta`` device, so even GPT-2
sizes are counted without memory, and each config once (cached).
"""

from __future__ import annotations

import functools
import os

import torch

from llmlab.config import Config, ModelConfig
from llmlab.model import GPT, as_model_config
from llmlab.validate import check_int

__all__ = [
    "COMPONENTS",
    "component_of",
    "parameters_by_component",
    "memory_estimate",
    "format_bytes",
    "available_memory",
    "minimum_step_memory",
    "check_step_fits",
]

COMPONENTS = ("token embedding", "position embedding", "attention", "MLP", "LayerNorm")


def component_of(name: str) -> str:
    """GPT-2 parameter name -> the part of the model it belongs to (:data:`COMPONENTS`, or "output head"
    for an untied head, "U-net skips" for their weights, "value embeddings" for their tables and weights)."""
    if name.startswith("lm_head"):
        return "output head"  # only when untied: a tied head is the token embedding, counted once
    if ".vte." in f".{name}" or name == "ve_weights":
        return "value embeddings"  # only with value_embeds: the tables and one weight per block that reads one
    if ".wte." in f".{name}":
        return "token embedding"
    if ".wpe." in f".{name}":
        return "position embedding"
    if ".attn." in name:
        return "attention"
    if ".mlp." in name:
        return "MLP"
    if name == "skip_weights":
        return "U-net skips"  # only with unet_skips: one weight per skip
    return "LayerNorm"


def parameters_by_component(model_or_config: GPT | ModelConfig | Config) -> dict[str, int]:
    """Parameter count per component; the counts sum to ``GPT.num_parameters()``."""
    if isinstance(model_or_config, GPT):
        return _count_by_component(model_or_config)
    return dict(_counts_for_config(as_model_config(model_or_config)))


@functools.lru_cache(maxsize=256)
def _counts_for_config(config: ModelConfig) -> tuple[tuple[str, int], ...]:
    # A model on the meta device has shapes and no memory; still, building one runs every module's
    # initialiser (~60 ms), and the explorer and the Trainer's memory check ask for the same configs often.
    with torch.device("meta"):
        return tuple(_count_by_component(GPT(config)).items())


def _count_by_component(model: GPT) -> dict[str, int]:
    counts = dict.fromkeys(COMPONENTS, 0)
    for name, p in model.named_parameters():  # the tied lm_head/wte matrix is yielded once
        part = component_of(name)
        counts[part] = counts.get(part, 0) + p.numel()
    return counts


def memory_estimate(config: ModelConfig | Config, batch_size: int, bytes_per_value: int = 4) -> dict[str, float]:
    """Rough training memory in bytes: weights, gradients, AdamW's two moments, and activations.

    Activations follow Korthikanti et al. (2022) per layer, ``T*B*C*(34 + 5*nh*T/C)`` bytes at 2 bytes per
    value, scaled to ``bytes_per_value``; the attention-matrix term ``5*nh*T^2`` grows with the square of the
    context, and it is where ``num_heads`` changes memory without changing the parameter count. The 34 holds
    19 for GPT-2's 4C-wide MLP; another width or SwiGLU changes that part (:func:`_bytes_per_channel`).
    Real use differs by allocator overhead and the kernels chosen: treat it as an order of magnitude.
    """
    config = as_model_config(config)
    check_int("batch_size", batch_size, 1)
    n = sum(parameters_by_component(config).values())
    T, B, C, nh, L = config.block_size, batch_size, config.embedding_size, config.num_heads, config.depth
    activations = L * T * B * C * (_bytes_per_channel(config) + 5 * nh * T / C) / 2 * bytes_per_value
    logits = 2 * B * T * config.vocab_size * bytes_per_value  # logits and their gradient
    return {
        "weights": n * bytes_per_value,
        "gradients": n * bytes_per_value,
        "optimizer": 2 * n * 4,  # AdamW keeps two fp32 moments per parameter
        "activations": activations + logits,
    }


def _bytes_per_channel(config: ModelConfig) -> float:
    """Korthikanti et al.'s activation bytes per token and channel of one layer, without the T x T scores: 34 for
    GPT-2. Attention and the two norms keep 15; the MLP keeps its input (2), a dropout mask (1) and 2 bytes per
    hidden value for each tensor the backward pass reads: two of width H (the activation's input and the output
    projection's input) for the standard MLP, four for SwiGLU (gate, up, SiLU of the gate, their product)."""
    ratio = config.mlp_hidden_size / config.embedding_size
    return 15 + 3 + (8 if config.mlp == "swiglu" else 4) * ratio


def format_bytes(n: float) -> str:
    """``format_bytes(3 * 2**20) -> '3.0 MiB'`` (GiB from 1 GiB up)."""
    return f"{n / 2**20:,.1f} MiB" if n < 2**30 else f"{n / 2**30:,.2f} GiB"


def available_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes that a new allocation can use now: free GPU memory on CUDA, available RAM on CPU (None if unknown)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    try:  # Linux: MemAvailable counts reclaimable page cache, unlike MemFree
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def minimum_step_memory(config: ModelConfig | Config, batch_size: int, bytes_per_value: int = 4) -> int:
    """A lower bound on one training step's memory: weights, gradients, AdamW state, and the activations
    that every attention kernel keeps (the T x T scores left out, since flash attention never stores them).

    A step that needs more than this cannot fit anywhere; the typical need is :func:`memory_estimate`.
    """
    config = as_model_config(config)
    check_int("batch_size", batch_size, 1)
    est = memory_estimate(config, batch_size, bytes_per_value)
    T, B, C, L = config.block_size, batch_size, config.embedding_size, config.depth
    activations = (
        L * T * B * C * _bytes_per_channel(config) / 2 * bytes_per_value
        + 2 * B * T * config.vocab_size * bytes_per_value
    )
    return int(est["weights"] + est["gradients"] + est["optimizer"] + activations)


def check_step_fits(
    config: Config, device: torch.device | str, bytes_per_value: int = 4, available: int | None = None
) -> None:
    """Refuse, before anything is allocated, a batch whose step cannot fit in the device's free memory.

    The message gives the numbers and a ``batch_size`` / ``grad_accum_steps`` pair that fits with the
    same sequences per optimizer step. ``available`` overrides the measured free memory (tests).
    """
    free = available_memory(device) if available is None else available
    if free is None:
        return
    tc = config.train
    need = minimum_step_memory(config, tc.batch_size, bytes_per_value)
    if need <= free:
        return
    # The typical need is linear in the batch: fixed (weights, grads, AdamW) + per-sequence activations.
    fixed = (
        sum(memory_estimate(config.model, 1, bytes_per_value).values())
        - memory_estimate(config.model, 1, bytes_per_value)["activations"]
    )
    per_sequence = memory_estimate(config.model, 1, bytes_per_value)["activations"]
    largest = int((free - fixed) // per_sequence) if free > fixed else 0
    fits = max((d for d in _divisors(tc.batch_size) if d <= largest), default=0)
    per_step = tc.batch_size * tc.grad_accum_steps
    if fits:
        fix = (
            f"Try --set batch_size={fits} grad_accum_steps={per_step // fits} (the same {per_step} sequences "
            f"per step), or a smaller block_size / model."
        )
    else:
        fix = (
            "Even batch_size=1 would not fit: choose a smaller model (embedding_size, depth) or block_size "
            f"(now {config.model.block_size})."
        )
    raise MemoryError(
        f"batch_size={tc.batch_size} at block_size={config.model.block_size} needs at least "
        f"{format_bytes(need)} per training step, but {torch.device(device).type} has {format_bytes(free)} "
        f"free. {fix}"
    )


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, int(n**0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))
