"""llmlab.check: the machinery of practice mode (lines, results, stubs, errors, language, progress, the CLI), and the
references checked against independent ones. The mistakes, one learner-style wrong piece each, are in
test_check_mistakes.py."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llmlab import check, i18n
from llmlab.check import store
from llmlab.check.core import CheckFailed, Result, difference, run_check
from llmlab.cli import main


@pytest.fixture(autouse=True)
def progress_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test records into its own file; the learner's ~/.llmlab is never touched."""
    path = tmp_path / "progress.json"
    monkeypatch.setenv(store.PROGRESS_ENV, str(path))
    monkeypatch.delenv(i18n.LANG_ENV, raising=False)
    check.practice_edition()  # these tests grade as a practice notebook does; the teaching defaults have their own
    yield path
    check.practice_edition(False)


def _weights(q: torch.Tensor, k: torch.Tensor, causal: bool = True) -> torch.Tensor:
    T = q.size(-2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if causal:
        scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    return scores.softmax(dim=-1)


# --- the catalogue ----------------------------------------------------------------------------------------------


def test_every_piece_of_the_progress_table_has_a_check_and_a_catalogue() -> None:
    pieces = check.pieces()
    assert list(pieces) == [n for names in store.NOTEBOOKS.values() for n in names]
    assert len(pieces) >= 20
    for name, piece in pieces.items():
        fn = getattr(check, {"Head": "head", "MultiHead": "multi_head"}.get(name, name))
        assert callable(fn) and fn.__doc__, name
        keys = [m.key for m in piece.mistakes]
        assert len(keys) >= 3 and len(set(keys)) == len(keys), name
        for m in piece.mistakes:
            assert m.en and m.ja and m.en != m.ja, (name, m.key)
            assert any("\u3040" <= ch <= "\u30ff" for ch in m.ja), (name, m.key)  # kana: a Japanese text
            assert m.variants or m.probe or m.raises or m.key in _MISFITS, (name, m.key)
    assert sorted(check.__all__) == sorted(set(check.__all__))


_MISFITS = {"layers", "layer_shape", "heads", "same_head", "head_size", "no_proj"}


# --- the references, against independent ones --------------------------------------------------------------------


def _all_cases(name: str) -> list:
    return check.pieces()[name].case_list()


def test_reference_attention_weights_equal_sdpa() -> None:
    piece = check.pieces()["attention_weights"]
    for case in piece.case_list():
        q, k = case.args
        causal = case.kwargs.get("causal", True)
        v = torch.randn_like(q)
        torch.testing.assert_close(
            piece.reference(q, k, causal) @ v, F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        )


def test_reference_heads_equal_llmlab_attention() -> None:
    from llmlab.check import attention
    from llmlab.config import ModelConfig
    from llmlab.model import CausalSelfAttention

    for case in _all_cases("MultiHead"):
        C, nh, x, c_attn, c_proj = case.args
        layer = CausalSelfAttention(
            ModelConfig(vocab_size=8, block_size=8, embedding_size=C, num_heads=nh, depth=1, bias=False)
        )
        with torch.no_grad():
            layer.c_attn.weight.copy_(c_attn), layer.c_proj.weight.copy_(c_proj)
            torch.testing.assert_close(attention._run_multi_head(attention._MultiHead, case), layer.eval()(x))
    for case in _all_cases("multi_head_attention"):
        x, nh, w_attn, b_attn, w_proj, b_proj = case.args
        C = x.size(-1)
        layer = CausalSelfAttention(ModelConfig(vocab_size=8, block_size=8, embedding_size=C, num_heads=nh, depth=1))
        with torch.no_grad():
            for p, w in zip(layer.parameters(), (w_attn, b_attn, w_proj, b_proj)):
                p.copy_(w)
            torch.testing.assert_close(attention._run_mha(attention._reference_mha, case), layer.eval()(x))
    for case in _all_cases("Head"):
        C, hs, x, causal, (wq, wk, wv) = case.args
        want = F.scaled_dot_product_attention(x @ wq.T, x @ wk.T, x @ wv.T, is_causal=causal)
        torch.testing.assert_close(attention._run_head(attention._Head, case), want)


def test_reference_block_pieces_equal_llmlab_modules() -> None:
    for case in _all_cases("mlp"):
        x, model = case.args
        blk = model.transformer.h[0]
        with torch.no_grad():
            torch.testing.assert_close(check.pieces()["mlp"].reference(x, blk), blk.mlp(x))
    for case in _all_cases("layer_norm"):
        x, w, b = case.args
        eps = case.kwargs.get("eps", 1e-5)
        norm = torch.nn.LayerNorm(x.size(-1), eps=eps, dtype=x.dtype)
        with torch.no_grad():
            norm.weight.copy_(w), norm.bias.copy_(b)
            torch.testing.assert_close(check.pieces()["layer_norm"].reference(x, w, b, eps), norm(x))


def test_reference_schedule_is_llmlabs_and_batches_are_windows() -> None:
    from llmlab.check import training

    assert training._reference_lr(0, 1.0, 0.1, 4, 10) == pytest.approx(1 / 5)  # nanoGPT's (step + 1) / (warmup + 1)
    assert training._reference_lr(4, 1.0, 0.1, 4, 10) == pytest.approx(1.0)
    assert training._reference_lr(12, 1.0, 0.1, 4, 10) == pytest.approx(0.1)
    data = np.arange(30, dtype=np.uint16)
    x, y = training._reference_get_batch(data, 5, 64, np.random.default_rng(0))
    assert x.dtype == torch.int64 and torch.equal(y, x + 1) and int(y.max()) <= 29
    assert int(x[:, 0].max()) == 30 - 5 - 1  # every start may come: none is left out at the end


def test_reference_adamw_equals_torch_adamw() -> None:
    from llmlab.check import optimisation

    for case in _all_cases("adamw_step"):
        w0, grads, lr, betas, eps, wd = case.args
        param = torch.nn.Parameter(w0.clone())
        torch_adamw = torch.optim.AdamW([param], lr=lr, betas=betas, eps=eps, weight_decay=wd)
        for (w, m, v), g in zip(optimisation._run_adamw(optimisation._adamw, case), grads):
            param.grad = g.clone()
            torch_adamw.step()
            state = torch_adamw.state[param]
            torch.testing.assert_close((w, m, v), (param.detach(), state["exp_avg"], state["exp_avg_sq"]))


def test_reference_accumulation_equals_the_big_batch_gradient() -> None:
    from llmlab.check import optimisation
    from llmlab.config import ModelConfig
    from llmlab.model import GPT

    for case in _all_cases("accumulate_gradients"):
        B, T, k, seed = case.args
        torch.manual_seed(0)
        model = GPT(ModelConfig(vocab_size=16, block_size=8, embedding_size=16, num_heads=2, depth=1))
        g = torch.Generator().manual_seed(seed)
        x, y = torch.randint(0, 16, (B, T), generator=g), torch.randint(0, 16, (B, T), generator=g)
        model(x, y)[1].backward()
        big = torch.cat([p.grad.flatten() for p in model.parameters()])
        torch.testing.assert_close(optimisation._run_accumulate(optimisation._accumulate, case), big)


def test_reference_sampling_pieces() -> None:
    from llmlab.check import sampling

    for case in _all_cases("attend_one"):
        x, layer = case.args
        with torch.no_grad():
            torch.testing.assert_close(sampling._run_attend(sampling._attend, case)["outputs"], layer(x))
    # choose: the notebook's draw (softmax, then torch.multinomial) seed for seed
    for case in _all_cases("choose"):
        logits, t, k, p = case.args
        for seed in range(5):
            got = check.pieces()["choose"].reference(logits, t, k, p, torch.Generator().manual_seed(seed))
            if t == 0:
                assert got == int(logits.argmax())
            elif k is None and p is None:
                want = torch.multinomial(F.softmax(logits / t, -1), 1, generator=torch.Generator().manual_seed(seed))
                assert got == int(want)


def test_reference_modern_pieces() -> None:
    from llmlab.muon import NS_COEFFICIENTS, newton_schulz

    for case in _all_cases("rope"):  # the notebook's complex-number rotation
        x, first = case.args
        base = case.kwargs.get("base", 10000.0)
        B, nh, T, hs = x.shape
        angles = torch.outer(torch.arange(first, first + T).float(), base ** (-torch.arange(0, hs, 2).float() / hs))
        pairs = torch.view_as_complex(x.reshape(B, nh, T, hs // 2, 2).contiguous())
        want = torch.view_as_real(pairs * torch.polar(torch.ones_like(angles), angles)).flatten(-2)
        torch.testing.assert_close(check.pieces()["rope"].reference(x, first, base), want)
    g = torch.randn(4, 9)
    one = check.pieces()["newton_schulz_step"].reference(g / g.norm(), *NS_COEFFICIENTS)
    torch.testing.assert_close(one, newton_schulz(g, steps=1))


# --- what a check says ---------------------------------------------------------------------------------------------


def test_a_pass_is_one_line_and_a_true_result(capsys: pytest.CaptureFixture[str]) -> None:
    result = check.attention_weights(_weights)
    assert capsys.readouterr().out == "✓ attention_weights: right on 6 cases\n"
    assert result and result.passed and result.status == "pass" and result.hint == "" and result.mistake is None
    assert result.cases == 6


def test_a_mistake_is_one_line_with_its_hint(capsys: pytest.CaptureFixture[str]) -> None:
    result = check.attention_weights(lambda q, k, causal=True: _weights(q, k, causal).transpose(-2, -1))
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("✗ attention_weights: ")
    assert not result and result.status in ("mistake", "differs") and result.hint in out


def test_a_stub_gets_the_friendly_line(capsys: pytest.CaptureFixture[str], progress_file: Path) -> None:
    def attention_weights(q, k, causal=True):  # noqa: ANN001, ANN202 - the practice edition's stub
        raise NotImplementedError

    class Head(torch.nn.Module):
        def __init__(self, C: int, hs: int) -> None:
            super().__init__()
            raise NotImplementedError("write Head")

    assert check.attention_weights(attention_weights).status == "stub"
    assert check.head(Head).status == "stub"
    assert check.merge(None).status == "stub"
    assert capsys.readouterr().out.splitlines() == [
        "✎ write `attention_weights` above, then run this cell",
        "✎ write `Head` above, then run this cell",
        "✎ write `merge` above, then run this cell",
    ]
    assert not progress_file.exists()  # nothing written yet: nothing to record


def test_a_module_without_forward_is_not_a_stub(capsys: pytest.CaptureFixture[str]) -> None:
    class Head(torch.nn.Module):
        def __init__(self, C: int, hs: int) -> None:
            super().__init__()
            self.query, self.key, self.value = (torch.nn.Linear(C, hs, bias=False) for _ in range(3))

    result = check.head(Head)
    assert result.status == "error" and 'missing the required "forward"' in result.line


def test_an_error_is_one_line_with_type_message_and_case(capsys: pytest.CaptureFixture[str]) -> None:
    def broken(q, k, causal=True):  # noqa: ANN001, ANN202
        raise ValueError("shapes do not fit\nsecond line of a long message")

    result = check.attention_weights(broken)
    assert capsys.readouterr().out == (
        "✗ attention_weights raised ValueError: shapes do not fit (case “B=2, nh=2, T=5, hs=4”)\n"
    )
    assert result.status == "error" and not result.passed


def test_generic_lines_name_the_case_and_the_difference(capsys: pytest.CaptureFixture[str]) -> None:
    def off_for_one_case(q, k, causal=True):  # noqa: ANN001, ANN202
        w = _weights(q, k, causal)
        return w + 0.25 if q.size(-2) == 1 else w

    def float32_always(q, k, causal=True):  # noqa: ANN001, ANN202
        return _weights(q.float(), k.float(), causal)

    def forgot_return(q, k, causal=True):  # noqa: ANN001, ANN202
        _weights(q, k, causal)

    assert check.attention_weights(off_for_one_case).status == "differs"
    check.attention_weights(float32_always)
    check.attention_weights(forgot_return)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "✗ attention_weights: differs from the reference on the case “T = 1”: values differ by up to 0.25, first "
        "at index [0, 0, 0, 0]: 1.25 instead of 1"
    )
    assert lines[1] == (
        "✗ attention_weights: differs from the reference on the case “float64”: dtype float32 instead of float64"
    )
    assert lines[2] == (
        "✗ attention_weights: differs from the reference on the case “B=2, nh=2, T=5, hs=4”: it returns None (is a "
        "`return` missing?)"
    )


def test_difference_describes_nested_results() -> None:
    assert difference([1, 2, 3], [1, 2, 3]) is None
    assert difference([1, 5], [1, 2]) == ("value", {"where": "[1]", "got": 5, "want": 2})
    assert difference({"a": 1.0}, {"a": 1.0 + 1e-9}) is None
    assert difference({"a": 1.0}, {"b": 1.0})[0] == "keys"
    assert difference(torch.tensor([float("nan"), float("-inf")]), torch.tensor([float("nan"), float("-inf")])) is None
    assert difference(torch.tensor([0.0, float("-inf")]), torch.tensor([0.0, 0.0]))[0] == "values"
    assert difference(torch.zeros(2), torch.zeros(3))[0] == "shape"
    assert difference(np.zeros(2), torch.zeros(2))[0] == "type"
    assert difference(2.0, 2)[0] == "type"  # an id list holds ints


def test_japanese_lines(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(i18n.LANG_ENV, "ja")
    check.attention_weights(_weights)
    check.attention_weights(lambda q, k, causal=True: _weights(q, k, False))
    check.attention_weights(None)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "✓ attention_weights: 6 個のケースすべてで正解です"
    assert lines[1].startswith("✗ attention_weights: causal=True でも何も変わっていません")
    assert lines[2] == "✎ 上のセルで `attention_weights` を書いてから、このセルを実行してください"
    result = check.attention_weights(lambda q, k, causal=True: 1 / 0, show=False)
    assert result.line == (
        "✗ attention_weights でエラーが出ました: ZeroDivisionError: division by zero（ケース「B=2、nh=2、T=5、hs=4」）"
    )


def test_options_show_strict_record(capsys: pytest.CaptureFixture[str], progress_file: Path) -> None:
    quiet = check.attention_weights(_weights, show=False, record=False)
    assert quiet.passed and capsys.readouterr().out == "" and not progress_file.exists()
    check.attention_weights(_weights, strict=True)  # a pass under strict: the line, no error
    assert capsys.readouterr().out.startswith("✓")
    with pytest.raises(CheckFailed, match="causal=True changes nothing"):
        check.attention_weights(lambda q, k, causal=True: _weights(q, k, False), strict=True)
    assert capsys.readouterr().out == ""  # the error carries the line; it is not printed twice
    assert isinstance(CheckFailed("x"), AssertionError)


def test_a_result_on_a_cells_last_line_shows_its_line_once(capsys: pytest.CaptureFixture[str]) -> None:
    from IPython.core.formatters import DisplayFormatter

    shown = check.attention_weights(_weights)
    capsys.readouterr()
    assert DisplayFormatter().format(shown) == ({}, {})  # IPython's display: nothing more
    assert capsys.readouterr().out == ""
    quiet = check.attention_weights(_weights, show=False)
    DisplayFormatter().format(quiet)
    assert capsys.readouterr().out == "✓ attention_weights: right on 6 cases\n"


def test_a_check_leaves_torchs_random_numbers_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check.train_step(lambda *a: 0.0, show=False)  # builds seeded models inside
    assert torch.equal(torch.rand(3), expected)


def test_run_check_on_a_piece_directly() -> None:
    piece = check.pieces()["merge"]
    result = run_check(piece, piece.reference, show=False, record=False)
    assert isinstance(result, Result) and result.passed and result.piece == "merge"


# --- progress -------------------------------------------------------------------------------------------------------


def test_progress_is_recorded_and_shown_by_notebook(progress_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from llmlab.bpe import merge_pair

    check.merge(merge_pair)
    check.attention_weights(lambda q, k, causal=True: _weights(q, k, False))
    check.attention_weights(lambda q, k, causal=True: _weights(q, k, False))
    pieces = json.loads(progress_file.read_text(encoding="utf-8"))["pieces"]
    assert pieces["merge"]["passed"] is True and pieces["merge"]["tries"] == 1
    assert pieces["attention_weights"] == {**pieces["attention_weights"], "passed": False, "tries": 2}
    capsys.readouterr()
    check.progress()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"Practice progress ({progress_file}): 1 of 29 pieces pass"
    assert lines[1].split() == ["01_tokenization", "1/5", "✓", "merge", "·", "bpe_step", "·", "bpe_encode", "·",
                                "bigram_table", "·", "bigram_loss"]  # fmt: skip
    assert "✗ attention_weights" in lines[2] and lines[2].split()[1] == "0/4"
    assert lines[-1] == "✓ passes   ✗ tried, not passing yet   · not tried"
    check.merge(lambda ids, pair, new_id: list(ids))  # the latest try counts
    assert json.loads(progress_file.read_text(encoding="utf-8"))["pieces"]["merge"]["passed"] is False


def test_progress_file_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(store.PROGRESS_ENV)
    monkeypatch.delenv("LLMLAB_FAST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert store.progress_file() == tmp_path / "home" / ".llmlab" / "progress.json"
    monkeypatch.setenv("LLMLAB_FAST", "1")  # CI runs of the notebooks: never the learner's file
    monkeypatch.setenv("LLMLAB_FAST_ROOT", str(tmp_path / "fast"))
    assert store.progress_file() == tmp_path / "fast" / "progress.json"
    monkeypatch.setenv(store.PROGRESS_ENV, "off")
    assert store.progress_file() is None and store.record("merge", True) is False
    assert store.progress_lines() == ["Practice progress is not recorded (LLMLAB_PROGRESS=off)."]


def test_a_damaged_or_unwritable_progress_file_never_stops_a_check(
    progress_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    progress_file.write_text("{not json", encoding="utf-8")
    assert store.load_progress() == {}
    assert check.attention_weights(_weights).passed
    assert json.loads(progress_file.read_text(encoding="utf-8"))["pieces"]["attention_weights"]["passed"] is True
    blocker = progress_file.parent / "a_file"
    blocker.write_text("", encoding="utf-8")
    monkeypatch.setenv(store.PROGRESS_ENV, str(blocker / "progress.json"))  # its folder is a file: cannot write
    assert check.attention_weights(_weights).passed
    assert store.record("merge", True) is False


def test_progress_in_japanese(monkeypatch: pytest.MonkeyPatch, progress_file: Path) -> None:
    monkeypatch.setenv(i18n.LANG_ENV, "ja")
    lines = store.progress_lines()
    assert lines[0] == f"練習の進み具合（{progress_file}）：29 個中 0 個が合格"
    assert lines[-1] == "✓ 合格   ✗ 挑戦中（まだ不合格）   · 未挑戦"


def test_the_cli_prints_progress(progress_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store.record("rope", True)
    assert main(["progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"Practice progress ({progress_file}): 1 of 29 pieces pass"
    assert "✓ rope" in next(line for line in out if "07_modern_gpt" in line)


def test_the_cli_command_loads_no_check(progress_file: Path) -> None:
    code = (
        "import sys; from llmlab.cli import main; main(['progress']); "
        "assert not any(m.startswith('llmlab.check.') and m != 'llmlab.check.store' for m in sys.modules), "
        "sorted(m for m in sys.modules if m.startswith('llmlab.check'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Practice progress")


def test_a_piece_calling_a_helper_still_to_write_names_the_helper(capsys: pytest.CaptureFixture[str]) -> None:
    def keep_top_k(logits, k):  # noqa: ANN001, ANN202 - the practice edition's stub, not written yet
        raise NotImplementedError

    def choose(logits, t=1.0, k=None, p=None, generator=None):  # noqa: ANN001, ANN202
        if t == 0:
            return int(torch.argmax(logits))
        logits = logits / t
        if k is not None:
            logits = keep_top_k(logits, k)
        return int(torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator))

    result = check.choose(choose)
    assert result.status == "stub" and capsys.readouterr().out == (
        "✎ `choose` calls `keep_top_k`, which is not written yet: write `keep_top_k` first, then run this cell\n"
    )


def test_a_not_implemented_error_from_torch_is_an_error_not_a_stub() -> None:
    def attention_weights(q, k, causal=True):  # noqa: ANN001, ANN202
        raise NotImplementedError("Could not run 'aten::_softmax' with arguments from the 'Meta' backend.")

    result = check.attention_weights(attention_weights, show=False)
    assert result.status == "error" and "NotImplementedError: Could not run" in result.line


def test_a_piece_that_changes_the_model_does_not_spoil_the_next_check() -> None:
    def vandal(model, idx):  # noqa: ANN001, ANN202
        with torch.no_grad():
            model.transformer.wpe.weight.zero_()
        return model(idx)[0]

    def right(model, idx):  # noqa: ANN001, ANN202
        return model(idx)[0]

    assert not check.gpt_forward(vandal, show=False).passed
    assert check.gpt_forward(right, show=False).passed


def test_teaching_edition_checks_strictly_and_records_nothing(progress_file: Path) -> None:
    # Without practice_edition() a check is an assertion on the notebook's own solution, and the learner's
    # progress file stays untouched: they did not write the teaching edition's code.
    check.practice_edition(False)
    assert check.attention_weights(_weights, show=False).passed
    with pytest.raises(CheckFailed, match="attention_weights"):
        check.attention_weights(lambda q, k, causal=True: _weights(q, k, causal) * 2, show=False)
    assert not progress_file.exists()


def test_or_llmlab_keeps_yours_when_right_and_falls_back_saying_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert check.attention_weights(_weights, show=False).or_llmlab() is _weights
    assert capsys.readouterr().out == ""

    def stub(q, k, causal=True):
        raise NotImplementedError()

    result = check.attention_weights(stub)
    used = result.or_llmlab()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "✎ write `attention_weights` above, then run this cell"
    assert out[1].startswith("→ from here on this notebook uses llmlab's `attention_weights`")
    q, k = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8)
    torch.testing.assert_close(used(q, k), _weights(q, k))  # the fallback computes the right thing


def test_gpt_forward_fallback_fills_the_shapes_as_notebook_03_does() -> None:
    # In the practice edition llmlab's gpt_forward stands in for an unwritten one; 03 prints the shapes it records.
    from llmlab.config import ModelConfig
    from llmlab.model import GPT

    model = GPT(ModelConfig(vocab_size=20, block_size=8, embedding_size=16, num_heads=2, depth=2))
    idx = torch.randint(0, 20, (3, 5))
    theirs: list = []
    logits = check.pieces()["gpt_forward"].reference(model, idx, theirs)
    tr = model.transformer
    tok, pos = tr.wte.weight[idx], tr.wpe.weight[torch.arange(5)]
    x, ours = tok + pos, [("idx", idx.shape), ("token embedding", tok.shape), ("position embedding", pos.shape)]
    ours.append(("x = tok + pos", x.shape))
    for i, blk in enumerate(tr.h):
        x = blk(x)
        ours.append((f"after block {i}", x.shape))
    x = tr.ln_f(x)
    ours += [("after ln_f", x.shape), ("logits", (x @ tr.wte.weight.T).shape)]
    assert theirs == ours and logits.shape == (3, 5, 20)
