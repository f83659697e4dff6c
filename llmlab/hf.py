"""GPT-2 <-> Hugging Face ``transformers``: move weights between llmlab's GPT and ``GPT2LMHeadModel``.

The two models share parameter names; the one real difference is that GPT-2's original code (and
``transformers``) stores linear layers as ``Conv1D`` with the weight as (in, out), where ``nn.Linear``
stores (out, in): those four matrices per block are transposed on the way across.

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
from llmlab.model import GPT

if TYPE_CHECKING:
    import transformers

__all__ = ["from_hf", "to_hf", "load_gpt2", "CONV1D_WEIGHTS"]

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


def to_hf(gpt: GPT, attn_implementation: str | None = None) -> transformers.GPT2LMHeadModel:
    """A ``GPT2LMHeadModel`` (float32, CPU, eval mode) with the weights of ``gpt``.

    Biases absent from a ``bias=False`` model become zeros (GPT-2 always has them), which computes the
    same function. ``bos_token_id``/``eos_token_id`` are set to the last id (EOT for llmlab's
    tokenizers and for GPT-2). ``attn_implementation`` ("eager", "sdpa") is passed to transformers.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    if not isinstance(gpt, GPT):
        raise ValueError(f"to_hf needs an llmlab GPT, got {type(gpt).__name__}.")
    cfg = gpt.config
    if not cfg.is_gpt2:
        raise ValueError(
            f"this model uses settings GPT-2's architecture cannot express ({', '.join(cfg.gpt2_differences())}), "
            "so GPT2LMHeadModel cannot hold it. Only models with GPT-2's defaults for these settings convert."
        )
    hf_config = GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.block_size,
        n_embd=cfg.embedding_size,
        n_layer=cfg.depth,
        n_head=cfg.num_heads,
        n_inner=None,
        activation_function="gelu_new",
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=True,
        bos_token_id=cfg.vocab_size - 1,
        eos_token_id=cfg.vocab_size - 1,
        **({} if attn_implementation is None else {"attn_implementation": attn_implementation}),
    )
    hf_model = GPT2LMHeadModel(hf_config)
    source = gpt.state_dict()
    with torch.no_grad():
        for name, param in hf_model.state_dict().items():
            if name == "lm_head.weight" or name.endswith((".attn.bias", ".attn.masked_bias")):
                continue  # lm_head is tied to wte; attn.bias/masked_bias are mask buffers in older transformers
            if name not in source:
                if name.endswith(".bias"):
                    param.zero_()  # a bias=False llmlab model: zero bias computes the same function
                    continue
                raise ValueError(f"llmlab GPT has no parameter {name!r} to put into the HF model.")
            value = source[name].detach().to(device="cpu", dtype=param.dtype)
            if _is_conv1d_weight(name):
                value = value.t()
            if name == "transformer.wte.weight":
                value = value[: cfg.vocab_size]  # without the padding rows of vocab_multiple
            param.copy_(value)
    hf_model.tie_weights()
    return hf_model.eval()


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
