"""OpenWebText's shape, offline: hub-style parquet shards with a ``text`` column, prepared end to end with GPT-2 BPE.

`llmlab prepare --source openwebtext` reads the hub's parquet copy (no network here); the same files
downloaded into a folder go through the local-parquet path tested here. The token ids are checked against
an encoding built directly from GPT-2's vocabulary files with tiktoken, not through llmlab's tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tiktoken
import tiktoken.load

from llmlab.cli import main
from llmlab.corpus import shakespeare_text
from llmlab.data.sources import OPENWEBTEXT_REPO, resolve_source
from llmlab.gpt2_files import find_gpt2_file

EOT = 50256


def _reference_encoding() -> tiktoken.Encoding:
    """GPT-2's BPE from its two files, as tiktoken's own gpt2 definition builds it (independent of llmlab)."""
    ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(find_gpt2_file("vocab.bpe")), encoder_json_file=str(find_gpt2_file("encoder.json"))
    )
    return tiktoken.Encoding(
        name="gpt2-reference",
        explicit_n_vocab=50257,
        pat_str=r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": EOT},
    )


def _documents() -> list[str]:
    """60 web-page-like documents: prose, non-ASCII text, long and short, blank lines."""
    text = shakespeare_text()
    docs = [text[i * 1500 : i * 1500 + 400 + 37 * i] for i in range(56)]
    docs += [
        "Café naïve — “quoted” text, 日本語のテキスト, emoji 🙂, and tabs\tinside.",
        "A list:\n\n- one\n- two\n\nThe end.",
        "x",
        "Numbers 12345 and 3.14159 and -42.",
    ]
    return docs


def _write_hub_shards(folder: Path, docs: list[str]) -> None:
    """The hub's parquet layout: data/train-0000N-of-0000M.parquet, one ``text`` column."""
    shards = folder / "data"
    shards.mkdir(parents=True)
    half = len(docs) // 2
    for i, part in enumerate((docs[:half], docs[half:])):
        pq.write_table(pa.table({"text": part}), shards / f"train-{i:05d}-of-00002.parquet")


def test_openwebtext_names_the_hub_parquet_copy() -> None:
    src = resolve_source("openwebtext")
    assert (src.kind, src.repo_id, src.name) == ("hub", OPENWEBTEXT_REPO, "openwebtext")


def test_hub_shaped_parquet_prepares_end_to_end_and_round_trips(tmp_path: Path) -> None:
    docs = _documents()
    _write_hub_shards(tmp_path / "owt", docs)
    out = tmp_path / "owt_gpt2"
    args = ["prepare", "--source", str(tmp_path / "owt"), "--tokenizer", "gpt2", "--out", str(out)]
    assert main([*args, "--val-fraction", "0.1"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["tokenizer"], meta["vocab_size"], meta["dtype"], meta["split"]) == (
        "gpt2",
        50257,
        "uint16",
        "documents",
    )

    train = np.fromfile(out / "train.bin", dtype=np.uint16)
    val = np.fromfile(out / "val.bin", dtype=np.uint16)
    assert (meta["train_tokens"], meta["val_tokens"]) == (train.size, val.size)
    enc = _reference_encoding()
    assert enc.encode_ordinary("hello world") == [31373, 995]  # the reference is GPT-2's BPE

    def documents_of(ids: np.ndarray) -> list[list[int]]:
        assert ids.size and int(ids[-1]) == EOT  # every document ends with <|endoftext|>
        cuts = np.flatnonzero(ids == EOT)
        return [ids[a + 1 : b].tolist() for a, b in zip([-1, *cuts[:-1]], cuts)]

    encoded = {tuple(enc.encode_ordinary(d)): d for d in docs}
    seen = documents_of(train) + documents_of(val)
    assert len(seen) == len(docs) and len(documents_of(val)) == round(0.1 * len(docs))
    assert sorted(encoded[tuple(ids)] for ids in seen) == sorted(docs)  # each token list is one document's encoding
    assert sorted(enc.decode(ids) for ids in seen) == sorted(docs)  # and decodes back to its text exactly
    val_docs = [enc.decode(ids) for ids in documents_of(val)]
    assert meta["val_bytes"] == sum(len(d.encode("utf-8")) for d in val_docs)
    assert meta["train_bytes"] + meta["val_bytes"] == sum(len(d.encode("utf-8")) for d in docs)
