"""llmlab's GPT <-> Hugging Face ``transformers``: GPT-2 both ways, the modern layouts out to Llama and Qwen3.

GPT-2 and llmlab share parameter names; the one real difference is that GPT-2's original code (and
``transformers``) stores linear layers as ``Conv1D`` with the weight as (in, out), where ``nn.Linear``
stores (out, in): those four matrices per block are transposed on the way across.

:func:`to_hf` also writes the modern options out: rotary positions + RMSNorm + SwiGLU without biases are
``LlamaForCausalLM``, and with QK-norm ``Qwen3ForCausalLM`` (:func:`hf_architecture` says which, or why none).
Their one real difference is the order of the rotary channel pairs (:func:`_rotate_half_order`).

    gpt = from_hf(GPT2LMHeadModel.from_pretrained("gpt2"))   # needs the weights locally or a download
    hf_model = to_hf(gpt)                                     # e.g. to use transformers' generate/pipelines

``transformers`` is imported inside the functions: it is only needed when you use them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch

from llmlab.config import ModelConfig
from llmlab.i18n import tr
from llmlab.model import GPT, NORM_EPS

if TYPE_CHECKING:
    import transformers

__all__ = ["from_hf", "to_hf", "hf_architecture", "load_gpt2", "CONV1D_WEIGHTS", "ROPE_THETA"]

# Weights stored transposed by transformers' Conv1D (in, out) relative to nn.Linear (out, in).
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")


def _is_conv1d_weight(name: str) -> bool:
    return name.endswith(CONV1D_WEIGHTS)


def _model_config_from_hf(hf_config: Any) -> ModelConfig:
    """Translate a ``GPT2Config``, refusing variants our architecture does not implement."""
    n_embd = hf_config.n_embd
    problems = []
    if hf_config.activation_function not in _TANH_GELUS:
        problems.append(f"activation_function={hf_config.activation_function!r} (llmlab uses tanh-GELU, 'gelu_new')")
    if hf_config.n_inner not in (None, 4 * n_embd):
        problems.append(f"n_inner={hf_config.n_inner} (llmlab's MLP is 4 x n_embd = {4 * n_embd})")
    if abs(hf_config.layer_norm_epsilon - 1e-5) > 1e-12:
        problems.append(f"layer_norm_epsilon={hf_config.layer_norm_epsilon} (llmlab uses 1e-5)")
    if not getattr(hf_config, "scale_attn_weights", True) or getattr(
        hf_config, "scale_attn_by_inverse_layer_idx", False
    ):
        problems.append("non-standard attention scaling (llmlab scales scores by 1/sqrt(head size) only)")
    if getattr(hf_config, "add_cross_attention", False):
        problems.append("add_cross_attention=True (llmlab is decoder-only)")
    if not getattr(hf_config, "tie_word_embeddings", True):
        problems.append("tie_word_embeddings=False (llmlab ties lm_head to wte)")
    if problems:
        raise ValueError(
            "this GPT2Config cannot be represented by llmlab's GPT: "
            + "; ".join(problems)
            + ". Use a standard GPT-2 configuration."
        )
    return ModelConfig(
        vocab_size=hf_config.vocab_size,
        block_size=hf_config.n_positions,
        embedding_size=n_embd,
        num_heads=hf_config.n_head,
        depth=hf_config.n_layer,
        dropout=float(hf_config.resid_pdrop),
        bias=True,  # Conv1D and GPT-2's LayerNorms always carry biases
    )


def from_hf(model_or_path: Any) -> GPT:
    """An llmlab :class:`GPT` (float32, on CPU) holding the weights of a ``GPT2LMHeadModel``.

    ``model_or_path`` is a ``GPT2LMHeadModel`` instance, or a directory / hub name passed to
    ``GPT2LMHeadModel.from_pretrained`` (a hub name downloads unless the files are cached).
    Dropout is taken from the HF config's ``resid_pdrop``.
    """
    from transformers import GPT2LMHeadModel

    if isinstance(model_or_path, (str, os.PathLike)):
        hf_model = GPT2LMHeadModel.from_pretrained(os.fspath(model_or_path))
    elif isinstance(model_or_path, GPT2LMHeadModel):
        hf_model = model_or_path
    else:
        raise ValueError(
            f"from_hf got {type(model_or_path).__name__}: pass a transformers.GPT2LMHeadModel or the path of a "
            "directory saved with save_pretrained()."
        )
    if not torch.equal(hf_model.lm_head.weight, hf_model.transformer.wte.weight):
        raise ValueError("the HF model's lm_head differs from its token embedding: llmlab's GPT needs them tied.")

    gpt = GPT(_model_config_from_hf(hf_model.config))
    source = hf_model.state_dict()
    target = gpt.state_dict()
    with torch.no_grad():
        for name, param in target.items():
            if name == "lm_head.weight":
                continue  # tied to transformer.wte.weight, copied under that name
            if name not in source:
                raise ValueError(f"the HF model has no parameter {name!r}: is it a GPT2LMHeadModel?")
            value = source[name].detach().to(device="cpu", dtype=param.dtype)
            if _is_conv1d_weight(name):
                value = value.t()
            if value.shape != param.shape:
                raise ValueError(
                    f"shape mismatch for {name!r}: HF {tuple(value.shape)} vs llmlab {tuple(param.shape)}."
                )
            param.copy_(value)
    return gpt


# What each exportable architecture fixes (every other setting maps onto the transformers config): the first
# whose settings a model has is the class it exports to. ``zero_init`` is only an initialisation, and
# ``dropout`` is off at inference, so neither matters; tie_embeddings and mlp_hidden map onto config fields.
_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "GPT2LMHeadModel": {
        "position": "learned",
        "norm": "layernorm",
        "qk_norm": False,
        "mlp": "standard",
        "logit_softcap": 0.0,
        "unet_skips": False,
        "value_embeds": 0,
    },
    "LlamaForCausalLM": {
        "position": "rope",
        "norm": "rmsnorm",
        "qk_norm": False,
        "mlp": "swiglu",
        "bias": False,
        "logit_softcap": 0.0,
        "unet_skips": False,
        "value_embeds": 0,
    },
    "Qwen3ForCausalLM": {
        "position": "rope",
        "norm": "rmsnorm",
        "qk_norm": True,
        "mlp": "swiglu",
        "bias": False,
        "logit_softcap": 0.0,
        "unet_skips": False,
        "value_embeds": 0,
    },
}
# The nearest preset for each: what a refusal suggests.
_NEAREST_PRESET = {
    "GPT2LMHeadModel": "the cpu_small preset",
    "LlamaForCausalLM": "the cpu_modern preset with --set mlp=swiglu logit_softcap=0 qk_norm=false",
    "Qwen3ForCausalLM": "the cpu_modern preset with --set mlp=swiglu logit_softcap=0",
}
# GPT2Config's activation_function for each of llmlab's standard-MLP activations.
_GPT2_ACTIVATIONS = {"gelu": "gelu_new", "gelu_exact": "gelu", "relu2": "relu2"}
# llmlab's Rotary base (model_parts.Rotary's default), transformers' rope_theta.
ROPE_THETA = 10000.0


def hf_architecture(config: ModelConfig) -> str:
    """The transformers class that computes what a model of ``config`` computes: ``"GPT2LMHeadModel"`` (GPT-2's
    layout, any activation, tied or not), ``"LlamaForCausalLM"`` (rotary, RMSNorm, SwiGLU, no bias) or
    ``"Qwen3ForCausalLM"`` (the same with QK-norm).

    Anything else raises ValueError in one line naming the settings in the way and the nearest exportable preset.
    """
    gaps = {
        name: [f"{k}={getattr(config, k)!r}" for k, v in wanted.items() if getattr(config, k) != v]
        for name, wanted in _ARCHITECTURES.items()
    }
    for name, differences in gaps.items():
        if not differences:
            return name
    nearest = min(gaps, key=lambda name: len(gaps[name]))
    settings = gaps[nearest]
    raise ValueError(
        f"this model cannot be exported: {', '.join(settings)} {'has' if len(settings) == 1 else 'have'} no "
        f"counterpart in {nearest}, the nearest transformers architecture (GPT-2's layout exports to "
        f"GPT2LMHeadModel; position='rope', norm='rmsnorm', mlp='swiglu', bias=False to LlamaForCausalLM, and with "
        f"qk_norm=True to Qwen3ForCausalLM). Train with {_NEAREST_PRESET[nearest]} to export."
    )


def _rotate_half_order(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Rows of a query/key projection (out = nh * hs, ...) reordered per head from llmlab's rotary layout to
    transformers'.

    llmlab's :class:`~llmlab.model_parts.Rotary` rotates neighbouring channels (0, 1), (2, 3) ... of a head by the
    frequencies 0, 1 ...; transformers' ``rotate_half`` rotates channel j with channel j + hs/2 by frequency j. Putting
    the even channels first and the odd ones after turns one layout into the other; the dot product q . k is the same
    whatever order the channels share, and QK-norm's RMS over a head does not see the order either.
    """
    hs = weight.shape[0] // num_heads
    order = torch.cat((torch.arange(0, hs, 2), torch.arange(1, hs, 2)))
    return weight.reshape(num_heads, hs, *weight.shape[1:])[:, order].reshape(weight.shape)


