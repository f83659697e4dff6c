"""Every mistake llmlab.check catalogues, made the way a learner makes it, gets exactly its hint.

Each ``*_learner(bug)`` below writes a piece the way the notebooks teach it (independently of llmlab.check's own
wrong variants), with one mistake switched on by ``bug``; ``bug=None`` is the right piece, which must pass.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import regex
import torch
import torch.nn as nn
import torch.nn.functional as F

from llmlab import check
from llmlab.bpe import GPT2_SPLIT_PATTERN
from llmlab.check import store
from llmlab.check.core import run_check

INF = float("-inf")


@pytest.fixture(autouse=True)
def no_progress_file(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(store.PROGRESS_ENV, "off")
    monkeypatch.delenv("LLMLAB_LANG", raising=False)
    check.practice_edition()  # graded as in a practice notebook: a wrong piece gets its hint, not an exception
    yield
    check.practice_edition(False)


# --- 01 tokenization -----------------------------------------------------------------------------------------


def _merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_learner(bug: str | None) -> Callable:
    def merge(ids, pair, new_id):  # noqa: ANN001, ANN202 - a learner's cell
        if bug == "changes_input":  # merges in place, in the list it was given
            i = 0
            while i < len(ids) - 1:
                if (ids[i], ids[i + 1]) == tuple(pair):
                    ids[i : i + 2] = [new_id]
                i += 1
            return ids
        if bug == "first_only":
            done, out, i = False, [], 0
            while i < len(ids):
                if not done and i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
                    out.append(new_id)
                    done = True
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            return out
        if bug == "right_to_left":
            out, i = [], len(ids) - 1
            while i >= 0:
                if i >= 1 and (ids[i - 1], ids[i]) == tuple(pair):
                    out.append(new_id)
                    i -= 2
                else:
                    out.append(ids[i])
                    i -= 1
            return out[::-1]
        out, i = [], 0
        while i < (len(ids) - 1 if bug == "drops_last" else len(ids)):
            if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
                out.append(new_id)
                i += 1 if bug == "advance_one" else 2
            else:
                out.append(ids[i])
                i += 1
        return tuple(out)  # the notebook returns a tuple

    return merge


def bpe_step_learner(bug: str | None) -> Callable:
    def bpe_step(words, new_id):  # noqa: ANN001, ANN202
        counts = Counter()
        for ids, freq in words.items():
            for pair in zip(ids, ids[1:]):
                counts[pair] += 1 if bug == "unweighted" else freq
        if bug == "tie_first":
            best = counts.most_common(1)[0][0]
        elif bug == "tie_largest":
            top = max(counts.values())
            best = max(p for p, n in counts.items() if n == top)
        else:
            best = min(counts, key=lambda p: (-counts[p], p))
        if bug == "words_unchanged":
            return words, best
        new_words = Counter()
        for ids, freq in words.items():
            new_words[tuple(_merge(list(ids), best, new_id))] += 1 if bug == "frequency_lost" else freq
        return new_words, best

    return bpe_step


def bpe_encode_learner(bug: str | None) -> Callable:
    def bpe_encode(text, merges):  # noqa: ANN001, ANN202
        rank = {tuple(pair): 256 + k for k, pair in enumerate(merges)}
        words = [text] if bug == "no_pretokenize" else regex.findall(GPT2_SPLIT_PATTERN, text)
        out = []
        for word in words:
            ids = [ord(ch) for ch in word] if bug == "characters_not_bytes" else list(word.encode("utf-8"))
            while len(ids) >= 2:
                if bug == "leftmost":
                    pair = next((p for p in zip(ids, ids[1:]) if p in rank), None)
                    if pair is None:
                        break
                else:
                    pair = min(zip(ids, ids[1:]), key=lambda p: rank.get(p, float("inf")))
                    if pair not in rank:
                        break
                ids = _merge(ids, pair, rank[pair])
                if bug == "one_merge_per_word":
                    break
            out.extend(ids)
        return out

    return bpe_encode


def bigram_table_learner(bug: str | None) -> Callable:
    def bigram_table(text, stoi):  # noqa: ANN001, ANN202
        V = len(stoi)
        counts = torch.zeros(V, V)
        for (a, b), n in Counter(zip(text, text[1:])).items():
            if bug == "transposed":
                counts[stoi[b], stoi[a]] = n
            else:
                counts[stoi[a], stoi[b]] = n
        if bug == "no_smoothing":
            return counts / counts.sum(dim=1, keepdim=True)
        if bug == "smoothing_numerator_only":
            return (counts + 1) / counts.sum(dim=1, keepdim=True)
        smoothed = counts + 1
        return smoothed / smoothed.sum(dim=0 if bug == "columns_sum_to_one" else 1, keepdim=True)

    return bigram_table


def bigram_loss_learner(bug: str | None) -> Callable:
    def bigram_loss(W, xs, ys):  # noqa: ANN001, ANN202
        if bug == "swapped":
            xs, ys = ys, xs
        logits = W[xs]  # (N, V)
        if bug == "logits_as_log_probs":
            log_probs = logits
        elif bug == "overflow":  # the notebook's softmax, without subtracting the max
            e = logits.exp()
            log_probs = (e / e.sum(dim=-1, keepdim=True)).log()
        else:
            log_probs = F.log_softmax(logits, dim=0 if bug == "softmax_over_batch" else -1)
        picked = log_probs[torch.arange(len(ys)), ys]
        if bug == "sum_not_mean":
            return -picked.sum()
        return picked.mean() if bug == "sign" else -picked.mean()

    return bigram_loss


# --- 02 attention ---------------------------------------------------------------------------------------------


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True) -> torch.Tensor:
    T = q.size(-2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if causal:
        scores = scores.masked_fill(torch.tril(torch.ones(T, T)) == 0, INF)
    return F.softmax(scores, dim=-1) @ v


def attention_weights_learner(bug: str | None) -> Callable:
    def attention_weights(q, k, causal=True):  # noqa: ANN001, ANN202
        T, hs = q.shape[-2], q.shape[-1]
        scores = q @ k.transpose(-2, -1)
        if bug == "scale_by_hs":
            scores = scores / hs
        elif bug != "no_scale":
            scores = scores * hs**-0.5
        diagonal = {"sees_next": 1, "hides_itself": -1}.get(bug, 0)
        mask = torch.triu(torch.ones(T, T)) if bug == "masks_the_past" else torch.tril(torch.ones(T, T), diagonal)
        use_mask = (causal or bug == "always_masked") and bug != "causal_ignored"
        if use_mask and bug != "mask_after_softmax":
            scores = scores.masked_fill(mask == 0, 0.0 if bug == "mask_fills_zero" else INF)
        weights = torch.softmax(scores, dim=-2 if bug == "softmax_axis" else -1)
        if use_mask and bug == "mask_after_softmax":
            weights = weights * mask.to(weights.dtype)
        return weights

    return attention_weights


def head_learner(bug: str | None, bias: bool = False) -> type:
    class Head(nn.Module):
        def __init__(self, C: int, hs: int) -> None:
            super().__init__()
            out = C if bug == "layer_shape" else hs
            names = ("W_q", "W_k", "W_v") if bug == "layers" else ("query", "key", "value")
            for name in names:
                setattr(self, name, nn.Linear(C, out, bias=bias))
            self.names = names

        def forward(self, x: torch.Tensor, causal: bool = True) -> torch.Tensor:
            q, k, v = (getattr(self, n)(x) for n in self.names)
            if bug == "keys_and_queries_swapped":
                q, k = k, q
            T = x.size(1)
            scores = q @ k.transpose(-2, -1) / math.sqrt(x.size(-1) if bug == "scale_by_C" else q.size(-1))
            if causal and bug != "no_mask":
                scores = scores.masked_fill(torch.tril(torch.ones(T, T)) == 0, INF)
            weights = F.softmax(scores, dim=-1)
            return weights @ (x if bug == "weights_times_x" else v)

    return Head


def multi_head_learner(bug: str | None) -> type:
    Head = head_learner(None)

    class MultiHead(nn.Module):
        def __init__(self, C: int, num_heads: int) -> None:
            super().__init__()
            hs = C if bug == "head_size" else C // num_heads
            if bug == "heads":
                self.heads = [Head(C, hs) for _ in range(num_heads)]
            elif bug == "same_head":
                self.heads = nn.ModuleList([Head(C, hs)] * num_heads)
            else:
                self.heads = nn.ModuleList(Head(C, hs) for _ in range(num_heads))
            if bug != "no_proj":
                self.proj = nn.Linear(C, C, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            outs = [h(x) for h in self.heads]
            y = torch.stack(outs).sum(dim=0) if bug == "concat_dim" else torch.cat(outs, dim=-1)
            return y if bug == "no_proj" else self.proj(y)

    return MultiHead


def mha_learner(bug: str | None) -> Callable:
    def multi_head_attention(x, c_attn, c_proj, num_heads):  # noqa: ANN001, ANN202
        B, T, C = x.size()
        hs = C // num_heads
        if bug == "split_order":
            k, q, v = c_attn(x).split(C, dim=2)
        else:
            q, k, v = c_attn(x).split(C, dim=2)
        if bug == "view_without_transpose":
            q, k, v = (t.reshape(B, num_heads, T, hs) for t in (q, k, v))
        elif bug == "heads_not_moved":
            q, k, v = (t.view(B, T, num_heads, hs) for t in (q, k, v))
        else:
            q, k, v = (t.view(B, T, num_heads, hs).transpose(1, 2) for t in (q, k, v))
        y = _attention(q, k, v)
        if bug == "merge_without_transpose":
            y = y.reshape(B, T, C)
        else:
            y = y.transpose(1, 2).contiguous().view(B, T, C)
        return y if bug == "no_proj" else c_proj(y)

    return multi_head_attention


# --- 03 the GPT block ------------------------------------------------------------------------------------------


def layer_norm_learner(bug: str | None) -> Callable:
    def layer_norm(x, weight, bias, eps=1e-5):  # noqa: ANN001, ANN202
        if bug == "eps_ignored":
            eps = 1e-5
        dim = 0 if bug == "wrong_dim" else -1
        mean = 0.0 if bug == "not_centred" else x.mean(dim=dim, keepdim=True)
        if bug == "std_plus_eps":
            return (x - mean) / (x.std(dim=-1, keepdim=True) + eps) * weight + bias
        if bug == "not_centred":
            var = x.pow(2).mean(dim=-1, keepdim=True)
        else:
            var = x.var(dim=dim, keepdim=True, unbiased=bug == "unbiased_variance")
        if bug == "eps_outside_sqrt":
            scale = torch.sqrt(var) + eps
        elif bug == "no_eps":
            scale = torch.sqrt(var)
        else:
            scale = torch.sqrt(var + eps)
        if bug == "weight_and_bias_swapped":
            return (x - mean) / scale * bias + weight
        return (x - mean) / scale * weight + bias

    return layer_norm


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def mlp_learner(bug: str | None) -> Callable:
    def mlp(x, block):  # noqa: ANN001, ANN202
        fc, proj = block.mlp.c_fc, block.mlp.c_proj
        no_bias = bug == "no_bias"
        h = x @ fc.weight.T + (0 if no_bias else fc.bias)  # (B, T, 4C)
        if bug == "activation_after_projection":
            return _gelu(h @ proj.weight.T + proj.bias)
        activation = {
            "relu": torch.relu,
            "gelu_exact": lambda t: 0.5 * t * (1 + torch.erf(t / math.sqrt(2))),
            "no_activation": lambda t: t,
        }.get(bug, _gelu)
        return activation(h) @ proj.weight.T + (0 if no_bias else proj.bias)

    return mlp


_layer_norm, _mlp = layer_norm_learner(None), mlp_learner(None)


def block_learner(bug: str | None) -> Callable:
    def block(x, blk):  # noqa: ANN001, ANN202
        def ln1(t):  # noqa: ANN001, ANN202
            return _layer_norm(t, blk.ln_1.weight, blk.ln_1.bias)

        def ln2(t):  # noqa: ANN001, ANN202
            return _layer_norm(t, blk.ln_2.weight, blk.ln_2.bias)

        if bug == "norms_swapped":
            ln1, ln2 = ln2, ln1
        if bug == "post_ln":
            x = ln1(x + blk.attn(x))
            return ln2(x + _mlp(x, blk))
        if bug == "normed_stream":
            x = ln1(x)
            x = x + blk.attn(x)
            x = ln2(x)
            return x + _mlp(x, blk)
        if bug == "no_residual":
            x = blk.attn(ln1(x))
            return _mlp(ln2(x), blk)
        if bug == "parallel":
            return x + blk.attn(ln1(x)) + _mlp(ln2(x), blk)
        x = x + blk.attn(ln1(x))
        return x + _mlp(ln2(x), blk)

    return block


_block = block_learner(None)


def gpt_forward_learner(bug: str | None) -> Callable:
    def gpt_forward(model, idx, shapes):  # noqa: ANN001, ANN202 - the notebook's signature, with its list
        tr = model.transformer
        B, T = idx.shape
        x = tr.wte.weight[idx]
        if bug != "no_positions":
            x = x + tr.wpe.weight[torch.arange(T)]
        shapes.append(("x", x.shape))
        for blk in tr.h[:1] if bug == "first_block_only" else tr.h:
            x = _block(x, blk)
        if bug != "no_final_norm":
            x = _layer_norm(x, tr.ln_f.weight, tr.ln_f.bias)
        logits = x @ tr.wte.weight.T
        if bug == "softmax_output":
            return F.softmax(logits, dim=-1)
        return logits[:, -1, :] if bug == "last_position_only" else logits

    return gpt_forward


# --- 04 the training loop ---------------------------------------------------------------------------------------


def get_batch_learner(bug: str | None) -> Callable:
    def get_batch(data, block_size, batch_size, rng):  # noqa: ANN001, ANN202
        high = len(data) - block_size + (1 if bug == "overrun" else -1)  # the notebook's margin, or one too far
        if bug == "ignores_rng":
            starts = np.random.randint(0, high, size=batch_size)
        elif bug == "one_start":
            starts = [int(rng.integers(0, high))] * batch_size
        else:
            starts = rng.integers(0, high, size=batch_size)
        shift = 0 if bug == "y_not_shifted" else 1
        x = np.stack([data[s : s + block_size] for s in starts], axis=1 if bug == "time_first" else 0)
        y = np.stack([data[s + shift : s + shift + block_size] for s in starts], axis=1 if bug == "time_first" else 0)
        if bug != "dtype":
            x, y = x.astype(np.int64), y.astype(np.int64)
        if bug == "not_tensors":
            return x, y
        return torch.from_numpy(x), torch.from_numpy(y)

    return get_batch


def lr_schedule_learner(bug: str | None) -> Callable:
    def lr_schedule(step, max_lr, min_lr, warmup, max_iters):  # noqa: ANN001, ANN202
        if step < warmup:
            if bug == "warmup_from_zero":
                return max_lr * step / warmup
            if bug == "warmup_reaches_max_early":
                return max_lr * (step + 1) / warmup
            return max_lr * (step + 1) / (warmup + 1)
        if bug == "cosine_ignores_warmup":
            progress = step / max_iters
        else:
            progress = (step - warmup) / max(1, max_iters - warmup)
        if bug != "no_clamp":
            progress = min(progress, 1.0)
        if bug == "linear_decay":
            return max_lr - progress * (max_lr - min_lr)
        if bug == "no_half":
            return min_lr + math.cos(math.pi * progress) * (max_lr - min_lr)
        low = 0.0 if bug == "decays_to_zero" else min_lr
        return low + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - low)

    return lr_schedule


def estimate_loss_learner(bug: str | None) -> Callable:
    def estimate_loss(model, batches):  # noqa: ANN001, ANN202
        if bug != "dropout_on":
            model.eval()
        out = {}
        with contextlib.nullcontext() if bug == "grad_on" else torch.no_grad():
            every = [model(x, y)[1].item() for pairs in batches.values() for x, y in pairs]
            for split, pairs in batches.items():
                losses = [model(x, y)[1].item() for x, y in pairs]
                if bug == "last_batch_only":
                    out[split] = losses[-1]
                elif bug == "sum_not_mean":
                    out[split] = sum(losses)
                elif bug == "splits_mixed":
                    out[split] = sum(every) / len(every)
                else:
                    out[split] = sum(losses) / len(losses)
        if bug != "left_in_eval":
            model.train()
        return out

    return estimate_loss


def train_step_learner(bug: str | None) -> Callable:
    def train_step(model, optimizer, x, y, lr, grad_clip):  # noqa: ANN001, ANN202
        if bug != "lr_not_set":
            for group in optimizer.param_groups:
                group["lr"] = lr
        _, loss = model(x, y)
        if bug == "step_before_backward":
            optimizer.step()
        if bug not in ("no_zero_grad", "zero_grad_after_backward"):
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if bug == "zero_grad_after_backward":
            optimizer.zero_grad()
        if bug == "no_clip":  # clipped after the step: too late to matter
            optimizer.step()
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip) if grad_clip > 0 else None
            return loss.item()
        if grad_clip > 0 or bug == "always_clip":
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if bug != "step_before_backward":
            optimizer.step()
        return loss if bug == "returns_tensor" else loss.item()

    return train_step


# --- 04b optimisation --------------------------------------------------------------------------------------------


def adamw_step_learner(bug: str | None) -> Callable:
    def adamw_step(w, g, m, v, t, lr, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1):  # noqa: ANN001, ANN202
        b1, b2 = betas
        if bug == "l2_in_gradient":
            g = g + weight_decay * w
        elif bug == "decay_without_lr":
            w = w * (1 - weight_decay)
        elif bug != "decay_after_update":
            w = w * (1 - lr * weight_decay)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        if bug == "no_bias_correction":
            m_hat, v_hat = m, v
        else:
            n = t + 1 if bug == "bias_correction_t_plus_1" else t
            m_hat, v_hat = m / (1 - b1**n), v / (1 - b2**n)
        if bug == "eps_inside_sqrt":
            w = w - lr * m_hat / torch.sqrt(v_hat + eps)
        else:
            w = w - lr * m_hat / (v_hat.sqrt() + eps)
        if bug == "decay_after_update":
            w = w * (1 - lr * weight_decay)
        return w, m, v

    return adamw_step


def accumulate_learner(bug: str | None) -> Callable:
    def accumulate_gradients(model, x, y, k):  # noqa: ANN001, ANN202
        if bug != "stale_gradients":
            model.zero_grad(set_to_none=True)
        dim = 1 if bug == "split_along_time" else 0
        micro = list(zip(x.chunk(k, dim=dim), y.chunk(k, dim=dim)))
        for xs, ys in micro[:1] if bug == "one_micro_batch" else micro:
            if bug == "zero_grad_each":
                model.zero_grad()
            loss = model(xs, ys)[1]
            (loss if bug == "not_divided" else loss / k).backward()
        if bug == "divided_twice":
            for p in model.parameters():
                p.grad /= k

    return accumulate_gradients


# --- 05 sampling ---------------------------------------------------------------------------------------------------


def keep_top_k_learner(bug: str | None) -> Callable:
    def keep_top_k(logits, k):  # noqa: ANN001, ANN202
        if bug == "keeps_smallest":
            keep = torch.zeros_like(logits, dtype=torch.bool)
            keep[torch.topk(logits, k, largest=False).indices] = True
            return logits.masked_fill(~keep, INF)
        if bug == "keeps_k_plus_1":
            ordered = torch.sort(logits, descending=True).values
            if k >= len(logits):
                return logits.clone()
            return logits.masked_fill(logits < ordered[k], INF)
        kth = torch.topk(logits, k).values[-1]  # nanoGPT's threshold
        drop = logits <= kth if bug == "keeps_k_minus_1" else logits < kth
        if bug == "changes_input":
            logits[drop] = INF
            return logits
        return logits.masked_fill(drop, 0.0 if bug == "fills_zero" else INF)

    return keep_top_k


def keep_top_p_learner(bug: str | None) -> Callable:
    def keep_top_p(logits, p):  # noqa: ANN001, ANN202
        if bug == "not_sorted":
            probs = F.softmax(logits, dim=-1)
            return logits.masked_fill(torch.cumsum(probs, dim=-1) - probs >= p, INF)
        sorted_logits, order = torch.sort(logits, descending=bug != "least_likely_first")
        probs = F.softmax(sorted_logits, dim=-1)
        if bug == "logits_summed":
            before = torch.cumsum(sorted_logits, dim=-1) - sorted_logits
        elif bug == "drops_the_crossing_token":
            before = torch.cumsum(probs, dim=-1)
        else:
            before = torch.cumsum(probs, dim=-1) - probs
        keep_sorted = before < p
        if bug == "sorted_positions":
            return logits.masked_fill(~keep_sorted, INF)
        keep = torch.zeros_like(keep_sorted)
        keep[order] = keep_sorted
        if bug == "changes_input":
            logits[~keep] = INF
            return logits
        return logits.masked_fill(~keep, INF)

    return keep_top_p


_keep_top_k, _keep_top_p = keep_top_k_learner(None), keep_top_p_learner(None)


def choose_learner(bug: str | None) -> Callable:
    def choose(logits, t=1.0, k=None, p=None, generator=None):  # noqa: ANN001, ANN202
        if (t == 0 and bug != "greedy_missing") or bug == "always_greedy":
            return int(torch.argmax(logits))
        if bug == "filters_before_temperature":
            logits = _keep_top_k(logits, k) if k is not None else logits
            logits = _keep_top_p(logits, p) if p is not None else logits
            logits = logits / t
        else:
            logits = logits * t if bug == "times_t" else logits / t
            logits = _keep_top_k(logits, k) if k is not None else logits
            logits = _keep_top_p(logits, p) if p is not None else logits
        probs = logits if bug == "logits_to_multinomial" else F.softmax(logits, dim=-1)
        return int(torch.multinomial(probs, 1, generator=None if bug == "generator_ignored" else generator))

    return choose


_choose = choose_learner(None)


def generate_learner(bug: str | None) -> Callable:
    def generate(model, idx, max_new_tokens, t=1.0, k=None, p=None, generator=None):  # noqa: ANN001, ANN202
        start, block = idx.size(1), model.config.block_size
        for _ in range(max_new_tokens):
            if bug == "not_cropped":
                context = idx
            elif bug == "cropped_from_the_start":
                context = idx[:, :block]
            elif bug == "context_one_short":
                context = idx[:, -(block - 1) :]
            else:
                context = idx[:, -block:]
            with torch.no_grad():
                logits = model(context)[0]
            next_id = _choose(logits[0, 0] if bug == "first_position" else logits[0, -1], t, k, p, generator)
            idx = torch.cat((idx, torch.tensor([[next_id]])), dim=1)
        return idx[:, start:] if bug == "only_new_tokens" else idx

    return generate


def attend_one_learner(bug: str | None) -> Callable:
    def attend_one(layer, x_new, cache):  # noqa: ANN001, ANN202
        C = x_new.size(-1)
        nh = layer.num_heads
        hs = C // nh
        q, k, v = layer.c_attn(x_new).split(C, dim=2)
        q, k, v = (t.view(1, 1, nh, hs).transpose(1, 2) for t in (q, k, v))
        if bug == "not_cached":
            keys, values = k, v
        elif bug == "appended_after":
            keys, values = cache["k"], cache["v"]
        else:
            cache["k"] = torch.cat((cache["k"], k), dim=2)
            cache["v"] = torch.cat((cache["v"], v), dim=2)
            keys, values = cache["k"], cache["v"]
        scores = q @ keys.transpose(-2, -1) / (1 if bug == "no_scale" else math.sqrt(hs))
        if bug == "causal_mask":
            P = keys.size(2)
            scores = scores.masked_fill(torch.tril(torch.ones(1, P)) == 0, INF)
        y = F.softmax(scores, dim=-1) @ values
        if bug == "appended_after":
            cache["k"] = torch.cat((cache["k"], k), dim=2)
            cache["v"] = torch.cat((cache["v"], v), dim=2)
        return layer.c_proj(y.transpose(1, 2).reshape(1, 1, C))

    return attend_one


# --- 07 the modern GPT -------------------------------------------------------------------------------------------


def rope_learner(bug: str | None) -> Callable:
    def rope(x, first_position=0, base=10000.0):  # noqa: ANN001, ANN202
        B, nh, T, hs = x.shape
        steps = torch.arange(hs // 2) if bug == "frequency_exponent" else torch.arange(0, hs, 2)
        theta = base ** (-steps.float() / hs)
        first = {"ignores_first_position": 0, "positions_from_one": first_position + 1}.get(bug, first_position)
        angles = torch.outer(torch.arange(first, first + T).float(), theta)
        if bug == "rotates_backwards":
            angles = -angles
        if bug == "halves":
            x1, x2 = x[..., : hs // 2], x[..., hs // 2 :]
            return torch.cat((x1 * angles.cos() - x2 * angles.sin(), x1 * angles.sin() + x2 * angles.cos()), dim=-1)
        pairs = torch.view_as_complex(x.reshape(B, nh, T, hs // 2, 2).contiguous())
        rotated = pairs * torch.polar(torch.ones_like(angles), angles)
        return torch.view_as_real(rotated).flatten(-2)

    return rope


def rms_norm_learner(bug: str | None) -> Callable:
    def rms_norm(x, weight, eps=1e-5):  # noqa: ANN001, ANN202
        if bug == "l2_norm":
            return x / x.norm(dim=-1, keepdim=True) * weight
        if bug == "centred":
            x = x - x.mean(dim=-1, keepdim=True)
        square = x.pow(2).mean(dim=0 if bug == "wrong_dim" else -1, keepdim=True)
        if bug == "eps_outside_sqrt":
            return x / (square.sqrt() + eps) * weight
        if bug == "no_sqrt":
            return x / (square + eps) * weight
        return x / torch.sqrt(square + eps) * weight

    return rms_norm


def ns_step_learner(bug: str | None) -> Callable:
    def newton_schulz_step(x, a, b, c):  # noqa: ANN001, ANN202
        A = x.T @ x if bug == "gram_side" else x @ x.T
        if bug == "elementwise_square":
            A2 = A**2
        elif bug == "gram_once":
            A2 = A
        else:
            A2 = A @ A
        if bug == "coefficients_swapped":
            a, c = c, a
        poly = b * A + c * A2
        return poly @ x if bug == "no_linear_term" else a * x + poly @ x

    return newton_schulz_step


def newton_schulz_learner(bug: str | None) -> Callable:
    def newton_schulz(g, steps=5):  # noqa: ANN001, ANN202
        a, b, c = 3.4445, -4.775, 2.0315
        tall = g.size(0) > g.size(1)
        x = g.T if tall else g
        if bug != "no_normalise":
            x = x / x.norm()
        for _ in range(steps + 1 if bug == "steps_off_by_one" else steps):
            gram = x @ x.T
            x = a * x + (b * gram + c * gram @ gram) @ x
        return x.T if tall and bug != "not_transposed_back" else x

    return newton_schulz


# --- 08 fine-tuning ----------------------------------------------------------------------------------------------


def collate_learner(bug: str | None) -> Callable:
    def collate(rendered, pad_id):  # noqa: ANN001, ANN202
        T = max(len(ids) for ids, _ in rendered) - 1
        xs, ys = [], []
        for ids, mask in rendered:
            pad = T - len(ids) + 1
            learned = mask[:-1] if bug == "mask_not_shifted" else mask[1:]
            if bug == "no_mask":
                y = ids[1:]
            elif bug == "mask_inverted":
                y = [-1 if m else t for t, m in zip(ids[1:], learned)]
            else:
                y = [t if m else -1 for t, m in zip(ids[1:], learned)]
            y_pad = [pad_id if bug == "pads_targets" else -1] * pad
            if bug == "left_padding":
                xs.append([pad_id] * pad + ids[:-1])
                ys.append(y_pad + y)
            else:
                xs.append(ids[:-1] + [pad_id] * pad)
                ys.append(y + y_pad)
        return torch.tensor(xs), torch.tensor(ys)

    return collate


# --- the tests ----------------------------------------------------------------------------------------------------

LEARNERS: dict[str, Callable[[str | None], Any]] = {
    "merge": merge_learner,
    "bpe_step": bpe_step_learner,
    "bpe_encode": bpe_encode_learner,
    "bigram_table": bigram_table_learner,
    "bigram_loss": bigram_loss_learner,
    "attention_weights": attention_weights_learner,
    "Head": head_learner,
    "MultiHead": multi_head_learner,
    "multi_head_attention": mha_learner,
    "layer_norm": layer_norm_learner,
    "mlp": mlp_learner,
    "block": block_learner,
    "gpt_forward": gpt_forward_learner,
    "get_batch": get_batch_learner,
    "lr_schedule": lr_schedule_learner,
    "estimate_loss": estimate_loss_learner,
    "train_step": train_step_learner,
    "adamw_step": adamw_step_learner,
    "accumulate_gradients": accumulate_learner,
    "keep_top_k": keep_top_k_learner,
    "keep_top_p": keep_top_p_learner,
    "choose": choose_learner,
    "generate": generate_learner,
    "attend_one": attend_one_learner,
    "rope": rope_learner,
    "rms_norm": rms_norm_learner,
    "newton_schulz_step": ns_step_learner,
    "newton_schulz": newton_schulz_learner,
    "collate": collate_learner,
}

PIECES = check.pieces()
MISTAKES = [(name, m.key) for name, piece in PIECES.items() for m in piece.mistakes]


def _check(name: str) -> Callable:
    return getattr(check, {"Head": "head", "MultiHead": "multi_head"}.get(name, name))


def test_every_piece_and_every_mistake_has_a_learner() -> None:
    assert list(LEARNERS) == list(PIECES)
    assert len(MISTAKES) >= 60


@pytest.mark.parametrize("name", list(LEARNERS))
def test_the_learners_right_piece_passes(name: str) -> None:
    result = _check(name)(LEARNERS[name](None), show=False)
    assert result.passed, result.line


@pytest.mark.parametrize(("name", "bug"), MISTAKES, ids=[f"{n}-{b}" for n, b in MISTAKES])
def test_each_mistake_gets_its_hint(name: str, bug: str) -> None:
    result = _check(name)(LEARNERS[name](bug), show=False)
    hint = next(m.en for m in PIECES[name].mistakes if m.key == bug)
    assert (result.status, result.mistake) == ("mistake", bug), result.line
    assert result.line == f"✗ {name}: {hint}" and result.hint == hint and not result.passed


@pytest.mark.parametrize(
    ("name", "key", "index"),
    [(n, m.key, i) for n, p in PIECES.items() for m in p.mistakes for i in range(len(m.variants))],
)
def test_each_catalogued_variant_is_told_apart_from_the_mistakes_before_it(name: str, key: str, index: int) -> None:
    piece = PIECES[name]
    variant = next(m for m in piece.mistakes if m.key == key).variants[index]
    assert run_check(piece, variant, show=False, record=False).mistake == key


def test_a_head_with_biases_is_not_judged_on_them() -> None:
    assert check.head(head_learner(None, bias=True), show=False).passed


def test_a_mistake_in_japanese(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMLAB_LANG", "ja")
    result = check.keep_top_p(keep_top_p_learner("drops_the_crossing_token"), show=False)
    hint = next(m.ja for m in PIECES["keep_top_p"].mistakes if m.key == "drops_the_crossing_token")
    assert result.line == f"✗ keep_top_p: {hint}"
