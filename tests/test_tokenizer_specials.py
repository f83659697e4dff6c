"""Special tokens with tiktoken's rules on every tokenizer, BPE training that never merges across them, and
the trainer's tie-break rule against other trainers."""

from __future__ import annotations

import json
import random
import warnings

import pytest

from llmlab.corpus import shakespeare_text
from llmlab.tokenizers import (
    EOT,
    GPT2_SPLIT_PATTERN,
    BPETokenizer,
    CharTokenizer,
    ChatTokenizer,
    bpe_merge_step,
    count_words,
    get_tokenizer,
    load_tokenizer,
    most_frequent_pair,
    pretokenize,
    split_on_specials,
    tokenizer_from_dict,
    train_bpe,
)

# Texts where a special token sits against every kind of neighbour the GPT-2 pre-tokenizer cares about.
WITH_SPECIALS = [
    EOT,
    EOT + EOT,
    "a" + EOT + "b",
    "hello  " + EOT + "  world",
    "x\n\n" + EOT + "\n\ny",
    "end." + EOT + '"Quoted" start',
    "it's" + EOT + "'s 12" + EOT + "34",
    "half a special <|endoftext| and <|endoftext|>> too",
    "unicode: café " + EOT + "日本語 🙂" + EOT,
    "trailing " + EOT + "   ",
]


@pytest.fixture(scope="module")
def gpt2():
    return get_tokenizer("gpt2")


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(shakespeare_text()[:100_000], 400, special_tokens=["<|pad|>", "<|sep|>"])


def random_texts(n: int, seed: int) -> list[str]:
    """Random texts built from pieces that stress the pre-tokenizer and special-token matching."""
    pieces = [" ", "  ", "\n", "\n\n", "\t", "\r\n", "a", "Z", "é", "日", "1", "23", "'s", "'", ".", "!!", "\u00a0",
              "\x1c", "\u3000", EOT, "<|", "|>", "<|endoftext|", "endoftext", "word", " the"]  # fmt: skip
    rng = random.Random(seed)
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 40))) for _ in range(n)]


# ---- GPT-2 and our BPE against tiktoken's own encode -----------------------------------------------------


def test_default_encode_is_unchanged_ordinary_text(gpt2):
    # The safe default: a special token's text is ordinary text unless allowed (ids pinned from before).
    assert gpt2.encode("a" + EOT + "b") == [64, 27, 91, 437, 1659, 5239, 91, 29, 65]
    assert gpt2.encode("a" + EOT + "b", allowed_special=set()) == gpt2.encode_ordinary("a" + EOT + "b")
    assert gpt2.encode("a" + EOT + "b", allowed_special="all") == [64, 50256, 65]
    assert gpt2.encode_batch(["a" + EOT, EOT], allowed_special={EOT}) == [[64, 50256], [50256]]


@pytest.mark.parametrize("allowed", [set(), {EOT}, "all"], ids=["none", "eot", "all"])
def test_gpt2_specials_equal_tiktoken(gpt2, allowed):
    enc = gpt2.encoding  # tiktoken.Encoding: its Rust encoder, not our Python splitting, is the reference
    for text in WITH_SPECIALS + random_texts(300, seed=1):
        assert gpt2.encode(text, allowed_special=allowed) == enc.encode(
            text, allowed_special=allowed, disallowed_special=()
        ), text
    assert gpt2.encode_batch(WITH_SPECIALS, 2, allowed) == enc.encode_batch(
        WITH_SPECIALS, allowed_special=allowed, disallowed_special=()
    )


def test_disallowed_special_raises_like_tiktoken(gpt2):
    enc = gpt2.encoding
    for text in WITH_SPECIALS + random_texts(100, seed=2):
        for allowed, disallowed in [(set(), "all"), ({EOT}, "all"), (set(), {EOT})]:
            try:
                want = enc.encode(text, allowed_special=allowed, disallowed_special=disallowed)
            except ValueError:
                with pytest.raises(ValueError, match="disallowed_special forbids"):
                    gpt2.encode(text, allowed_special=allowed, disallowed_special=disallowed)
            else:
                assert gpt2.encode(text, allowed_special=allowed, disallowed_special=disallowed) == want
    with pytest.raises(ValueError, match=r"'<\|endoftext\|>' at character 2"):
        gpt2.encode("ab" + EOT, disallowed_special="all")


