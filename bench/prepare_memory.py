"""Peak memory (RSS) of ``llmlab prepare`` on a 200 MB synthetic corpus: does it stay bounded?

    .venv/bin/python bench/prepare_memory.py                  # 200 MB, GPT-2 BPE, num_proc=2
    .venv/bin/python bench/prepare_memory.py --mb 20          # a quick look

The corpus (a .jsonl of ~5 kB documents, like OpenWebText) is random excerpts of the embedded Shakespeare
text, written to a temporary folder. ``prepare`` runs in a child process; this script samples the resident
memory of the child and all its descendants (the datasets.map workers) every ~20 ms with psutil and reports
the peak of their sum, as PSS (proportional set size: pages shared by forked workers counted once, split
between them) and as plain RSS (shared pages counted in every process: an over-count), plus the largest
single process (getrusage's ru_maxrss). Both include pages of memory-mapped files that were read (Arrow
files): an upper bound of the memory needed.
Target: peak under 1.5 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from llmlab.corpus import shakespeare_text

CHILD = """
import json, sys, time
from llmlab.data import prepare
t0 = time.perf_counter()
meta = prepare(sys.argv[1], tokenizer=sys.argv[2], out_dir=sys.argv[3], num_proc=int(sys.argv[4]), progress=False)
print(json.dumps({"seconds": time.perf_counter() - t0, "tokens": meta["train_tokens"] + meta["val_tokens"]}))
"""


def write_corpus(path: Path, megabytes: float, seed: int = 0) -> int:
    """Random 1-9 kB excerpts of Shakespeare as a .jsonl, about ``megabytes`` MB of text; returns bytes."""
    text = shakespeare_text()
    rng = np.random.default_rng(seed)
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < megabytes * 1e6:
            start, length = int(rng.integers(0, len(text) - 10_000)), int(rng.integers(1_000, 9_000))
            doc = text[start : start + length]
            f.write(json.dumps({"text": doc}) + "\n")
            written += len(doc)
    return written


def tree_memory(proc: psutil.Process) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) over the process and its descendants. Forked workers share the parent's
    pages (libraries, imported modules): RSS counts them once per process, PSS splits them fairly."""
    rss = pss = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            info = p.memory_full_info()
            rss, pss = rss + info.rss, pss + info.pss
        except psutil.Error:  # a worker that just exited
            pass
    return rss, pss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=200.0)
    ap.add_argument("--tokenizer", default="gpt2")
    ap.add_argument("--num-proc", type=int, default=2)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "synthetic.jsonl"
        n_bytes = write_corpus(src, args.mb)
        print(
            f"corpus: {n_bytes / 1e6:.1f} MB of text in {src.stat().st_size / 1e6:.1f} MB of jsonl; "
            f"tokenizer {args.tokenizer}, num_proc={args.num_proc}; machine: {psutil.cpu_count()} cpus, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB"
        )
        env_cache = {"HF_DATASETS_CACHE": str(Path(tmp) / "hf_cache")}
        proc = psutil.Popen(
            [sys.executable, "-c", CHILD, str(src), args.tokenizer, str(Path(tmp) / "out"), str(args.num_proc)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **env_cache},
        )
        peak_rss = peak_pss = 0
        t0 = time.perf_counter()
        while proc.poll() is None:
            rss, pss = tree_memory(proc)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            time.sleep(0.02)
        out, err = proc.communicate()
        if proc.returncode != 0:
            sys.exit(f"prepare failed:\n{err.decode()[-3000:]}")
        result = json.loads(out.decode().strip().splitlines()[-1])
        largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # kB on Linux
        print(
            f"prepare: {result['seconds']:.1f} s, {result['tokens']:,} tokens "
            f"({result['tokens'] / result['seconds'] / 1e6:.2f} M tokens/s), wall {time.perf_counter() - t0:.1f} s"
        )
        print(
            f"peak memory of the process tree, PSS (shared pages split): {peak_pss / 2**20:,.0f} MiB   "
            f"(target < 1.5 GB)"
        )
        print(f"peak memory of the process tree, RSS (shared pages counted per process): {peak_rss / 2**20:,.0f} MiB")
        print(f"peak RSS of the largest single process (ru_maxrss): {largest / 2**20:,.0f} MiB")


if __name__ == "__main__":
    main()
