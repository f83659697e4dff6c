"""Supervised fine-tuning: a pretrained llmlab checkpoint learns to reply in a chat template.

    llmlab finetune --checkpoint out/best_checkpoint.bin --out out/finetuned
    llmlab generate --checkpoint out/finetuned/best_checkpoint.bin --speaker "Oph." --context "Do you doubt that?"

What happens (notebook 08 builds each step by hand):

1. the base model and its tokenizer come from the checkpoint; the tokenizer gains the template's special
   tokens (:class:`~llmlab.tokenizers.ChatTokenizer`) and the model's embedding grows to match;
2. examples come from the plays (the reply, by a named speaker, to the last line of the speech before), from
   a ``.jsonl`` file with ``speaker`` / ``context`` / ``reply`` fields, or from a list of
   :class:`~llmlab.sft.Example`; whole plays (or the file's last tenth) are held out;
3. the same :class:`~llmlab.train.Trainer` trains on :class:`FineTuneData` (masked batches, see
   :mod:`llmlab.sft`): same checkpoints, resume, progress bar and callbacks as ``llmlab train``.

Measure, don't eyeball: :func:`reply_bits_per_byte` scores the replies of held-out examples (lower is
better), :func:`reply_scores` each one on its own (for a spread); scoring them again after
:func:`llmlab.sft.shuffle_contexts` shows whether the replies depend on their prompts; the cost in forgetting
is the plain-text val bits/byte before and after.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmlab.callbacks import Callback, TrainResult
from llmlab.checkpoint import model_from_checkpoint
from llmlab.config import Config
from llmlab.corpus import shakespeare
from llmlab.metrics import bits_per_byte
from llmlab.model import GPT
from llmlab.sft import Example, SFTBatches, dialogue_examples, encodable, render, split_by_play
from llmlab.tokenizers import CHAT_SPECIALS, ChatTokenizer, Tokenizer
from llmlab.train import Trainer
from llmlab.validate import check_int

__all__ = [
    "DEFAULT_VAL_PLAYS",
    "FineTuneData",
    "load_examples",
    "chat_model",
    "finetune_config",
    "reply_bits_per_byte",
    "reply_scores",
    "reply",
    "finetune",
]

# Held out by default: the three plays that llmlab.data.prepare holds out of the embedded corpus by default
# (seeded whole documents), so a base model pretrained on that split has never read them either.
DEFAULT_VAL_PLAYS = ("antony_and_cleopatra", "merchant_of_venice", "richard_ii")

# The embedded plays' examples by default: the reply to the *last line* of the speech before, replies of at
# most 200 characters. A line is what a reply most directly answers, and template + line + reply then fit in
# 128 BPE tokens (about 300 characters), so a small model sees the whole prompt it is asked to answer.
CONTEXT_LINES = 1
MAX_CHARS = 200


def load_examples(
    path: str | os.PathLike | None = None, max_chars: int = MAX_CHARS, context_lines: int | None = CONTEXT_LINES
) -> list[Example]:
    """Examples from the embedded plays (``path=None``; see :func:`llmlab.sft.dialogue_examples` for
    ``max_chars`` and ``context_lines``, None: whole speeches), or from a ``.jsonl`` file of
    ``{"speaker": ..., "context": ..., "reply": ...}`` lines (``"play"`` optional: it groups the hold-out)."""
    if path is None:
        return list(_embedded_examples(max_chars, context_lines))
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"fine-tuning data {p} not found: give a .jsonl file with speaker/context/reply "
            "fields, or leave --data out to use the embedded plays."
        )
    examples = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            examples.append(
                Example(str(row.get("play", p.stem)), str(row["speaker"]), str(row["context"]), str(row["reply"]))
            )
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(
                f"{p}, line {n}: not a fine-tuning example ({type(e).__name__}: {e}); each line must "
                'be a JSON object like {"speaker": "Oph.", "context": "...", "reply": "..."}.'
            ) from None
    if len(examples) < 2:
        raise ValueError(
            f"{p} holds {len(examples)} example(s): at least 2 are needed (one to train, one to hold out)."
        )
    return examples


@functools.lru_cache(maxsize=4)
def _embedded_examples(max_chars: int, context_lines: int | None) -> tuple[Example, ...]:
    # The plays never change, and parsing all of them takes seconds: a notebook that fine-tunes several times
    # parses once (Examples are frozen, so sharing them is safe).
    check_int("max_chars", max_chars, 1)
    ds = shakespeare()
    works = dict(zip(ds["title"], ds["text"]))
    return tuple(dialogue_examples(works, max_chars=max_chars, context_lines=context_lines))


def _holdout(examples: Sequence[Example], val_plays: Sequence[str] | None) -> tuple[list[Example], list[Example]]:
    plays = sorted({e.play for e in examples})
    if val_plays is None:
        val_plays = [p for p in DEFAULT_VAL_PLAYS if p in plays]
    if val_plays:
        return split_by_play(examples, val_plays)
    cut = max(1, len(examples) // 10)  # one source file: its last tenth is held out
    return list(examples[:-cut]), list(examples[-cut:])


class FineTuneData:
    """Fine-tuning examples in the shape the Trainer reads (``meta``, ``tokenizer``, ``batches``).

    ``meta``'s val token and byte counts are the held-out replies', so the Trainer's val bits/byte is
    the reply score of :func:`reply_bits_per_byte`, estimated on ``eval_iters`` random batches.
    """

    def __init__(
        self,
        train: Sequence[Example],
        val: Sequence[Example],
        tokenizer: ChatTokenizer,
        block_size: int,
        mask_prompt: bool = True,
    ) -> None:
        if not train or not val:
            raise ValueError(
                f"fine-tuning needs examples to train on and to hold out; got {len(train)} and {len(val)}."
            )
        self.train, self.val, self.tokenizer, self.block_size = list(train), list(val), tokenizer, block_size
        self.mask_prompt = mask_prompt  # training batches only: the held-out score is always the replies'.
        # Each split rendered once: the Trainer asks for train batches twice (training, train loss) and val
        # batches for every evaluation; rendering tens of thousands of examples takes about a second.
        self._rendered: dict[str, list[tuple[list[int], list[bool]]]] = {}
        probe = self.batches("val", 1, seed=0)
        self.meta: dict[str, Any] = {
            "vocab_size": tokenizer.vocab_size,
            "tokenizer": tokenizer.name,
            "source": "fine-tuning examples",
            "train_examples": len(self.train),
            "val_examples": len(self.val),
            "val_tokens": probe.target_tokens,
            "val_bytes": probe.target_bytes,
        }

    def batches(
        self,
        split: str,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
    ) -> SFTBatches:
        train = split == "train"
        examples, key = (self.train, "train") if train else (self.val, "val")
        if key not in self._rendered:
            self._rendered[key] = [render(e, self.tokenizer, self.block_size + 1) for e in examples]
        return SFTBatches(
            examples,
            self.tokenizer,
            self.block_size,
            batch_size,
            seed=seed * world_size + rank,
            device=device,
            mask_prompt=self.mask_prompt or not train,
            rendered=self._rendered[key],
        )


def chat_model(model: GPT, tokenizer: Tokenizer) -> tuple[GPT, ChatTokenizer]:
    """The base model with room for the template's special tokens, and the matching ChatTokenizer."""
    chat = tokenizer if isinstance(tokenizer, ChatTokenizer) else ChatTokenizer(tokenizer, CHAT_SPECIALS)
    model.resize_token_embeddings(chat.vocab_size)
    return model, chat


