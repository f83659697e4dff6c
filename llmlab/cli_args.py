"""The ``llmlab`` command's arguments: the parser of every subcommand, with its defaults and help, and ``--set``.

:mod:`llmlab.cli` runs the commands; this module only says what each accepts (``llmlab COMMAND --help``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from llmlab.config import DEFAULT_PRESET, preset_names

__all__ = ["build_parser", "parse_overrides", "DEFAULT_OUT", "DEFAULT_CHECKPOINT", "DEFAULT_LAST"]

DEFAULT_OUT = "out"
DEFAULT_CHECKPOINT = str(Path(DEFAULT_OUT) / "best_checkpoint.bin")
DEFAULT_LAST = str(Path(DEFAULT_OUT) / "last_checkpoint.bin")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="llmlab", description="Build, train and sample a GPT language model.")
    sub = parser.add_subparsers(dest="command", metavar="{prepare,train,generate,finetune,export,info,doctor,progress}")
    sub.required = True

    from llmlab.data.sources import DEFAULT_TOKENIZER

    p = sub.add_parser("prepare", help="tokenize a corpus into train.bin / val.bin / meta.json")
    p.add_argument(
        "--source",
        default=None,
        help="a .txt/.jsonl/.parquet file or folder, openwebtext, or hf:OWNER/NAME for a hub dataset "
        "(default: embedded Shakespeare)",
    )
    p.add_argument(
        "--tokenizer",
        default=DEFAULT_TOKENIZER,
        choices=["char", "bpe", "gpt2"],
        help=f"default {DEFAULT_TOKENIZER}: the default training preset's, so `llmlab train` uses this data",
    )
    p.add_argument(
        "--vocab-size",
        type=int,
        default=None,
        help="bpe only: train it to this many tokens (default 1024; the cpu_modern preset trains on 4096)",
    )
    p.add_argument("--num-proc", type=int, default=1, help="worker processes for tokenizing (default 1)")
    p.add_argument("--out", default=None, help="output directory (default data/<source name>_<tokenizer>)")
    p.add_argument("--force", action="store_true", help="rebuild even if matching outputs exist")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of the text held out (default 0.1)")
    p.add_argument(
        "--split",
        default="auto",
        choices=["auto", "documents", "tail"],
        help="auto (default): whole documents when there are at least 10, else the tail of the text",
    )

    t = sub.add_parser("train", help="train a GPT (default: the cpu_small preset on the embedded corpus)")
    t.add_argument("--preset", default=None, help=f"one of {', '.join(preset_names())} (default {DEFAULT_PRESET})")
    t.add_argument(
        "--data",
        default=None,
        help="prepared data directory (default data/shakespeare_<tokenizer>, "
        "prepared from the embedded corpus if missing)",
    )
    t.add_argument("--out", default=DEFAULT_OUT, help=f"checkpoint directory (default {DEFAULT_OUT})")
    t.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change one setting, e.g. --set embedding_size=256 (repeatable)",
    )
    t.add_argument("--resume", action="store_true", help="continue from OUT/last_checkpoint.bin")
    t.add_argument(
        "--resume-from",
        default=None,
        metavar="CHECKPOINT",
        help="continue from this checkpoint instead, e.g. OUT/best_checkpoint.bin when the last one is damaged",
    )
    t.add_argument(
        "--overwrite", action="store_true", help="replace the run already in OUT (its checkpoints and metrics)"
    )
    t.add_argument("--metrics", default=None, help="metrics file, .csv or .jsonl (default OUT/metrics.csv)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument(
        "--threads",
        default="auto",
        help="CPU threads: auto (switches to 1 when other programs slow the cores) or a number",
    )

    g = sub.add_parser("generate", help="sample text from a checkpoint")
    g.add_argument("prompt_text", nargs="?", default=None, metavar="PROMPT", help="the start of the text (or --prompt)")
    g.add_argument(
        "--checkpoint", default=None, help=f"default {DEFAULT_CHECKPOINT} (else {DEFAULT_LAST}, with a note)"
    )
    g.add_argument("--prompt", default=None, help="start of the text (empty: start from <|endoftext|>)")
    g.add_argument("--max-new-tokens", type=int, default=200)
    g.add_argument("--temperature", type=float, default=0.8)
    g.add_argument("--top-k", type=int, default=None, help="keep only the K most likely tokens (e.g. 50)")
    g.add_argument(
        "--top-p",
        type=float,
        default=None,
        help="nucleus sampling: keep the most likely tokens whose probabilities add up to P (0 < P <= 1, e.g. 0.9)",
    )
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    g.add_argument("--speaker", default=None, help="fine-tuned models: who replies (e.g. 'Oph.'); needs --context")
    g.add_argument("--context", default=None, help="fine-tuned models: the speech to reply to")

    f = sub.add_parser(
        "finetune",
        help="fine-tune a checkpoint to reply in a chat template (notebook 08); minutes on a laptop CPU",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    f.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="the base model")
    f.add_argument(
        "--data",
        default=None,
        help="a .jsonl file of {speaker, context, reply} lines (default: dialogue from the embedded plays)",
    )
    f.add_argument("--out", default=str(Path(DEFAULT_OUT) / "finetuned"), help="checkpoint directory")
    f.add_argument("--max-iters", type=int, default=300, help="optimizer steps")
    f.add_argument("--max-lr", type=float, default=3e-4, help="peak learning rate")
    f.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE", help="any setting")
    f.add_argument("--no-mask", action="store_true", help="train on whole sequences, prompts included")
    f.add_argument("--resume", action="store_true", help="continue an interrupted fine-tuning run in --out")
    f.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    f.add_argument("--quiet", action="store_true", help="no progress bar")

    e = sub.add_parser("export", help="write a checkpoint as a Hugging Face transformers folder")
    e.add_argument(
        "--checkpoint", default=None, help=f"default {DEFAULT_CHECKPOINT} (else {DEFAULT_LAST}, with a note)"
    )
    e.add_argument("--out", required=True, help="the folder to write (config.json, model.safetensors, tokenizer)")
    e.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")

    i = sub.add_parser("info", help="describe a checkpoint")
    i.add_argument("checkpoint", nargs="?", default=None, help=f"default {DEFAULT_CHECKPOINT} (else {DEFAULT_LAST})")

    d = sub.add_parser(
        "doctor",
        help="check a CUDA GPU: the cuda tests, a short gpt2_124m run (tokens/s, MFU, memory), a report "
        "(without CUDA: one line, exit 0)",
    )
    d.add_argument("--out", default="doctor_report", help="report path without suffix: OUT.md and OUT.json")
    d.add_argument("--steps", type=int, default=50, help="steps of the gpt2_124m run (default 50, at least 20)")
    d.add_argument("--skip-tests", action="store_true", help="do not run `pytest -m cuda`")

    sub.add_parser(
        "progress",
        help="which practice pieces pass, by notebook (the local file llmlab.check writes; LLMLAB_PROGRESS moves it)",
    )
    return parser


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}`` (values stay text; Config.override converts them)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--set expects NAME=VALUE, got {item!r}; e.g. --set embedding_size=256.")
        out[name.strip()] = value.strip()
    return out
