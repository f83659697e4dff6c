"""llmlab's tokenizers as Hugging Face tokenizers: a ``tokenizer.json`` that transformers reads, with llmlab's ids.

    save_hf_tokenizer(tokenizer, "exported/", model_max_length=256)
    AutoTokenizer.from_pretrained("exported/")("ROMEO:")["input_ids"] == tokenizer.encode("ROMEO:")

How each tokenizer is written with the ``tokenizers`` library (:func:`backend_tokenizer`):

- byte-level BPE (``"bpe"``, learned by :func:`llmlab.bpe.train_bpe`, and ``"gpt2"``): a BPE model whose vocabulary
  is llmlab's, each token's bytes spelled in GPT-2's byte-to-character alphabet (:func:`bytes_to_unicode`), with
  the merges in the order learned; before it, llmlab's own pre-tokenizer pattern (``GPT2_SPLIT_PATTERN``) cuts the
  text, and the ByteLevel decoder turns tokens back into bytes, then text.
- characters (``"char"``): a WordLevel model over one-character words. A character outside the vocabulary is an
  error in transformers too ("Missing [UNK] token"), as it is in llmlab.
- special tokens (``tokenizer.special_tokens``: ``<|endoftext|>``, a vocabulary's other ``specials``, a
  ChatTokenizer's markers): added special tokens, each with its llmlab id.

transformers finds special tokens written inside a text (the characters ``<|endoftext|>``) and gives their ids,
the leftmost first and the longest where two start at the same place, as it does for every model: that is llmlab's
``encode(text, allowed_special="all")``. llmlab's plain ``encode(text)`` keeps them as characters, so a text that
holds one gets other ids there; any other text gets the same ids either way.

``tokenizers`` and ``transformers`` are imported inside the functions: only exporting needs them.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmlab.bpe import GPT2_SPLIT_PATTERN, merges_to_vocab
from llmlab.gpt2_files import find_gpt2_file
from llmlab.tokenizers import EOT, BPETokenizer, CharTokenizer, ChatTokenizer, GPT2Tokenizer, Tokenizer
from llmlab.validate import invalid

if TYPE_CHECKING:
    import tokenizers
    import transformers

__all__ = ["bytes_to_unicode", "backend_tokenizer", "to_hf_tokenizer", "save_hf_tokenizer"]


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> character table: printable bytes stand for themselves, the others (space, control bytes)
    for characters from U+0100 up, so that every token is a string of visible characters (a space is ``"Ġ"``).

    Hugging Face's ByteLevel pre-tokenizer and decoder use the same table.
    """
    visible = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in visible}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _spell(token: bytes) -> str:
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def _byte_level_bpe(vocab: dict[str, int], merges: list[tuple[str, str]], pattern: str) -> tokenizers.Tokenizer:
    from tokenizers import Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as Backend

    backend = Backend(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    try:
        split = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    except Exception as err:  # noqa: BLE001 - the tokenizers library reports a bad pattern as a plain Exception
        fix = f"the tokenizers library cannot compile it ({err}); export a BPE with llmlab's GPT2_SPLIT_PATTERN."
        raise invalid("pattern", pattern, fix) from None
    # The pattern cuts the text as llmlab's pretokenize() does; ByteLevel then only maps bytes to characters.
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    backend.decoder = decoders.ByteLevel()
    return backend


def _gpt2_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """GPT-2's vocabulary (encoder.json, without its end-of-text entry) and merges (vocab.bpe), read offline."""
    vocab = json.loads(find_gpt2_file("encoder.json").read_text(encoding="utf-8"))
    lines = find_gpt2_file("vocab.bpe").read_text(encoding="utf-8").splitlines()
    pairs = (line.split(" ") for line in lines if line and not line.startswith("#version"))
    merges = [(a, b) for a, b in pairs]
    vocab.pop(EOT, None)  # added below as a special token, with the same id
    return vocab, merges


def backend_tokenizer(tokenizer: Tokenizer) -> tokenizers.Tokenizer:
    """``tokenizer`` as a ``tokenizers.Tokenizer`` (what ``tokenizer.json`` holds), giving the same ids.

    Raises ValueError, in one line, for a tokenizer it cannot write faithfully.
    """
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as Backend

    base = tokenizer.base if isinstance(tokenizer, ChatTokenizer) else tokenizer
    if isinstance(base, CharTokenizer):
        backend = Backend(models.WordLevel(vocab=dict(base.stoi), unk_token=None))
        # One pre-token per character (any character, newlines too): each is then one word of the vocabulary.
        backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        backend.decoder = decoders.Fuse()  # join the characters as they are (the default would put spaces between)
    elif isinstance(base, BPETokenizer):
        tokens = merges_to_vocab(base.merges)  # id -> bytes: the 256 bytes, then merge k as id 256 + k
        vocab = {_spell(token): i for i, token in enumerate(tokens)}
        # In the order learned: a merge's rank in transformers' BPE, as in llmlab's encoder.
        merges = [(_spell(tokens[a]), _spell(tokens[b])) for a, b in base.merges]
        backend = _byte_level_bpe(vocab, merges, base.pattern)
    elif isinstance(base, GPT2Tokenizer):
        backend = _byte_level_bpe(*_gpt2_vocab_and_merges(), GPT2_SPLIT_PATTERN)
    else:
        raise ValueError(
            f"tokenizer={tokenizer!r} is not valid: only llmlab's char, bpe and gpt2 tokenizers (and a "
            f"ChatTokenizer on one of them) can be written for transformers."
        )
    # Specials in id order: each added token takes the next id, which must be llmlab's.
    for token, expected in sorted(tokenizer.special_tokens.items(), key=lambda item: item[1]):
        backend.add_special_tokens([AddedToken(token, special=True, normalized=False)])
        if backend.token_to_id(token) != expected:
            raise ValueError(
                f"the special token {token!r} has id {expected} in llmlab but would get "
                f"{backend.token_to_id(token)} in transformers: this vocabulary has gaps, so it cannot be exported."
            )
    if backend.get_vocab_size(with_added_tokens=True) != tokenizer.vocab_size:
        raise ValueError(
            f"the exported vocabulary has {backend.get_vocab_size(with_added_tokens=True)} tokens but llmlab's "
            f"has {tokenizer.vocab_size}: this tokenizer cannot be exported faithfully."
        )
    return backend


def to_hf_tokenizer(tokenizer: Tokenizer, model_max_length: int | None = None) -> transformers.PreTrainedTokenizerFast:
    """``tokenizer`` as a transformers fast tokenizer: same ids, no token added around a text (no BOS), decode
    without transformers' space clean-up, ``<|endoftext|>`` as its bos and eos token."""
    from transformers import PreTrainedTokenizerFast

    extra: dict[str, Any] = {} if model_max_length is None else {"model_max_length": model_max_length}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend_tokenizer(tokenizer),
        bos_token=EOT,
        eos_token=EOT,
        clean_up_tokenization_spaces=False,  # else " ." would decode as "."
        **extra,
    )


def save_hf_tokenizer(
    tokenizer: Tokenizer, folder: str | os.PathLike, model_max_length: int | None = None
) -> list[Path]:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` (transformers may add files) into ``folder``; return
    the files written. ``AutoTokenizer.from_pretrained(folder)`` then encodes and decodes as ``tokenizer`` does."""
    written = to_hf_tokenizer(tokenizer, model_max_length).save_pretrained(os.fspath(folder))
    return [Path(p) for p in written]
