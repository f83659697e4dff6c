"""Export a trained checkpoint as a Hugging Face ``save_pretrained`` folder.

    llmlab export --checkpoint out/best_checkpoint.bin --out exported/
    # then, anywhere transformers is installed:
    AutoModelForCausalLM.from_pretrained("exported/"); AutoTokenizer.from_pretrained("exported/")
    pipeline("text-generation", model="exported/")

What exports to what (:func:`llmlab.hf.hf_architecture` decides; :func:`llmlab.hf.to_hf` moves the weights):

- GPT-2's layout (learned positions, LayerNorm, the standard MLP with any of its activations, tied or untied
  head, any ``mlp_hidden``) -> ``GPT2LMHeadModel``
- rotary positions + RMSNorm + SwiGLU (``mlp="swiglu"``), ``bias=False`` -> ``LlamaForCausalLM``
- the same with ``qk_norm=True`` -> ``Qwen3ForCausalLM``

``zero_init``, ``dropout`` and ``vocab_multiple`` never stand in the way (an initialisation, a training setting,
padding the export drops). Anything else (a logit soft-cap, ReLU squared or GELU with rotary positions, biases with
SwiGLU) is refused in one line that names the settings and the nearest preset that exports.

The folder holds ``config.json``, ``generation_config.json`` (end-of-text as eos, bos and pad),
``model.safetensors`` and the tokenizer: ``tokenizer.json`` and ``tokenizer_config.json`` for every llmlab
tokenizer (characters, a BPE learned here, GPT-2's, each with a ChatTokenizer's specials), written by
:mod:`llmlab.hf_tokenizer` with llmlab's ids; for GPT-2's BPE also its ``vocab.json`` and ``merges.txt``. It
is also the road to other runtimes that read Hugging Face folders (e.g. llama.cpp's ``convert_hf_to_gguf.py``).

The folder is written under a temporary name and renamed at the end: an interrupted export leaves nothing
that looks complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from llmlab.checkpoint import model_from_checkpoint
from llmlab.hf import to_hf
from llmlab.hf_tokenizer import to_hf_tokenizer
from llmlab.tokenizers import ChatTokenizer, GPT2Tokenizer, find_gpt2_file

__all__ = ["export_pretrained", "HF_INSTALL_HINT"]

HF_INSTALL_HINT = "pip install 'transformers>=4.40' (or: pip install -e '.[dev]' in the llmlab checkout)"


def _require_transformers() -> None:
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ImportError(
            f"exporting needs the transformers package, which is not installed: {HF_INSTALL_HINT}."
        ) from None


def export_pretrained(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``checkpoint`` as a ``save_pretrained`` folder at ``out_dir``; return the folder.

    Refuses (before writing anything) a model no transformers architecture computes, a tokenizer that cannot be
    written with the same ids, and an existing non-empty ``out_dir`` unless ``overwrite``.
    """
    _require_transformers()
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(
            f"{out} exists and is not empty: choose another --out, or pass --overwrite to replace it."
        )
    model, tokenizer, _payload = model_from_checkpoint(checkpoint)
    try:
        hf_model = to_hf(model, eos_token_id=tokenizer.eot_token)
        hf_tokenizer = to_hf_tokenizer(tokenizer, model_max_length=model.config.block_size)
    except ValueError as err:
        raise ValueError(f"{checkpoint}: {err}") from None
    base = tokenizer.base if isinstance(tokenizer, ChatTokenizer) else tokenizer
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        hf_model.save_pretrained(tmp, safe_serialization=True)
        hf_tokenizer.save_pretrained(tmp)
        if isinstance(base, GPT2Tokenizer):
            # GPT-2's two files too, under the names other tools look for: encoder.json is vocab.json, vocab.bpe
            # merges.txt (transformers itself reads tokenizer.json).
            shutil.copyfile(find_gpt2_file("encoder.json"), tmp / "vocab.json")
            shutil.copyfile(find_gpt2_file("vocab.bpe"), tmp / "merges.txt")
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