def finetune_config(base: Config, max_iters: int = 300, max_lr: float = 3e-4, **overrides: Any) -> Config:
    """The base run's config with fine-tuning settings: fewer steps, a lower learning rate, a short warm-up;
    ``overrides`` win over all of these."""
    check_int("max_iters", max_iters, 1)
    settings = dict(
        max_iters=max_iters,
        max_lr=max_lr,
        min_lr=max_lr / 10,
        warmup_iters=min(20, max_iters // 10),
        eval_interval=max(1, max_iters // 5),
        max_seconds=0.0,
    )
    return base.override({**settings, **overrides})


@torch.no_grad()
def _reply_nats(model: GPT, batches: SFTBatches) -> list[float]:
    """Each example's summed loss (nats) over its reply tokens, in order."""
    was_training = model.training
    model.eval()
    sums: list[float] = []
    for x, y in batches.all_batches():
        logits, _ = model(x)
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y, ignore_index=-1, reduction="none")
        sums.extend(loss.sum(dim=1).tolist())  # ignored positions add exactly 0
    model.train(was_training)
    return sums


def reply_bits_per_byte(
    model: GPT, examples: Sequence[Example], tokenizer: ChatTokenizer, batch_size: int = 16
) -> float:
    """Bits per byte of the held-out replies given their prompts (every example once; lower is better)."""
    device = next(model.parameters()).device
    batches = SFTBatches(examples, tokenizer, model.config.block_size, batch_size, device=device)
    total = math.fsum(_reply_nats(model, batches))
    return bits_per_byte(total / batches.target_tokens, batches.target_tokens, batches.target_bytes)


def reply_scores(
    model: GPT, examples: Sequence[Example], tokenizer: ChatTokenizer, batch_size: int = 16
) -> list[float]:
    """Bits per byte of each example's reply given its prompt, in order (lower is better): the spread over
    examples that a mean hides. Their byte-weighted mean is :func:`reply_bits_per_byte`."""
    device = next(model.parameters()).device
    batches = SFTBatches(examples, tokenizer, model.config.block_size, batch_size, device=device)
    nats = _reply_nats(model, batches)
    return [n / math.log(2) / max(1, b) for n, b in zip(nats, batches.bytes_per_example)]


def reply(
    model: GPT,
    tokenizer: ChatTokenizer,
    speaker: str,
    context: str,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = 50,
    generator: torch.Generator | None = None,
) -> str:
    """The model's reply, as ``speaker``, to ``context`` (generation stops at end-of-text)."""
    ids, mask = render(Example("", speaker, context, ""), tokenizer, model.config.block_size)
    prompt = ids[: mask.index(True)]  # everything up to <|reply|>; the empty reply is just EOT
    device = next(model.parameters()).device
    out = model.generate(
        torch.tensor([prompt], device=device), max_new_tokens, temperature=temperature, top_k=top_k, generator=generator
    )[0, len(prompt) :].tolist()
    if tokenizer.eot_token in out:
        out = out[: out.index(tokenizer.eot_token)]
    return tokenizer.decode([i for i in out if i < tokenizer.base.vocab_size])


# Reply scores of base checkpoints, kept for the process: notebook 08 fine-tunes one base twice (masked and
# whole-sequence), and scoring the held-out plays is much of a short run's time. The key holds the file's
# size and modification time, so a checkpoint written again is scored again.
_BASE_SCORES: dict[tuple[Any, ...], float] = {}


def _base_score(checkpoint: str | os.PathLike, model: GPT, val: Sequence[Example], tokenizer: ChatTokenizer) -> float:
    stat = Path(checkpoint).stat()
    key = (str(Path(checkpoint).resolve()), stat.st_size, stat.st_mtime_ns, tuple(val))
    if key not in _BASE_SCORES:
        if len(_BASE_SCORES) >= 8:
            _BASE_SCORES.pop(next(iter(_BASE_SCORES)))  # the oldest
        _BASE_SCORES[key] = reply_bits_per_byte(model, val, tokenizer)
    return _BASE_SCORES[key]


@dataclass
class FineTuneResult:
    """What :func:`finetune` returns: the run, and the reply score before and after."""

    result: TrainResult
    reply_bpb_before: float
    reply_bpb_after: float
    out_dir: Path


def finetune(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    data: str | os.PathLike | Sequence[Example] | None = None,
    max_iters: int = 300,
    max_lr: float = 3e-4,
    val_plays: Sequence[str] | None = None,
    callbacks: Sequence[Callback] = (),
    resume: bool = False,
    overrides: Mapping[str, Any] | None = None,
    mask_prompt: bool = True,
    overwrite: bool = False,
) -> FineTuneResult:
    """Fine-tune the model in ``checkpoint`` on reply examples; checkpoints go to ``out_dir``.

    ``data``: None for the embedded plays (:func:`load_examples`' defaults), a ``.jsonl`` path, or the
    examples themselves (e.g. ``load_examples(context_lines=None)``). Examples the checkpoint's tokenizer
    cannot encode (a character vocabulary may lack a symbol) are left out. ``mask_prompt=False`` trains on
    whole sequences, prompts included (for comparison). An earlier run in ``out_dir`` is refused unless
    ``resume`` (continue it) or ``overwrite`` (replace it).
    """
    model, tokenizer, payload = model_from_checkpoint(checkpoint)
    model.train()
    model, chat = chat_model(model, tokenizer)
    base = Config.from_dict(payload["config"]).override(vocab_size=chat.vocab_size)
    config = finetune_config(base, max_iters, max_lr, **dict(overrides or {}))
    examples = load_examples(data) if data is None or isinstance(data, (str, os.PathLike)) else list(data)
    train, val = (encodable(part, chat) for part in _holdout(examples, val_plays))
    before = _base_score(checkpoint, model, val, chat)
    trainer = Trainer(
        config,
        FineTuneData(train, val, chat, config.model.block_size, mask_prompt),
        out_dir,
        callbacks=callbacks,
        resume=resume,
        init_model=model,
        overwrite=overwrite,
    )
    result = trainer.fit()
    after = reply_bits_per_byte(trainer.raw_model, val, chat)
    if not math.isfinite(after):
        raise RuntimeError("the fine-tuned model's reply score is not finite: lower max_lr and try again.")
    return FineTuneResult(result, before, after, Path(out_dir))
