"""Data: any corpus -> token ids -> memmapped ``train.bin`` / ``val.bin`` -> random training batches.

The pipeline, in the order it runs::

    source (embedded Shakespeare | local .txt/.jsonl/.parquet file or folder | a Hugging Face hub dataset)
      -> datasets.Dataset with one document per row ("text")
      -> datasets.map(batched=True, num_proc=N): token ids, <|endoftext|> after each document
      -> train / val split (by document, seeded; or "tail": the last part of the joined text)
      -> train.bin, val.bin (uint16 when the vocabulary fits, else uint32), tokenizer.json, meta.json

The manual's three calls do it step by step (defaults: embedded corpus, GPT-2 BPE, no network)::

    tokenized, tokenizer = load_and_process_dataset()
    save_processed_dataset(tokenized)
    create_memmap_files(tokenized)          # -> data/shakespeare_gpt2/{train,val}.bin, meta.json

:func:`prepare` does the same in one call (``llmlab prepare``), and reuses finished outputs made from the
same source and tokenizer. :class:`TokenBatches` samples random windows from the memmaps for training.

The code is split by what each part needs, so that training never imports the preparing code (nor
``datasets``); the public names of each module are re-exported here, so ``from llmlab.data import X`` works:

- :mod:`llmlab.data.sources`     where text comes from: the embedded corpus, local files, the hub;
- :mod:`llmlab.data.tokenizing`  long texts in pieces, the train / val splits, the ``datasets.map`` function;
- :mod:`llmlab.data.prepare`     the pipeline above, down to the prepared folder (imports the two above);
- :mod:`llmlab.data.batches`     reading that folder at training time (stands alone: numpy, torch, tokenizers).

Importing this package is quick: ``datasets`` and torch are imported only inside the functions that use
them. Note that the function :func:`prepare` shadows the submodule of the same name as an attribute of
the package: reach the module with ``from llmlab.data.prepare import ...`` or ``importlib.import_module``.
"""

from __future__ import annotations

from llmlab.data.batches import (
    FORMAT_VERSION,
    TokenBatches,
    _dtype_for,  # noqa: F401  (private; tests check the dtype rule through the package)
    check_compatible,
    load_meta,
    load_tokenizer_for,
)
from llmlab.data.prepare import create_memmap_files, load_and_process_dataset, prepare, save_processed_dataset
from llmlab.data.sources import (
    OPENWEBTEXT_REPO,
    Source,
    SourceUnavailableError,
    check_utf8,
    default_data_dir,
    load_source,
    resolve_source,
)

__all__ = [
    "FORMAT_VERSION",
    "OPENWEBTEXT_REPO",
    "SourceUnavailableError",
    "Source",
    "default_data_dir",
    "resolve_source",
    "check_utf8",
    "load_source",
    "load_and_process_dataset",
    "save_processed_dataset",
    "create_memmap_files",
    "prepare",
    "load_meta",
    "load_tokenizer_for",
    "check_compatible",
    "TokenBatches",
]
