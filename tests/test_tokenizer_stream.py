"""encode_iterable: a stream of strings -> exactly the ids of the whole text, lazily, in bounded memory."""

from __future__ import annotations

import itertools
import operator
import random
import tracemalloc
from collections.abc import Iterator

import pytest

from llmlab.corpus import shakespeare_text
from llmlab.tokenizers import EOT, BPETokenizer, CharTokenizer, ChatTokenizer, Tokenizer, get_tokenizer, train_bpe

# The pieces GPT-2's pre-tokenizer joins or splits depending on what follows: whitespace runs before a word
# or at the end, "\n" runs, contractions, punctuation runs, non-ASCII whitespace, and special tokens whole
# or in halves.
PIECES = [" ", "  ", "   ", "\n", "\n\n", "\t", "\r\n", " \n", "a", "Z", "é", "日", "1", "23", "'s", "'", "'ll",
          ".", "!!", "\u00a0", "\x1c", "\u3000", EOT, "<|", "|>", "<|endoftext|", "endoftext", "word", " the",
          "<|pad|>"]  # fmt: skip
GPT4_STYLE = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)


def random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(0, 50))) for _ in range(n)]


def chunkings(text: str, rng: random.Random) -> Iterator[list[str]]:
    """Ways to cut ``text`` into consecutive strings: random cuts, every character apart, and whole."""
    for _ in range(4):
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randint(1, 12))))
        yield [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)])]
    yield list(text)
    yield [text]


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, Tokenizer]:
    merges = train_bpe(shakespeare_text()[:50_000], 300)
    bpe = BPETokenizer(merges, specials=["<|pad|>"])
    return {
        "char": CharTokenizer("".join(PIECES), specials=["<|pad|>"]),
        "bpe": bpe,
        "gpt2": get_tokenizer("gpt2"),
        "chat": ChatTokenizer(bpe),
        "bpe-gpt4-pattern": BPETokenizer(merges, pattern=GPT4_STYLE, specials=["<|pad|>"]),
    }


@pytest.mark.parametrize("name", ["char", "bpe", "gpt2", "chat", "bpe-gpt4-pattern"])
def test_stream_gives_the_ids_of_the_whole_text(tokenizers, name):
    tok = tokenizers[name]
    rng = random.Random(0)
    for text in random_texts(60, seed=1):
        for allowed in (set(), "all"):
            want = tok.encode(text, allowed_special=allowed)
            for parts in chunkings(text, rng):
                for buffer_chars in (1, 7, 64):
                    got = list(tok.encode_iterable(parts, allowed_special=allowed, buffer_chars=buffer_chars))
                    assert got == want, (text, parts, buffer_chars, allowed)


def test_the_texts_are_tricky_enough_to_catch_naive_chunking(tokenizers):
    # The control for the test above: encoding the same chunks one by one and joining the ids goes wrong.
    gpt2, rng = tokenizers["gpt2"], random.Random(0)
    wrong = 0
    for text in random_texts(60, seed=1):
        for parts in chunkings(text, rng):
            wrong += sum((gpt2.encode(p, allowed_special="all") for p in parts), []) != gpt2.encode(text, "all")
    assert wrong > 50


def test_gpt2_cut_rule_holds_at_every_place_it_allows(tokenizers):
    # The rule encode_iterable relies on, checked against tiktoken at every place in many texts: where ASCII
    # whitespace follows a non-whitespace character, encoding the two sides apart changes nothing.
    gpt2 = tokenizers["gpt2"]
    allowed = unsafe = 0
    for text in random_texts(150, seed=2):
        whole = gpt2.encode(text)
        for p in range(1, len(text)):
            if not text[p - 1].isspace() and text[p] in " \t\n\r\x0b\x0c":
                assert gpt2.encode(text[:p]) + gpt2.encode(text[p:]) == whole, (text, p)
                allowed += 1
            elif gpt2.encode(text[:p]) + gpt2.encode(text[p:]) != whole:
                unsafe += 1
    assert allowed > 500 and unsafe > 500  # both kinds of place are common in these texts


def test_no_cut_before_control_characters_that_python_calls_space():
    # "\x1c".."\x1f" are str.isspace() but not whitespace to the pre-tokenizer: "!\x1c" is one pre-token,
    # which this one merge turns into one token. A cut between "!" and "\x1c" would give two.
    tok = BPETokenizer([(ord("!"), 0x1C)])
    for text in ["!\x1c" + "a" * 30, "x!\x1c" + "b" * 20 + "!\x1f" + "c" * 20]:
        want = tok.encode(text)
        p = text.index("\x1c")
        assert want.count(256) == 1 and tok.encode(text[:p]) + tok.encode(text[p:]) != want
        for buffer_chars in (1, 5, 20):
            assert list(tok.encode_iterable([text], buffer_chars=buffer_chars)) == want