def _generation_config(eos_token_id: int) -> Any:
    from transformers import GenerationConfig

    # pad = end-of-text, as for GPT-2: llmlab pads nothing, and generate() then needs no warning about it.
    return GenerationConfig(bos_token_id=eos_token_id, eos_token_id=eos_token_id, pad_token_id=eos_token_id)


def to_hf(
    gpt: GPT, attn_implementation: str | None = None, eos_token_id: int | None = None
) -> transformers.PreTrainedModel:
    """A transformers model (float32, CPU, eval mode) that computes what ``gpt`` computes.

    The class is :func:`hf_architecture`'s: ``GPT2LMHeadModel``, ``LlamaForCausalLM`` or ``Qwen3ForCausalLM``
    (other settings raise ValueError). For GPT-2, biases absent from a ``bias=False`` model become zeros (GPT-2
    always has them), which computes the same function. For Llama and Qwen3 the query and key rows are reordered
    to transformers' rotary layout (:func:`_rotate_half_order`), and Qwen3's QK-norm gains are ones (llmlab's
    QK-norm has no gain). ``eos_token_id`` (default: the last id, the end-of-text token of llmlab's plain
    tokenizers and GPT-2's) goes into the config and its ``generation_config``, with bos and pad set to it too.
    ``attn_implementation`` ("eager", "sdpa") is passed to transformers.
    """
    if not isinstance(gpt, GPT):
        raise ValueError(f"to_hf needs an llmlab GPT, got {type(gpt).__name__}.")
    architecture = hf_architecture(gpt.config)
    eos = gpt.config.vocab_size - 1 if eos_token_id is None else eos_token_id
    extra = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    if architecture == "GPT2LMHeadModel":
        hf_model = _to_gpt2(gpt, eos, extra)
    else:
        hf_model = _to_llama_or_qwen3(gpt, architecture, eos, extra)
    hf_model.generation_config = _generation_config(eos)
    return hf_model.eval()


