"""Where text comes from: the embedded corpus, local files or folders, Hugging Face hub datasets.

:func:`resolve_source` turns what the user wrote (``"shakespeare"``, a path, ``"openwebtext"``,
``"hf:OWNER/NAME[@REVISION]"``) into a :class:`Source`; :func:`load_source` reads it as a
``datasets.Dataset`` with one document per row in a ``text`` column. Local .txt files must be valid UTF-8
(:func:`check_utf8`); a hub dataset that cannot be reached fails within seconds with
:class:`SourceUnavailableError` instead of hanging on retries.

``datasets`` is imported only inside the functions that read data: resolving a source and naming its
default folder (:func:`default_data_dir`, used by the CLI) stay quick.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmlab.bpe import non_default_size
from llmlab.config import DEFAULT_PRESET, get_preset
from llmlab.corpus import ASSET_PATH, shakespeare

if TYPE_CHECKING:  # imported where used: datasets is slow to import
    import datasets

    from llmlab.tokenizers import Tokenizer

__all__ = [
    "OPENWEBTEXT_REPO",
    "DEFAULT_TOKENIZER",
    "SourceUnavailableError",
    "Source",
    "resolve_source",
    "default_data_dir",
    "check_utf8",
    "load_source",
]

# The library's default tokenizer is the one the default training preset trains with (cpu_small: "bpe"), so
# that prepare(), load_and_process_dataset() and `llmlab train` make and look for the same data by default.
DEFAULT_TOKENIZER = get_preset(DEFAULT_PRESET).train.tokenizer

SHAKESPEARE = "shakespeare"
# The original "openwebtext" / "Skylion007/openwebtext" repository is a loading *script*, which
# datasets >= 4 no longer runs. source="openwebtext" reads this parquet copy instead (a "text" column; the one
# public projects load with datasets 4). Any other hub dataset with a "text" column: source="hf:OWNER/NAME"
# or "hf:OWNER/NAME@REVISION" (e.g. "hf:Skylion007/openwebtext@refs/convert/parquet", the hub's own export).
OPENWEBTEXT_REPO = "vietgpt/openwebtext_en"
HUB_PREFIX = "hf:"
HUB_TIMEOUT_S = 10.0  # a hub probe that takes longer than this is treated as "offline"
LOADERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}  # suffix -> datasets builder


class SourceUnavailableError(ConnectionError, ValueError):
    """A hub dataset cannot be reached (offline, no network, hub down). The message says what to do.

    Also a ValueError: the source asked for cannot be used here, so callers that report bad input as one
    line (the CLI) report this the same way."""


@dataclass(frozen=True)
class Source:
    """A resolved corpus source."""

    kind: str  # "shakespeare" | "files" | "hub"
    name: str  # short name for default folders: data/<name>_<tokenizer>
    spec: str  # how meta.json records it
    files: tuple[Path, ...] = ()
    loader: str = ""  # datasets builder for files: "text" | "json" | "parquet"
    repo_id: str = ""
    revision: str | None = None

    def fingerprint(self) -> str:
        """Changes when the source's content may have changed (file sizes and modification times)."""
        h = hashlib.sha256(f"{self.kind}|{self.spec}|{self.revision}".encode())
        if self.kind == SHAKESPEARE:
            h.update(ASSET_PATH.read_bytes())
        for f in self.files:
            st = f.stat()
            h.update(f"|{f}|{st.st_size}|{st.st_mtime_ns}".encode())
        return h.hexdigest()


def _short_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "corpus"


