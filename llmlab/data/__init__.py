"""Data: any corpus -> token ids -> memmapped ``train.bin`` / ``val.bin`` -> random training batches.

The pipeline, in the order it runs::

    source (embedded Shakespeare | local .txt/.jsonl/.parquet file or folder | a Hugging Face hub dataset)
      -> datasets.Dataset with one document per row ("text")
      -> datasets.map(batched=True, num_proc=N): token ids, <|endoftext|> after each document
      -> train / val split ("auto" by default: by document, seeded, when there are at least 10 documents;
         else "tail": the last part of the joined text; meta.json says which was used)
      -> train.bin, val.bin (uint16 when the vocabulary fits, else uint32), tokenizer.json, meta.json

The manual's three calls do it step by step (defaults: embedded corpus, split "auto" (42 works: by
document), the default training preset's tokenizer (:data:`DEFAULT_TOKENIZER`: "bpe", a 1,024-token
byte-level BPE trained on the training text), no network; ``tokenizer="gpt2"`` for GPT-2's BPE)::

    tokenized, tokenizer = load_and_process_dataset()
    save_processed_dataset(tokenized)
    create_memmap_files(tokenized)          # -> data/shakespeare_bpe/{train,val}.bin, meta.json

:func:`prepare` does the same in one call (``llmlab prepare``), and reuses finished outputs made from the
same source, tokenizer and split. It is safe to interrupt and to fail (earlier complete outputs stay as they
were; a folder it created is removed again) and takes a lock on the output folder while it writes (a second
run into the same folder fails at once: :class:`OutputFolderBusyError`). :class:`TokenBatches` samples
random windows from the memmaps for training.

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
    check_compatible,
    load_meta,
    load_tokenizer_for,
)
from llmlab.data.prepare import (
    OutputFolderBusyError,
    OutputFolderError,
    create_memmap_files,
    load_and_process_dataset,
    prepare,
    save_processed_dataset,
)
from llmlab.data.sources import (
    DEFAULT_TOKENIZER,
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
    "DEFAULT_TOKENIZER",
    "SourceUnavailableError",
    "OutputFolderError",
    "OutputFolderBusyError",
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