def test_bpe_specials_equal_tiktoken(bpe):
    n = 256 + len(bpe.merges)
    assert bpe.special_tokens == {"<|pad|>": n, "<|sep|>": n + 1, EOT: n + 2}
    assert bpe.vocab_size == 400 and bpe.eot_token == 399 and bpe.special("<|sep|>") == 398
    texts = [t.replace("<|", "<|pad|>", 1).replace("|>", "<|sep|>", 1) for t in WITH_SPECIALS + random_texts(200, 3)]
    for text in texts:
        for allowed in (set(), {EOT}, {"<|sep|>"}, "all"):
            want = bpe.encoding.encode(text, allowed_special=allowed, disallowed_special=())
            assert bpe.encode(text, allowed_special=allowed) == want, (text, allowed)
        assert bpe.decode(bpe.encode(text, allowed_special="all")) == text


def test_bad_allowed_special_names_the_fix(gpt2):
    with pytest.raises(ValueError, match=r"allowed_special='<\|endoftext\|>' is not valid: give a set"):
        gpt2.encode("x", allowed_special=EOT)  # a bare string is a common slip for {EOT}
    with pytest.raises(ValueError, match=r"allowed_special=\{'<\|pad\|>'\} is not valid: \['<\|pad\|>'\] are not"):
        gpt2.encode("x", allowed_special={"<|pad|>"})  # tiktoken ignores unknown names; a typo should not
    with pytest.raises(ValueError, match="disallowed_special=.* is not valid"):
        gpt2.encode("x", disallowed_special={"<|typo|>"})


# ---- overlapping special tokens: the longest wins --------------------------------------------------------


OVERLAPPING = ["<|a|>", "<|a|>x", "a|>x"]


@pytest.mark.parametrize("order", [OVERLAPPING, OVERLAPPING[::-1]], ids=["short-first", "long-first"])
def test_longest_special_wins_whatever_the_order(order):
    tok = CharTokenizer("qxyz<|a>", specials=order)
    s = tok.special_tokens
    text = "q<|a|>xz<|a|>y|a|>x"
    assert tok.encode(text, allowed_special="all") == [
        tok.stoi["q"], s["<|a|>x"], tok.stoi["z"], s["<|a|>"], tok.stoi["y"], tok.stoi["|"], s["a|>x"]
    ]  # fmt: skip
    # Only the allowed ones count: without "<|a|>x", "<|a|>" matches and "x" is ordinary text.
    assert tok.encode("q<|a|>xz", allowed_special={"<|a|>"}) == [tok.stoi["q"], s["<|a|>"], *tok.encode("xz")]
    # Leftmost first: "<|a|>x" at 1 beats "a|>x" at 3, even though both are as long.
    assert tok.encode("q<|a|>x", allowed_special={"<|a|>x", "a|>x"}) == [tok.stoi["q"], s["<|a|>x"]]
    assert tok.decode(tok.encode(text, allowed_special="all")) == text


def test_longest_special_wins_as_in_hugging_face_tokenizers():
    # Hugging Face tokenizers matches added tokens leftmost-longest: the exported tokenizer.json must agree.
    hf = pytest.importorskip("tokenizers")
    chars = "qxyz<|a>"
    tok = CharTokenizer(chars, specials=OVERLAPPING)
    vocab = {c: i for c, i in tok.stoi.items()}
    ref = hf.Tokenizer(hf.models.WordLevel(vocab, unk_token=None))
    ref.pre_tokenizer = hf.pre_tokenizers.Split("", "isolated")  # one piece per character, as "char" does
    for special, i in tok.special_tokens.items():
        assert ref.add_special_tokens([special]) == 1 and ref.token_to_id(special) == i
    for text in ["q<|a|>xz<|a|>y|a|>x", "<|a|>x<|a|><|a|>xx", "a|>x<|a|>", "z<|a|a|>x"]:
        assert tok.encode(text, allowed_special="all") == ref.encode(text).ids, text


def test_leftmost_longest_on_gpt2_style_specials_against_tiktoken():
    # Non-overlapping specials on a BPE: tiktoken and we agree, whatever tiktoken's internal order.
    tok = BPETokenizer(train_bpe(shakespeare_text()[:20_000], 300), specials=["<|im_start|>", "<|im_end|>"])
    text = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello" + EOT
    assert tok.encode(text, allowed_special="all") == tok.encoding.encode(text, allowed_special="all")
    assert tok.encode(text, allowed_special="all")[0] == tok.special("<|im_start|>")


# ---- the character tokenizer's and the chat tokenizer's specials -----------------------------------------


