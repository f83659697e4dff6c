"""llmlab.hf_tokenizer: every llmlab tokenizer as a transformers tokenizer with the same ids, both ways."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmlab.corpus import shakespeare_text
from llmlab.tokenizers import EOT, BPETokenizer, CharTokenizer, ChatTokenizer, GPT2Tokenizer, Tokenizer

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from llmlab.hf_tokenizer import bytes_to_unicode, save_hf_tokenizer  # noqa: E402

CORPUS = shakespeare_text()[:60_000]
# Texts where a pre-tokenizer or a byte mapping would slip: runs of spaces and newlines (GPT-2's pattern keeps the
# last space for the next word), tabs and CR LF, contractions, digits, accents, CJK, emoji with a skin-tone
# modifier and a zero-width joiner, a no-break and an ideographic space, trailing whitespace, the empty text.
TEXTS = [
    "ROMEO: But soft, what light\n\n  through   yonder\twindow breaks?  ",
    "it's we'll they've I'M 123 4567 3.14 ..., ?! --\r\n",
    "héllo wörld — naïve café, Ελληνικά, русский, 日本語のテキスト",
    "emoji 🎉👍🏽 👩‍💻 ok\u00a0x\u3000y \n\n\n   ",
    " ",
    "",
]


def _loaded(tokenizer: Tokenizer, folder: Path) -> transformers.PreTrainedTokenizerBase:
    files = save_hf_tokenizer(tokenizer, folder, model_max_length=100_000)  # the corpus slice is no overflow
    assert {"tokenizer.json", "tokenizer_config.json"} <= {p.name for p in files}
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    assert hf.model_max_length == 100_000
    return hf


def _same_both_ways(tokenizer: Tokenizer, hf: transformers.PreTrainedTokenizerBase, texts: list[str]) -> None:
    for text in texts:
        ids = tokenizer.encode(text)
        assert hf(text)["input_ids"] == ids, text  # no BOS/EOS added around a text
        assert hf.decode(ids) == tokenizer.decode(ids) == text
    every = list(range(tokenizer.vocab_size))  # every id, specials included, decodes as llmlab decodes it
    assert hf.decode(every) == tokenizer.decode(every)
    assert hf.eos_token_id == tokenizer.eot_token and hf.convert_ids_to_tokens(tokenizer.eot_token) == EOT


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(CORPUS, 600)


def test_learned_bpe_round_trips_with_llmlabs_ids(bpe: BPETokenizer, tmp_path: Path) -> None:
    hf = _loaded(bpe, tmp_path)
    _same_both_ways(bpe, hf, [*TEXTS, CORPUS])  # the whole corpus slice too: ~60k characters
    assert len(bpe.encode(TEXTS[0])) < 0.6 * len(TEXTS[0].encode())  # the merges are used, not just bytes


def test_merges_keep_their_order(tmp_path: Path) -> None:
    """Two merges compete for the same bytes: the one learned first must win in transformers as in llmlab."""
    text = "aaab " * 40 + "aab " * 30  # learns (a, a) first, then (aa, a) or (aa, b)
    tok = BPETokenizer.train(text, 262)
    hf = _loaded(tok, tmp_path)
    _same_both_ways(tok, hf, ["aaab", "aaaa", "aaaaaab", " aab aaab"])


def test_chat_specials_keep_their_ids(bpe: BPETokenizer, tmp_path: Path) -> None:
    chat = ChatTokenizer(bpe)
    hf = _loaded(chat, tmp_path)
    _same_both_ways(chat, hf, TEXTS)
    reply = chat.special("<|reply|>")
    assert hf.convert_tokens_to_ids("<|reply|>") == reply == bpe.vocab_size + 2
    # transformers turns special tokens written in a text into their ids: llmlab's allowed_special="all".
    text = "Oph.<|reply|> No more.<|endoftext|>"
    pieces = chat.encode("Oph.") + [reply] + chat.encode(" No more.") + [chat.eot_token]
    assert hf(text)["input_ids"] == chat.encode(text, allowed_special="all") == pieces
    assert chat.encode(text) != pieces  # plain encode keeps them as characters (the one difference)
    assert hf.decode(pieces, skip_special_tokens=True) == "Oph. No more."


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_a_vocabularys_own_specials_keep_their_ids_and_the_longest_wins(kind: str, tmp_path: Path) -> None:
    specials = ["<|a|>", "<|a|>x", "<|pad|>"]  # two that overlap: where both match, the longer is taken
    if kind == "bpe":
        tok: Tokenizer = BPETokenizer(BPETokenizer.train(CORPUS, 300).merges, specials=specials)
    else:
        tok = CharTokenizer.from_text(CORPUS + "".join(TEXTS), specials=specials)
    hf = _loaded(tok, tmp_path)
    _same_both_ways(tok, hf, TEXTS[:3])
    assert [hf.convert_tokens_to_ids(s) for s in specials] == [tok.special(s) for s in specials]
    text = "a<|a|>xb<|a|>b<|pad|><|endoftext|>"
    assert hf(text)["input_ids"] == tok.encode(text, allowed_special="all")
    assert tok.special("<|a|>x") in tok.encode(text, allowed_special="all")


def test_gpt2_bpe_round_trips(tmp_path: Path) -> None:
    gpt2 = GPT2Tokenizer()
    _same_both_ways(gpt2, _loaded(gpt2, tmp_path / "plain"), TEXTS)
    chat = ChatTokenizer(gpt2)
    assert _loaded(chat, tmp_path / "chat").convert_tokens_to_ids("<|speaker|>") == 50257


def test_characters_round_trip_and_unknown_ones_are_errors_in_both(tmp_path: Path) -> None:
    chars = CharTokenizer.from_text(CORPUS + "".join(TEXTS))
    hf = _loaded(chars, tmp_path / "char")
    _same_both_ways(chars, hf, [*TEXTS, CORPUS[:5000]])
    with pytest.raises(ValueError, match="not in this character tokenizer"):
        chars.encode("Ω")
    with pytest.raises(Exception, match="Missing \\[UNK\\]"):  # transformers refuses too, instead of dropping it
        hf("Ω")
    chat = ChatTokenizer(chars)
    _same_both_ways(chat, _loaded(chat, tmp_path / "chat"), TEXTS)


def test_the_byte_alphabet_is_gpt2s() -> None:
    """Every byte gets a distinct visible character, and GPT-2's files spell tokens with it (space = 'Ġ')."""
    import json

    from llmlab.gpt2_files import find_gpt2_file

    table = bytes_to_unicode()
    assert len(set(table.values())) == 256 and table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ"
    vocab = json.loads(find_gpt2_file("encoder.json").read_text(encoding="utf-8"))
    gpt2 = GPT2Tokenizer()
    for token in (" the", "\n\n", " Hello", "é"):
        ids = gpt2.encode(token)
        assert len(ids) == 1 and vocab["".join(table[b] for b in token.encode())] == ids[0]


def test_a_tokenizer_it_does_not_know_is_refused(tmp_path: Path) -> None:
    class Words(Tokenizer):
        name = "words"

        @property
        def vocab_size(self) -> int:
            return 3

    with pytest.raises(ValueError, match="only llmlab's char, bpe and gpt2 tokenizers"):
        save_hf_tokenizer(Words(), tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_pattern_the_tokenizers_library_cannot_compile_is_refused(tmp_path: Path) -> None:
    """tiktoken takes Python's named groups (?P<...>); Oniguruma, which tokenizers uses, does not."""
    tok = BPETokenizer([], pattern=r"(?P<word>\S+)|\s+")
    assert tok.encode("ab c") == [97, 98, 32, 99]
    with pytest.raises(ValueError, match=r"pattern='\(\?P<word>.*is not valid: the tokenizers library cannot compile"):
        save_hf_tokenizer(tok, tmp_path)
    assert not any(tmp_path.iterdir())
