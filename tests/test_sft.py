"""llmlab.sft: examples, template, masking (zero gradient on the prompt), collation, batches; ChatTokenizer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmlab.config import ModelConfig
from llmlab.model import GPT
from llmlab.sft import Example, SFTBatches, collate, dialogue_examples, render, speeches, split_by_play
from llmlab.tokenizers import CHAT_SPECIALS, ChatTokenizer, get_tokenizer, tokenizer_from_dict

PLAY = """Scene III. A room.

[Enter Laertes and Ophelia.]

Laer.
My necessaries are embark'd: farewell.

Oph.
Do you doubt that?

Laer.
For Hamlet, and the trifling of his favour.

[Exit.]

Oph.
No more but so?
"""
TEXT = PLAY * 3


@pytest.fixture(scope="module")
def tok() -> ChatTokenizer:
    return ChatTokenizer(get_tokenizer("char", text=TEXT + "<|>AByes nowl"))


def test_speeches_and_examples_follow_the_dialogue() -> None:
    parts = speeches(PLAY)
    assert ("Oph.", "Do you doubt that?") in parts and ("", "[Exit.]") in parts
    examples = dialogue_examples({"hamlet": PLAY})
    # Laer -> Oph -> Laer are consecutive; the stage direction breaks the chain before the last speech.
    assert [(e.speaker, e.reply) for e in examples] == [
        ("Oph.", "Do you doubt that?"),
        ("Laer.", "For Hamlet, and the trifling of his favour."),
    ]
    assert examples[0].context == "My necessaries are embark'd: farewell."


def test_context_lines_keep_the_last_lines_of_the_speech_before() -> None:
    two = PLAY.replace("My necessaries are embark'd: farewell.", "My necessaries are embark'd:\nfarewell.")
    whole, last = dialogue_examples({"h": two}), dialogue_examples({"h": two}, context_lines=1)
    assert whole[0].context == "My necessaries are embark'd:\nfarewell." and last[0].context == "farewell."
    assert [e.reply for e in whole] == [e.reply for e in last]
    assert dialogue_examples({"h": two}, max_chars=12, context_lines=1) == []  # max_chars counts the kept line
    with pytest.raises(ValueError, match="context_lines"):
        dialogue_examples({"h": two}, context_lines=0)


def test_split_holds_out_whole_plays() -> None:
    ex = dialogue_examples({"a": PLAY, "b": PLAY})
    train, val = split_by_play(ex, ["b"])
    assert {e.play for e in train} == {"a"} and {e.play for e in val} == {"b"}
    with pytest.raises(ValueError, match="'c'"):
        split_by_play(ex, ["c"])


def test_chat_tokenizer_specials_are_new_ids_and_round_trip(tok: ChatTokenizer) -> None:
    base = tok.base
    assert tok.vocab_size == base.vocab_size + len(CHAT_SPECIALS) and tok.eot_token == base.eot_token
    assert [tok.special(t) for t in CHAT_SPECIALS] == [base.vocab_size + i for i in range(3)]
    assert tok.encode("<|reply|>") == base.encode("<|reply|>")  # plain text never yields a special id
    ids = [tok.special("<|speaker|>"), *tok.encode("Oph."), tok.special("<|reply|>"), tok.eot_token]
    assert tok.decode(ids) == "<|speaker|>Oph.<|reply|><|endoftext|>"
    again = tokenizer_from_dict(tok.to_dict())
    assert isinstance(again, ChatTokenizer) and again.fingerprint == tok.fingerprint


def test_render_masks_exactly_the_reply_and_fits(tok: ChatTokenizer) -> None:
    e = Example("p", "Oph.", "Do you doubt that? " * 20, "No more but so?")
    ids, mask = render(e, tok, 64)
    assert len(ids) == 64
    first = mask.index(True)
    assert ids[first - 1] == tok.special("<|reply|>") and all(mask[first:]) and not any(mask[:first])
    assert tok.decode(ids[first:]) == "No more but so?<|endoftext|>"
    assert ids[0] == tok.special("<|speaker|>")  # the context is cut from its start, the template stays whole


def test_collate_by_hand(tok: ChatTokenizer) -> None:
    a = render(Example("p", "A.", "hi", "yes"), tok, 64)
    b = render(Example("p", "B.", "well met", "no"), tok, 64)
    x, y = collate([a, b], pad_id=tok.eot_token)
    # From scratch: shift, mask, pad.
    for row, (ids, mask) in enumerate([a, b]):
        n = len(ids) - 1
        expected_y = [t if m else -1 for t, m in zip(ids[1:], mask[1:])] + [-1] * (x.size(1) - n)
        assert x[row, :n].tolist() == ids[:-1] and y[row].tolist() == expected_y
        assert (x[row, n:] == tok.eot_token).all()


def test_masked_prompt_positions_get_exactly_zero_gradient(tok: ChatTokenizer) -> None:
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=tok.vocab_size, block_size=64, embedding_size=32, num_heads=2, depth=1))
    ids, mask = render(Example("p", "Oph.", "Do you doubt that?", "No more."), tok, 64)
    x, y = collate([(ids, mask)], pad_id=tok.eot_token)
    logits = model.lm_head(model.transformer.ln_f(model.hidden_states(x)))  # (1, T, V)
    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=-1)
    logits_grad = torch.autograd.grad(loss, logits, retain_graph=True)[0]
    first_target = mask.index(True) - 1  # the position whose output predicts the first reply token
    # Prompt positions' outputs are not targets: the loss's gradient there is exactly zero, not just small.
    assert torch.all(logits_grad[0, :first_target] == 0) and logits_grad[0, first_target].abs().sum() > 0
    assert torch.all(logits_grad[0, first_target:].abs().sum(-1) > 0)
    # And the package's loss equals this hand-written one.
    _, ours = model(x, y)
    torch.testing.assert_close(ours, loss, atol=1e-3, rtol=1e-3)


def test_sft_batches_are_reproducible_and_resumable(tok: ChatTokenizer) -> None:
    ex = dialogue_examples({"a": TEXT})
    b1 = SFTBatches(ex, tok, block_size=128, batch_size=2, seed=3)
    first = [b1.next() for _ in range(3)]
    b2 = SFTBatches(ex, tok, block_size=128, batch_size=2, seed=3)
    b2.next()
    state = b2.state_dict()
    b3 = SFTBatches(ex, tok, block_size=128, batch_size=2, seed=0)
    b3.load_state_dict(state)
    assert torch.equal(b3.next()[0], first[1][0])
    e1 = [x for x, _ in b1.eval_batches(2)]
    e2 = [x for x, _ in b1.eval_batches(2)]
    assert all(torch.equal(p, q) for p, q in zip(e1, e2))
    assert b1.target_tokens == sum(len(e.reply) + 1 for e in ex)  # char tokens: one per character + EOT
    with pytest.raises(ValueError, match="no fine-tuning examples"):
        SFTBatches([], tok, 48, 2)


def test_unmasked_batches_make_the_prompt_a_target_and_encodable_filters(tok: ChatTokenizer) -> None:
    from llmlab.sft import encodable

    ex = [Example("p", "Oph.", "Do you doubt that?", "No more.")]
    masked = SFTBatches(ex, tok, 64, 1)
    whole = SFTBatches(ex, tok, 64, 1, mask_prompt=False)
    (_, y_masked), (_, y_whole) = next(masked.eval_batches(1)), next(whole.eval_batches(1))
    n = len(masked.rendered[0][0]) - 1
    assert (y_whole[0, :n] != -1).all() and (y_masked[0, :n] == -1).sum() > 0
    assert (
        encodable([*ex, Example("p", "Oph.", "caf\u00e9 \u2603", "x")], tok) == ex
    )  # the snowman is not in the vocabulary


def test_target_bytes_count_only_the_reply_text_that_fits(tok: ChatTokenizer) -> None:
    long_reply = Example("p", "Oph.", "Do you doubt that?", "No more but so? " * 10)
    batches = SFTBatches([long_reply], tok, block_size=40, batch_size=1)
    ids, mask = batches.rendered[0]
    kept = tok.decode([i for i, m in zip(ids, mask) if m])
    assert long_reply.reply.startswith(kept) and len(kept) < len(long_reply.reply)  # cut to fit the block
    assert batches.target_bytes == len(kept.encode("utf-8"))
    assert batches.target_tokens == sum(mask[1:])


def test_training_batches_decode_nothing_until_a_score_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Decoding every reply to count its bytes took seconds per fine-tuning run on the plays; only a held-out
    # score needs the count, so building the batches must not decode.
    ex = [
        Example("p", "Oph.", "Do you doubt that?", "No more but so?"),
        Example("p", "Laer.", "No more but so?", "For Hamlet, farewell."),
    ]
    tok = ChatTokenizer(get_tokenizer("char", text=TEXT + "<|>AByes nowl"))  # its own: decode is patched
    calls = []
    decode = tok.decode
    monkeypatch.setattr(tok, "decode", lambda ids: calls.append(1) or decode(ids))
    batches = SFTBatches(ex, tok, block_size=40, batch_size=2)
    batches.next()
    assert calls == []
    assert batches.target_bytes == len("No more but so?") + len("For Hamlet, farewell.")
    assert len(calls) == 2
    assert batches.target_bytes == len("No more but so?") + len("For Hamlet, farewell.")  # counted once
    assert len(calls) == 2