def _to_gpt2(gpt: GPT, eos: int, extra: dict[str, Any]) -> transformers.GPT2LMHeadModel:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = gpt.config
    hf_config = GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.block_size,
        n_embd=cfg.embedding_size,
        n_layer=cfg.depth,
        n_head=cfg.num_heads,
        n_inner=cfg.mlp_hidden_size,
        activation_function=_GPT2_ACTIVATIONS[cfg.activation],
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        layer_norm_epsilon=NORM_EPS,
        tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=eos,
        eos_token_id=eos,
        **extra,
    )
    hf_model = GPT2LMHeadModel(hf_config)
    source = gpt.state_dict()
    with torch.no_grad():
        for name, param in hf_model.state_dict().items():
            if name.endswith((".attn.bias", ".attn.masked_bias")):
                continue  # mask buffers in older transformers
            if name == "lm_head.weight" and cfg.tie_embeddings:
                continue  # tied to wte
            if name not in source:
                if name.endswith(".bias"):
                    param.zero_()  # a bias=False llmlab model: zero bias computes the same function
                    continue
                raise ValueError(f"llmlab GPT has no parameter {name!r} to put into the HF model.")
            value = source[name].detach().to(device="cpu", dtype=param.dtype)
            if _is_conv1d_weight(name):
                value = value.t()
            if name in ("transformer.wte.weight", "lm_head.weight"):
                value = value[: cfg.vocab_size]  # without the padding rows of vocab_multiple
            param.copy_(value)
    if cfg.tie_embeddings:
        hf_model.tie_weights()
    return hf_model


