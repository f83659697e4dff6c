"""llmlab export: a checkpoint becomes a transformers folder with the same logits, greedy text and token ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from llmlab.checkpoint import model_from_checkpoint  # noqa: E402
from llmlab.export import export_pretrained  # noqa: E402
from llmlab.train import Trainer  # noqa: E402

TEXT = "ROMEO: But soft, what light"
LLAMA = dict(position="rope", norm="rmsnorm", mlp="swiglu", bias=False)


def _train(data: Path, out: Path, tiny_config, steps: int = 20, **options: object) -> Path:
    tokenizer = data.name.removeprefix("data_")
    config = tiny_config(max_iters=steps, eval_interval=steps, tokenizer=tokenizer, **options)
    Trainer(config, data=data, out_dir=out).fit()
    return out / "best_checkpoint.bin"


@pytest.fixture(scope="module")
def gpt2_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import make_data, tiny_config

    root = tmp_path_factory.mktemp("export")
    return _train(make_data(root, "gpt2"), root / "out", tiny_config)


@pytest.fixture(scope="module")
def bpe_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import make_data

    return make_data(tmp_path_factory.mktemp("export_bpe"), "bpe")


# Trained long enough (~1.3 s on one thread) that greedy decoding no longer picks one token after every prefix.
LEARNED = dict(steps=400, max_lr=1e-2, min_lr=1e-3)


def _same_model_in_transformers(checkpoint: Path, out: Path, architecture: str, varied: bool = True) -> None:
    """The exported folder loads with the Auto classes and computes what llmlab computes: logits, greedy text, ids."""
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(hf).__name__ == architecture
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    ours, tokenizer, _ = model_from_checkpoint(checkpoint)
    for text in (TEXT, "  What?\n\nOPHELIA:  no more, my lord!  "):
        assert hf_tok(text)["input_ids"] == tokenizer.encode(text)
    idx = torch.tensor([tokenizer.encode(TEXT)[-ours.config.block_size :]])  # a full context window
    with torch.no_grad():
        theirs, expected = hf(idx).logits, ours(idx)[0]
    torch.testing.assert_close(theirs, expected, atol=1e-4, rtol=1e-4)
    # Greedy's pick after each prefix of the window is the same, and (trained long enough) not one token everywhere.
    assert torch.equal(theirs.argmax(-1), expected.argmax(-1))
    assert len(expected.argmax(-1).unique()) > 2 or not varied
    steps = 8  # prompt + steps stays inside block_size 16
    generated = hf.generate(
        idx[:, -8:], attention_mask=torch.ones_like(idx[:, -8:]), max_new_tokens=steps, do_sample=False
    )
    greedy = ours.generate(idx[:, -8:], steps, temperature=0)
    new = greedy[0, 8:].tolist()
    if tokenizer.eot_token in new:  # generation_config.json names end-of-text as eos: transformers stops there
        new = new[: new.index(tokenizer.eot_token) + 1]
    assert generated[0, 8:].tolist() == new
    assert hf_tok.decode(generated[0]) == tokenizer.decode(greedy[0, : 8 + len(new)].tolist())
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == generation["bos_token_id"] == tokenizer.eot_token


def test_gpt2_layout_on_gpt2_bpe(gpt2_checkpoint: Path, tmp_path: Path) -> None:
    out = export_pretrained(gpt2_checkpoint, tmp_path / "hf")
    assert {"config.json", "generation_config.json", "model.safetensors", "vocab.json", "merges.txt"} <= {
        p.name for p in out.iterdir()
    }
    # 20 steps (a 50,257-token head is slow to train on one thread): the greedy picks are all "\n" still; varied
    # greedy text through GPT2LMHeadModel is tested on random weights in test_hf.py.
    _same_model_in_transformers(gpt2_checkpoint, out, "GPT2LMHeadModel", varied=False)
    generate = transformers.pipeline("text-generation", model=str(out), device="cpu")
    result = generate(TEXT, max_new_tokens=5, do_sample=False)[0]["generated_text"]
    ours, tokenizer, _ = model_from_checkpoint(gpt2_checkpoint)
    greedy = ours.generate(torch.tensor([tokenizer.encode(TEXT)]), 5, temperature=0)
    assert result == tokenizer.decode(greedy[0].tolist())


def test_llama_layout_on_a_bpe_learned_here(bpe_data: Path, tmp_path: Path, tiny_config) -> None:
    checkpoint = _train(bpe_data, tmp_path / "out", tiny_config, **LEARNED, **LLAMA)
    _same_model_in_transformers(checkpoint, export_pretrained(checkpoint, tmp_path / "hf"), "LlamaForCausalLM")


def test_qwen3_layout_untied_on_characters(char_data: Path, tmp_path: Path, tiny_config) -> None:
    options = dict(LLAMA, qk_norm=True, tie_embeddings=False)
    checkpoint = _train(char_data, tmp_path / "out", tiny_config, **LEARNED, **options)
    out = export_pretrained(checkpoint, tmp_path / "hf")
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False
    _same_model_in_transformers(checkpoint, out, "Qwen3ForCausalLM")


def test_refuses_an_architecture_transformers_has_not(char_data: Path, tmp_path: Path, tiny_config) -> None:
    modern = dict(LLAMA, qk_norm=True, mlp="standard", activation="relu2", logit_softcap=15.0)
    ckpt = _train(char_data, tmp_path / "out", tiny_config, **modern)
    message = (
        "mlp='standard', logit_softcap=15.0 have no counterpart in Qwen3ForCausalLM.*"
        "Train with the cpu_modern preset with --set mlp=swiglu logit_softcap=0 to export"
    )
    with pytest.raises(ValueError, match=message):
        export_pretrained(ckpt, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()  # refused before writing anything
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hf.")]


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
