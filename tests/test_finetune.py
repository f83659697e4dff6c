"""llmlab.finetune: a trained checkpoint fine-tuned on masked reply examples, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llmlab.checkpoint import load_checkpoint, model_from_checkpoint
from llmlab.finetune import FineTuneData, chat_model, finetune, load_examples, reply, reply_bits_per_byte
from llmlab.sft import Example
from llmlab.tokenizers import ChatTokenizer
from llmlab.train import Trainer


@pytest.fixture(scope="module")
def base_checkpoint(char_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import tiny_config

    out = tmp_path_factory.mktemp("base")
    Trainer(tiny_config(max_iters=30, eval_interval=15, block_size=64), char_data, out).fit()
    return out / "best_checkpoint.bin"


def _examples_file(tmp_path: Path) -> Path:
    asks = ["Do you doubt that, my lord?", "What say you, my lord?", "Is it so, my lord?"]
    rows = [{"speaker": "Oph.", "context": asks[i % 3] + " " * (i % 5), "reply": "No more but so?"} for i in range(30)]
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_finetune_learns_the_replies_and_its_checkpoint_carries_the_chat_tokenizer(
    base_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ft"
    done = finetune(
        base_checkpoint,
        out,
        data=_examples_file(tmp_path),
        max_iters=120,
        max_lr=3e-3,
        overrides={"eval_interval": 40, "batch_size": 8},
    )
    assert done.reply_bpb_after < done.reply_bpb_before * 0.7  # a repeated reply is easy to learn
    model, tok, payload = model_from_checkpoint(out / "best_checkpoint.bin")
    assert isinstance(tok, ChatTokenizer) and model.config.vocab_size == tok.vocab_size
    assert payload["data_meta"]["val_examples"] == 3  # the file's last tenth is held out
    text = reply(
        model,
        tok,
        "Oph.",
        "Do you doubt that, my lord?",
        max_new_tokens=30,
        temperature=0,
        generator=torch.Generator().manual_seed(0),
    )
    assert text == "No more but so?"
    # The Trainer's val bits/byte is the held-out reply score (estimated on eval batches).
    assert load_checkpoint(out / "last_checkpoint.bin")["best_val_loss"] > 0


def test_fine_tune_data_meta_counts_the_replies(base_checkpoint: Path) -> None:
    model, tok, _ = model_from_checkpoint(base_checkpoint)
    model, chat = chat_model(model, tok)
    examples = [Example("p", "A.", "hi there", "yes"), Example("p", "B.", "well met", "no")]
    data = FineTuneData(examples, examples, chat, model.config.block_size)
    assert data.meta["val_tokens"] == 3 + 1 + 2 + 1 and data.meta["val_bytes"] == 5  # chars + EOT per reply
    assert reply_bits_per_byte(model, examples, chat) > 0


def test_fine_tune_data_renders_each_split_once_and_batches_equal_fresh_ones(
    base_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import llmlab.finetune as ft
    from llmlab.sft import SFTBatches, render

    model, tok = model_from_checkpoint(base_checkpoint)[:2]
    model, chat = chat_model(model, tok)
    train = [Example("p", "A.", "speech " + "ab"[i % 2] * i, "a reply" * (i % 3 + 1)) for i in range(12)]
    val = [Example("q", "B.", "well met", "no"), Example("q", "C.", "hi", "yes indeed")]
    calls = []
    monkeypatch.setattr(ft, "render", lambda *a: calls.append(a[0]) or render(*a))
    data = FineTuneData(train, val, chat, 64, mask_prompt=False)
    batches = [data.batches(split, 4, seed=3) for split in ("train", "train", "val", "val")]
    assert len(calls) == len(train) + len(val)  # once per example, though four batch streams were made
    for got, split, mask in zip(batches, ("train", "train", "val", "val"), (False, False, True, True)):
        fresh = SFTBatches(train if split == "train" else val, chat, 64, 4, seed=3, mask_prompt=mask)
        for (x1, y1), (x2, y2) in zip(got.eval_batches(3), fresh.eval_batches(3)):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)  # the unmasked train stream too
    with pytest.raises(ValueError, match="rendered has 1 entries for 2 examples"):
        SFTBatches(val, chat, 64, 1, rendered=[render(val[0], chat, 65)])


def test_a_base_checkpoint_is_scored_once_until_it_changes(
    base_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import llmlab.finetune as ft

    scored = []
    real = ft.reply_bits_per_byte
    monkeypatch.setattr(ft, "reply_bits_per_byte", lambda m, ex, t, **k: scored.append(len(ex)) or real(m, ex, t, **k))
    monkeypatch.setattr(ft, "_BASE_SCORES", {})
    base = tmp_path / "base.bin"
    shutil.copy(base_checkpoint, base)
    settings = dict(data=_examples_file(tmp_path), max_iters=2, overrides={"eval_interval": 2, "batch_size": 2})
    first = finetune(base, tmp_path / "a", **settings)
    second = finetune(base, tmp_path / "b", mask_prompt=False, **settings)
    assert first.reply_bpb_before == second.reply_bpb_before
    assert scored == [3, 3, 3]  # the base once, then each fine-tuned model
    model, _, payload = model_from_checkpoint(base)
    with torch.no_grad():
        model.transformer.wte.weight.mul_(2.0)  # a different base, written to the same path
    torch.save({**payload, "model": model.state_dict()}, base)
    third = finetune(base, tmp_path / "c", **settings)
    assert scored == [3, 3, 3, 3, 3] and third.reply_bpb_before != first.reply_bpb_before


def test_bad_example_files_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="speaker/context/reply"):
        load_examples(tmp_path / "none.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"speaker": "A.", "context": "hi"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 1: not a fine-tuning example.*KeyError"):
        load_examples(bad)


def test_embedded_plays_are_parsed_once_and_each_caller_gets_its_own_list(monkeypatch: pytest.MonkeyPatch) -> None:
    import llmlab.finetune as ft

    parsed = []
    real = ft.dialogue_examples
    monkeypatch.setattr(ft, "dialogue_examples", lambda works, **kw: parsed.append(1) or real(works, **kw))
    ft._embedded_examples.cache_clear()
    try:
        first, second = load_examples(), load_examples()
        assert parsed == [1]  # the second call reused the parse
        assert first == second and first is not second
        first.pop()
        assert len(load_examples()) == len(second)  # a caller's edits do not reach the cache
        load_examples(max_chars=100)
        assert parsed == [1, 1]  # another max_chars is parsed on its own
    finally:
        ft._embedded_examples.cache_clear()  # later tests parse with the real function


def test_embedded_plays_give_one_line_examples_and_hold_out_the_plays_prepare_holds_out() -> None:
    import numpy as np

    from llmlab.corpus import shakespeare
    from llmlab.data.tokenizing import _document_val_mask
    from llmlab.finetune import DEFAULT_VAL_PLAYS

    examples = load_examples()
    assert len(examples) > 10_000 and set(DEFAULT_VAL_PLAYS) <= {e.play for e in examples}
    assert all("\n" not in e.context and len(e.reply) <= 200 for e in examples)  # one line, a short reply
    assert len(load_examples(context_lines=None, max_chars=400)) != len(examples)
    # The default held-out plays are the ones `prepare` holds out of the corpus (seed 2357, a tenth of the
    # documents), so a base model pretrained on that split never read them.
    ds = shakespeare()
    held = _document_val_mask(np.array([len(t) for t in ds["text"]]), 0.1, 2357)
    assert set(DEFAULT_VAL_PLAYS) == {t for t, h in zip(ds["title"], held) if h} & {e.play for e in examples}


def test_reply_scores_are_per_example_and_weight_to_the_total(base_checkpoint: Path, tmp_path: Path) -> None:
    from llmlab.finetune import reply_scores
    from llmlab.sft import SFTBatches, shuffle_contexts

    model, tok = model_from_checkpoint(base_checkpoint)[:2]
    model, chat = chat_model(model, tok)
    ex = [Example("p", "A.", "hi there", "yes"), Example("p", "B.", "well met", "no, not so")]
    ex.append(Example("p", "C.", "go", "I go"))
    scores = reply_scores(model, ex, chat, batch_size=2)
    sizes = SFTBatches(ex, chat, model.config.block_size, 1).bytes_per_example
    assert len(scores) == 3 and sizes == [3, 10, 4]
    weighted = sum(s * b for s, b in zip(scores, sizes)) / sum(sizes)
    assert weighted == pytest.approx(reply_bits_per_byte(model, ex, chat), rel=1e-5)
    assert reply_scores(model, ex[1:2], chat)[0] == pytest.approx(scores[1], abs=1e-5)  # padding changes nothing
    shuffled = shuffle_contexts(ex, seed=1)
    assert [e.reply for e in shuffled] == [e.reply for e in ex]
    assert sorted(e.context for e in shuffled) == sorted(e.context for e in ex)
    assert all(s.context != e.context for s, e in zip(shuffled, ex))  # each takes another example's context
    done = finetune(base_checkpoint, tmp_path / "ft", data=ex * 4, max_iters=2, overrides={"eval_interval": 2})
    assert done.result.evals  # a list of examples is accepted as the data