def test_stream_is_lazy_and_cuts_inside_the_text(tokenizers):
    # The first ids come out after reading a little of the stream, not all of it, for every tokenizer whose
    # ordinary text has safe places; with another pre-tokenizer pattern only special tokens cut.
    text = shakespeare_text()[:200_000]
    lines = text.splitlines(keepends=True)
    read = 0

    def counted() -> Iterator[str]:
        nonlocal read
        for line in lines:
            read += 1
            yield line

    for name in ("char", "bpe", "gpt2", "chat", "bpe-gpt4-pattern"):
        tok = CharTokenizer(text) if name == "char" else tokenizers[name]
        read = 0
        next(iter(tok.encode_iterable(counted(), buffer_chars=1000)))
        if name == "bpe-gpt4-pattern":
            assert read == len(lines)  # no special token in the text: nothing could be encoded before its end
        else:
            assert read < 100, name  # about 1000 characters of ~35-character lines


def test_special_token_split_across_pieces_is_found(tokenizers):
    gpt2 = tokenizers["gpt2"]
    parts = ["abc <|endof", "text|", ">def", " <|", "endoftext|>"]
    ids = list(gpt2.encode_iterable(parts, allowed_special={EOT}, buffer_chars=1))
    assert ids == gpt2.encode("".join(parts), allowed_special={EOT}) and ids.count(gpt2.eot_token) == 2
    assert list(gpt2.encode_iterable(parts, buffer_chars=1)) == gpt2.encode("".join(parts))  # ordinary text


def test_disallowed_special_in_a_stream_raises_with_its_place(tokenizers):
    gpt2 = tokenizers["gpt2"]
    parts = ["x " * 50, "ab<|endo", "ftext|> more"]
    with pytest.raises(ValueError, match=r"'<\|endoftext\|>' at character 102, which disallowed_special forbids"):
        list(gpt2.encode_iterable(parts, disallowed_special="all", buffer_chars=10))
    assert list(gpt2.encode_iterable(parts, allowed_special="all", disallowed_special="all", buffer_chars=10)) == (
        gpt2.encode("".join(parts), allowed_special="all")
    )


def test_stream_from_an_open_file(tmp_path, tokenizers):
    text = shakespeare_text()[:30_000].replace("\n\n", "\n" + EOT + "\n")
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    gpt2 = tokenizers["gpt2"]
    with open(path, encoding="utf-8", newline="") as f:
        assert list(gpt2.encode_iterable(f, allowed_special="all", buffer_chars=500)) == gpt2.encode(text, "all")
    with open(path, "rb") as f, pytest.raises(TypeError, match="open files in text mode"):
        list(gpt2.encode_iterable(f))
    with pytest.raises(ValueError, match="buffer_chars=0 is not valid"):
        gpt2.encode_iterable([text], buffer_chars=0)  # checked at the call, before any reading
    with pytest.raises(ValueError, match="allowed_special=.* is not valid"):
        gpt2.encode_iterable([text], allowed_special={"<|typo|>"})


def generated_stream(n_chars: int) -> Iterator[str]:
    """Lines of Shakespeare, with "<|endoftext|>" now and then, until ``n_chars`` characters: made on the fly."""
    lines = shakespeare_text()[:100_000].splitlines(keepends=True)
    made = 0
    for k, line in enumerate(itertools.cycle(lines)):
        if made >= n_chars:
            return
        line = line + EOT if k % 97 == 0 else line
        made += len(line)
        yield line


@pytest.mark.parametrize("name", ["char", "gpt2"])
def test_memory_stays_bounded_on_a_stream_many_times_larger(tokenizers, name):
    # The stream's characters for "char": the first 100,000 characters of the corpus that it repeats.
    tok = CharTokenizer(shakespeare_text()[:100_000]) if name == "char" else tokenizers["gpt2"]
    n_chars, limit = 4_000_000, 2_000_000  # a 4 MB stream through at most 2 MB of Python memory
    whole = tok.encode("".join(generated_stream(n_chars)), allowed_special="all")  # made before tracing starts

    tracemalloc.start()
    try:
        # Compared id by id at C speed (no Python int is made per id, which tracing would slow down).
        stream = tok.encode_iterable(generated_stream(n_chars), allowed_special="all")
        same = all(itertools.starmap(operator.eq, itertools.zip_longest(stream, whole)))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        # The control: a quarter of the stream encoded at once already needs more than the limit, so the
        # measurement does see growth (and the whole stream would need four times that).
        ids = tok.encode("".join(generated_stream(n_chars // 4)), allowed_special="all")
        _, peak_whole = tracemalloc.get_traced_memory()
        del ids
    finally:
        tracemalloc.stop()
    assert same  # the same ids, in the same order, as many
    assert peak < limit < peak_whole, (peak, peak_whole)
