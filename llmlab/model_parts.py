"""Small, self-contained pieces the GPT in :mod:`llmlab.model` is built from (re-exported there).

- :func:`as_model_config`: what ``GPT(...)`` accepts (a ModelConfig, a Config or a checkpoint's dict)
- :class:`KVCache`: the keys and values of the tokens seen so far, for fast generation (notebook 05)
- :class:`Rotary`: rotary position embeddings, one of the modern GPT's options (notebook 07)

Shapes in comments: B batch, T time (tokens), nh heads, hs head size, P tokens already in the KV cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

import torch
import torch.nn as nn

from llmlab.config import Config, ModelConfig

__all__ = ["as_model_config", "KVCache", "Rotary"]


def as_model_config(config: ModelConfig | Config | Mapping[str, Any]) -> ModelConfig:
    """Accept a ModelConfig, a full Config (its ``.model``), or a plain dict (a checkpoint's ``config["model"]``)."""
    if isinstance(config, ModelConfig):
        return config
    if isinstance(config, Config):
        return config.model
    if isinstance(config, Mapping):
        valid = {f.name for f in fields(ModelConfig)}
        unknown = sorted(set(config) - valid)
        if unknown:
            raise ValueError(
                f"unknown model setting(s) {unknown}: a model config dict may only hold {sorted(valid)}. "
                "Pass checkpoint['config']['model'], not the whole checkpoint config."
            )
        return ModelConfig(**config)
    raise ValueError(
        f"config={config!r} is not valid: pass a ModelConfig, a Config (e.g. llmlab.get_preset('cpu_small')) "
        "or a dict of ModelConfig fields."
    )


class KVCache:
    """Keys and values of every layer for the tokens seen so far, so each new token costs O(T), not O(T^2).

    Storage for ``block_size`` positions is allocated on the first write (with the dtype and device of
    the keys, so it follows autocast). ``length`` is the number of cached positions; the model calls
    :meth:`advance` once per forward pass, after every layer has written its keys and values.
    """

    def __init__(self, config: ModelConfig, batch_size: int) -> None:
        self.depth = config.depth
        self.max_length = config.block_size
        self.batch_size = batch_size
        self.length = 0
        self.k: torch.Tensor | None = None  # (depth, B, nh, block_size, hs)
        self.v: torch.Tensor | None = None

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this layer's new keys/values (B, nh, T, hs); return all of them so far (B, nh, P + T, hs)."""
        B, nh, T, hs = k.shape
        if self.k is None:
            shape = (self.depth, B, nh, self.max_length, hs)
            self.k = torch.zeros(shape, dtype=k.dtype, device=k.device)
            self.v = torch.zeros(shape, dtype=v.dtype, device=v.device)
        assert self.v is not None
        end = self.length + T
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, num_tokens: int) -> None:
        """Mark ``num_tokens`` more positions as cached (called once per forward pass)."""
        self.length += num_tokens


class Rotary(nn.Module):
    """Rotary position embeddings (Su et al., 2021): rotate each pair of q/k channels by an angle that grows
    with the position, so q . k depends on the distance between two tokens, not on where they are."""

    def __init__(self, head_size: int, max_positions: int, base: float = 10000.0) -> None:
        super().__init__()
        inv_freq = base ** (-torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)  # (hs/2,)
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)  # (T_max, hs/2)
        # Buffers, not parameters, and not saved: they are a function of the config.
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor, past: int = 0) -> torch.Tensor:
        """Rotate ``x`` (B, nh, T, hs) whose first token sits at position ``past``."""
        T = x.size(-2)
        cos = self.cos[past : past + T].to(x.dtype)  # (T, hs/2)
        sin = self.sin[past : past + T].to(x.dtype)
        x1, x2 = x[..., 0::2], x[..., 1::2]  # the channel pairs (B, nh, T, hs/2)
        rotated = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # (B, nh, T, hs/2, 2)
        return rotated.flatten(-2)  # (B, nh, T, hs), pairs back in place