def _to_llama_or_qwen3(gpt: GPT, architecture: str, eos: int, extra: dict[str, Any]) -> transformers.PreTrainedModel:
    import transformers

    cfg = gpt.config
    qwen3 = architecture == "Qwen3ForCausalLM"
    config_class = transformers.Qwen3Config if qwen3 else transformers.LlamaConfig
    hf_config = config_class(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.embedding_size,
        intermediate_size=cfg.mlp_hidden_size,
        num_hidden_layers=cfg.depth,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,  # no grouped-query attention: one key/value head per query head
        head_dim=cfg.head_size,  # Qwen3's default is 128, whatever the width
        hidden_act="silu",
        max_position_embeddings=cfg.block_size,
        rms_norm_eps=NORM_EPS,
        rope_theta=ROPE_THETA,  # transformers 5 files it under rope_parameters
        tie_word_embeddings=cfg.tie_embeddings,
        attention_bias=False,
        attention_dropout=0.0,  # llmlab's dropout is a training setting; the export is for inference
        bos_token_id=eos,
        eos_token_id=eos,
        **extra,
    )
    hf_model = getattr(transformers, architecture)(hf_config)
    src = {k: v.detach().to(device="cpu", dtype=torch.float32) for k, v in gpt.state_dict().items()}
    C, V = cfg.embedding_size, cfg.vocab_size
    state = {
        "model.embed_tokens.weight": src["transformer.wte.weight"][:V],
        "model.norm.weight": src["transformer.ln_f.weight"],
    }
    state["lm_head.weight"] = state["model.embed_tokens.weight"] if cfg.tie_embeddings else src["lm_head.weight"][:V]
    for i in range(cfg.depth):
        ours, theirs = f"transformer.h.{i}.", f"model.layers.{i}."
        q, k, v = src[ours + "attn.c_attn.weight"].split(C, dim=0)
        state[theirs + "self_attn.q_proj.weight"] = _rotate_half_order(q, cfg.num_heads)
        state[theirs + "self_attn.k_proj.weight"] = _rotate_half_order(k, cfg.num_heads)
        state[theirs + "self_attn.v_proj.weight"] = v
        state[theirs + "self_attn.o_proj.weight"] = src[ours + "attn.c_proj.weight"]
        if qwen3:  # llmlab's QK-norm divides by the RMS only: a gain of ones
            state[theirs + "self_attn.q_norm.weight"] = torch.ones(cfg.head_size)
            state[theirs + "self_attn.k_norm.weight"] = torch.ones(cfg.head_size)
        state[theirs + "input_layernorm.weight"] = src[ours + "ln_1.weight"]
        state[theirs + "post_attention_layernorm.weight"] = src[ours + "ln_2.weight"]
        state[theirs + "mlp.gate_proj.weight"] = src[ours + "mlp.w_gate.weight"]
        state[theirs + "mlp.up_proj.weight"] = src[ours + "mlp.w_up.weight"]
        state[theirs + "mlp.down_proj.weight"] = src[ours + "mlp.c_proj.weight"]
    hf_model.load_state_dict(state, strict=True)  # every HF weight set, and nothing of ours left over
    if cfg.tie_embeddings:
        hf_model.tie_weights()
    return hf_model


def load_gpt2(name: str = "gpt2", download: bool = True) -> tuple[transformers.GPT2LMHeadModel | None, str]:
    """GPT-2's real weights as ``(model, where they came from)``, or ``(None, why not)``: never hangs offline.

    The local Hugging Face cache first; then, only when ``download`` is True, ``HF_HUB_OFFLINE`` is not set and one
    quick question (5 s timeout) reaches the hub, a download (cached from then on). Offline, behind a firewall or
    with ``download=False`` (the notebooks' fast mode) it answers within seconds with the reason, so a notebook
    can go on with a random stand-in and say so. Notebook 06 and the solutions use it.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.utils import HfHubHTTPError
    from transformers import GPT2LMHeadModel

    try:
        return GPT2LMHeadModel.from_pretrained(name, local_files_only=True), tr("gpt2.cached")
    except OSError:
        pass  # not in the cache
    if not download:
        return None, tr("gpt2.no_download", name=name)
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE"):
        return None, tr("gpt2.offline", name=name)
    try:
        HfApi().model_info(name, timeout=5)  # one quick question: is the hub there?
    except HfHubHTTPError:
        pass  # it answered (even with an error): from_pretrained says what is wrong
    except Exception as err:  # noqa: BLE001 - no network, no DNS, a timeout...
        return None, tr("gpt2.unreachable", error=f"{type(err).__name__}: {err}")
    return GPT2LMHeadModel.from_pretrained(name), tr("gpt2.downloaded")
