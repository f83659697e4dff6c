"""Checks for notebook 05 (sampling): top-k and top-p filters, one draw, the generation loop, a KV cache."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from llmlab.check.core import Case, Mistake, Piece, Result, run_check
from llmlab.config import ModelConfig
from llmlab.model import GPT, CausalSelfAttention
from llmlab.sampling import sample_next, top_k_filter, top_p_filter

__all__ = ["keep_top_k", "keep_top_p", "choose", "generate", "attend_one"]

_INF = float("-inf")


def _run_filter(fn: Any, case: Case) -> dict[str, Any]:
    logits, amount = case.args
    given = logits.clone()
    out = fn(given, amount)
    return {"logits": out, "input changed": not torch.equal(given, logits)}


def _changed_input(seen: list[Any]) -> bool:
    return any(o["input changed"] for o in seen)


# --- keep_top_k(logits, k) ---------------------------------------------------------------------------------------


def _top_k(
    logits: torch.Tensor,
    k: int,
    keep: int | None = None,
    smallest: bool = False,
    fill: float = _INF,
    in_place: bool = False,
) -> torch.Tensor:
    idx = torch.topk(logits, keep if keep is not None else k, largest=not smallest).indices
    mask = torch.ones_like(logits, dtype=torch.bool)
    mask[idx] = False
    if in_place:
        logits[mask] = fill
        return logits
    return logits.masked_fill(mask, fill)


def _top_k_cases() -> list[Case]:
    g = torch.Generator().manual_seed(1)
    return [
        Case("V=10, k=3", "V=10、k=3", (2 * torch.randn(10, generator=g), 3)),
        Case("k = 1", "k = 1", (2 * torch.randn(8, generator=g), 1)),
        Case("k = V", "k = V", (torch.randn(6, generator=g), 6)),
        Case("ties above the cut", "カットより上の同点", (torch.tensor([5.0, 1.0, 5.0, 0.0, -1.0]), 2)),
        Case("all logits negative", "ロジットがすべて負", (-1 - torch.rand(7, generator=g), 2)),
    ]


KEEP_TOP_K = Piece(
    title="keep_top_k",
    reference=top_k_filter,
    cases=_top_k_cases,
    run=_run_filter,
    mistakes=(
        Mistake(
            "changes_input",
            "it writes -inf into the logits it was given; return a new tensor (logits.masked_fill(...)), so the "
            "caller's logits stay as they were",
            "渡されたロジットに -inf を書き込んでいます。新しいテンソル（logits.masked_fill(...)）を返して、"
            "呼び出し側のロジットはそのままにしてください",
            probe=_changed_input,
        ),
        Mistake(
            "fills_zero",
            "the dropped tokens get logit 0, which softmax still gives weight (more than a negative logit): fill "
            "them with float('-inf')",
            "落としたトークンのロジットが 0 になっています。softmax は 0 にも重みを与えます（負のロジットより"
            "大きく）。float('-inf') で埋めてください",
            variant=lambda logits, k: _top_k(logits, k, fill=0.0),
        ),
        Mistake(
            "keeps_k_plus_1",
            "it keeps k + 1 tokens: the k-th largest is torch.topk(logits, k).values[-1]; drop what is below it",
            "k + 1 個のトークンを残しています。k 番目に大きい値は torch.topk(logits, k).values[-1] です。それより"
            "小さいものを落としてください",
            variant=lambda logits, k: _top_k(logits, k, keep=min(k + 1, logits.numel())),
        ),
        Mistake(
            "keeps_k_minus_1",
            "it keeps only k - 1 tokens: the k-th largest itself stays (drop what is strictly below it)",
            "k - 1 個しか残していません。k 番目に大きい値そのものは残します（それより真に小さいものだけを落とす）",
            variant=(
                lambda logits, k: _top_k(logits, k, keep=k - 1) if k > 1 else torch.full_like(logits, _INF),
                lambda logits, k: logits.masked_fill(logits <= torch.topk(logits, k).values[-1], _INF),
            ),
        ),
        Mistake(
            "keeps_smallest",
            "it keeps the k smallest logits; keep the k largest (torch.topk's default, largest=True)",
            "最も小さい k 個を残しています。最も大きい k 個を残してください（torch.topk の既定 largest=True）",
            variant=lambda logits, k: _top_k(logits, k, smallest=True),
        ),
    ),
)


def keep_top_k(fn: Any, **options: bool) -> Result:
    """Check ``keep_top_k(logits, k)`` on (V,) logits: the ``k`` largest kept, every other logit ``-inf``, in a
    new tensor (the input unchanged). No case has a tie at the k-th value (which tokens survive a tie is up to
    torch.topk)."""
    return run_check(KEEP_TOP_K, fn, **options)


# --- keep_top_p(logits, p) ---------------------------------------------------------------------------------------


def _top_p(logits: torch.Tensor, p: float, way: str = "right", first: bool = False) -> torch.Tensor:
    if way == "unsorted":
        probs = F.softmax(logits, dim=-1)
        keep = (torch.cumsum(probs, dim=-1) - probs) < p
        return logits.masked_fill(~keep, _INF)
    ordered, order = torch.sort(logits, descending=way != "ascending")
    if way == "logit_mass":
        mass = torch.cumsum(ordered, dim=-1) - ordered
    else:
        probs = F.softmax(ordered, dim=-1)
        mass = torch.cumsum(probs, dim=-1) - (0 if way == "crossing_dropped" else probs)
    keep_sorted = mass < p
    if first:
        keep_sorted[0] = True
    if way == "order_lost":
        return logits.masked_fill(~keep_sorted, _INF)
    if way == "sorted_out":
        return ordered.masked_fill(~keep_sorted, _INF)
    keep = torch.zeros_like(keep_sorted)
    keep[order] = keep_sorted
    return logits.masked_fill(~keep, _INF)


def _top_p_cases() -> list[Case]:
    g = torch.Generator().manual_seed(2)
    shuffled = torch.tensor([0.2, 0.5, 0.3]).log()  # most likely token in the middle
    return [
        Case("V=10, p=0.5", "V=10、p=0.5", (2 * torch.randn(10, generator=g), 0.5)),
        Case("V=10, p=0.9", "V=10、p=0.9", (2 * torch.randn(10, generator=g), 0.9)),
        Case("probabilities 0.2, 0.5, 0.3, p=0.6", "確率 0.2, 0.5, 0.3、p=0.6", (shuffled, 0.6)),
        Case("p = 0.05", "p = 0.05", (torch.randn(6, generator=g), 0.05)),
        Case("p = 1", "p = 1", (torch.randn(5, generator=g), 1.0)),
    ]


def _variants(way: str) -> tuple[Any, Any]:
    # With and without "the top token always stays": a learner may or may not have added that rule.
    return (lambda logits, p: _top_p(logits, p, way), lambda logits, p: _top_p(logits, p, way, first=True))


KEEP_TOP_P = Piece(
    title="keep_top_p",
    reference=top_p_filter,
    cases=_top_p_cases,
    run=_run_filter,
    mistakes=(
        Mistake(
            "changes_input",
            "it writes -inf into the logits it was given; return a new tensor (logits.masked_fill(...))",
            "渡されたロジットに -inf を書き込んでいます。新しいテンソル（logits.masked_fill(...)）を返してください",
            probe=_changed_input,
        ),
        Mistake(
            "drops_the_crossing_token",
            "it drops the token that carries the total past p; keep a token while the mass *before* it is below p: "
            "cumsum - probs < p",
            "合計を p 以上にするトークンを落としています。そのトークンより*前*の確率の合計が p 未満なら残します: "
            "cumsum - probs < p",
            variant=_variants("crossing_dropped"),
        ),
        Mistake(
            "not_sorted",
            "the probabilities are summed in vocabulary order; sort them from the most likely first "
            "(torch.sort(logits, descending=True))",
            "確率を語彙の順に足しています。最も確率の高いものから並べてください（torch.sort(logits, descending=True)）",
            variant=lambda logits, p: _top_p(logits, p, "unsorted"),
        ),
        Mistake(
            "least_likely_first",
            "the tokens are sorted from the least likely: descending=True, so the nucleus is the most likely tokens",
            "最も確率の低いものから並べています。descending=True にして、最も確率の高いトークンを残してください",
            variant=_variants("ascending"),
        ),
        Mistake(
            "sorted_positions",
            "the keep-mask is in sorted order but applied to the unsorted logits: scatter it back (keep[order] = "
            "keep_sorted) before masking",
            "残すかどうかのマスクがソート後の順のまま、ソート前のロジットに使われています。マスクする前に元の位置に"
            "戻してください（keep[order] = keep_sorted）",
            variant=(*_variants("order_lost"), *_variants("sorted_out")),
        ),
        Mistake(
            "logits_summed",
            "the logits are summed, not probabilities: take the softmax of the sorted logits first",
            "確率ではなくロジットを足しています。先にソートしたロジットの softmax を取ってください",
            variant=_variants("logit_mass"),
        ),
    ),
)


def keep_top_p(fn: Any, **options: bool) -> Result:
    """Check ``keep_top_p(logits, p)`` on (V,) logits: the most likely tokens kept while the probability of the
    tokens ranked above them is below ``p`` (so the token that crosses ``p`` stays), the rest ``-inf``."""
    return run_check(KEEP_TOP_P, fn, **options)


# --- choose(logits, t=1.0, k=None, p=None, generator=None) -> int -------------------------------------------------

_SEEDS = range(12)


def _reference_choose(
    logits: torch.Tensor,
    t: float = 1.0,
    k: int | None = None,
    p: float | None = None,
    generator: torch.Generator | None = None,
) -> int:
    return int(sample_next(logits[None], t, k, p, generator=generator))


def _choose(
    logits: torch.Tensor,
    t: float = 1.0,
    k: int | None = None,
    p: float | None = None,
    generator: torch.Generator | None = None,
    way: str = "right",
) -> int:
    if t == 0 or way == "always_greedy":
        return int(torch.argmax(logits))
    if way == "filters_first":
        logits = top_k_filter(logits, k) if k else logits
        logits = top_p_filter(logits, p) if p else logits
        logits = logits / t
    else:
        logits = logits * t if way == "times_t" else logits / t
        logits = top_k_filter(logits, k) if k else logits
        logits = top_p_filter(logits, p) if p else logits
    return int(torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator))


def _run_choose(fn: Any, case: Case) -> dict[str, Any]:
    logits, t, k, p = case.args

    def draws() -> list[Any]:
        out = [fn(logits.clone(), t, k, p, torch.Generator().manual_seed(s)) for s in _SEEDS]
        return [int(o) if isinstance(o, (int, torch.Tensor)) and not isinstance(o, bool) else o for o in out]

    first = draws()
    return {"draws": first, "same seed, same draw": first == draws()}


def _choose_cases() -> list[Case]:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(8, generator=g) * 1.5
    return [
        Case("t = 0.5", "t = 0.5", (logits, 0.5, None, None)),
        Case("t = 2", "t = 2", (logits, 2.0, None, None)),
        Case("t = 0.5, top-p 0.6", "t = 0.5、top-p 0.6", (logits, 0.5, None, 0.6)),
        Case("t = 1, top-k 3, top-p 0.8", "t = 1、top-k 3、top-p 0.8", (logits, 1.0, 3, 0.8)),
        Case("t = 0 (greedy)", "t = 0（貪欲法）", (logits, 0, None, None)),
    ]


_BAD_PROBS = r"probability tensor contains|invalid multinomial|ZeroDivisionError"

CHOOSE = Piece(
    title="choose",
    reference=_reference_choose,
    cases=_choose_cases,
    run=_run_choose,
    mistakes=(
        Mistake(
            "greedy_missing",
            "t = 0 means greedy: return int(torch.argmax(logits)) before dividing by t (logits / 0 is inf)",
            "t = 0 は貪欲法です。t で割る前に int(torch.argmax(logits)) を返してください（logits / 0 は inf）",
            raises=_BAD_PROBS,
            on_cases=("t = 0 (greedy)",),
        ),
        Mistake(
            "logits_to_multinomial",
            "torch.multinomial needs probabilities (>= 0): pass F.softmax(logits, dim=-1), not the logits",
            "torch.multinomial には確率（0 以上）が必要です。ロジットではなく F.softmax(logits, dim=-1) を渡して"
            "ください",
            raises=_BAD_PROBS,
        ),
        Mistake(
            "generator_ignored",
            "the same seed gives different tokens: pass generator=generator to torch.multinomial",
            "同じシードで違うトークンが出ます。torch.multinomial に generator=generator を渡してください",
            probe=lambda seen: not all(o["same seed, same draw"] for o in seen),
        ),
        Mistake(
            "times_t",
            "the logits are multiplied by t; divide them: logits / t (t < 1 sharpens, t > 1 flattens)",
            "ロジットに t を掛けています。割ってください: logits / t（t < 1 で鋭く、t > 1 で平らに）",
            variant=lambda logits, t=1.0, k=None, p=None, generator=None: _choose(
                logits, t, k, p, generator, "times_t"
            ),
        ),
        Mistake(
            "filters_before_temperature",
            "top-k / top-p run before the temperature; llmlab divides by t first, then filters (top-p's nucleus "
            "depends on t)",
            "top-k / top-p を温度より先に適用しています。llmlab は先に t で割り、それから絞り込みます（top-p の"
            "核は t で変わります）",
            variant=lambda logits, t=1.0, k=None, p=None, generator=None: _choose(
                logits, t, k, p, generator, "filters_first"
            ),
        ),
        Mistake(
            "always_greedy",
            "it always takes the most likely token; with t > 0 draw one: torch.multinomial(F.softmax(logits, "
            "dim=-1), 1, generator=generator)",
            "いつも最も確率の高いトークンを選んでいます。t > 0 のときは引いてください: "
            "torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)",
            variant=lambda logits, t=1.0, k=None, p=None, generator=None: _choose(
                logits, t, k, p, generator, "always_greedy"
            ),
        ),
    ),
)


def choose(fn: Any, **options: bool) -> Result:
    """Check ``choose(logits, t=1.0, k=None, p=None, generator=None) -> int`` on (V,) logits: greedy at ``t == 0``,
    else divide by ``t``, keep the top ``k`` then the top ``p`` (your ``keep_top_k`` / ``keep_top_p``), and draw
    with ``torch.multinomial(..., 1, generator=generator)``: seed for seed the token llmlab.sampling draws."""
    return run_check(CHOOSE, fn, **options)


# --- generate(model, idx, max_new_tokens, t=1.0, k=None, p=None, generator=None) -----------------------------------


def _gen_model() -> GPT:
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=12, block_size=6, embedding_size=8, num_heads=2, depth=1)).eval()
    with torch.no_grad():  # larger weights than at init: the next token depends clearly on the context
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 1.0)
    return model


def _generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    t: float = 1.0,
    k: int | None = None,
    p: float | None = None,
    generator: torch.Generator | None = None,
    way: str = "right",
) -> torch.Tensor:
    start, block = idx.size(1), model.config.block_size
    for _ in range(max_new_tokens):
        context = {"from_start": idx[:, :block], "one_short": idx[:, -(block - 1) :]}.get(way, idx[:, -block:])
        with torch.no_grad():
            logits = model(context)[0]
        row = logits[0, 0] if way == "first_position" else logits[0, -1]
        idx = torch.cat((idx, torch.tensor([[_reference_choose(row, t, k, p, generator)]])), dim=1)
    return idx[:, start:] if way == "only_new" else idx


def _run_generate(fn: Any, case: Case) -> Any:
    prompt, n, t, k, p, seed = case.args
    model = case.kwargs["model"]
    return fn(model, prompt.clone(), n, t, k, p, generator=torch.Generator().manual_seed(seed))


def _generate_cases() -> list[Case]:
    model = _gen_model()
    prompt = torch.tensor([[1, 5, 2, 7]])
    return [
        Case("greedy, 6 new tokens", "貪欲法、新しいトークン 6 個", (prompt, 6, 0, None, None, 0), {"model": model}),
        Case("t = 1, seed 0", "t = 1、シード 0", (prompt, 6, 1.0, None, None, 0), {"model": model}),
        Case("t = 0.8, top-k 3, seed 1", "t = 0.8、top-k 3、シード 1", (prompt, 5, 0.8, 3, None, 1), {"model": model}),
        Case(
            "a 1-token prompt", "1 トークンのプロンプト", (torch.tensor([[3]]), 7, 0, None, None, 0), {"model": model}
        ),
    ]


def _gen_variant(way: str) -> Any:
    def gen(
        model: GPT,
        idx: torch.Tensor,
        max_new_tokens: int,
        t: float = 1.0,
        k: Any = None,
        p: Any = None,
        generator: Any = None,
    ) -> torch.Tensor:
        return _generate(model, idx, max_new_tokens, t, k, p, generator, way)

    return gen


GENERATE = Piece(
    title="generate",
    reference=lambda model, idx, n, t=1.0, k=None, p=None, generator=None: model.generate(
        idx, n, temperature=t, top_k=k, top_p=p, use_cache=False, generator=generator
    ),
    cases=_generate_cases,
    run=_run_generate,
    mistakes=(
        Mistake(
            "not_cropped",
            "the context outgrew the model's block_size: feed only the last block_size tokens, idx[:, "
            "-model.config.block_size:]",
            "文脈がモデルの block_size を超えました。最後の block_size 個のトークンだけを入れてください: "
            "idx[:, -model.config.block_size:]",
            raises=r"exceeds block_size|index out of range|out of bounds",
        ),
        Mistake(
            "cropped_from_the_start",
            "the context is cut from the start (idx[:, :block_size]), so the newest tokens are never seen: keep the "
            "last block_size, idx[:, -block_size:]",
            "文脈を先頭から切っています（idx[:, :block_size]）。これでは新しいトークンが見えません。最後の "
            "block_size 個を残してください: idx[:, -block_size:]",
            variant=_gen_variant("from_start"),
        ),
        Mistake(
            "context_one_short",
            "the context is one token shorter than the window: idx[:, -block_size:], not -(block_size - 1)",
            "文脈が窓より 1 トークン短くなっています。-(block_size - 1) ではなく idx[:, -block_size:] です",
            variant=_gen_variant("one_short"),
        ),
        Mistake(
            "first_position",
            "it samples from the first position's logits; the prediction for the next token is at the last "
            "position: logits[0, -1]",
            "最初の位置のロジットから引いています。次のトークンの予測は最後の位置にあります: logits[0, -1]",
            variant=_gen_variant("first_position"),
        ),
        Mistake(
            "only_new_tokens",
            "it returns only the new tokens; return the prompt followed by them, (1, T + max_new_tokens)",
            "新しいトークンだけを返しています。プロンプトの後に続けて返してください: (1, T + max_new_tokens)",
            variant=_gen_variant("only_new"),
        ),
    ),
)


def generate(fn: Any, **options: bool) -> Result:
    """Check ``generate(model, idx, max_new_tokens, t=1.0, k=None, p=None, generator=None) -> (1, T + n)``: for
    each new token, the model on the last ``block_size`` tokens, your ``choose`` on the last position's logits,
    the token appended; it must equal ``model.generate(..., use_cache=False)`` token for token."""
    return run_check(GENERATE, fn, **options)


# --- attend_one(layer, x_new, cache) ---------------------------------------------------------------------------------


def _attend(layer: CausalSelfAttention, x_new: torch.Tensor, cache: dict, way: str = "right") -> torch.Tensor:
    B, _, C = x_new.shape
    nh = layer.num_heads
    hs = C // nh
    q, k, v = layer.c_attn(x_new).split(C, dim=2)
    q, k, v = (t.view(B, 1, nh, hs).transpose(1, 2) for t in (q, k, v))
    if way == "after":
        keys, values = cache["k"], cache["v"]
    elif way == "not_cached":
        keys, values = k, v
    else:
        keys, values = torch.cat((cache["k"], k), dim=2), torch.cat((cache["v"], v), dim=2)
    scores = q @ keys.transpose(-2, -1) / (1.0 if way == "no_scale" else math.sqrt(hs))
    if way == "causal_mask":
        mask = torch.ones(1, keys.size(2), dtype=torch.bool).tril()
        scores = scores.masked_fill(~mask, _INF)
    y = F.softmax(scores, dim=-1) @ values
    if way != "not_cached":
        cache["k"], cache["v"] = torch.cat((cache["k"], k), dim=2), torch.cat((cache["v"], v), dim=2)
    return layer.c_proj(y.transpose(1, 2).reshape(B, 1, C))


def _run_attend(fn: Any, case: Case) -> dict[str, Any]:
    x, layer = case.args
    nh, hs = layer.num_heads, x.size(-1) // layer.num_heads
    cache = {"k": torch.zeros(1, nh, 0, hs), "v": torch.zeros(1, nh, 0, hs)}
    with torch.no_grad():
        outs = [fn(layer, x[:, t : t + 1].clone(), cache) for t in range(x.size(1))]
    return {"outputs": torch.cat(outs, dim=1), "cached keys": tuple(cache["k"].shape)}


def _attend_cases() -> list[Case]:
    def case(label: str, label_ja: str, T: int, C: int, nh: int, seed: int) -> Case:
        torch.manual_seed(seed)
        layer = CausalSelfAttention(ModelConfig(vocab_size=8, block_size=16, embedding_size=C, num_heads=nh, depth=1))
        with torch.no_grad():
            for p in layer.parameters():
                p.normal_(0.0, 0.5)
        return Case(label, label_ja, (torch.randn(1, T, C), layer.eval()))

    return [
        case("T=5, 2 heads", "T=5、ヘッド 2 個", 5, 8, 2, 1),
        case("one token", "トークン 1 個", 1, 8, 2, 2),
        case("T=7, 4 heads", "T=7、ヘッド 4 個", 7, 8, 4, 3),
    ]


def _attend_variant(way: str) -> Any:
    return lambda layer, x_new, cache: _attend(layer, x_new, cache, way)


ATTEND_ONE = Piece(
    title="attend_one",
    reference=_attend,
    cases=_attend_cases,
    run=_run_attend,
    mistakes=(
        Mistake(
            "not_cached",
            "the cache never grows, so each token attends only to itself: torch.cat the new k and v onto "
            "cache['k'] and cache['v'] along the positions (dim=2) and store them back",
            "キャッシュが増えないため、各トークンが自分自身にしかアテンションしていません。新しい k と v を位置の"
            "向き（dim=2）に cache['k'] と cache['v'] へ torch.cat して、書き戻してください",
            variant=_attend_variant("not_cached"),
        ),
        Mistake(
            "appended_after",
            "off by one: the new token attends to the cache before its own key and value are in it; append k and v "
            "first, then attend (a token sees itself)",
            "1 つずれています。新しいトークンが、自分の k と v を入れる前のキャッシュにアテンションしています。先に "
            "k と v を追加してからアテンションしてください（トークンは自分自身も見ます）",
            variant=_attend_variant("after"),
        ),
        Mistake(
            "causal_mask",
            "a causal mask on the one new query hides every key but the first; the newest token may see every "
            "cached position: no mask",
            "1 つの新しいクエリに因果マスクをかけたため、最初以外のキーがすべて隠れています。最新のトークンは"
            "キャッシュのすべての位置を見てよいので、マスクは不要です",
            variant=_attend_variant("causal_mask"),
        ),
        Mistake(
            "no_scale",
            "the scores are not divided by √hs: q @ kᵀ / math.sqrt(hs), as in the full attention",
            "スコアを √hs で割っていません。全体のアテンションと同じく q @ kᵀ / math.sqrt(hs) です",
            variant=_attend_variant("no_scale"),
        ),
    ),
)


def attend_one(fn: Any, **options: bool) -> Result:
    """Check ``attend_one(layer, x_new, cache) -> (1, 1, C)``: the newest position's attention output through
    ``layer`` (a CausalSelfAttention), with ``cache['k']``, ``cache['v']`` (1, nh, P, hs) grown by its key and
    value; fed one token at a time it must equal ``layer(x)`` on the whole sequence."""
    return run_check(ATTEND_ONE, fn, **options)
