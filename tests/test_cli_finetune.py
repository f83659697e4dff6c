"""llmlab finetune / export / generate --speaker from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmlab.cli import main


@pytest.fixture(scope="module")
def base(char_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli_base") / "out"
    args = [
        "train",
        "--data",
        str(char_data),
        "--out",
        str(out),
        "--quiet",
        "--set",
        "block_size=64",
        "--set",
        "embedding_size=32",
        "--set",
        "num_heads=2",
        "--set",
        "depth=2",
        "--set",
        "batch_size=4",
        "--set",
        "max_iters=20",
        "--set",
        "eval_interval=10",
        "--set",
        "eval_iters=2",
        "--set",
        "device=cpu",
    ]
    assert main(args) == 0
    return out / "best_checkpoint.bin"


def _examples(tmp_path: Path) -> Path:
    path = tmp_path / "chat.jsonl"
    rows = [
        {"speaker": "Oph.", "context": "What say you, my lord?" + " " * (i % 4), "reply": "No more but so?"}
        for i in range(20)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_finetune_then_reply_from_the_command_line(base: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ft"
    args = [
        "finetune",
        "--checkpoint",
        str(base),
        "--data",
        str(_examples(tmp_path)),
        "--out",
        str(out),
        "--max-iters",
        "30",
        "--max-lr",
        "3e-3",
        "--set",
        "eval_interval=15",
        "--set",
        "batch_size=4",
        "--quiet",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "held-out replies:" in printed and (out / "best_checkpoint.bin").exists()
    assert main(args) == 1  # a second run into the same --out is refused ...
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0  # ... unless asked
    capsys.readouterr()
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(out / "best_checkpoint.bin"),
                "--speaker",
                "Oph.",
                "--context",
                "What say you, my lord?",
                "--max-new-tokens",
                "20",
                "--seed",
                "0",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip()  # a reply was printed


def test_speaker_on_a_plain_model_is_a_clear_error_and_a_char_model_exports(base: Path, tmp_path: Path, capsys) -> None:
    assert main(["generate", "--checkpoint", str(base), "--speaker", "Oph.", "--context", "hi"]) == 1
    err = capsys.readouterr().err
    assert "fine-tuned checkpoint" in err and "--prompt" in err
    # The character tokenizer exports as a tokenizer.json with llmlab's ids (llmlab.hf_tokenizer).
    from transformers import AutoTokenizer

    from llmlab.checkpoint import model_from_checkpoint

    assert main(["export", "--checkpoint", str(base), "--out", str(tmp_path / "hf")]) == 0
    ours = model_from_checkpoint(base)[1]
    theirs = AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "To be, or not to be:\n that is"
    assert theirs(text)["input_ids"] == ours.encode(text) and theirs.decode(ours.encode(text)) == text