def resolve_source(source: str | os.PathLike[str] | Source | None) -> Source:
    """Turn ``source`` into a :class:`Source`.

    ``None`` or ``"shakespeare"``: the embedded corpus. ``"openwebtext"``: OpenWebText from the hub
    (:data:`OPENWEBTEXT_REPO`). ``"hf:OWNER/NAME[@REVISION]"``: any hub dataset with a "text" column.
    Anything else is a local ``.txt`` / ``.jsonl`` / ``.json`` / ``.parquet`` file or a folder of them
    (write ``./shakespeare`` for a local folder of that name).
    """
    if isinstance(source, Source):
        return source
    if source is None or source == SHAKESPEARE:
        return Source(kind=SHAKESPEARE, name=SHAKESPEARE, spec=SHAKESPEARE)
    if isinstance(source, str) and (source == "openwebtext" or source.startswith(HUB_PREFIX)):
        spec = f"{HUB_PREFIX}{OPENWEBTEXT_REPO}" if source == "openwebtext" else source
        repo_id, _, revision = spec[len(HUB_PREFIX) :].partition("@")
        if repo_id.count("/") != 1 or not all(repo_id.split("/")):
            raise ValueError(
                f"source {source!r}: a hub dataset is written hf:OWNER/NAME (or hf:OWNER/NAME@REVISION),"
                f" e.g. hf:{OPENWEBTEXT_REPO}"
            )
        name = "openwebtext" if source == "openwebtext" else _short_name(repo_id.split("/")[1])
        return Source(kind="hub", name=name, spec=spec, repo_id=repo_id, revision=revision or None)
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"source {str(source)!r} is neither an existing file or folder nor a known dataset; use a path to "
            f"a .txt/.jsonl/.parquet file or folder, 'shakespeare' (embedded), 'openwebtext' or hf:OWNER/NAME"
        )
    files = _corpus_files(path)
    return Source(
        kind="files",
        name=_short_name(path.stem if path.is_file() else path.resolve().name),
        spec=str(path.resolve()),
        files=files,
        loader=LOADERS[files[0].suffix.lower()],
    )


def _corpus_files(path: Path) -> tuple[Path, ...]:
    """The corpus files at ``path`` (a file, or every supported file under a folder, sorted); one kind only."""
    if path.is_file():
        files = [path]
    else:
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and p.suffix.lower() in LOADERS
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise FileNotFoundError(f"no corpus files in folder {path}: expected .txt, .jsonl, .json or .parquet files")
    if files[0].suffix.lower() not in LOADERS:
        raise ValueError(
            f"{path}: unsupported file type {path.suffix!r}; use .txt (one document per file), "
            f".jsonl/.json or .parquet (a 'text' field per document)"
        )
    kinds = {LOADERS[f.suffix.lower()] for f in files}
    if len(kinds) > 1:
        raise ValueError(
            f"folder {path} mixes file types ({', '.join(sorted(kinds))}); put one kind of file "
            f"in the folder, or prepare each kind separately"
        )
    return tuple(f.resolve() for f in files)


def default_data_dir(
    source: str | os.PathLike[str] | Source | None = None,
    tokenizer: str | Tokenizer = DEFAULT_TOKENIZER,
    vocab_size: int | None = None,
) -> Path:
    """Where :func:`llmlab.data.prepare` writes by default: ``data/<source-name>_<tokenizer>``, e.g.
    data/shakespeare_char; the tokenizer defaults to :data:`DEFAULT_TOKENIZER`, the default preset's. A BPE
    of another size than the default 1,024 tokens gets its own folder: ``data/shakespeare_bpe4096``."""
    name = tokenizer if isinstance(tokenizer, str) else tokenizer.name
    if size := non_default_size(vocab_size):
        name += str(size)
    return Path("data") / f"{resolve_source(source).name}_{name}"


def check_utf8(path: str | Path, chunk_bytes: int = 1 << 24) -> None:
    """Raise ValueError naming the file and the byte offset of the first byte that is not valid UTF-8.

    Policy: text must be valid UTF-8; nothing is silently replaced (a replaced character would change the
    text that bits-per-byte is measured on).
    """
    path = Path(path)
    offset, carry = 0, b""  # carry: the start of a character cut by the chunk boundary
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            data = carry + chunk
            try:
                data.decode("utf-8")
                offset, carry = offset + len(data), b""
            except UnicodeDecodeError as e:  # e.start: the first bad byte; everything before it is valid
                if e.reason != "unexpected end of data" or e.end != len(data):
                    _not_utf8(path, offset + e.start, data[e.start : e.start + 1])
                offset, carry = offset + e.start, data[e.start :]
    if carry:
        _not_utf8(path, offset, carry)