def test_char_specials_get_ids_after_the_characters(tmp_path):
    tok = CharTokenizer("abc", specials=["<|pad|>", EOT, "<|sep|>"])  # EOT is always there: named once, last
    assert tok.specials == ("<|pad|>", "<|sep|>")
    assert tok.special_tokens == {"<|pad|>": 3, "<|sep|>": 4, EOT: 5}
    assert tok.vocab_size == 6 and tok.eot_token == 5
    text = "ab<|sep|>c" + EOT
    assert tok.encode(text, allowed_special="all") == [0, 1, 4, 2, 5]
    assert tok.decode([0, 1, 4, 2, 5]) == text
    # Ordinary text must be characters of the vocabulary; positions count in the whole text.
    with pytest.raises(ValueError, match=r"'<' \(U\+003C\) at position 2"):
        tok.encode(text)
    with pytest.raises(ValueError, match=r"'z' \(U\+007A\) at position 15"):
        tok.encode("ab" + EOT + "z", allowed_special="all")
    tok.save(tmp_path / "char.json")
    again = load_tokenizer(tmp_path / "char.json")
    assert again.special_tokens == tok.special_tokens and again.fingerprint == tok.fingerprint
    assert again.encode(text, allowed_special="all") == [0, 1, 4, 2, 5]


def test_definitions_without_specials_keep_their_old_format(bpe):
    # Old definitions (and checkpoints holding them) load, and tokenizers without specials keep their
    # fingerprint: the "specials" key appears only when there are some.
    old_char = {"name": "char", "format_version": 1, "chars": " dehlorw"}
    assert get_tokenizer("char", text="hello world").to_dict() == old_char
    assert tokenizer_from_dict(old_char).special_tokens == {EOT: 8}
    plain = BPETokenizer(bpe.merges)
    assert set(plain.to_dict()) == {"name", "format_version", "vocab_size", "pattern", "merges"}
    assert tokenizer_from_dict(plain.to_dict()).vocab_size == 256 + len(bpe.merges) + 1
    d = bpe.to_dict()
    assert d["specials"] == ["<|pad|>", "<|sep|>"] and d["vocab_size"] == 400
    assert tokenizer_from_dict(d).fingerprint == bpe.fingerprint != plain.fingerprint
    with pytest.raises(ValueError, match="rebuilds to 398"):
        tokenizer_from_dict({**d, "specials": []})  # a damaged definition is caught by its vocab_size


def test_chat_tokenizer_parses_its_and_the_base_specials(bpe):
    chat = ChatTokenizer(bpe)
    n = bpe.vocab_size
    assert chat.special_tokens == {**bpe.special_tokens, "<|speaker|>": n, "<|context|>": n + 1, "<|reply|>": n + 2}
    assert chat.special(EOT) == bpe.eot_token and chat.special("<|reply|>") == n + 2
    text = "<|speaker|>Oph.<|reply|>Ay, my lord." + EOT
    assert chat.encode(text) == bpe.encode(text)  # ordinary text by default, as before
    ids = chat.encode(text, allowed_special="all")
    assert ids == [n, *bpe.encode("Oph."), n + 2, *bpe.encode("Ay, my lord."), bpe.eot_token]
    assert chat.decode(ids) == text
    assert chat.encode(text, allowed_special={"<|reply|>"}) == [
        *bpe.encode("<|speaker|>Oph."), n + 2, *bpe.encode("Ay, my lord." + EOT)
    ]  # fmt: skip
    with pytest.raises(ValueError, match="special tokens of the base already"):
        ChatTokenizer(bpe, ["<|pad|>", "<|new|>"])
    with pytest.raises(ValueError, match=r"'<\|nope\|>' is not a special token"):
        chat.special("<|nope|>")


def test_get_tokenizer_specials(monkeypatch):
    import llmlab.corpus
    from llmlab.tokenizers import _default_bpe_merges

    # The default BPE trains on the corpus; a slice of it keeps this fast (and out of the shared cache).
    monkeypatch.setattr(llmlab.corpus, "shakespeare_text", lambda: shakespeare_text()[:50_000])
    _default_bpe_merges.cache_clear()
    try:
        tok = get_tokenizer("bpe", vocab_size=300, specials=["<|pad|>"])
        assert tok.vocab_size == 300 and tok.special("<|pad|>") == 298 and tok.eot_token == 299
        assert tok.merges == train_bpe(shakespeare_text()[:50_000], 299)  # the corpus has no "<|pad|>" to cut
    finally:
        _default_bpe_merges.cache_clear()
    assert get_tokenizer("char", text="ab", specials=["<|pad|>"]).special_tokens == {"<|pad|>": 2, EOT: 3}
    with pytest.raises(ValueError, match="specials=.* is not valid: GPT-2's vocabulary is fixed"):
        get_tokenizer("gpt2", specials=["<|pad|>"])
    with pytest.raises(ValueError, match=r"specials='<\|pad\|>' is not valid: give a list"):
        get_tokenizer("char", text="ab", specials="<|pad|>")


# ---- training never merges across a special token ----------------------------------------------------------


