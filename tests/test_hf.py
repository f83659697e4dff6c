"""llmlab.hf: weights move between llmlab's GPT and transformers' GPT2LMHeadModel (random init, no download)."""

from __future__ import annotations

import pytest
import torch

from llmlab.config import ModelConfig
from llmlab.model import GPT

transformers = pytest.importorskip("transformers")
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from llmlab.hf import from_hf, to_hf  # noqa: E402

VOCAB, POSITIONS = 64, 32


def hf_config(**changes: object) -> GPT2Config:
    base = dict(
        vocab_size=VOCAB,
        n_positions=POSITIONS,
        n_embd=32,
        n_layer=2,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        initializer_range=0.2,  # larger than GPT-2's 0.02 so logits are decisive: greedy has no near-ties
        bos_token_id=VOCAB - 1,
        eos_token_id=VOCAB - 1,
        attn_implementation="eager",
    )
    base.update(changes)
    return GPT2Config(**base)


def random_hf_model(seed: int = 0, **changes: object) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(hf_config(**changes)).eval()


def random_gpt(seed: int = 0, bias: bool = True) -> GPT:
    torch.manual_seed(seed)
    gpt = GPT(ModelConfig(vocab_size=VOCAB, block_size=POSITIONS, embedding_size=32, num_heads=4, depth=2, bias=bias))
    with torch.no_grad():  # decisive logits, as above; LayerNorm gains get a random spread too
        for p in gpt.parameters():
            p.add_(torch.randn_like(p) * (0.3 if p.dim() >= 2 else 0.1))
    return gpt.eval()


def hf_greedy(hf_model: GPT2LMHeadModel, idx: torch.Tensor, steps: int) -> torch.Tensor:
    """transformers' own greedy decoding (with its own KV cache), never stopping early at EOS."""
    hf_model.generation_config.eos_token_id = None
    return hf_model.generate(
        idx,
        attention_mask=torch.ones_like(idx),
        max_new_tokens=steps,
        do_sample=False,
        pad_token_id=0,
    )


def test_hf_to_llmlab_logits_and_greedy_agree() -> None:
    hf_model = random_hf_model()
    gpt = from_hf(hf_model)
    assert gpt.config == ModelConfig(vocab_size=VOCAB, block_size=POSITIONS, embedding_size=32, num_heads=4, depth=2)
    assert gpt.lm_head.weight is gpt.transformer.wte.weight
    idx = torch.randint(0, VOCAB, (3, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf_model(idx).logits
        logits, _ = gpt(idx)
    assert torch.allclose(logits, expected, atol=1e-5, rtol=0)
    prompt = idx[:, :6]
    ours = gpt.generate(prompt, 24, temperature=0)
    theirs = hf_greedy(hf_model, prompt, 24)
    assert torch.equal(ours, theirs)
    assert len(ours[:, 6:].unique()) > 3  # a varied continuation, not one token repeated


@pytest.mark.parametrize("bias, attn_implementation", [(True, None), (False, "eager")])
def test_llmlab_to_hf_logits_and_greedy_agree(bias: bool, attn_implementation: str | None) -> None:
    gpt = random_gpt(bias=bias)
    hf_model = to_hf(gpt, attn_implementation=attn_implementation)
    assert isinstance(hf_model, GPT2LMHeadModel)
    if attn_implementation is not None:
        assert hf_model.config._attn_implementation == attn_implementation
    assert hf_model.lm_head.weight.data_ptr() == hf_model.transformer.wte.weight.data_ptr()
    idx = torch.randint(0, VOCAB, (3, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, _ = gpt(idx)
        logits = hf_model(idx).logits
    assert torch.allclose(logits, expected, atol=1e-5, rtol=0)
    prompt = idx[:, :6]
    ours = gpt.generate(prompt, 24, temperature=0)
    theirs = hf_greedy(hf_model, prompt, 24)
    assert torch.equal(ours, theirs)
    assert len(ours[:, 6:].unique()) > 3


def test_round_trip_is_exact_and_via_a_saved_directory(tmp_path) -> None:
    gpt = random_gpt(seed=3)
    hf_model = to_hf(gpt)
    hf_model.save_pretrained(tmp_path / "tiny-gpt2")
    back = from_hf(tmp_path / "tiny-gpt2")
    for name, tensor in gpt.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name


def test_conv1d_weights_are_transposed() -> None:
    hf_model = random_hf_model(seed=4)
    gpt = from_hf(hf_model)
    hf_w = hf_model.transformer.h[1].attn.c_attn.weight  # Conv1D: (in, out) = (32, 96)
    ours = gpt.transformer.h[1].attn.c_attn.weight  # nn.Linear: (out, in) = (96, 32)
    assert hf_w.shape == (32, 96) and ours.shape == (96, 32)
    assert torch.equal(ours, hf_w.t())


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(activation_function="relu"), "activation_function"),
        (dict(n_inner=64), "n_inner"),
        (dict(scale_attn_by_inverse_layer_idx=True), "scaling"),
    ],
)
def test_unsupported_hf_variants_are_refused(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        from_hf(random_hf_model(**change))


def test_from_hf_rejects_other_objects() -> None:
    with pytest.raises(ValueError, match="GPT2LMHeadModel"):
        from_hf(42)


def test_padded_vocabulary_exports_without_its_padding() -> None:
    """vocab_multiple pads llmlab's table; GPT2LMHeadModel gets exactly vocab_size rows and the same logits."""
    torch.manual_seed(1)
    config = ModelConfig(
        vocab_size=VOCAB - 3, block_size=POSITIONS, embedding_size=32, num_heads=4, depth=2, vocab_multiple=16
    )
    padded = GPT(config).eval()
    with torch.no_grad():
        for p in padded.parameters():
            p.add_(torch.randn_like(p) * (0.3 if p.dim() >= 2 else 0.1))
    assert padded.transformer.wte.weight.shape[0] == VOCAB  # 61 -> 64 rows
    hf_model = to_hf(padded)
    assert hf_model.config.vocab_size == VOCAB - 3
    assert hf_model.transformer.wte.weight.shape == (VOCAB - 3, 32)
    idx = torch.randint(0, VOCAB - 3, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(hf_model(idx).logits, padded(idx)[0], rtol=1e-5, atol=1e-5)


def test_load_gpt2_answers_offline_within_seconds_with_the_reason(monkeypatch, tmp_path) -> None:
    """No weights in the cache and no hub: (None, why) quickly, never a hang or a traceback."""
    import time

    from llmlab.hf import load_gpt2

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    model, why = load_gpt2(download=False)
    assert model is None and why == "gpt2 is not in the local Hugging Face cache, and this run downloads nothing"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    model, why = load_gpt2()
    assert model is None and "HF_HUB_OFFLINE" in why and time.perf_counter() - started < 30
