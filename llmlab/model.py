"""The GPT, from token ids to next-token logits, in one file.

The architecture is GPT-2's (Radford et al., 2019):

    idx (B, T) -> token embedding + position embedding -> depth x Block -> LayerNorm -> logits (B, T, V)
    Block:  x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))        (pre-LayerNorm, residual stream)

Options of :class:`ModelConfig` turn it into a modern GPT, one technique at a time (notebook 07):
rotary positions, RMSNorm, QK-norm, ReLU squared or a SwiGLU MLP, an untied head, zero-initialised projections,
logit soft-capping; :meth:`GPT.configure_optimizer` adds Muon. Their defaults are GPT-2's.

Small self-contained parts (``as_model_config``, ``KVCache``, ``Rotary``) live in :mod:`llmlab.model_parts`,
``MuonWithAdamW`` in :mod:`llmlab.muon`; all are importable from here too.

Parameter names follow GPT-2 (``transformer.wte``, ``transformer.h.0.attn.c_attn`` ...) so that weights
map one-to-one onto Hugging Face's ``GPT2LMHeadModel``: :func:`llmlab.hf.from_hf` / :func:`llmlab.hf.to_hf`
move weights across, and :func:`llmlab.hf.to_hf` maps the modern layout (rotary, RMSNorm, SwiGLU, QK-norm) onto
``LlamaForCausalLM`` / ``Qwen3ForCausalLM`` (model.py itself knows nothing of ``transformers``).

Shapes in comments: B batch, T time (tokens), C channels (embedding_size), V vocabulary,
nh heads, hs head size (C // nh), P tokens already in the KV cache.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmlab.config import Config, ModelConfig, TrainConfig
from llmlab.head_loss import linear_cross_entropy
from llmlab.model_parts import KVCache, Rotary, as_model_config
from llmlab.muon import Muon, MuonWithAdamW
from llmlab.sampling import sample_next
from llmlab.validate import check_choice, check_int, check_number

# The trainer's loss on the CPU goes through llmlab.head_loss where that measured faster (bench/head_loss.py,
# docs/results.md): with a logit soft-cap, 1.38-1.56x for the loss alone at cpu_modern's shape. Plain
# cross-entropy at 1,024 tokens was 0.84-1.20x, and at GPT-2's 50,257 tokens seed_manual's step took 8% longer
# (for 3.3 GB less memory), so without a cap the plain form stays.
CHUNKED_LOSS = True

__all__ = ["GPT", "Block", "CausalSelfAttention", "MLP", "SwiGLU", "KVCache", "as_model_config"]


# The epsilon of every normalisation (LayerNorm, RMSNorm, QK-norm): GPT-2's 1e-5. QK-norm names it too (torch's
# default would be the dtype's machine epsilon: 1.2e-7 in float32 but 7.8e-3 in bfloat16), so one number
# describes the model in any dtype, and Qwen3's single rms_norm_eps reproduces it exactly on export.
NORM_EPS = 1e-5


def make_norm(config: ModelConfig) -> nn.Module:
    """GPT-2's LayerNorm, or RMSNorm (no mean subtraction, no bias: cheaper, and as good in practice)."""
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.embedding_size, eps=NORM_EPS)
    return nn.LayerNorm(config.embedding_size, eps=NORM_EPS, bias=config.bias)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position t only sees positions <= t.

    Two implementations of the same function: ``use_sdpa=True`` calls PyTorch's fused
    ``F.scaled_dot_product_attention`` (fast, memory-efficient); ``use_sdpa=False`` spells it out as
    softmax(Q K^T / sqrt(hs) + causal mask) V, the way the course teaches it. With
    ``store_attention=True`` the explicit path keeps the last attention weights in ``self.attention``
    (B, nh, T, P + T) for plotting.
    """

    def __init__(self, config: ModelConfig, use_sdpa: bool = True) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.embedding_size = config.embedding_size
        self.dropout = config.dropout
        self.use_sdpa = use_sdpa
        self.store_attention = False
        self.attention: torch.Tensor | None = None
        # One matrix computes queries, keys and values for all heads at once.
        self.c_attn = nn.Linear(config.embedding_size, 3 * config.embedding_size, bias=config.bias)
        self.c_proj = nn.Linear(config.embedding_size, config.embedding_size, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.qk_norm = config.qk_norm
        self.rotary = Rotary(config.head_size, config.block_size) if config.position == "rope" else None

    def forward(
        self, x: torch.Tensor, kv_cache: KVCache | None = None, layer: int = 0, ve: torch.Tensor | None = None
    ) -> torch.Tensor:
        B, T, C = x.shape
        nh, hs = self.num_heads, C // self.num_heads
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        if ve is not None:  # a value embedding: each token's own row joins its value (ModelConfig.value_embeds)
            v = v + ve  # (B, T, C)
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        past = kv_cache.length if kv_cache is not None else 0
        if self.qk_norm:  # unit-RMS queries and keys: attention logits cannot blow up
            q, k = F.rms_norm(q, (hs,), eps=NORM_EPS), F.rms_norm(k, (hs,), eps=NORM_EPS)
        if self.rotary is not None:  # positions enter here, as rotations of q and k
            q, k = self.rotary(q, past), self.rotary(k, past)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)  # (B, nh, P + T, hs)

        if self.use_sdpa:
            dropout_p = self.dropout if self.training else 0.0
            if past == 0:
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
            elif T == 1:
                # The single newest token may look at everything cached: no mask needed.
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
            else:
                mask = self._causal_mask(T, past, x.device)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, nh, T, P + T)
            att = att.masked_fill(~self._causal_mask(T, past, x.device), float("-inf"))
            att = F.softmax(att, dim=-1)
            if self.store_attention:
                self.attention = att.detach()
            att = self.attn_dropout(att)
            y = att @ v  # (B, nh, T, P + T) @ (B, nh, P + T, hs) -> (B, nh, T, hs)

        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads side by side: (B, T, C)
        return self.resid_dropout(self.c_proj(y))

    @staticmethod
    def _causal_mask(T: int, past: int, device: torch.device) -> torch.Tensor:
        """(T, P + T) bool, True where query i (at position P + i) may attend to key j: j <= P + i."""
        return torch.ones(T, past + T, dtype=torch.bool, device=device).tril(diagonal=past)


class MLP(nn.Module):
    """Position-wise feed-forward network: C -> H -> GELU (tanh or exact form, or ReLU squared) -> C.

    H is ``config.mlp_hidden_size``: 4C unless ``mlp_hidden`` says otherwise.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        hidden = config.mlp_hidden_size
        self.c_fc = nn.Linear(config.embedding_size, hidden, bias=config.bias)
        # GPT-2 was trained with the tanh approximation of GELU; using it keeps Hugging Face logits identical.
        # "gelu_exact" is the erf form (nanoGPT's): on the course CPU torch runs it about twice as fast.
        self.gelu = nn.GELU(approximate="none" if config.activation == "gelu_exact" else "tanh")
        self.relu2 = config.activation == "relu2"  # ReLU squared (So et al., 2021): sparse, cheap, strong
        self.c_proj = nn.Linear(hidden, config.embedding_size, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c_fc(x)  # (B, T, H)
        x = F.relu(x).square() if self.relu2 else self.gelu(x)  # (B, T, H)
        return self.dropout(self.c_proj(x))  # (B, T, C)


class SwiGLU(nn.Module):
    """The gated feed-forward network of Llama and Qwen (Shazeer, 2020): ``c_proj(silu(w_gate(x)) * w_up(x))``.

    One projection (``w_gate``) decides, through SiLU, how much of the other (``w_up``) passes, channel by
    channel. Three matrices instead of two, so the default hidden width H is 2/3 of 4C (``ModelConfig.mlp_hidden``)
    and the parameter count stays near the standard MLP's. The output projection keeps GPT-2's name ``c_proj``, so
    the residual-stream initialisation (and ``zero_init``) treat it like the standard MLP's.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        hidden = config.mlp_hidden_size
        self.w_gate = nn.Linear(config.embedding_size, hidden, bias=config.bias)
        self.w_up = nn.Linear(config.embedding_size, hidden, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.embedding_size, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.w_gate(x)) * self.w_up(x)  # (B, T, H)
        return self.dropout(self.c_proj(h))  # (B, T, C)


class Block(nn.Module):
    """One transformer block: communicate (attention), then compute (MLP), each added to the residual stream."""

    def __init__(self, config: ModelConfig, use_sdpa: bool = True) -> None:
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config, use_sdpa=use_sdpa)
        self.ln_2 = make_norm(config)
        self.mlp = SwiGLU(config) if config.mlp == "swiglu" else MLP(config)

    def forward(
        self, x: torch.Tensor, kv_cache: KVCache | None = None, layer: int = 0, ve: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv_cache, layer, ve)  # (B, T, C)
        x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return x


def _grown_table(table: nn.Embedding, old: int, vocab_size: int, rows: int) -> nn.Embedding:
    """``table`` with ``rows`` rows: the first ``old`` kept, the new tokens' rows at their mean, padding at zero."""
    weight = table.weight  # (padded V, C)
    grown = nn.Embedding(rows, weight.size(1), device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        grown.weight.zero_()  # padding rows (if any) stay zero: they are never read
        grown.weight[:old] = weight[:old]
        grown.weight[old:vocab_size] = weight[:old].mean(dim=0)
    return grown


class GPT(nn.Module):
    """A GPT-2-style language model.

    ``GPT(config)`` takes a :class:`ModelConfig`, a :class:`Config` (its ``.model`` is used) or a dict of
    ModelConfig fields. ``model(idx, targets)`` returns ``(logits (B, T, V), loss)``; ``loss`` is ``None``
    without targets.
    """

    def __init__(self, config: ModelConfig | Config | Mapping[str, Any], use_sdpa: bool = True) -> None:
        super().__init__()
        config = as_model_config(config)
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.padded_vocab_size, config.embedding_size),  # token id -> vector
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config, use_sdpa=use_sdpa) for _ in range(config.depth)]),
                ln_f=make_norm(config),
            )
        )
        if config.position == "learned":  # rotary embeddings need no table: attention rotates q and k
            self.transformer["wpe"] = nn.Embedding(config.block_size, config.embedding_size)  # position -> vector
        # padded_vocab_size >= vocab_size rows (ModelConfig.vocab_multiple); logits() drops the padding.
        self.lm_head = nn.Linear(config.embedding_size, config.padded_vocab_size, bias=False)
        if config.unet_skips and config.depth >= 2:
            # One weight per skip: block i's output feeds block depth-1-i's input (i < depth // 2), at 1 to start.
            self.skip_weights = nn.Parameter(torch.ones(config.depth // 2))
        if config.value_embeds:
            # Token tables read by attention's values: table i feeds block i and block depth - n + i, each through
            # a learned weight starting at 1 (the tables start small, like wte, and learn at the embeddings' rate).
            n = config.value_embeds
            tables = [nn.Embedding(config.padded_vocab_size, config.embedding_size) for _ in range(n)]
            self.transformer["vte"] = nn.ModuleList(tables)
            self.ve_weights = nn.Parameter(torch.ones(2 * n))
        if config.tie_embeddings:
            # Weight tying: the same matrix reads tokens in and scores them out (fewer parameters, better
            # sample efficiency; Press & Wolf 2017). Both names appear in state_dict, holding one tensor.
            self.transformer.wte.weight = self.lm_head.weight

        self.apply(self._init_weights)
        # Each block adds two projections into the residual stream; scaling them by 1/sqrt(2 * depth) keeps
        # the stream's variance from growing with depth (GPT-2 paper, section 2.3).
        residual_std = 0.02 / math.sqrt(2 * config.depth)
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=residual_std)
        if config.zero_init:
            # Every block then starts as the identity on the residual stream, and an untied head predicts
            # the uniform distribution (loss exactly ln V at step 0); gradients still reach every weight.
            for name, param in self.named_parameters():
                if name.endswith("c_proj.weight") or (name == "lm_head.weight" and not config.tie_embeddings):
                    nn.init.zeros_(param)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # ----------------------------------------------------------------------------------------------
    # Forward pass

    @property
    def use_sdpa(self) -> bool:
        """True: attention through F.scaled_dot_product_attention; False: the explicit masked softmax."""
        return all(block.attn.use_sdpa for block in self.transformer.h)

    @use_sdpa.setter
    def use_sdpa(self, value: bool) -> None:
        for block in self.transformer.h:
            block.attn.use_sdpa = bool(value)

    def hidden_states(self, idx: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """Token ids (B, T) -> final normalised hidden states (B, T, C), writing to ``kv_cache`` if given."""
        if idx.dim() != 2:
            raise ValueError(f"idx must have shape (B, T) of token ids, got shape {tuple(idx.shape)}.")
        B, T = idx.shape
        past = kv_cache.length if kv_cache is not None else 0
        if T == 0:
            raise ValueError("idx has no tokens (T=0): give at least one token, e.g. the tokenizer's eot_token.")
        if past + T > self.config.block_size:
            raise ValueError(
                f"sequence of {past + T} tokens (cached {past} + new {T}) exceeds block_size="
                f"{self.config.block_size}: crop the context to its last {self.config.block_size} tokens."
            )
        x = self.transformer.wte(idx)  # (B, T, C)
        if "wpe" in self.transformer:
            pos = torch.arange(past, past + T, dtype=torch.long, device=idx.device)  # (T,)
            x = x + self.transformer.wpe(pos)  # (T, C), broadcast over the batch
        x = self.transformer.drop(x)  # (B, T, C)
        n_skips = len(self.skip_weights) if hasattr(self, "skip_weights") else 0
        skips = []  # the first half's outputs, taken back in reverse order by the second half (a U-net)
        ves = self._value_embeddings(idx)  # one (B, T, C) tensor or None per block
        for layer, block in enumerate(self.transformer.h):
            if layer >= self.config.depth - n_skips:
                x = x + self.skip_weights[self.config.depth - 1 - layer] * skips.pop()  # (B, T, C)
            x = block(x, kv_cache, layer, ves[layer])  # (B, T, C)
            if layer < n_skips:
                skips.append(x)
        if kv_cache is not None:
            kv_cache.advance(T)
        return self.transformer.ln_f(x)  # (B, T, C)

    def _value_embeddings(self, idx: torch.Tensor) -> list[torch.Tensor | None]:
        """Per block, what its attention adds to the values: ``ve_weights[j] * vte[i](idx)`` (B, T, C) for the
        j-th block that reads a table (blocks 0..n-1 read tables 0..n-1, and so do the last n blocks), else None.
        A token's row depends on that token only, so a KV cache needs nothing more."""
        depth, n = self.config.depth, self.config.value_embeds
        ves: list[torch.Tensor | None] = [None] * depth
        for i in range(n):
            row = self.transformer.vte[i](idx)  # (B, T, C)
            ves[i] = self.ve_weights[i] * row
            ves[depth - n + i] = self.ve_weights[n + i] * row
        return ves

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden states (..., C) -> logits (..., V), soft-capped when ``logit_softcap`` is set."""
        logits = self.lm_head(x)  # (..., padded V)
        if self.config.padded_vocab_size != self.config.vocab_size:
            # The padding rows exist only to make the matrix product fast: they are no tokens, never sampled
            # and never in the softmax (a view; compiled, the slice fuses into the loss).
            logits = logits[..., : self.config.vocab_size]
        cap = self.config.logit_softcap
        return cap * torch.tanh(logits / cap) if cap else logits

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        *,
        return_logits: bool = True,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``idx`` (B, T) long -> ``(logits (B, T, V), loss)``.

        ``loss`` is the mean cross-entropy against ``targets`` (B, T) (entries equal to -1 are ignored),
        or ``None`` without targets. ``kv_cache`` continues a sequence whose first positions are cached.
        ``return_logits=False`` (the trainer's choice: it needs only the loss) returns ``(None, loss)`` and lets
        the CPU compute the loss without the (B, T, V) logits (:mod:`llmlab.head_loss`).
        """
        if targets is not None and targets.shape != idx.shape:
            raise ValueError(
                f"targets shape {tuple(targets.shape)} must equal idx shape {tuple(idx.shape)} "
                "(targets are idx shifted left by one token)."
            )
        x = self.hidden_states(idx, kv_cache)  # (B, T, C)
        if targets is not None and not return_logits and self._chunked_loss_applies(x):
            weight = self.lm_head.weight[: self.config.vocab_size]  # (V, C) without the padding rows
            loss = linear_cross_entropy(
                x.reshape(-1, x.size(-1)), weight, targets.reshape(-1), self.config.logit_softcap
            )
            return None, loss
        logits = self.logits(x)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return (logits if return_logits else None), loss

    def _chunked_loss_applies(self, x: torch.Tensor) -> bool:
        """Whether :func:`~llmlab.head_loss.linear_cross_entropy` computes the loss here: float32 on the CPU,
        outside torch.compile (which fuses the plain form itself; so do GPUs), with a logit soft-cap (see the
        note at the top of this file)."""
        return (
            CHUNKED_LOSS
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling()
            and bool(self.config.logit_softcap)
        )

    # ----------------------------------------------------------------------------------------------
    # Bookkeeping for training

    def resize_token_embeddings(self, vocab_size: int) -> None:
        """Grow the vocabulary to ``vocab_size`` (e.g. for a chat template's special tokens).

        Existing rows are kept; each new row starts as the mean of the existing embeddings, so a new
        token's logit starts near the average one instead of at a random, possibly huge, value (Hewitt,
        2021). The output layer is tied to the embedding and grows with it.
        """
        old = self.config.vocab_size
        check_int("vocab_size", vocab_size, old, f"the vocabulary can only grow: use vocab_size >= {old}.")
        if vocab_size == old:
            return
        new_config = dataclasses.replace(self.config, vocab_size=vocab_size)
        rows = new_config.padded_vocab_size
        weight = self.transformer.wte.weight  # (padded V, C)
        self.transformer.wte = _grown_table(self.transformer.wte, old, vocab_size, rows)
        if "vte" in self.transformer:  # value-embedding tables grow the same way
            self.transformer.vte = nn.ModuleList(_grown_table(t, old, vocab_size, rows) for t in self.transformer.vte)
        if self.config.tie_embeddings:
            self.lm_head = nn.Linear(weight.size(1), rows, bias=False, device=weight.device, dtype=weight.dtype)
            self.lm_head.weight = self.transformer.wte.weight  # re-tie
        else:
            head = self.lm_head.weight  # (padded V, C): new rows start at zero, i.e. a logit of 0 for the new tokens
            self.lm_head = nn.Linear(head.size(1), rows, bias=False, device=head.device, dtype=head.dtype)
            with torch.no_grad():
                self.lm_head.weight.zero_()
                self.lm_head.weight[:old] = head[:old]
        self.config = dataclasses.replace(self.config, vocab_size=vocab_size)

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Number of parameters (the tied embedding / output matrix counted once).

        ``non_embedding=True`` leaves out the position embeddings (as nanoGPT does): the token
        embedding matrix also serves as the output layer, so it does real compute and stays in.
        """
        n = sum(p.numel() for p in self.parameters())  # parameters() yields a shared tensor once
        if non_embedding and "wpe" in self.transformer:
            n -= self.transformer.wpe.weight.numel()
        if non_embedding and "vte" in self.transformer:  # value embeddings are looked up, never multiplied
            n -= sum(t.weight.numel() for t in self.transformer.vte)
        return n

    def configure_optimizer(
        self,
        weight_decay: float,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.95),
        device_type: str = "cpu",
        optimizer: str = "adamw",
        muon_lr: float = 0.02,
        embedding_lr_scale: float = 1.0,
    ) -> torch.optim.Optimizer | MuonWithAdamW:
        """AdamW with weight decay on matrices and embeddings (>= 2-D) only, never on biases or norm gains.

        Uses torch's fused kernel on CUDA and CPU: one call updates every tensor, instead of a per-parameter
        loop (on CPU the update of a cpu_small step went from 5.9 ms to 1.3 ms, see bench/train.py).

        ``optimizer="muon"``: the blocks' weight matrices go to :class:`llmlab.muon.Muon` (momentum, then the
        update orthogonalised by Newton-Schulz, so every direction of a matrix moves at the same rate;
        Jordan et al., 2024) at ``muon_lr``; embeddings, the output head and all 1-D gains stay on AdamW,
        as in modded-nanogpt. Each param group carries ``lr_scale`` (its lr / ``lr``) for the schedule.
        ``embedding_lr_scale`` other than 1 puts the embedding tables (token and position; a tied head with the
        token table) in a group of their own at ``lr * embedding_lr_scale``.
        """
        params = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        check_choice("optimizer", optimizer, ("adamw", "muon"))
        hidden = [p for n, p in params if optimizer == "muon" and p.dim() == 2 and n.startswith("transformer.h.")]
        hidden_ids = {id(p) for p in hidden}
        rest = [(n, p) for n, p in params if id(p) not in hidden_ids]
        tables = set()  # the embedding tables, when they get a rate of their own
        if embedding_lr_scale != 1:
            tables = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
        groups = [
            {
                "params": [p for _, p in rest if p.dim() >= 2 and id(p) not in tables],
                "weight_decay": weight_decay,
                "lr_scale": 1.0,
            },
            {"params": [p for _, p in rest if p.dim() < 2], "weight_decay": 0.0, "lr_scale": 1.0},
        ]
        if tables:
            embeddings = [p for _, p in rest if id(p) in tables]
            groups.append({"params": embeddings, "weight_decay": weight_decay, "lr_scale": embedding_lr_scale})
        adamw = torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device_type in ("cuda", "cpu"))
        for group in adamw.param_groups:  # the rate at step 0, before the schedule sets it
            group["lr"] = lr * group["lr_scale"]
        if not hidden:
            return adamw
        muon = Muon([{"params": hidden, "lr_scale": muon_lr / lr}], lr=muon_lr, weight_decay=weight_decay)
        return MuonWithAdamW(muon, adamw)

    def optimizer_for(self, train: TrainConfig, device_type: str = "cpu") -> torch.optim.Optimizer | MuonWithAdamW:
        """:meth:`configure_optimizer` with every knob read from ``train`` (what the Trainer uses): weight decay,
        max_lr, betas, the optimizer and Muon's rate, the embeddings' rate scale. The notebooks call
        :meth:`configure_optimizer` with the numbers they teach."""
        return self.configure_optimizer(
            train.weight_decay,
            train.max_lr,
            (train.beta1, train.beta2),
            device_type,
            train.optimizer,
            train.muon_lr,
            train.embedding_lr_scale,
        )

    def estimate_flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs (forward + backward) per token: 6 N + 12 L C T (Kaplan et al. 2020; PaLM appendix B).

        6 N covers the matrix multiplies against the N weights; 12 L C T the attention scores and
        their weighted sum over a context of T = ``seq_len`` (default block_size) tokens.
        """
        T = self.config.block_size if seq_len is None else seq_len
        # The padding rows of the vocabulary (vocab_multiple) do arithmetic but compute nothing the model uses.
        tables = 1 if self.config.tie_embeddings else 2
        padding = tables * (self.config.padded_vocab_size - self.config.vocab_size) * self.config.embedding_size
        N = self.num_parameters(non_embedding=True) - padding
        L, C = self.config.depth, self.config.embedding_size
        return 6.0 * N + 12.0 * L * C * T

    def estimate_mfu(self, tokens_per_second: float, peak_flops: float, seq_len: int | None = None) -> float:
        """Model FLOPs utilisation: achieved training FLOP/s as a fraction of ``peak_flops`` (312e12: A100 bf16)."""
        check_number(
            "peak_flops",
            peak_flops,
            0.0,
            low_open=True,
            fix="peak_flops must be > 0 (the device's peak FLOP/s, e.g. 312e12).",
        )
        return self.estimate_flops_per_token(seq_len) * tokens_per_second / peak_flops

    # ----------------------------------------------------------------------------------------------
    # Generation

    def _context_window(self, block_size: int | None) -> int:
        if block_size is None:
            return self.config.block_size
        check_int("block_size", block_size, 1)
        if block_size > self.config.block_size:
            raise ValueError(
                f"block_size={block_size} exceeds the model's block_size={self.config.block_size} (it has no "
                f"position embedding beyond that): pass block_size={self.config.block_size} or less."
            )
        return block_size

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
        block_size: int | None = None,
    ) -> torch.Tensor:
        """Extend ``idx`` (B, T) by ``max_new_tokens`` sampled tokens -> (B, T + max_new_tokens).

        The model sees at most the last ``block_size`` tokens (default: the config's). With
        ``use_cache`` each step feeds only the newest token and reuses cached keys/values; once the
        sequence outgrows the window, positions shift, so the window is recomputed from scratch
        (same tokens as ``use_cache=False``, just no faster). Runs in eval mode (no dropout) and
        restores the previous mode afterwards. ``temperature=0`` is greedy.
        """
        check_int("max_new_tokens", max_new_tokens, 0)
        if idx.dim() != 2 or idx.size(1) == 0:
            raise ValueError(
                f"idx must have shape (B, T) with T >= 1, got {tuple(idx.shape)}: start from e.g. "
                "torch.tensor([[tokenizer.eot_token]])."
            )
        window = self._context_window(block_size)
        was_training = self.training
        self.eval()
        try:
            cache: KVCache | None = None
            for _ in range(max_new_tokens):
                if not use_cache:
                    x = self.hidden_states(idx[:, -window:])  # (B, T', C)
                elif cache is None or cache.length >= window:
                    # Fresh cache: prefill with the (cropped) context.
                    cache = KVCache(self.config, batch_size=idx.size(0))
                    x = self.hidden_states(idx[:, -window:], cache)  # (B, T', C)
                else:
                    x = self.hidden_states(idx[:, -1:], cache)  # only the newest token: (B, 1, C)
                logits = self.logits(x[:, -1, :])  # only the last position is needed: (B, V)
                idx_next = sample_next(logits, temperature, top_k, top_p, generator)  # (B, 1)
                idx = torch.cat((idx, idx_next), dim=1)  # (B, T + 1)
        finally:
            self.train(was_training)
        return idx

    def generate_sentence(
        self,
        prompt: str,
        block_size: int,
        max_new_tokens: int,
        tokenizer: Any,
        device: str | torch.device,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> str:
        """Continue ``prompt`` and return the text, which begins with ``prompt`` itself.

        An empty prompt starts the model from ``tokenizer.eot_token`` (the document separator, so the
        model begins a fresh document); that token is not part of the returned text.
        ``block_size`` is the context window (at most the model's). ``tokenizer`` needs ``encode``,
        ``decode`` and ``eot_token``; ``device`` is where the model lives.
        """
        if not isinstance(prompt, str):
            raise ValueError(f"prompt={prompt!r} is not valid: pass a str (use '' to start from scratch).")
        ids = tokenizer.encode(prompt) if prompt else [tokenizer.eot_token]
        idx = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)
        out = self.generate(
            idx,
            max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            use_cache=use_cache,
            generator=generator,
            block_size=block_size,
        )
        # Decode only the new tokens and prepend the prompt verbatim: the result begins with the prompt
        # exactly, even where decode(encode(prompt)) would normalise it.
        return prompt + tokenizer.decode(out[0, len(ids) :].tolist())
