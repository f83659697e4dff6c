"""llmlab.hf.to_hf for every exportable layout: GPT-2's variants, Llama, Qwen3 (random weights, no download)."""

from __future__ import annotations

import pytest
import torch

from llmlab.config import ModelConfig
from llmlab.model import GPT

transformers = pytest.importorskip("transformers")

from llmlab.hf import ROPE_THETA, _rotate_half_order, hf_architecture, to_hf  # noqa: E402

VOCAB, POSITIONS = 61, 32
LLAMA = dict(position="rope", norm="rmsnorm", mlp="swiglu", bias=False)
QWEN3 = dict(LLAMA, qk_norm=True)


def random_gpt(seed: int = 0, **options: object) -> GPT:
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=VOCAB, block_size=POSITIONS, embedding_size=32, num_heads=4, depth=2, **options)
    gpt = GPT(config)
    with torch.no_grad():  # decisive logits (greedy has no near-ties); norm gains get a random spread too
        for p in gpt.parameters():
            p.add_(torch.randn_like(p) * (0.3 if p.dim() >= 2 else 0.1))
    return gpt.eval()


def hf_greedy(hf_model: transformers.PreTrainedModel, idx: torch.Tensor, steps: int) -> torch.Tensor:
    """transformers' own greedy decoding (its own KV cache), never stopping early at EOS."""
    hf_model.generation_config.eos_token_id = None
    return hf_model.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=steps, do_sample=False)


CASES = [
    ("GPT2LMHeadModel", dict(tie_embeddings=False, activation="gelu_exact", mlp_hidden=48)),
    ("GPT2LMHeadModel", dict(activation="relu2", bias=False, vocab_multiple=16)),
    ("LlamaForCausalLM", LLAMA),
    ("LlamaForCausalLM", dict(LLAMA, tie_embeddings=False, mlp_hidden=80, zero_init=True, vocab_multiple=16)),
    ("Qwen3ForCausalLM", QWEN3),
    ("Qwen3ForCausalLM", dict(QWEN3, tie_embeddings=False)),
]


@pytest.mark.parametrize("architecture, options", CASES)
def test_logits_and_greedy_agree(architecture: str, options: dict) -> None:
    gpt = random_gpt(**options)
    hf_model = to_hf(gpt, attn_implementation="eager")
    assert type(hf_model).__name__ == architecture == hf_architecture(gpt.config)
    assert hf_model.config.vocab_size == VOCAB  # vocab_multiple's padding rows stay behind
    tied = hf_model.lm_head.weight.data_ptr() == hf_model.get_input_embeddings().weight.data_ptr()
    assert tied == gpt.config.tie_embeddings
    idx = torch.randint(0, VOCAB, (3, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, _ = gpt(idx)
        torch.testing.assert_close(hf_model(idx).logits, expected, atol=1e-5, rtol=0)
    prompt = idx[:, :6]
    ours = gpt.generate(prompt, 24, temperature=0)
    assert torch.equal(ours, hf_greedy(hf_model, prompt, 24))
    assert len(ours[:, 6:].unique()) > 3  # a varied continuation, not one token repeated


def test_llama_and_qwen3_configs_carry_llmlabs_constants() -> None:
    for options in (LLAMA, QWEN3):
        gpt = random_gpt(**options, mlp_hidden=72)
        c = to_hf(gpt, eos_token_id=7).config
        rope_theta = c.rope_parameters["rope_theta"] if hasattr(c, "rope_parameters") else c.rope_theta
        assert (c.rms_norm_eps, rope_theta, c.head_dim, c.intermediate_size) == (1e-5, 10000.0, 8, 72)
        assert c.num_key_value_heads == c.num_attention_heads == 4 and c.max_position_embeddings == POSITIONS
        assert (c.bos_token_id, c.eos_token_id) == (7, 7)
    # llmlab's Rotary uses the base ROPE_THETA names: its angles are the ones transformers computes from it.
    rotary = random_gpt(**LLAMA).transformer.h[0].attn.rotary
    inv_freq = 1.0 / ROPE_THETA ** (torch.arange(0, 8, 2).float() / 8)
    torch.testing.assert_close(rotary.cos[5], torch.cos(5 * inv_freq))


def test_rotary_rows_must_be_reordered_per_head() -> None:
    """Without the per-head reordering the exported model computes something else: the permutation is needed."""
    gpt = random_gpt(**QWEN3)
    hf_model = to_hf(gpt)
    idx = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected, _ = gpt(idx)
        attn = hf_model.model.layers[0].self_attn
        attn.q_proj.weight.copy_(gpt.transformer.h[0].attn.c_attn.weight[:32])  # llmlab's order, as is
        attn.k_proj.weight.copy_(gpt.transformer.h[0].attn.c_attn.weight[32:64])
        assert (hf_model(idx).logits - expected).abs().max() > 1e-2
    w = torch.arange(16.0).view(8, 2)  # two heads of 4 channels: rows 0..3 and 4..7
    assert _rotate_half_order(w, 2)[:, 0].tolist() == [0.0, 4.0, 2.0, 6.0, 8.0, 12.0, 10.0, 14.0]


@pytest.mark.parametrize(
    "options, message",
    [
        (  # ReLU squared with rotary positions: no class has both
            dict(position="rope", norm="rmsnorm", bias=False, activation="relu2"),
            "mlp='standard' has no counterpart in LlamaForCausalLM.*Train with the cpu_modern preset with "
            "--set mlp=swiglu logit_softcap=0 qk_norm=false to export",
        ),
        (
            dict(QWEN3, logit_softcap=15.0),
            "logit_softcap=15.0 has no counterpart in Qwen3ForCausalLM.*cpu_modern preset with --set mlp=swiglu",
        ),
        (dict(LLAMA, bias=True), "bias=True has no counterpart in LlamaForCausalLM"),
        (dict(norm="rmsnorm"), "norm='rmsnorm' has no counterpart in GPT2LMHeadModel.*the cpu_small preset"),
    ],
)
def test_other_layouts_are_refused_in_one_line(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        to_hf(random_gpt(**options))
    assert "\n" not in str(info.value) and str(info.value).startswith("this model cannot be exported: ")
