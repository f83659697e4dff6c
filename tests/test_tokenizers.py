"""Tokenizers: round trips over the whole corpus, from-scratch BPE vs tiktoken, GPT-2 offline, errors, I/O."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter

import pytest

from llmlab.corpus import shakespeare, shakespeare_text
from llmlab.tokenizers import (
    EOT,
    GPT2_FILES,
    BPETokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    bpe_merge_step,
    count_pairs,
    count_words,
    encode_from_scratch,
    find_gpt2_file,
    get_tokenizer,
    load_gpt2_encoding,
    load_tokenizer,
    merge_pair,
    most_frequent_pair,
    pretokenize,
    tiktoken_cache_dir,
    tokenizer_from_dict,
    train_bpe,
    verify_sha256,
)

TRICKY = [
    "",
    "hello world",
    "  leading and trailing spaces   ",
    "tabs\tand\r\nwindows line ends\n\n\n",
    "it's they'll we've I'm you'd DON'T",
    "numbers 12345 and 3.14159, e = mc²",
    "unicode: café, naïve, Ελληνικά, 日本語, emoji 🙂👍🏽",
    "the literal text <|endoftext|> is ordinary text",
    "trailing newline\n",
]


@pytest.fixture(scope="module")
def works() -> list[str]:
    return shakespeare()["text"]


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    # A smaller training slice and vocabulary keep the test fast; round trips still use the whole corpus.
    return BPETokenizer(train_bpe(shakespeare_text()[:300_000], 512))


@pytest.fixture(scope="module")
def gpt2() -> GPT2Tokenizer:
    return get_tokenizer("gpt2")


# ---- round trips over the whole embedded corpus -------------------------------------------------------


def test_char_round_trip_whole_corpus(works):
    tok = get_tokenizer("char")
    ids = tok.encode_batch(works)
    assert [tok.decode(x) for x in ids] == works
    assert sum(map(len, ids)) == sum(map(len, works))  # one id per character


@pytest.mark.parametrize("which", ["bpe", "gpt2"])
def test_bpe_round_trip_whole_corpus(which, works, bpe, gpt2):
    tok = {"bpe": bpe, "gpt2": gpt2}[which]
    ids = tok.encode_batch(works, num_threads=2)
    assert [tok.decode(x) for x in ids] == works
    n_tokens = sum(map(len, ids))
    # BPE compresses: far fewer tokens than characters (512-token BPE ~0.54 per char, GPT-2 ~0.31).
    assert n_tokens < {"bpe": 0.6, "gpt2": 0.35}[which] * sum(map(len, works))
    if which == "gpt2":
        # Reference figure (shared/reference.md) for the joined text: 1,566,041 tokens.
        assert len(tok.encode(shakespeare_text())) == 1_566_041


@pytest.mark.parametrize("text", TRICKY)
def test_round_trip_tricky_text(text, bpe, gpt2):
    for tok in (bpe, gpt2):
        assert tok.decode(tok.encode(text)) == text
    assert get_tokenizer("char", text="x" + text).decode(get_tokenizer("char", text="x" + text).encode(text)) == text


def test_empty_text_encodes_to_nothing(bpe, gpt2):
    for tok in (get_tokenizer("char", text="abc"), bpe, gpt2):
        assert tok.encode("") == []
        assert tok.decode([]) == ""


# ---- character tokenizer -------------------------------------------------------------------------------


def test_char_vocabulary_is_sorted_chars_then_eot():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == [" ", "d", "e", "h", "l", "o", "r", "w"]
    assert tok.vocab_size == 9 and tok.eot_token == 8
    assert tok.encode("hello") == [3, 2, 4, 4, 5]
    assert tok.decode([3, 2, tok.eot_token]) == "he" + EOT
    corpus_tok = get_tokenizer("char")
    assert corpus_tok.vocab_size == 85 and corpus_tok.eot_token == 84  # 84 Shakespeare characters + EOT


def test_char_unknown_character_names_it_and_its_position():
    tok = CharTokenizer.from_text("abc ")
    with pytest.raises(ValueError, match=r"'z' \(U\+007A\) at position 6"):
        tok.encode("abc aaz")
    with pytest.raises(ValueError, match="token id 99"):
        tok.decode([0, 99])


# ---- from-scratch BPE ----------------------------------------------------------------------------------


def test_pretokenize_splits_like_gpt2_and_keeps_every_character():
    text = "Hello, world! It's 2024.\n\n  Done"
    pieces = pretokenize(text)
    # Whitespace before a word: all but the last space stay apart, the last one joins the word.
    assert pieces == ["Hello", ",", " world", "!", " It", "'s", " 2024", ".", "\n\n ", " Done"]
    assert "".join(pieces) == text


def test_merge_pair_and_count_pairs_by_hand():
    assert merge_pair([1, 2, 3, 1, 2], (1, 2), 9) == [9, 3, 9]
    assert merge_pair([5, 5, 5], (5, 5), 9) == [9, 5]  # left to right, no overlaps
    words = {(1, 2, 3): 2, (1, 2): 5}
    assert count_pairs(words) == Counter({(1, 2): 7, (2, 3): 2})


def test_most_frequent_pair_breaks_ties_by_the_smallest_pair():
    counts = {(3, 4): 5, (1, 9): 5, (0, 1): 2, (2, 0): 5}
    assert most_frequent_pair(counts) == (1, 9)  # count first, then the smallest ids: training is deterministic
    assert most_frequent_pair({(7, 7): 1}) == (7, 7)


def test_train_bpe_equals_the_plain_merge_loop():
    # train_bpe's incremental counting must give exactly the merges of recounting everything each step.
    text = shakespeare_text()[:20_000]
    fast = train_bpe(text, 256 + 60 + 1)
    words, slow = count_words(text), []
    for k in range(60):
        words, pair = bpe_merge_step(words, 256 + k)
        slow.append(pair)
    assert fast == slow
    # The first merge is the most frequent adjacent byte pair inside words, counted independently.
    brute = Counter(p for w in pretokenize(text) for p in zip(w.encode(), w.encode()[1:]))
    assert brute[fast[0]] == max(brute.values())


def test_from_scratch_encoder_equals_tiktoken_wrapper(bpe, works):
    text = "\n\n".join(works[:8])  # ~1 MB of real text the merges were (mostly) not trained on
    assert encode_from_scratch(text, bpe.merges) == bpe.encode(text)
    for t in TRICKY:
        assert encode_from_scratch(t, bpe.merges) == bpe.encode(t), t


def test_bpe_vocabulary_layout(bpe):
    assert bpe.vocab_size == 512 and bpe.eot_token == 511 and len(bpe.merges) == 255
    assert bpe.vocab[:256] == [bytes([b]) for b in range(256)]
    a, b = bpe.merges[0]
    assert bpe.vocab[256] == bpe.vocab[a] + bpe.vocab[b]
    assert bpe.decode([bpe.eot_token]) == EOT
    assert bpe.eot_token not in bpe.encode("a <|endoftext|> b")  # ordinary text, never the EOT id


def test_train_bpe_bad_sizes_and_tiny_text():
    with pytest.raises(ValueError, match="vocab_size=100"):
        train_bpe("some text", 100)
    with pytest.warns(UserWarning, match="stopped after"):
        merges = train_bpe("ab ab", 1024)
    assert len(merges) == 2  # (a, b) then (" ", ab): nothing left to merge after that
    tok = BPETokenizer(merges)
    assert tok.vocab_size == 259 and tok.decode(tok.encode("ab ab abba")) == "ab ab abba"


# ---- GPT-2 offline -------------------------------------------------------------------------------------


def test_gpt2_known_ids(gpt2):
    assert gpt2.encode("hello world") == [31373, 995]
    assert gpt2.vocab_size == 50257 and gpt2.eot_token == 50256
    assert gpt2.decode([50256]) == EOT
    assert 50256 not in gpt2.encode(EOT)


def test_wrong_hash_names_file_and_both_hashes(tmp_path):
    fake = tmp_path / "vocab.bpe"
    fake.write_text("#version: 0.2\nnot the real merges\n")
    actual = hashlib.sha256(fake.read_bytes()).hexdigest()
    expected = GPT2_FILES["vocab.bpe"][1]
    with pytest.raises(ValueError) as err:
        load_gpt2_encoding(vocab_bpe=fake)
    assert str(fake) in str(err.value) and actual in str(err.value) and expected in str(err.value)
    verify_sha256(find_gpt2_file("vocab.bpe"), expected)  # the real file passes


def test_tiktoken_cache_is_used_when_present_and_valid(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert tiktoken_cache_dir() == tmp_path
    url, _ = GPT2_FILES["encoder.json"]
    cached = tmp_path / hashlib.sha1(url.encode()).hexdigest()  # tiktoken's cache file name
    assert find_gpt2_file("encoder.json") != cached  # nothing cached yet: the package copy
    shutil.copy(find_gpt2_file("encoder.json"), cached)
    assert find_gpt2_file("encoder.json") == cached
    cached.write_text("{}")  # a damaged cache entry is skipped, not trusted
    assert find_gpt2_file("encoder.json") != cached
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    assert tiktoken_cache_dir() is None  # caching disabled, as in tiktoken


# ---- building, saving, loading, fingerprints ------------------------------------------------------------


def test_save_load_and_dict_round_trips(tmp_path, bpe, gpt2):
    text = shakespeare_text()[:50_000]
    for tok in (get_tokenizer("char"), bpe, gpt2):
        d = tok.to_dict()
        assert json.loads(json.dumps(d)) == d  # plain JSON values only
        path = tmp_path / f"{tok.name}.json"
        tok.save(path)
        for again in (load_tokenizer(path), tokenizer_from_dict(d)):
            assert type(again) is type(tok) and again.fingerprint == tok.fingerprint
            assert again.vocab_size == tok.vocab_size and again.eot_token == tok.eot_token
            assert again.encode(text) == tok.encode(text)


def test_to_dict_survives_a_weights_only_checkpoint(tmp_path, bpe):
    torch = pytest.importorskip("torch")
    torch.save({"tokenizer": bpe.to_dict()}, tmp_path / "ckpt.bin")
    d = torch.load(tmp_path / "ckpt.bin", weights_only=True)["tokenizer"]
    assert tokenizer_from_dict(d).fingerprint == bpe.fingerprint


def test_fingerprints_tell_tokenizers_apart(bpe, gpt2):
    prints = {
        get_tokenizer("char").fingerprint,
        get_tokenizer("char", text="abc").fingerprint,
        bpe.fingerprint,
        BPETokenizer(bpe.merges[:-1]).fingerprint,
        gpt2.fingerprint,
    }
    assert len(prints) == 5
    assert BPETokenizer(list(bpe.merges)).fingerprint == bpe.fingerprint  # same definition, same print
    assert all(len(p) == 64 for p in prints)


def test_bad_names_and_files_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown tokenizer 'sentencepiece'"):
        get_tokenizer("sentencepiece")
    with pytest.raises(ValueError, match="vocab_size=100 cannot be set for 'char'"):
        get_tokenizer("char", vocab_size=100)
    with pytest.raises(ValueError, match="vocab_size=1000 cannot be set for 'gpt2'"):
        get_tokenizer("gpt2", vocab_size=1000)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_tokenizer(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_tokenizer(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="'wordpiece'"):
        tokenizer_from_dict({"name": "wordpiece"})
    with pytest.raises(ValueError, match="merge 0"):
        BPETokenizer([(300, 1)])


def test_get_tokenizer_bpe_trains_on_given_text():
    text = shakespeare_text()[:30_000]
    tok = get_tokenizer("bpe", text=text, vocab_size=300)
    assert tok.name == "bpe" and tok.vocab_size == 300
    assert tok.merges == train_bpe(text, 300)
