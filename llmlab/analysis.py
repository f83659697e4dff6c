"""Model analytics without training: parameters by component and a training-memory estimate.

Notebook 03's explorer shows these numbers; the trainer can use the same estimate to refuse a batch
that cannot fit before allocating it. A config is instantiated on the ``meta`` device, so even GPT-2
sizes are counted instantly and without memory.
"""

from __future__ import annotations

import torch

from llmlab.config import Config, ModelConfig
from llmlab.model import GPT, as_model_config
from llmlab.validate import check_int

__all__ = ["COMPONENTS", "component_of", "parameters_by_component", "memory_estimate", "format_bytes"]

COMPONENTS = ("token embedding", "position embedding", "attention", "MLP", "LayerNorm")


def component_of(name: str) -> str:
    """GPT-2 parameter name -> the part of the model it belongs to (one of :data:`COMPONENTS`)."""
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
    """Parameter count per component; the counts sum to ``GPT.num_parameters()``."""
    if isinstance(model_or_config, GPT):
        model = model_or_config
    else:
        with torch.device("meta"):
            model = GPT(as_model_config(model_or_config))
    counts = dict.fromkeys(COMPONENTS, 0)
    for name, p in model.named_parameters():  # the tied lm_head/wte matrix is yielded once
        counts[component_of(name)] += p.numel()
    return counts


def memory_estimate(config: ModelConfig | Config, batch_size: int, bytes_per_value: int = 4) -> dict[str, float]:
    """Rough training memory in bytes: weights, gradients, AdamW's two moments, and activations.

    Activations follow Korthikanti et al. (2022) per layer, ``T*B*C*(34 + 5*nh*T/C)`` values at 2 bytes,
    scaled to ``bytes_per_value``; the attention-matrix term ``5*nh*T^2`` grows with the square of the
    context, and it is where ``num_heads`` changes memory without changing the parameter count.
    Real use differs by allocator overhead and the kernels chosen: treat it as an order of magnitude.
    """
    config = as_model_config(config)
    check_int("batch_size", batch_size, 1)
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


def format_bytes(n: float) -> str:
    """``format_bytes(3 * 2**20) -> '3.0 MiB'`` (GiB from 1 GiB up)."""
    return f"{n / 2**20:,.1f} MiB" if n < 2**30 else f"{n / 2**30:,.2f} GiB"
