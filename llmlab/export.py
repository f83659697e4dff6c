"""Export a trained checkpoint as a Hugging Face ``save_pretrained`` folder.

    llmlab export --checkpoint out/best_checkpoint.bin --out exported/
    # then, anywhere transformers is installed:
    AutoModelForCausalLM.from_pretrained("exported/"); pipeline("text-generation", model="exported/")

The folder holds ``config.json``, ``model.safetensors`` (GPT2LMHeadModel weights, see :mod:`llmlab.hf`)
and, for models trained on GPT-2's BPE, GPT-2's tokenizer files. It is also the road to other runtimes
that read Hugging Face folders (e.g. llama.cpp's ``convert_hf_to_gguf.py``).

transformers' tokenizers only know GPT-2's vocabulary among llmlab's three tokenizers, so a model trained
on characters or on a BPE trained here is refused with a message saying what is missing. The folder is
written under a temporary name and renamed at the end: an interrupted export leaves nothing that looks
complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from llmlab.checkpoint import model_from_checkpoint
from llmlab.hf import to_hf
from llmlab.tokenizers import find_gpt2_file

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

    Refuses (before writing anything) a model whose tokenizer transformers cannot load, and an existing
    non-empty ``out_dir`` unless ``overwrite``.
    """
    _require_transformers()
    from transformers import AutoTokenizer

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(
            f"{out} exists and is not empty: choose another --out, or pass --overwrite to replace it."
        )
    model, tokenizer, _payload = model_from_checkpoint(checkpoint)
    if tokenizer.name != "gpt2":
        raise ValueError(
            f"{checkpoint} was trained with llmlab's {tokenizer.name!r} tokenizer, which transformers cannot load: "
            f"only GPT-2's BPE has tokenizer files transformers reads (vocab.json + merges.txt). Train on GPT-2 "
            f"BPE data to export (llmlab prepare --tokenizer gpt2, then llmlab train --data that folder)."
        )
    hf_model = to_hf(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        hf_model.save_pretrained(tmp, safe_serialization=True)
        # GPT-2's two files under the names transformers expects: encoder.json is vocab.json, vocab.bpe merges.txt.
        shutil.copyfile(find_gpt2_file("encoder.json"), tmp / "vocab.json")
        shutil.copyfile(find_gpt2_file("vocab.bpe"), tmp / "merges.txt")
        # Loading from the folder (not the constructor, whose arguments changed between transformers 4 and 5)
        # builds the fast tokenizer; saving adds tokenizer.json and tokenizer_config.json.
        hf_tok = AutoTokenizer.from_pretrained(tmp, model_max_length=model.config.block_size)
        hf_tok.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
