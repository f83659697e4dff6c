"""llmlab export: a checkpoint becomes a transformers folder with the same logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from llmlab.checkpoint import model_from_checkpoint  # noqa: E402
from llmlab.export import export_pretrained  # noqa: E402
from llmlab.train import Trainer  # noqa: E402


def _train(data: Path, out: Path, tiny_config) -> Path:
    Trainer(
        tiny_config(max_iters=4, eval_interval=2, tokenizer=data.name.removeprefix("data_")), data=data, out_dir=out
    ).fit()
    return out / "best_checkpoint.bin"


@pytest.fixture(scope="module")
def gpt2_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import make_data, tiny_config

    root = tmp_path_factory.mktemp("export")
    return _train(make_data(root, "gpt2"), root / "out", tiny_config)


def test_exported_folder_loads_in_transformers_with_equal_logits(gpt2_checkpoint: Path, tmp_path: Path) -> None:
    out = export_pretrained(gpt2_checkpoint, tmp_path / "hf")
    assert {"config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer.json"} <= {
        p.name for p in out.iterdir()
    }
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    ours, tokenizer, _ = model_from_checkpoint(gpt2_checkpoint)
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    text = "ROMEO: But soft, what light"
    assert hf_tok(text)["input_ids"] == tokenizer.encode(text)  # the same GPT-2 BPE
    idx = torch.tensor([tokenizer.encode(text)])
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, ours(idx)[0], atol=1e-4, rtol=1e-4)
    generate = transformers.pipeline("text-generation", model=str(out), device="cpu")
    result = generate(text, max_new_tokens=5, do_sample=False)[0]["generated_text"]
    greedy = ours.generate(idx, 5, temperature=0)
    assert result == tokenizer.decode(greedy[0].tolist())


def test_refuses_a_tokenizer_transformers_cannot_load(char_data: Path, tmp_path: Path, tiny_config) -> None:
    ckpt = _train(char_data, tmp_path / "out", tiny_config)
    with pytest.raises(ValueError, match="'char' tokenizer.*--tokenizer gpt2"):
        export_pretrained(ckpt, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()  # refused before writing anything


def test_refuses_to_overwrite_unless_asked(gpt2_checkpoint: Path, tmp_path: Path) -> None:
    target = tmp_path / "hf"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_pretrained(gpt2_checkpoint, target)
    assert (target / "notes.txt").read_text() == "mine"
    export_pretrained(gpt2_checkpoint, target, overwrite=True)
    assert (target / "config.json").exists() and not (target / "notes.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hf.")]  # no temporary folder left
