"""Benchmark: train a 1,024-token byte-level BPE on 1 MB of Shakespeare; compare tokens per 1,000 characters.

    python bench/bpe_train.py [--runs 3] [--mb 1.0] [--vocab-size 1024]

Prints the median training time over the runs (llmlab.tokenizers.train_bpe, pure Python) and, over the whole
embedded corpus (5.06 M characters), how many tokens each tokenizer needs per 1,000 characters.
"""

from __future__ import annotations

import argparse
import statistics
import time

from llmlab.corpus import shakespeare, shakespeare_text
from llmlab.tokenizers import BPETokenizer, get_tokenizer, train_bpe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mb", type=float, default=1.0, help="training text, in millions of characters (ASCII: MB)")
    parser.add_argument("--vocab-size", type=int, default=1024)
    args = parser.parse_args(argv)

    corpus = shakespeare_text()
    train_text = corpus[: int(args.mb * 1_000_000)]
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        merges = train_bpe(train_text, args.vocab_size)
        times.append(time.perf_counter() - start)
    print(
        f"train_bpe: {args.vocab_size} tokens on {len(train_text):,} chars: median {statistics.median(times):.2f} s "
        f"over {args.runs} runs ({', '.join(f'{t:.2f}' for t in times)})"
    )

    works = shakespeare()["text"]
    n_chars = sum(map(len, works))
    tokenizers = {"char": get_tokenizer("char"), "bpe": BPETokenizer(merges), "gpt2": get_tokenizer("gpt2")}
    print(f"tokens per 1,000 characters over the whole corpus ({n_chars:,} chars, 42 works):")
    for name, tok in tokenizers.items():
        start = time.perf_counter()
        n_tokens = sum(map(len, tok.encode_batch(works, num_threads=2)))
        seconds = time.perf_counter() - start
        print(
            f"  {name:5s} vocab {tok.vocab_size:6,}: {1000 * n_tokens / n_chars:7.1f} tokens/1k chars "
            f"({n_tokens:,} tokens, encoded in {seconds:.2f} s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