def documents(n: int, seed: int = 0) -> list[str]:
    """Short documents that end in punctuation and start with a quote: next to "<|endoftext|>" they would
    join its "<|" and "|>" into punctuation runs if the trainer did not cut there."""
    rng = random.Random(seed)
    words = ["the", "king", "is", "dead", "long", "live", "queen", "of", "night", "and", "day"]
    return ['"' + " ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + rng.choice(".!?") for _ in range(n)]


def test_train_bpe_cuts_at_special_tokens():
    text = EOT.join(documents(400)) + EOT + "<|pad|>" * 50
    plain = BPETokenizer.train(text, 290)  # the control: without special tokens the trainer learns them...
    learned = plain.vocab[256:]
    assert any(b"endoftext" in t for t in learned) and b"<|" in learned
    assert b'|>"' in learned  # ...and even joins the end of one with the start of the next document

    tok = BPETokenizer.train(text, 290, special_tokens=[EOT, "<|pad|>"])
    assert tok.vocab_size == 290 and len(tok.merges) == 290 - 256 - 2
    assert tok.special_tokens == {"<|pad|>": 288, EOT: 289}  # reserved ids after the merges, EOT last
    for t in tok.vocab[256:]:  # no learned token holds a byte found only in special tokens
        assert not set(t) & set(b"<|>xp"), t
    ids = tok.encode(text, allowed_special="all")
    assert ids.count(289) == text.count(EOT) and ids.count(288) == 50
    assert tok.decode(ids) == text

    # Independent reference: the plain merge loop on the words of the stretches between special tokens.
    stretches = [s for part in text.split(EOT) for s in part.split("<|pad|>")]
    words: dict[tuple[int, ...], int] = {}
    for s in stretches:
        for w in pretokenize(s):
            key = tuple(w.encode())
            words[key] = words.get(key, 0) + 1
    assert count_words(text, special_tokens=[EOT, "<|pad|>"]) == words
    slow = []
    for k in range(len(tok.merges)):
        words, pair = bpe_merge_step(words, 256 + k)
        slow.append(pair)
    assert tok.merges == slow


def test_train_bpe_special_tokens_edge_cases():
    assert split_on_specials("a<|x|>b<|x|>y<|x|>", ["<|x|>", "<|x|>y"]) == ["a", "b", "", ""]  # longest first
    # Without EOT among the special tokens, its text stays ordinary training text (as before).
    text = ("ab" + EOT) * 30
    assert train_bpe(text, 265, special_tokens=["<|pad|>"]) == train_bpe(text, 264)
    with pytest.warns(UserWarning, match="stopped after 1 merges"):  # only "ab" is left between the EOTs
        assert train_bpe(text, 265, special_tokens=[EOT]) == [(ord("a"), ord("b"))]
    with pytest.raises(ValueError, match=r"vocab_size=257 is too small: byte-level BPE needs at least 258"):
        train_bpe(text, 257, special_tokens=["<|pad|>", EOT])
    with pytest.raises(ValueError, match=r"special_tokens='<\|pad\|>' is not valid: give a list"):
        train_bpe(text, 300, special_tokens="<|pad|>")
    with pytest.raises(ValueError, match="special_tokens=.* is not valid: give distinct, non-empty"):
        train_bpe(text, 300, special_tokens=["<|pad|>", "<|pad|>"])


# ---- the trainer's tie-break rule, and how other trainers break the same tie -----------------------------


def test_tie_break_rule_and_how_other_trainers_differ():
    # The rule as bpe.most_frequent_pair's docstring states it: highest count, then the smallest pair of ids.
    assert most_frequent_pair({(256, 5): 2, (98, 99): 2, (97, 300): 2, (1, 1): 1}) == (97, 300)
    # "cd ab" -> pre-tokens "cd", " ab": the pairs (c,d), (" ",a), (a,b) each occur once.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # too short a text for more merges: the warning is expected
        assert train_bpe("cd ab", 258) == [(ord(" "), ord("a"))]  # smallest pair of ids: 32 < 97 < 99
    educational = pytest.importorskip("tiktoken._educational")
    ranks = educational.bpe_train("cd ab", 257, GPT2_SPLIT_PATTERN, visualise=None)
    assert [t for t, r in ranks.items() if r >= 256] == [b"cd"]  # tiktoken's teaching trainer: first in the text
    hf = pytest.importorskip("tokenizers")
    ref = hf.Tokenizer(hf.models.BPE())
    ref.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = hf.trainers.BpeTrainer(
        vocab_size=300, show_progress=False, initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet()
    )
    ref.train_from_iterator(["cd ab"], trainer)
    assert json.loads(ref.to_str())["model"]["merges"][0] == ["a", "b"]  # HF: smallest in its own alphabet
