"""llmlab.model: the GPT against independent computations (small configs, CPU, fast)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from llmlab.config import Config, ModelConfig
from llmlab.model import GPT, KVCache
from llmlab.tokenizers import CharTokenizer


def small_config(**changes: object) -> ModelConfig:
    base = dict(vocab_size=37, block_size=16, embedding_size=32, num_heads=4, depth=2, dropout=0.0, bias=True)
    base.update(changes)
    return ModelConfig(**base)  # type: ignore[arg-type]


def make_model(seed: int = 0, std: float | None = None, **changes: object) -> GPT:
    """A small GPT; ``std`` re-draws the weight matrices with a larger spread, so logits are decisive (no argmax
    near-ties) and greedy output varies instead of repeating one token."""
    torch.manual_seed(seed)
    model = GPT(small_config(**changes))
    if std is not None:
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() >= 2:
                    p.normal_(0.0, std)
    return model.eval()


def reference_greedy(model: GPT, idx: torch.Tensor, steps: int, window: int) -> torch.Tensor:
    """Greedy decoding the slow, obvious way: full forward on the last ``window`` tokens every step."""
    with torch.no_grad():
        for _ in range(steps):
            logits, _ = model(idx[:, -window:])
            idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


# ---------------------------------------------------------------------------------------------------
# Forward pass


def test_forward_shapes_and_no_loss_without_targets() -> None:
    model = make_model()
    idx = torch.randint(0, 37, (3, 16))
    logits, loss = model(idx)
    assert logits.shape == (3, 16, 37)
    assert loss is None


def test_sdpa_path_equals_explicit_path() -> None:
    model = make_model(std=0.1)
    idx = torch.randint(0, 37, (3, 16))
    targets = torch.randint(0, 37, (3, 16))
    model.use_sdpa = True
    fast, loss_fast = model(idx, targets)
    model.use_sdpa = False
    assert not model.transformer.h[0].attn.use_sdpa
    slow, loss_slow = model(idx, targets)
    assert torch.allclose(fast, slow, atol=1e-5, rtol=0)
    assert torch.allclose(loss_fast, loss_slow, atol=1e-6)
    # and the constructor flag selects the path too
    other = GPT(small_config(), use_sdpa=False)
    assert other.use_sdpa is False


def test_explicit_attention_weights_are_causal_distributions() -> None:
    model = make_model()
    model.use_sdpa = False
    attn = model.transformer.h[0].attn
    attn.store_attention = True
    model(torch.randint(0, 37, (2, 10)))
    weights = attn.attention
    assert weights is not None and weights.shape == (2, 4, 10, 10)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4, 10), atol=1e-6)
    assert (weights.triu(diagonal=1) == 0).all()


@pytest.mark.parametrize("use_sdpa", [True, False])
def test_causality_future_tokens_do_not_change_past_logits(use_sdpa: bool) -> None:
    model = make_model(std=0.1)
    model.use_sdpa = use_sdpa
    idx = torch.randint(0, 37, (2, 12))
    changed = idx.clone()
    changed[:, 7] = (idx[:, 7] + 1) % 37
    a, _ = model(idx)
    b, _ = model(changed)
    assert torch.equal(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_loss_equals_cross_entropy_computed_independently() -> None:
    model = make_model(std=0.1)
    idx = torch.randint(0, 37, (2, 9))
    targets = torch.randint(0, 37, (2, 9))
    targets[0, 3] = -1  # ignored position
    targets[1, 0] = -1
    logits, loss = model(idx, targets)
    log_probs = logits.double().log_softmax(-1)
    terms = [-log_probs[b, t, targets[b, t]] for b in range(2) for t in range(9) if targets[b, t] != -1]
    expected = torch.stack(terms).mean()
    assert len(terms) == 16
    assert loss is not None and abs(loss.item() - expected.item()) < 1e-5


def test_loss_accepts_non_contiguous_targets() -> None:
    # A window sliced out of a wider tensor (e.g. a column slice of a batch) is not contiguous.
    model = make_model()
    wide = torch.randint(0, 37, (2, 20))
    idx, targets = wide[:, :9], wide[:, 1:10]
    assert not targets.is_contiguous()
    _, loss = model(idx, targets)
    _, loss_contiguous = model(idx, targets.contiguous())
    assert loss is not None and loss_contiguous is not None
    assert torch.equal(loss, loss_contiguous)


def test_forward_rejects_too_long_or_badly_shaped_input() -> None:
    model = make_model()
    with pytest.raises(ValueError, match="block_size=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        model(torch.zeros(17, dtype=torch.long))
    with pytest.raises(ValueError, match="targets shape"):
        model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 5, dtype=torch.long))


# ---------------------------------------------------------------------------------------------------
# Construction, initialisation, bookkeeping


def test_accepts_config_and_dict() -> None:
    cfg = small_config()
    assert GPT(Config(model=cfg)).config == cfg
    assert GPT(dict(vars(cfg))).config == cfg
    with pytest.raises(ValueError, match="max_lr"):
        GPT({**vars(cfg), "max_lr": 1e-3})
    with pytest.raises(ValueError, match="ModelConfig"):
        GPT("cpu_small")  # type: ignore[arg-type]


def test_weight_tying_shares_one_tensor() -> None:
    model = make_model()
    assert model.lm_head.weight is model.transformer.wte.weight
    sd = model.state_dict()
    assert sd["lm_head.weight"].data_ptr() == sd["transformer.wte.weight"].data_ptr()
    # The tied matrix's gradient is the sum of its two uses: as the embedding and as the output head.
    idx, targets = torch.randint(0, 37, (2, 5)), torch.randint(0, 37, (2, 5))
    untied = copy.deepcopy(model)
    untied.lm_head.weight = torch.nn.Parameter(untied.transformer.wte.weight.detach().clone())
    model(idx, targets)[1].backward()
    untied(idx, targets)[1].backward()
    head, emb = untied.lm_head.weight.grad, untied.transformer.wte.weight.grad
    assert head.abs().sum() > 0 and emb.abs().sum() > 0
    torch.testing.assert_close(model.lm_head.weight.grad, head + emb)


def test_gpt2_init_scales_residual_projections() -> None:
    torch.manual_seed(0)
    depth = 4
    model = GPT(ModelConfig(vocab_size=512, block_size=64, embedding_size=256, num_heads=4, depth=depth))
    expected_residual = 0.02 / math.sqrt(2 * depth)
    for block in model.transformer.h:
        for proj in (block.attn.c_proj.weight, block.mlp.c_proj.weight):
            assert abs(proj.std().item() - expected_residual) / expected_residual < 0.03
            assert abs(proj.mean().item()) < 3e-4
        for weight in (block.attn.c_attn.weight, block.mlp.c_fc.weight):
            assert abs(weight.std().item() - 0.02) / 0.02 < 0.03
        assert (block.attn.c_attn.bias == 0).all() and (block.ln_1.weight == 1).all() and (block.ln_1.bias == 0).all()
    assert abs(model.transformer.wte.weight.std().item() - 0.02) / 0.02 < 0.03
    assert abs(model.transformer.wpe.weight.std().item() - 0.02) / 0.02 < 0.03


@pytest.mark.parametrize("bias", [True, False])
def test_parameter_count_matches_formula(bias: bool) -> None:
    V, T, C, L = 37, 16, 32, 3
    model = GPT(ModelConfig(vocab_size=V, block_size=T, embedding_size=C, num_heads=4, depth=L, bias=bias))
    b = 1 if bias else 0
    per_block = (
        2 * (C + b * C)  # ln_1, ln_2
        + C * 3 * C
        + b * 3 * C  # c_attn
        + C * C
        + b * C  # attn.c_proj
        + C * 4 * C
        + b * 4 * C  # mlp.c_fc
        + 4 * C * C
        + b * C  # mlp.c_proj
    )
    total = V * C + T * C + L * per_block + (C + b * C)  # wte (tied lm_head), wpe, blocks, ln_f
    assert model.num_parameters() == total
    assert model.num_parameters(non_embedding=True) == total - T * C


def test_optimizer_decays_only_matrices() -> None:
    model = make_model()
    opt = model.configure_optimizer(weight_decay=0.1, lr=1e-3, betas=(0.9, 0.95), device_type="cpu")
    assert isinstance(opt, torch.optim.AdamW)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    in_groups = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(in_groups) == sorted(id(p) for p in model.parameters())  # every parameter exactly once
    # 2 embeddings + 4 matrices per block; 4 biases + 4 LayerNorm tensors per block + final LayerNorm (2)
    assert len(decay["params"]) == 2 + 4 * 2 and len(no_decay["params"]) == 8 * 2 + 2
    assert opt.param_groups[0]["lr"] == 1e-3 and opt.param_groups[0]["betas"] == (0.9, 0.95)
    assert all(g["fused"] for g in opt.param_groups)  # one fused kernel call, not a per-tensor loop


def test_flops_and_mfu_estimates() -> None:
    model = make_model()
    n = model.num_parameters(non_embedding=True)
    assert model.estimate_flops_per_token() == 6 * n + 12 * 2 * 32 * 16
    assert model.estimate_flops_per_token(seq_len=8) == 6 * n + 12 * 2 * 32 * 8
    assert math.isclose(model.estimate_mfu(1000.0, 1e12), model.estimate_flops_per_token() * 1000.0 / 1e12)
    with pytest.raises(ValueError, match="peak_flops"):
        model.estimate_mfu(1000.0, 0)


# ---------------------------------------------------------------------------------------------------
# KV cache and generation


@pytest.mark.parametrize("use_sdpa", [True, False])
def test_kv_cache_forward_matches_full_forward(use_sdpa: bool) -> None:
    model = make_model(std=0.1)
    model.use_sdpa = use_sdpa
    idx = torch.randint(0, 37, (2, 14))
    full, _ = model(idx)
    cache = KVCache(model.config, batch_size=2)
    pieces = []
    for start, end in [(0, 5), (5, 6), (6, 10), (10, 14)]:  # a prefill, one token, then chunks (masked path)
        logits, _ = model(idx[:, start:end], kv_cache=cache)
        pieces.append(logits)
    assert cache.length == 14
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="exceeds block_size"):
        model(idx[:, :3], kv_cache=cache)


@pytest.mark.parametrize("use_sdpa", [True, False])
def test_greedy_with_cache_equals_without_and_runs_past_block_size(use_sdpa: bool) -> None:
    model = make_model(std=0.5)
    model.use_sdpa = use_sdpa
    prompt = torch.randint(0, 37, (2, 5))
    steps = 30  # 5 + 30 tokens > block_size 16: the window slides
    cached = model.generate(prompt, steps, temperature=0, use_cache=True)
    uncached = model.generate(prompt, steps, temperature=0, use_cache=False)
    reference = reference_greedy(model, prompt, steps, window=16)
    assert cached.shape == (2, 5 + steps)
    assert torch.equal(cached[:, :5], prompt)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, reference)
    assert len(cached[:, 5:].unique()) > 3  # the continuation is not one token repeated


def test_sampling_with_cache_equals_without_for_the_same_seed() -> None:
    model = make_model(std=0.5)
    prompt = torch.randint(0, 37, (3, 4))
    kwargs = dict(temperature=0.9, top_k=10, top_p=0.9)
    a = model.generate(prompt, 25, use_cache=True, generator=torch.Generator().manual_seed(7), **kwargs)
    b = model.generate(prompt, 25, use_cache=False, generator=torch.Generator().manual_seed(7), **kwargs)
    c = model.generate(prompt, 25, use_cache=True, generator=torch.Generator().manual_seed(8), **kwargs)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_generate_crops_context_to_block_size_argument() -> None:
    model = make_model(std=0.5)
    prompt = torch.randint(0, 37, (1, 10))  # longer than the window of 4
    out = model.generate(prompt, 12, temperature=0, block_size=4)
    assert torch.equal(out, reference_greedy(model, prompt, 12, window=4))
    assert not torch.equal(out, reference_greedy(model, prompt, 12, window=16))  # the window did matter
    with pytest.raises(ValueError, match="block_size=17"):
        model.generate(prompt, 1, block_size=17)


def test_generate_restores_training_mode_and_validates() -> None:
    model = make_model(dropout=0.5).train()
    model.generate(torch.zeros(1, 1, dtype=torch.long), 3)
    assert model.training
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(torch.zeros(1, 1, dtype=torch.long), -1)
    with pytest.raises(ValueError, match="eot_token"):
        model.generate(torch.zeros(1, 0, dtype=torch.long), 3)


def test_generate_sentence_begins_with_prompt() -> None:
    tok = CharTokenizer("abcdefghijklmnopqrstuvwxyz ,.'")
    model = make_model(std=0.5, vocab_size=tok.vocab_size)
    text = model.generate_sentence("once upon a time", 16, 20, tok, "cpu", temperature=0)
    assert text.startswith("once upon a time")
    assert len(text) > len("once upon a time")
    # exactly the greedy continuation of the encoded prompt
    ids = torch.tensor([tok.encode("once upon a time")])
    expected = reference_greedy(model, ids, 20, window=16)[0, ids.size(1) :].tolist()
    assert text == "once upon a time" + tok.decode(expected)
    # seeded sampling through the manual's call is reproducible
    kw = dict(temperature=0.8, top_k=5, top_p=0.9)
    s1 = model.generate_sentence("to be", 16, 10, tok, "cpu", generator=torch.Generator().manual_seed(1), **kw)
    s2 = model.generate_sentence("to be", 16, 10, tok, "cpu", generator=torch.Generator().manual_seed(1), **kw)
    assert s1 == s2 and s1.startswith("to be")


def test_generate_sentence_empty_prompt_starts_from_eot() -> None:
    tok = CharTokenizer("abcdefgh ")
    model = make_model(std=0.5, vocab_size=tok.vocab_size)
    text = model.generate_sentence("", 16, 12, tok, "cpu", temperature=0)
    expected = reference_greedy(model, torch.tensor([[tok.eot_token]]), 12, window=16)[0, 1:].tolist()
    assert text == tok.decode(expected)  # the EOT seed itself is not part of the text


def test_resize_token_embeddings_keeps_old_rows_ties_and_starts_new_rows_at_the_mean() -> None:
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=20, block_size=8, embedding_size=16, num_heads=2, depth=1))
    idx = torch.randint(0, 20, (2, 8))
    before = model(idx)[0]
    old = model.transformer.wte.weight.detach().clone()
    model.resize_token_embeddings(23)
    assert model.config.vocab_size == 23 and model.lm_head.weight is model.transformer.wte.weight
    torch.testing.assert_close(model.transformer.wte.weight[:20], old)
    torch.testing.assert_close(model.transformer.wte.weight[20:], old.mean(0).expand(3, -1))
    after = model(idx)[0]
    torch.testing.assert_close(after[..., :20], before)  # old tokens' logits are unchanged
    assert {k for k in model.state_dict()} >= {"lm_head.weight", "transformer.wte.weight"}
    with pytest.raises(ValueError, match="can only grow"):
        model.resize_token_embeddings(10)


# ---------------------------------------------------------------------------------------------------
# A padded vocabulary (vocab_multiple): faster matrix products on GPUs, invisible everywhere else


def padded_twin(model: GPT, multiple: int = 16) -> GPT:
    """``model`` with its vocabulary padded to ``multiple``: the same real weights, random padding rows."""
    twin = GPT(small_config(vocab_multiple=multiple, **_model_changes(model)))
    state = twin.state_dict()
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if name in ("transformer.wte.weight", "lm_head.weight"):
                state[name][: value.size(0)] = value
                state[name][value.size(0) :] = 5.0 * torch.randn_like(state[name][value.size(0) :])  # big: visible
            else:
                state[name].copy_(value)
    twin.load_state_dict(state)
    return twin.eval()


def _model_changes(model: GPT) -> dict[str, object]:
    base = small_config()
    return {
        k: getattr(model.config, k)
        for k in ("logit_softcap", "tie_embeddings")
        if getattr(model.config, k) != getattr(base, k)
    }


def test_padded_vocabulary_sizes_and_validation() -> None:
    assert small_config(vocab_multiple=16).padded_vocab_size == 48  # 37 -> 48
    assert small_config(vocab_multiple=1).padded_vocab_size == 37
    assert ModelConfig(vocab_size=50257, vocab_multiple=64).padded_vocab_size == 50304  # nanoGPT's size
    model = GPT(small_config(vocab_multiple=16))
    assert model.transformer.wte.weight.shape == (48, 32)
    assert model.lm_head.weight is model.transformer.wte.weight
    with pytest.raises(ValueError, match="vocab_multiple"):
        small_config(vocab_multiple=0)


@pytest.mark.parametrize("softcap", [0.0, 15.0])
def test_padded_vocabulary_computes_the_same_logits_loss_and_gradients(softcap: float) -> None:
    model = make_model(std=0.1, logit_softcap=softcap)
    twin = padded_twin(model)
    idx, targets = torch.randint(0, 37, (3, 16)), torch.randint(0, 37, (3, 16))
    targets[0, :4] = -1
    logits, loss = model(idx, targets)
    logits_p, loss_p = twin(idx, targets)
    assert logits_p.shape == (3, 16, 37)  # the padding never reaches the logits
    torch.testing.assert_close(logits_p, logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(loss_p, loss, rtol=0, atol=1e-6)
    # The trainer's path (return_logits=False: on the CPU with a cap, the chunked loss) gives the same loss too.
    _, loss_chunked = twin.train()(idx, targets, return_logits=False)
    torch.testing.assert_close(loss_chunked, loss, rtol=0, atol=1e-5)
    loss.backward()
    loss_chunked.backward()
    grad, grad_p = model.transformer.wte.weight.grad, twin.transformer.wte.weight.grad
    torch.testing.assert_close(grad_p[:37], grad, rtol=0, atol=1e-6)
    assert torch.count_nonzero(grad_p[37:]) == 0  # padding rows get no gradient: they stay what they were


def test_padded_vocabulary_samples_only_real_tokens_and_counts_real_flops() -> None:
    model = make_model(std=0.1)
    twin = padded_twin(model)
    with torch.no_grad():
        twin.transformer.wte.weight[37:] = 100.0  # padding rows that would win every argmax if they were read
    idx = torch.randint(0, 37, (2, 3))
    torch.testing.assert_close(twin.generate(idx, 12, temperature=0), model.generate(idx, 12, temperature=0))
    sampled = twin.generate(idx, 40, generator=torch.Generator().manual_seed(0))
    assert int(sampled.max()) < 37
    assert twin.estimate_flops_per_token() == model.estimate_flops_per_token()


def test_resize_token_embeddings_with_padding_keeps_the_padding_out() -> None:
    model = padded_twin(make_model(std=0.1))
    old_rows = model.transformer.wte.weight[:37].detach().clone()
    model.resize_token_embeddings(50)  # 50 -> 64 rows at multiple 16
    assert model.config.vocab_size == 50 and model.transformer.wte.weight.shape == (64, 32)
    assert model.lm_head.weight is model.transformer.wte.weight
    torch.testing.assert_close(model.transformer.wte.weight[:37], old_rows)
    torch.testing.assert_close(model.transformer.wte.weight[37:50], old_rows.mean(0).expand(13, -1))
    logits, _ = model(torch.tensor([[1, 2, 49]]))
    assert logits.shape == (1, 3, 50)


def test_optimizer_for_reads_every_knob_from_the_train_config() -> None:
    from llmlab.config import TrainConfig

    model = make_model()
    tc = TrainConfig(weight_decay=0.05, max_lr=2e-3, beta1=0.8, beta2=0.9, embedding_lr_scale=10.0)
    opt = model.optimizer_for(tc)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0, 0.05]  # matrices, gains, embeddings
    assert [g["lr"] for g in opt.param_groups] == [2e-3, 2e-3, 2e-2] and opt.param_groups[0]["betas"] == (0.8, 0.9)
    muon = model.optimizer_for(TrainConfig(optimizer="muon", muon_lr=0.03))
    assert type(muon).__name__ == "MuonWithAdamW"
