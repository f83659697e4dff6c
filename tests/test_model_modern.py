"""The modern options of the GPT (notebook 07), each checked against a from-scratch reference."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from llmlab.config import ModelConfig
from llmlab.model import GPT, MuonWithAdamW, Rotary, SwiGLU
from llmlab.muon import Muon, newton_schulz

BASE = dict(vocab_size=40, block_size=16, embedding_size=32, num_heads=4, depth=2)
MODERN = dict(
    position="rope",
    norm="rmsnorm",
    qk_norm=True,
    activation="relu2",
    tie_embeddings=False,
    zero_init=True,
    logit_softcap=15.0,
)


def _model(**options: object) -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(**{**BASE, **options}))


def test_defaults_are_gpt2() -> None:
    cfg = ModelConfig(**BASE)
    assert cfg.is_gpt2 and cfg.gpt2_differences() == []
    modern = ModelConfig(**BASE, **MODERN)
    assert not modern.is_gpt2 and "position='rope'" in modern.gpt2_differences()


def test_rotary_equals_complex_rotation_and_depends_only_on_distance() -> None:
    hs, T = 8, 12
    rot = Rotary(hs, 32)
    x = torch.randn(2, 3, T, hs)
    # From scratch: channel pairs as complex numbers, multiplied by e^(i * position * theta_j).
    theta = 10000.0 ** (-torch.arange(0, hs, 2).float() / hs)
    pos = torch.arange(5, 5 + T).float()
    z = torch.view_as_complex(x.reshape(2, 3, T, hs // 2, 2).contiguous())
    expected = torch.view_as_real(z * torch.polar(torch.ones(T, hs // 2), torch.outer(pos, theta))).flatten(-2)
    torch.testing.assert_close(rot(x, past=5), expected, atol=1e-5, rtol=1e-5)
    # q . k after rotation depends only on the distance between the two positions.
    q, k = torch.randn(hs), torch.randn(hs)

    def score(m: int, n: int) -> float:
        return float(rot(q.view(1, 1, 1, hs), m).flatten() @ rot(k.view(1, 1, 1, hs), n).flatten())

    assert score(7, 3) == pytest.approx(score(12, 8), abs=1e-4) and score(7, 3) != pytest.approx(score(7, 4))


def test_rmsnorm_and_relu2_and_softcap_match_formulas() -> None:
    model = _model(norm="rmsnorm", activation="relu2", logit_softcap=2.0)
    block = model.transformer.h[0]
    x = torch.randn(2, 5, 32)
    w = block.ln_1.weight
    torch.testing.assert_close(block.ln_1(x), x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w)
    mlp = block.mlp
    torch.testing.assert_close(mlp(x), mlp.c_proj(torch.relu(mlp.c_fc(x)) ** 2))
    with torch.no_grad():
        model.lm_head.weight.mul_(100.0)  # large logits, to see the cap
    logits, _ = model(torch.randint(0, 40, (1, 8)))
    assert logits.abs().max() <= 2.0
    raw = model.lm_head(model.hidden_states(torch.randint(0, 40, (1, 8))))
    torch.testing.assert_close(
        model.logits(model.hidden_states(torch.zeros(1, 1, dtype=torch.long))),
        2.0 * torch.tanh(model.lm_head(model.hidden_states(torch.zeros(1, 1, dtype=torch.long))) / 2.0),
    )
    assert raw.abs().max() > 2.0


def test_gelu_forms_match_their_formulas_and_only_tanh_is_gpt2() -> None:
    x = torch.randn(2, 5, 32)
    outputs = {}
    for activation in ("gelu", "gelu_exact"):
        mlp = _model(activation=activation).transformer.h[0].mlp
        h = mlp.c_fc(x)
        if activation == "gelu":  # GPT-2's tanh approximation
            act = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
        else:  # the exact form, x * Phi(x)
            act = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
        outputs[activation] = mlp(x)
        torch.testing.assert_close(outputs[activation], mlp.c_proj(act), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(outputs["gelu"], outputs["gelu_exact"], atol=1e-7, rtol=0)  # two functions
    assert ModelConfig(**BASE, activation="gelu_exact").gpt2_differences() == ["activation='gelu_exact'"]
    with pytest.raises(ValueError, match="activation"):
        ModelConfig(**BASE, activation="swish")


def test_attention_with_qk_norm_and_rope_by_hand() -> None:
    model = _model(position="rope", qk_norm=True)
    attn = model.transformer.h[0].attn
    x = torch.randn(2, 6, 32)
    B, T, C, nh = 2, 6, 32, 4
    hs = C // nh
    q, k, v = attn.c_attn(x).split(C, dim=2)
    q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in (q, k, v))
    q = q / torch.sqrt(q.pow(2).mean(-1, keepdim=True) + 1e-5)  # the eps of every norm in llmlab (NORM_EPS)
    k = k / torch.sqrt(k.pow(2).mean(-1, keepdim=True) + 1e-5)
    q, k = attn.rotary(q), attn.rotary(k)
    att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
    att = att.masked_fill(torch.ones(T, T).tril() == 0, float("-inf")).softmax(-1)
    expected = attn.c_proj((att @ v).transpose(1, 2).reshape(B, T, C))
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


def test_no_position_table_with_rope_and_untied_head_adds_parameters() -> None:
    tied, untied = _model(), _model(tie_embeddings=False)
    assert untied.num_parameters() == tied.num_parameters() + 40 * 32
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    rope = _model(position="rope")
    assert "transformer.wpe.weight" not in rope.state_dict()
    assert not any("cos" in k or "sin" in k for k in rope.state_dict())  # buffers are derived, not saved


def test_zero_init_starts_at_the_uniform_loss_and_still_learns() -> None:
    model = _model(tie_embeddings=False, zero_init=True)
    idx = torch.randint(0, 40, (4, 16))
    _, loss = model(idx, idx)
    assert float(loss.detach()) == pytest.approx(math.log(40), abs=1e-6)
    loss.backward()
    assert model.lm_head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "options",
    [
        MODERN,
        dict(position="rope"),
        dict(qk_norm=True, norm="rmsnorm"),
    ],
)
def test_kv_cache_generation_equals_full_recompute(options: dict) -> None:
    model = _model(**options)
    with torch.no_grad():  # zero-init weights would make every token equally likely: give them values
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    idx = torch.randint(0, 40, (2, 3))
    g1 = torch.Generator().manual_seed(1)
    g2 = torch.Generator().manual_seed(1)
    with_cache = model.generate(idx, 20, temperature=0.8, generator=g1, use_cache=True)  # slides past block 16
    without = model.generate(idx, 20, temperature=0.8, generator=g2, use_cache=False)
    assert torch.equal(with_cache, without)


def test_muon_for_hidden_matrices_adamw_for_the_rest_equals_the_two_torch_optimizers() -> None:
    model = _model(**MODERN)
    ref = _model(**MODERN)
    ref.load_state_dict(model.state_dict())
    opt = model.configure_optimizer(0.1, 1e-3, (0.9, 0.95), "cpu", optimizer="muon", muon_lr=0.02)
    assert isinstance(opt, MuonWithAdamW)
    muon_ids = {id(p) for g in opt.muon.param_groups for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in muon_ids}
    assert names == {n for n, p in model.named_parameters() if p.dim() == 2 and n.startswith("transformer.h.")}
    # Reference: the two torch optimizers built by hand on the same split.
    hidden = [p for n, p in ref.named_parameters() if p.dim() == 2 and n.startswith("transformer.h.")]
    rest = [(n, p) for n, p in ref.named_parameters() if not (p.dim() == 2 and n.startswith("transformer.h."))]
    ref_muon = Muon(hidden, lr=0.02, weight_decay=0.1)
    ref_adamw = torch.optim.AdamW(
        [
            {"params": [p for _, p in rest if p.dim() >= 2], "weight_decay": 0.1},
            {"params": [p for _, p in rest if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=1e-3,
        betas=(0.9, 0.95),
    )
    idx = torch.randint(0, 40, (4, 16))
    for m, step in ((model, opt.step), (ref, lambda: (ref_muon.step(), ref_adamw.step()))):
        m(idx, idx)[1].backward()
        step()
    for (n, a), b in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=n)
    state = opt.state_dict()
    again = model.configure_optimizer(0.1, 1e-3, (0.9, 0.95), "cpu", optimizer="muon", muon_lr=0.02)
    again.load_state_dict(state)
    assert again.state_dict()["muon"]["state"].keys() == state["muon"]["state"].keys()
    assert {g["lr_scale"] for g in opt.param_groups} == {20.0, 1.0}
    with pytest.raises(ValueError, match="Muon \\+ AdamW"):
        again.load_state_dict(torch.optim.AdamW(model.parameters()).state_dict())


def test_to_hf_refuses_what_no_transformers_architecture_expresses() -> None:
    pytest.importorskip("transformers")
    from llmlab.hf import to_hf

    # MODERN is Qwen3's layout but for its MLP (ReLU squared, not SwiGLU), the biases and the soft-cap.
    message = "mlp='standard', bias=True, logit_softcap=15.0 have no counterpart in Qwen3ForCausalLM"
    with pytest.raises(ValueError, match=message):
        to_hf(_model(**MODERN))
    to_hf(_model(zero_init=True))  # an init choice, not an architecture: converts


def test_bad_option_values_are_refused() -> None:
    with pytest.raises(ValueError, match="position='alibi' is not valid: use one of learned, rope"):
        ModelConfig(**BASE, position="alibi")
    with pytest.raises(ValueError, match="even head size"):
        ModelConfig(vocab_size=10, block_size=8, embedding_size=12, num_heads=4, position="rope")
    with pytest.raises(ValueError, match="logit_softcap"):
        ModelConfig(**BASE, logit_softcap=-1.0)


def test_muon_equals_torch_muon_when_run_in_bfloat16_and_is_close_in_float32() -> None:
    torch.manual_seed(0)
    shapes = [(48, 16), (16, 48), (32, 32)]
    weights = [torch.randn(*s) * 0.1 for s in shapes]
    ours_bf16 = [torch.nn.Parameter(w.clone()) for w in weights]
    ours_fp32 = [torch.nn.Parameter(w.clone()) for w in weights]
    theirs = [torch.nn.Parameter(w.clone()) for w in weights]
    opts = [
        Muon(ours_bf16, lr=0.02, weight_decay=0.1, ns_dtype=torch.bfloat16),
        Muon(ours_fp32, lr=0.02, weight_decay=0.1),
        torch.optim.Muon(theirs, lr=0.02, weight_decay=0.1),
    ]
    for _ in range(3):
        grads = [torch.randn(*s) for s in shapes]
        for params, opt in zip((ours_bf16, ours_fp32, theirs), opts):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            opt.step()
    for a, b, c in zip(ours_bf16, ours_fp32, theirs):
        torch.testing.assert_close(a, c, atol=1e-6, rtol=1e-6)  # same algorithm, same arithmetic
        torch.testing.assert_close(b, c, atol=2e-3, rtol=0)  # float32 differs only by bf16 rounding


def test_newton_schulz_pushes_singular_values_towards_one() -> None:
    torch.manual_seed(0)
    g = torch.randn(64, 16) @ torch.diag(torch.logspace(-1, 0, 16))  # singular values over a decade
    s = torch.linalg.svdvals(newton_schulz(g))
    assert s.min() > 0.5 and s.max() < 1.3  # Keller's quintic: roughly Uniform(0.5, 1.5), not exactly 1
    with pytest.raises(ValueError, match="2-D weight matrices only"):
        Muon([torch.nn.Parameter(torch.zeros(3))])


def test_embedding_lr_scale_gives_the_tables_their_own_rate() -> None:
    model = _model(tie_embeddings=False)
    ref = _model(tie_embeddings=False)
    ref.load_state_dict(model.state_dict())
    assert len(model.configure_optimizer(0.1, 1e-3).param_groups) == 2  # scale 1: the groups of old checkpoints
    opt = model.configure_optimizer(0.1, 1e-3, (0.9, 0.95), "cpu", embedding_lr_scale=10.0)
    tables = {"transformer.wte.weight", "transformer.wpe.weight"}
    in_group = [{n for n, p in model.named_parameters() if any(p is q for q in g["params"])} for g in opt.param_groups]
    assert in_group[2] == tables and opt.param_groups[2]["lr_scale"] == 10.0
    # Reference: torch's AdamW with the tables at 10x the rate, everything else as before.
    named = list(ref.named_parameters())
    ref_opt = torch.optim.AdamW(
        [
            {"params": [p for n, p in named if p.dim() >= 2 and n not in tables], "weight_decay": 0.1},
            {"params": [p for n, p in named if p.dim() < 2], "weight_decay": 0.0},
            {"params": [p for n, p in named if n in tables], "weight_decay": 0.1, "lr": 1e-2},
        ],
        lr=1e-3,
        betas=(0.9, 0.95),
    )
    idx = torch.randint(0, 40, (4, 16))
    for m, o in ((model, opt), (ref, ref_opt)):
        m(idx, idx)[1].backward()
        o.step()
    for (n, a), b in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=n)


# ---- SwiGLU and the MLP's width -------------------------------------------------------------------------------


def test_swiglu_equals_transformers_llama_mlp() -> None:
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaMLP

    cfg = ModelConfig(**BASE, mlp="swiglu", bias=False)
    ours = _model(mlp="swiglu", bias=False).transformer.h[0].mlp
    assert isinstance(ours, SwiGLU) and ours.w_gate.bias is None
    theirs = LlamaMLP(
        transformers.LlamaConfig(hidden_size=32, intermediate_size=cfg.mlp_hidden_size, hidden_act="silu")
    )
    with torch.no_grad():
        for p in ours.parameters():
            p.copy_(torch.randn_like(p) * 0.3)  # c_proj starts small (residual init): give every matrix a spread
        theirs.gate_proj.weight.copy_(ours.w_gate.weight)
        theirs.up_proj.weight.copy_(ours.w_up.weight)
        theirs.down_proj.weight.copy_(ours.c_proj.weight)
        x = torch.randn(2, 7, 32)
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-6, rtol=1e-6)
        ours.w_up.weight.mul_(-1.0)  # the comparison sees the weights: a changed matrix changes the output
        assert not torch.allclose(ours(x), theirs(x), atol=1e-3)


def _llama_hidden(dim: int, multiple_of: int = 64) -> int:
    """Meta's llama/model.py FeedForward width, transcribed (hidden_dim = 4 * dim, ffn_dim_multiplier None)."""
    hidden_dim = int(2 * (4 * dim) / 3)
    return multiple_of * ((hidden_dim + multiple_of - 1) // multiple_of)


@pytest.mark.parametrize("width", [32, 128, 384, 768, 4096])
def test_mlp_hidden_defaults_and_the_model_follows_them(width: int) -> None:
    assert _llama_hidden(4096, multiple_of=256) == 11008  # the transcription gives Llama-7B's width
    standard = ModelConfig(vocab_size=10, embedding_size=width, num_heads=4)
    swiglu = ModelConfig(vocab_size=10, embedding_size=width, num_heads=4, mlp="swiglu")
    assert standard.mlp_hidden_size == 4 * width
    assert swiglu.mlp_hidden_size == _llama_hidden(width) and swiglu.mlp_hidden_size % 64 == 0
    assert (
        ModelConfig(vocab_size=10, embedding_size=width, num_heads=4, mlp="swiglu", mlp_hidden=40).mlp_hidden_size == 40
    )
    if width <= 128:  # the real modules have those widths
        assert _model(embedding_size=width, mlp_hidden=48).transformer.h[1].mlp.c_fc.weight.shape == (48, width)
        assert _model(embedding_size=width, mlp="swiglu").transformer.h[1].mlp.w_up.weight.shape == (
            _llama_hidden(width),
            width,
        )


def test_mlp_options_are_validated_and_parsed_from_the_command_line() -> None:
    from llmlab.config import Config

    with pytest.raises(ValueError, match="mlp='geglu' is not valid: use one of standard, swiglu"):
        ModelConfig(**BASE, mlp="geglu")
    with pytest.raises(ValueError, match="mlp_hidden=-1 is not valid: mlp_hidden must be a whole number >= 0: 0 "):
        ModelConfig(**BASE, mlp_hidden=-1)
    with pytest.raises(ValueError, match="mlp_hidden=2.5 is not valid"):
        ModelConfig(**BASE, mlp_hidden=2.5)
    cfg = Config().override({"mlp": "swiglu", "mlp_hidden": "96"})  # what --set mlp=swiglu --set mlp_hidden=96 passes
    assert (cfg.model.mlp, cfg.model.mlp_hidden, cfg.model.mlp_hidden_size) == ("swiglu", 96, 96)
    with pytest.raises(ValueError, match="mlp_hidden='wide' is not valid: mlp_hidden takes a whole number"):
        Config().override({"mlp_hidden": "wide"})
    assert ModelConfig(**BASE, mlp="swiglu").gpt2_differences() == ["mlp='swiglu'"]


def test_a_checkpoint_config_from_before_the_mlp_options_still_loads() -> None:
    from llmlab.checkpoint_state import load_model_state
    from llmlab.config import Config

    old = Config().override(BASE).to_dict()
    for key in ("mlp", "mlp_hidden"):  # what a checkpoint written before these fields holds
        del old["model"][key]
    cfg = Config.from_dict(old)
    assert (cfg.model.mlp, cfg.model.mlp_hidden) == ("standard", 0)
    state = _model().state_dict()  # today's default MLP has the names and shapes of the old one
    load_model_state(GPT(old["model"]), state)


def test_parameter_counts_by_component_with_swiglu() -> None:
    from llmlab.analysis import memory_estimate, parameters_by_component

    cfg = ModelConfig(**BASE, mlp="swiglu", bias=False)
    counts = parameters_by_component(cfg)
    H = cfg.mlp_hidden_size
    assert counts["MLP"] == BASE["depth"] * 3 * 32 * H  # gate, up, down; no biases
    assert sum(counts.values()) == GPT(cfg).num_parameters()
    # GPT-2's MLP keeps Korthikanti et al.'s 34 bytes per token and channel (the estimate is unchanged for it).
    gpt2 = ModelConfig(**BASE)
    T, C, nh, L = 16, 32, 4, 2
    expected = L * T * 1 * C * (34 + 5 * nh * T / C) / 2 * 4 + 2 * 1 * T * 40 * 4
    assert memory_estimate(gpt2, 1)["activations"] == pytest.approx(expected)
    assert memory_estimate(cfg, 1)["activations"] > memory_estimate(gpt2, 1)["activations"]  # 4 H-wide tensors


def test_resuming_into_another_mlp_is_refused_before_loading_weights() -> None:
    # The MLP's kind and width change tensor shapes and names: resume must say so up front, not fail in load.
    from llmlab.checkpoint_state import TrainingState
    from llmlab.config import get_preset

    saved = get_preset("cpu_modern")
    state = TrainingState(model={}, config=saved.to_dict())
    state.check_architecture(saved.model)  # the same settings resume
    for change in ({"mlp": "swiglu"}, {"mlp_hidden": 256}):
        with pytest.raises(ValueError, match=f"another architecture.*{next(iter(change))}"):
            state.check_architecture(saved.override(**change).model)


def _matches_by_hand_with_and_without_cache(model: torch.nn.Module, idx: torch.Tensor, last: torch.Tensor) -> None:
    """The model's logits equal those of ``last``, the final block's output computed by hand, and greedy generation
    gives the same tokens with and without the KV cache."""
    torch.testing.assert_close(model(idx)[0], model.logits(model.transformer.ln_f(last)))
    start = idx[:1, :3]
    assert torch.equal(model.generate(start, 10, temperature=0, use_cache=True),
                       model.generate(start, 10, temperature=0, use_cache=False))  # fmt: skip


def test_unet_skips_add_each_first_half_output_to_its_mirror_block_input() -> None:
    from llmlab.config import ModelConfig
    from llmlab.model import GPT

    cfg = dict(vocab_size=30, block_size=16, embedding_size=32, num_heads=4, depth=5, position="rope", norm="rmsnorm")
    torch.manual_seed(0)
    model = GPT(ModelConfig(**cfg, unet_skips=True)).eval()
    assert tuple(model.skip_weights.shape) == (2,) and torch.equal(model.skip_weights.detach(), torch.ones(2))
    assert not hasattr(GPT(ModelConfig(**cfg)), "skip_weights")  # off by default: GPT-2's parameters only
    with torch.no_grad():
        model.skip_weights.copy_(torch.tensor([0.5, -2.0]))
        idx = torch.randint(0, 30, (2, 9))
        h = model.transformer.h
        x0 = model.transformer.wte(idx)
        x1 = h[0](x0)  # encoder outputs: block 0 -> block 4's input, block 1 -> block 3's input
        x2 = h[1](x1)
        x3 = h[2](x2)  # the middle block of an odd depth gets no skip
        x4 = h[3](x3 - 2.0 * x2)
        x5 = h[4](x4 + 0.5 * x1)
        # The KV-cache path gives the same tokens (each new token's skips are its own positions').
        _matches_by_hand_with_and_without_cache(model, idx, x5)


def test_unet_skips_train_export_refuses_and_resume_checks() -> None:
    from llmlab.checkpoint_state import TrainingState
    from llmlab.config import ModelConfig, get_preset
    from llmlab.hf import hf_architecture
    from llmlab.model import GPT

    model = GPT(ModelConfig(vocab_size=30, block_size=16, embedding_size=32, num_heads=4, depth=4, unet_skips=True))
    opt = model.configure_optimizer(0.1, 1e-3, optimizer="muon")
    idx = torch.randint(0, 30, (2, 8))
    _, loss = model(idx, idx)
    loss.backward()
    assert model.skip_weights.grad is not None and model.skip_weights.grad.abs().sum() > 0
    before = model.skip_weights.detach().clone()
    opt.step()
    assert not torch.equal(model.skip_weights.detach(), before)  # learned (on AdamW, without weight decay)
    with pytest.raises(ValueError, match="unet_skips"):
        hf_architecture(model.config)
    saved = get_preset("cpu_modern")
    with pytest.raises(ValueError, match="another architecture.*unet_skips"):
        TrainingState(model={}, config=saved.to_dict()).check_architecture(saved.override(unet_skips=True).model)


def test_unet_skip_weights_are_counted_as_their_own_component() -> None:
    from llmlab.analysis import parameters_by_component
    from llmlab.config import get_preset

    counts = parameters_by_component(get_preset("cpu_modern").override(unet_skips=True).model)
    assert counts["U-net skips"] == 2 and counts["LayerNorm"] == 4 * 2 * 128 + 128  # depth 4: two skips


def _attention_by_hand(attn: torch.nn.Module, h: torch.Tensor, ve: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(hs) + causal mask) (v + ve), heads side by side, then the output projection."""
    B, T, C = h.shape
    nh = attn.num_heads
    q, k, v = (h @ attn.c_attn.weight.T + attn.c_attn.bias).split(C, dim=-1)
    v = v + ve
    q, k, v = (t.reshape(B, T, nh, C // nh).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(C // nh)
    scores = scores.masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
    return y @ attn.c_proj.weight.T + attn.c_proj.bias


def test_value_embeddings_join_the_values_of_the_first_and_last_blocks() -> None:
    from llmlab.config import ModelConfig
    from llmlab.model import GPT

    cfg = dict(vocab_size=30, block_size=16, embedding_size=32, num_heads=4, depth=4)
    torch.manual_seed(0)
    model = GPT(ModelConfig(**cfg, value_embeds=1)).eval()
    assert torch.equal(model.ve_weights.detach(), torch.ones(2))
    assert "vte" not in GPT(ModelConfig(**cfg)).transformer  # off by default: GPT-2's parameters only
    with torch.no_grad():
        model.ve_weights.copy_(torch.tensor([0.5, -2.0]))
        idx = torch.randint(0, 30, (2, 9))
        table = model.transformer.vte[0].weight[idx]  # (B, T, C): each token's row
        x = model.transformer.wte(idx) + model.transformer.wpe(torch.arange(9))
        for layer, block in enumerate(model.transformer.h):
            ve = {0: 0.5 * table, 3: -2.0 * table}.get(layer, torch.zeros_like(x))  # blocks 1, 2 read none
            x = x + _attention_by_hand(block.attn, block.ln_1(x), ve)
            x = x + block.mlp(block.ln_2(x))
        # A token's row depends on that token only: the KV-cache path gives the same tokens.
        _matches_by_hand_with_and_without_cache(model, idx, x)


def test_value_embeddings_learn_at_the_embedding_rate_and_are_not_multiplied() -> None:
    from llmlab.analysis import parameters_by_component
    from llmlab.checkpoint_state import TrainingState
    from llmlab.config import ModelConfig, get_preset
    from llmlab.hf import hf_architecture
    from llmlab.model import GPT

    cfg = ModelConfig(vocab_size=30, block_size=16, embedding_size=32, num_heads=4, depth=4, value_embeds=2)
    model = GPT(cfg)
    tables = [t.weight for t in model.transformer.vte]
    opt = model.configure_optimizer(0.0, 1e-3, optimizer="muon", embedding_lr_scale=10.0)
    fast = next(g for g in opt.adamw.param_groups if g["lr_scale"] == 10.0)["params"]
    assert all(any(t is p for p in fast) for t in tables)  # with wte, at 10x AdamW's rate, not on Muon
    idx = torch.randint(0, 30, (2, 8))
    model(idx, idx)[1].backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in tables)
    assert model.ve_weights.grad is not None and model.ve_weights.grad.abs().sum() > 0
    plain = GPT(dataclasses.replace(cfg, value_embeds=0))
    # Looked up, never multiplied: the FLOPs per token (non-embedding parameters) do not count them.
    assert model.num_parameters(non_embedding=True) == plain.num_parameters(non_embedding=True) + 4
    assert model.num_parameters() == plain.num_parameters() + 2 * 30 * 32 + 4
    assert parameters_by_component(model)["value embeddings"] == 2 * 30 * 32 + 4
    with pytest.raises(ValueError, match="value_embeds"):
        hf_architecture(model.config)
    saved = get_preset("cpu_modern")
    with pytest.raises(ValueError, match="another architecture.*value_embeds"):
        TrainingState(model={}, config=saved.to_dict()).check_architecture(saved.override(value_embeds=1).model)
    model.resize_token_embeddings(33)  # a chat template's specials: the value tables grow with wte
    assert all(t.weight.shape == (33, 32) for t in model.transformer.vte)
    torch.testing.assert_close(model.transformer.vte[1].weight[30], tables[1][:30].mean(0))
    assert model(torch.tensor([[32, 1]]))[0].shape == (1, 2, 33)


@pytest.mark.parametrize("value", [3, -1, True, 1.0])
def test_value_embeds_beyond_half_the_depth_is_refused(value: object) -> None:
    from llmlab.config import ModelConfig

    with pytest.raises(ValueError, match=r"value_embeds=.*from 0 \(off\) to depth // 2 = 2"):
        ModelConfig(vocab_size=30, depth=4, embedding_size=32, num_heads=4, value_embeds=value)