def _not_utf8(path: Path, offset: int, bad: bytes) -> None:
    raise ValueError(
        f"{path} is not valid UTF-8: byte {bad[:1].hex()} at byte offset {offset}; convert the file to UTF-8 "
        f"(e.g. iconv -f latin1 -t utf-8 {path.name} > fixed.txt) and prepare again"
    )


def load_source(
    source: str | os.PathLike[str] | Source | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    num_proc: int = 1,
) -> datasets.Dataset:
    """Load a source as a ``datasets.Dataset`` with one column, ``text`` (one document per row).

    ``.txt`` files are one document each (``sample_by="document"``; line endings become LF);
    ``.jsonl``/``.json``/``.parquet`` rows need a ``text`` field. ``cache_dir``: where ``datasets`` keeps
    its Arrow copy (default: its own cache, ~/.cache/huggingface/datasets). ``num_proc`` processes download
    and convert the files of a many-file source.
    """
    src = resolve_source(source)
    if src.kind == SHAKESPEARE:
        return shakespeare().select_columns(["text"])
    import datasets

    cache = None if cache_dir is None else str(cache_dir)
    if src.kind == "hub":
        ds = _load_hub(src, cache, num_proc)
        where = f"hub dataset {src.repo_id}"
    else:
        if src.loader == "text":
            for f in src.files:
                check_utf8(f)
        kwargs = {"sample_by": "document"} if src.loader == "text" else {}
        procs = min(num_proc, len(src.files))  # datasets parallelizes over files
        try:
            ds = datasets.load_dataset(
                src.loader,
                data_files=[str(f) for f in src.files],
                split="train",
                cache_dir=cache,
                num_proc=procs if procs > 1 else None,
                **kwargs,
            )
        except datasets.exceptions.DatasetGenerationError as e:
            cause = e.__cause__ or e
            raise ValueError(
                f"could not read {src.spec} as {src.loader} ({type(cause).__name__}: {cause}); "
                f"check the file format: .jsonl needs one JSON object per line"
            ) from None
        where = src.spec
    if "text" not in ds.column_names:
        raise ValueError(
            f"{where} has no 'text' column (columns: {', '.join(ds.column_names)}); "
            f"put each document's text in a field named 'text'"
        )
    if ds.features["text"] != datasets.Value("string") and ds.features["text"] != datasets.Value("large_string"):
        raise ValueError(f"{where}: column 'text' holds {ds.features['text']}, not strings; store text in it")
    return ds.select_columns(["text"])


def _hub_offline_reason() -> str | None:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return f"offline mode is on ({var}={os.environ[var]})"
    return None


def _hub_unavailable(src: Source, cause: str) -> SourceUnavailableError:
    return SourceUnavailableError(
        f"cannot download the Hugging Face dataset {src.repo_id!r} ({cause}). Without network, prepare a local "
        f"corpus instead: llmlab prepare --source path/to/corpus (a .txt/.jsonl/.parquet file or folder), "
        f"or the embedded one: llmlab prepare --source shakespeare"
    )


def _load_hub(src: Source, cache_dir: str | None, num_proc: int = 1) -> datasets.Dataset:
    """Load a hub dataset's train split, failing within seconds (not a hang) when the hub is unreachable."""
    import datasets
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    reason = _hub_offline_reason()
    if reason:
        raise _hub_unavailable(src, reason)
    try:  # a quick probe with a short timeout: load_dataset itself retries for minutes when offline
        HfApi().dataset_info(src.repo_id, revision=src.revision, timeout=HUB_TIMEOUT_S)
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise ValueError(
            f"no dataset {src.repo_id!r} (revision {src.revision or 'main'}) on the Hugging Face hub; "
            f"check the name, e.g. source='hf:{OPENWEBTEXT_REPO}'"
        ) from None
    except Exception as e:  # noqa: BLE001 - any transport error means "unreachable"; say why, no traceback
        raise _hub_unavailable(src, f"{type(e).__name__}: {e}") from None
    try:
        return datasets.load_dataset(
            src.repo_id,
            split="train",
            revision=src.revision,
            cache_dir=cache_dir,
            num_proc=num_proc if num_proc > 1 else None,
        )
    except (ConnectionError, TimeoutError, OSError) as e:
        raise _hub_unavailable(src, f"{type(e).__name__}: {e}") from None
