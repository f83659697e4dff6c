"""Supervised fine-tuning data: dialogue examples from the plays, a chat template, loss masking, batches.

The task (notebook 08, ``llmlab finetune``): given who speaks and the line before, write the reply::

    <|speaker|>Oph.<|context|>For Hamlet, and the trifling of his favour,<|reply|>No more but so?<|endoftext|>
    \\________________________ prompt: target -1, no loss ________________________/\\_____ reply: learned _____/

Only the reply's tokens (and the end-of-text that closes it) are targets; every prompt position gets
target -1, which ``F.cross_entropy(ignore_index=-1)`` skips, so the prompt contributes exactly zero
gradient. Without the mask the model would also spend its capacity learning to write prompts.

Examples are split by play (whole plays held out), so the held-out score measures replies to speeches
the model never saw, by characters it may never have met.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from llmlab.tokenizers import CHAT_SPECIALS, ChatTokenizer
from llmlab.validate import check_int

__all__ = [
    "encodable",
    "Example",
    "speeches",
    "dialogue_examples",
    "split_by_play",
    "shuffle_contexts",
    "render",
    "collate",
    "SFTBatches",
]

# A speech opens with the speaker's (often abbreviated) name alone on a line: "Ham.", "First Citizen.", "Lady M."
_SPEAKER = re.compile(r"^[A-Z][A-Za-z'\-]*(?: [A-Za-z'\-]+){0,3}\.$")


@dataclass(frozen=True)
class Example:
    """One fine-tuning example: ``speaker`` replies ``reply`` to ``context`` (the speech before), in ``play``."""

    play: str
    speaker: str
    context: str
    reply: str


def speeches(text: str) -> list[tuple[str, str]]:
    """``(speaker, speech)`` for each speech of a play, in order; stage directions and headings break the chain
    and are returned as ``("", paragraph)`` so that a reply never answers across a scene change."""
    out: list[tuple[str, str]] = []
    for para in re.split(r"\n\s*\n", text):
        lines = para.strip("\n").split("\n")
        if len(lines) >= 2 and _SPEAKER.match(lines[0].strip()):
            out.append((lines[0].strip(), "\n".join(line.rstrip() for line in lines[1:]).strip()))
        elif para.strip():
            out.append(("", para.strip()))
    return out


def dialogue_examples(
    works: Mapping[str, str], max_chars: int = 400, context_lines: int | None = None
) -> list[Example]:
    """Every pair of consecutive speeches by two different speakers, with context and reply at most ``max_chars``.

    ``context_lines=N`` keeps only the last N lines of the first speech as the context (the line a reply
    answers most directly, and short enough that the template, context and reply fit a small model's window).
    """
    check_int("max_chars", max_chars, 1)
    if context_lines is not None:
        check_int("context_lines", context_lines, 1)
    examples = []
    for play, text in works.items():
        parts = speeches(text)
        for (who_a, said_a), (who_b, said_b) in zip(parts, parts[1:]):
            if context_lines is not None:
                said_a = "\n".join(said_a.split("\n")[-context_lines:])
            if who_a and who_b and who_a != who_b and len(said_a) <= max_chars and len(said_b) <= max_chars:
                examples.append(Example(play, who_b, said_a, said_b))
    return examples


def encodable(examples: Sequence[Example], tokenizer: Any) -> list[Example]:
    """The examples whose every text the tokenizer can encode (a character vocabulary may lack a few symbols)."""
    kept = []
    for e in examples:
        try:
            for text in (e.speaker, e.context, e.reply):
                tokenizer.encode(text)
        except ValueError:
            continue
        kept.append(e)
    return kept


def split_by_play(examples: Sequence[Example], val_plays: Sequence[str]) -> tuple[list[Example], list[Example]]:
    """``(train, val)``: the examples of ``val_plays`` are held out whole."""
    held = set(val_plays)
    unknown = held - {e.play for e in examples}
    if unknown:
        raise ValueError(f"val_plays {sorted(unknown)} have no examples; choose from the plays the examples come from.")
    return [e for e in examples if e.play not in held], [e for e in examples if e.play in held]


def shuffle_contexts(examples: Sequence[Example], seed: int = 0) -> list[Example]:
    """The examples with their contexts permuted among them: each reply now follows another example's context.

    The control for "does the reply depend on its prompt?": a model that ignores the context scores the
    replies the same after the shuffle; one that uses it scores them worse. Every example gets a context from
    a different example (a random order, then each takes the next one's context), so none keeps its own.
    """
    if len(examples) < 2:
        raise ValueError(f"shuffling contexts needs at least 2 examples, got {len(examples)}.")
    order = np.random.default_rng(seed).permutation(len(examples))
    donor = {int(i): int(j) for i, j in zip(order, np.roll(order, -1))}
    return [dataclasses.replace(e, context=examples[donor[k]].context) for k, e in enumerate(examples)]


def render(example: Example, tokenizer: ChatTokenizer, max_tokens: int) -> tuple[list[int], list[bool]]:
    """Token ids of the templated example and, per id, whether it is a target to learn (the reply + EOT).

    At most ``max_tokens`` ids: the context is cut from its start first, then the reply from its end.
    """
    check_int("max_tokens", max_tokens, 8)
    speaker = tokenizer.encode(example.speaker)
    context = tokenizer.encode(example.context)
    reply = tokenizer.encode(example.reply) + [tokenizer.eot_token]
    s, c, r = (tokenizer.special(t) for t in CHAT_SPECIALS)
    fixed = 3 + len(speaker)
    reply = reply[: max(1, max_tokens - fixed - 1)]  # keep at least one context token
    context = context[max(0, len(context) - (max_tokens - fixed - len(reply))) :]
    prompt = [s, *speaker, c, *context, r]
    return prompt + reply, [False] * len(prompt) + [True] * len(reply)


def collate(
    rendered: Sequence[tuple[list[int], list[bool]]], pad_id: int, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch ``(x, y)`` of shape (B, T): ``y`` is ``x`` shifted left by one, with -1 wherever the next token
    is not a target (prompt, padding). Sequences are right-padded with ``pad_id`` to the longest one."""
    if not rendered:
        raise ValueError("collate needs at least one example.")
    T = max(len(ids) for ids, _ in rendered) - 1
    x = torch.full((len(rendered), T), pad_id, dtype=torch.long)
    y = torch.full((len(rendered), T), -1, dtype=torch.long)
    for b, (ids, mask) in enumerate(rendered):
        n = len(ids) - 1
        x[b, :n] = torch.tensor(ids[:-1])
        target = torch.tensor(ids[1:])
        keep = torch.tensor(mask[1:])
        y[b, :n] = torch.where(keep, target, torch.full_like(target, -1))
    return x.to(device), y.to(device)


def _reply_bytes(ids: list[int], mask: list[bool], tokenizer: ChatTokenizer) -> int:
    reply = [i for i, m in zip(ids, mask) if m and i != tokenizer.eot_token]
    return len(tokenizer.decode(reply).encode("utf-8"))


class SFTBatches:
    """Random batches of rendered examples, with the interface of :class:`llmlab.data.TokenBatches` that
    the Trainer uses: ``next()``, ``eval_batches(n)`` (the same batches every time), ``state_dict()``.
    ``mask_prompt=False`` makes the prompt's tokens targets too (training on whole sequences, for comparison)."""

    def __init__(
        self,
        examples: Sequence[Example],
        tokenizer: ChatTokenizer,
        block_size: int,
        batch_size: int,
        seed: int = 0,
        device: str | torch.device = "cpu",
        mask_prompt: bool = True,
        rendered: Sequence[tuple[list[int], list[bool]]] | None = None,
    ) -> None:
        """``rendered``: the examples as :func:`render` returns them for ``block_size + 1`` tokens, when the
        caller already has them (:class:`llmlab.finetune.FineTuneData` renders each split once)."""
        if not examples:
            raise ValueError("no fine-tuning examples: build some with dialogue_examples(...).")
        check_int("batch_size", batch_size, 1)
        if rendered is None:
            rendered = [render(e, tokenizer, block_size + 1) for e in examples]
        elif len(rendered) != len(examples):
            raise ValueError(
                f"rendered has {len(rendered)} entries for {len(examples)} examples: give one per example."
            )
        self.rendered = list(rendered)
        if not mask_prompt:  # train on the whole sequence: every token after the first is a target
            self.rendered = [(ids, [False] + [True] * (len(ids) - 1)) for ids, _ in self.rendered]
        self.pad_id = tokenizer.eot_token
        self.batch_size, self.seed, self.device = batch_size, seed, device
        self.tokenizer = tokenizer
        self.drawn = 0

    # What a score is per: the target tokens, and the UTF-8 bytes of the reply text they encode (as cut to fit
    # the block; the closing end-of-text token has no bytes). Counted when first asked for: decoding every
    # reply takes seconds on a big training set, and only held-out scores need it.
    @functools.cached_property
    def target_tokens(self) -> int:
        return sum(sum(m[1:]) for _, m in self.rendered)

    @functools.cached_property
    def target_bytes(self) -> int:
        return sum(self.bytes_per_example)

    @functools.cached_property
    def bytes_per_example(self) -> list[int]:
        return [_reply_bytes(ids, mask, self.tokenizer) for ids, mask in self.rendered]

    def __len__(self) -> int:
        return len(self.rendered)

    def _batch(self, stream: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng((self.seed, stream, index))
        picks = rng.integers(0, len(self.rendered), size=self.batch_size)
        return collate([self.rendered[i] for i in picks], self.pad_id, self.device)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.drawn += 1
        return self._batch(0, self.drawn - 1)

    def eval_batches(self, num_batches: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(num_batches):
            yield self._batch(1, i)

    def all_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every example once, in order (for a held-out score over the whole set)."""
        for start in range(0, len(self.rendered), self.batch_size):
            yield collate(self.rendered[start : start + self.batch_size], self.pad_id, self.device)

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "drawn": self.drawn}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.seed, self.drawn = int(state["seed"]), int(state["drawn"])
