"""What every check shares: run the learner's piece on cases, compare with the reference, name the likely mistake.

A :class:`Piece` is one thing a learner writes (a function or a class). Its check runs the learner's piece and
the reference on the same :class:`Case` list through the piece's ``run`` (which returns an *observation*: the
output, and where it matters what the call did besides, such as changing its input). Equal observations on
every case: a pass. Otherwise the piece's catalogue of :class:`Mistake` is tried in order, each by a
distinguishing probe:

- ``variant``: a wrong implementation; the learner's observations equal the variant's on every case;
- ``probe``: a property of the learner's observations (the input was changed, the model was left in eval mode);
- ``raises``: the learner's piece raised an error whose ``"Type: message"`` matches (on the cases named);
- a :class:`Misfit` raised by ``run`` when the learner's object is built wrong (a class without its layers).

No mistake fits: a generic line names the first case that differs and how. One line is printed either way
(``✓ name: right on 6 cases`` or ``✗ name: <hint>``) in the learner's language (``LLMLAB_LANG=ja``), and the
check returns a :class:`Result`.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmlab.check.store import record as record_progress
from llmlab.i18n import language

__all__ = [
    "Case",
    "Mistake",
    "Misfit",
    "Piece",
    "REGISTRY",
    "Result",
    "CheckFailed",
    "run_check",
    "difference",
    "call",
    "practice_edition",
    "in_practice_edition",
]

_TEXT: dict[str, dict[str, str]] = {
    "pass": {"en": "✓ {name}: right on {n} cases", "ja": "✓ {name}: {n} 個のケースすべてで正解です"},
    "stub": {
        "en": "✎ write `{name}` above, then run this cell",
        "ja": "✎ 上のセルで `{name}` を書いてから、このセルを実行してください",
    },
    "stub_helper": {
        "en": "✎ `{name}` calls `{helper}`, which is not written yet: write `{helper}` first, then run this cell",
        "ja": "✎ `{name}` が呼んでいる `{helper}` がまだ書かれていません。先に `{helper}` を書いてから、このセルを"
        "実行してください",
    },
    "mistake": {"en": "✗ {name}: {hint}", "ja": "✗ {name}: {hint}"},
    "fallback": {
        "en": "→ from here on this notebook uses llmlab's `{name}`, so the rest runs; fix yours above and rerun "
        "both cells",
        "ja": "→ ここから先は llmlab の `{name}` を使うので、残りも動きます。上のあなたの実装を直したら、"
        "2 つのセルを実行し直してください",
    },
    "raised": {
        "en": "✗ {name} raised {error} (case {case})",
        "ja": "✗ {name} でエラーが出ました: {error}（ケース{case}）",
    },
    "differs": {
        "en": "✗ {name}: differs from the reference on the case {case}: {what}",
        "ja": "✗ {name}: ケース{case}で正解と違います: {what}",
    },
    "diff.none": {
        "en": "it returns None (is a `return` missing?)",
        "ja": "None が返っています（`return` を忘れていませんか？）",
    },
    "diff.type": {"en": "{where}a {got} instead of a {want}", "ja": "{where}{want} ではなく {got} です"},
    "diff.shape": {"en": "{where}shape {got} instead of {want}", "ja": "{where}形が {got} です（正しくは {want}）"},
    "diff.dtype": {"en": "{where}dtype {got} instead of {want}", "ja": "{where}dtype が {got} です（正しくは {want}）"},
    "diff.length": {
        "en": "{where}{got} items instead of {want}",
        "ja": "{where}要素数が {got} です（正しくは {want}）",
    },
    "diff.keys": {"en": "{where}keys {got} instead of {want}", "ja": "{where}キーが {got} です（正しくは {want}）"},
    "diff.value": {"en": "{where}{got} instead of {want}", "ja": "{where}{got} です（正しくは {want}）"},
    "diff.at": {"en": "at {at}: ", "ja": "{at}: "},
    "diff.values": {
        "en": "{where}values differ by up to {gap:.3g}, first at index {at}: {got} instead of {want}",
        "ja": "{where}値が最大 {gap:.3g} ずれています。最初のずれは添字 {at}: {got}（正しくは {want}）",
    },
}


def _say(key: str, lang: str, **fields: object) -> str:
    return _TEXT[key][lang].format(**fields)


@dataclass(frozen=True)
class Case:
    """One call of a piece: a label for the lines (English and Japanese) and what ``run`` needs."""

    label: str
    label_ja: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    def name(self, lang: str) -> str:
        return f"「{self.label_ja}」" if lang == "ja" else f"“{self.label}”"


@dataclass(frozen=True)
class Mistake:
    """A mistake learners make, its hint (English, Japanese) and how to recognise it (see the module docstring)."""

    key: str
    en: str
    ja: str
    variant: Callable[..., Any] | Sequence[Callable[..., Any]] | None = None
    probe: Callable[[list[Any]], bool] | None = None
    raises: str | None = None
    on_cases: tuple[str, ...] = ()  # labels (English) of the cases where `raises` applies; empty: any case

    def hint(self, lang: str) -> str:
        return self.ja if lang == "ja" else self.en

    @property
    def variants(self) -> tuple[Callable[..., Any], ...]:
        if self.variant is None:
            return ()
        return tuple(self.variant) if isinstance(self.variant, (list, tuple)) else (self.variant,)


class Misfit(Exception):
    """Raised by a piece's ``run`` when the learner's object is built wrong; ``key`` names the Mistake."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class CheckFailed(AssertionError):
    """Raised by a check with ``strict=True`` when the piece does not pass (the teaching notebooks use it)."""


def call(fn: Callable[..., Any], case: Case) -> Any:
    """The default ``run``: call ``fn`` on copies of the case's arguments (so no call sees another's changes)."""
    return fn(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))


REGISTRY: dict[str, Piece] = {}  # piece name -> Piece, filled as the notebooks' check modules load


@dataclass
class Piece:
    """One piece a learner writes: its reference, its cases, how to observe a call, and its mistakes."""

    title: str  # what the learner defines: "attention_weights", "Head"
    reference: Callable[..., Any]
    cases: Callable[[], list[Case]]
    mistakes: tuple[Mistake, ...]
    run: Callable[[Callable[..., Any], Case], Any] = call
    atol: float = 1e-5
    rtol: float = 1e-4
    check_dtype: bool = True
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        REGISTRY[self.title] = self

    def case_list(self) -> list[Case]:
        if "cases" not in self._cache:
            self._cache["cases"] = self.cases()
        return self._cache["cases"]

    def observe(self, fn: Callable[..., Any], key: str | None = None) -> list[Any] | None:
        """Observations of a trusted implementation (the reference or a variant) on every case, cached by ``key``;
        None when it raises on some case (a variant that cannot run there cannot be the learner's mistake)."""
        if key is not None and key in self._cache:
            return self._cache[key]
        try:
            seen = [self.run(fn, case) for case in self.case_list()]
        except Exception:
            if key == "reference":
                raise
            seen = None
        if key is not None:
            self._cache[key] = seen
        return seen

    def differs(self, got: Any, want: Any) -> tuple[str, dict[str, Any]] | None:
        return difference(got, want, self.atol, self.rtol, self.check_dtype)


@dataclass
class Result:
    """What a check found: ``passed``, the printed ``line``, the ``hint`` (empty on a pass) and the ``mistake`` key.

    ``status`` is "pass", "mistake" (a catalogued mistake), "differs" (no catalogued mistake fits), "error" (the
    piece raised) or "stub" (not written yet). ``bool(result)`` is ``passed``.
    """

    piece: str
    passed: bool
    status: str
    line: str
    hint: str = ""
    mistake: str | None = None
    cases: int = 0
    shown: bool = False
    yours: Any = field(default=None, repr=False)
    reference: Any = field(default=None, repr=False)

    def __bool__(self) -> bool:
        return self.passed

    def or_llmlab(self) -> Any:
        """Yours when it passed, else llmlab's reference (saying so): one piece not written yet, or wrong, never
        blocks the cells after it. ``attention_weights = check.attention_weights(attention_weights).or_llmlab()``"""
        if self.passed:
            return self.yours
        print(_say("fallback", language(), name=self.piece))
        return self.reference

    def _ipython_display_(self) -> None:
        # The check printed its line already; a check on a cell's last line should not print it twice.
        if not self.shown:
            print(self.line)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        return _fmt(value.item())
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def difference(
    got: Any, want: Any, atol: float = 1e-5, rtol: float = 1e-4, check_dtype: bool = True, where: str = ""
) -> tuple[str, dict[str, Any]] | None:
    """None when ``got`` matches ``want`` (tensors within atol/rtol, NaN and inf where the reference has them),
    else (kind, fields) describing the first difference; ``where`` is the path inside nested results."""
    if got is None and want is not None:
        return "none", {"where": where}
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return "type", {"where": where, "got": type(got).__name__, "want": "torch.Tensor"}
        if tuple(got.shape) != tuple(want.shape):
            return "shape", {"where": where, "got": tuple(got.shape), "want": tuple(want.shape)}
        if check_dtype and got.dtype != want.dtype:
            return "dtype", {"where": where, "got": _fmt(got.dtype), "want": _fmt(want.dtype)}
        g, w = got.detach().cpu(), want.detach().cpu()
        if g.is_floating_point() or w.is_floating_point() or g.is_complex() or w.is_complex():
            g, w = g.double(), w.double()
            same = torch.isclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
        else:
            same = g == w
        if bool(same.all()):
            return None
        at = tuple(int(i) for i in (~same).nonzero()[0]) if same.dim() else ()
        gap = (g - w).abs().nan_to_num(nan=math.inf).max().item() if g.is_floating_point() else math.nan
        return "values", {"where": where, "gap": gap, "at": list(at), "got": _fmt(g[at]), "want": _fmt(w[at])}
    if isinstance(want, bool) or isinstance(want, str):
        return (
            None
            if got == want and type(got) is type(want)
            else ("value", {"where": where, "got": _fmt(got), "want": _fmt(want)})
        )
    if isinstance(want, (int, float)):
        if isinstance(got, torch.Tensor) and got.dim() == 0:
            got = got.item()
        # A float may come as an int (0 for 0.0); an id, a count or a token must be an int.
        if isinstance(got, bool) or not isinstance(got, int if isinstance(want, int) else (int, float)):
            return "type", {"where": where, "got": type(got).__name__, "want": type(want).__name__}
        if isinstance(want, int):
            return None if got == want else ("value", {"where": where, "got": got, "want": want})
        if math.isnan(want) and math.isnan(got):
            return None
        if math.isclose(got, want, rel_tol=rtol, abs_tol=atol) or got == want:
            return None
        return "value", {"where": where, "got": _fmt(float(got)), "want": _fmt(float(want))}
    if isinstance(want, (list, tuple)):
        if not isinstance(got, (list, tuple)):
            return "type", {"where": where, "got": type(got).__name__, "want": type(want).__name__}
        if len(got) != len(want):
            return "length", {"where": where, "got": len(got), "want": len(want)}
        for i, (g, w) in enumerate(zip(got, want)):
            found = difference(g, w, atol, rtol, check_dtype, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return "type", {"where": where, "got": type(got).__name__, "want": "dict"}
        if set(got) != set(want):
            return "keys", {"where": where, "got": sorted(map(repr, got)), "want": sorted(map(repr, want))}
        for k in want:
            found = difference(got[k], want[k], atol, rtol, check_dtype, f"{where}[{k!r}]")
            if found:
                return found
        return None
    return None if got == want else ("value", {"where": where, "got": _fmt(got), "want": _fmt(want)})


def _describe(found: tuple[str, dict[str, Any]], lang: str) -> str:
    kind, fields = found
    fields = dict(fields)
    where = fields.pop("where", "")
    fields["where"] = _say("diff.at", lang, at=where) if where else ""
    return _say(f"diff.{kind}", lang, **fields)


def _error_text(error: BaseException) -> str:
    message = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {message[0]}" if message else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


_NOT_A_STUB = ('missing the required "forward"', "Could not run", "not implemented for")
_LIBRARIES = tuple(str(Path(m.__file__).parent) for m in (torch, np))


def _stub(error: BaseException, fn: Any) -> str | None:
    """For a NotImplementedError raised by a stub: "" when the stub is ``fn`` itself (or a method of the class
    ``fn``), else the name of the learner's other function that is still a stub (choose calling a keep_top_k not
    written yet). None when the error is no stub: nn.Module without a forward, an op torch or NumPy lacks."""
    if not isinstance(error, NotImplementedError) or any(text in str(error) for text in _NOT_A_STUB):
        return None
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return ""
    code = tb.tb_frame.f_code
    if code.co_filename.startswith(_LIBRARIES):
        return None
    own = {getattr(fn, "__name__", None), "__init__", "forward"}
    return "" if code.co_name in own or code.co_name.startswith("<") else code.co_name


def _matches_variant(piece: Piece, seen: list[Any], mistake: Mistake) -> bool:
    for i, variant in enumerate(mistake.variants):
        theirs = piece.observe(variant, key=f"variant:{mistake.key}:{i}")
        if theirs is not None and all(piece.differs(o, v) is None for o, v in zip(seen, theirs)):
            return True
    return False


def _diagnose(piece: Piece, fn: Callable[..., Any], lang: str) -> tuple[str, str, str | None]:
    """(status, line, mistake key) for the learner's ``fn``; the line's text after "✗ name: " is the hint."""
    name = piece.title
    cases = piece.case_list()
    want = piece.observe(piece.reference, key="reference")
    assert want is not None
    seen: list[Any] = []
    for case in cases:
        try:
            seen.append(piece.run(fn, case))
        except Misfit as misfit:
            mistake = next(m for m in piece.mistakes if m.key == misfit.key)
            return "mistake", _say("mistake", lang, name=name, hint=mistake.hint(lang)), mistake.key
        except Exception as error:  # the learner's code: anything may come out of it
            helper = _stub(error, fn)
            if helper is not None:
                if helper:
                    return "stub", _say("stub_helper", lang, name=name, helper=helper), None
                return "stub", _say("stub", lang, name=name), None
            text = _error_text(error)
            for mistake in piece.mistakes:
                if mistake.raises and re.search(mistake.raises, text):
                    if not mistake.on_cases or case.label in mistake.on_cases:
                        return "mistake", _say("mistake", lang, name=name, hint=mistake.hint(lang)), mistake.key
            return "error", _say("raised", lang, name=name, error=text, case=case.name(lang)), None
    found = [piece.differs(o, w) for o, w in zip(seen, want)]
    if not any(found):
        return "pass", _say("pass", lang, name=name, n=len(cases)), None
    for mistake in piece.mistakes:
        if (mistake.probe is not None and mistake.probe(seen)) or _matches_variant(piece, seen, mistake):
            return "mistake", _say("mistake", lang, name=name, hint=mistake.hint(lang)), mistake.key
    i = next(i for i, f in enumerate(found) if f)
    what = _describe(found[i], lang)  # type: ignore[arg-type]
    return "differs", _say("differs", lang, name=name, case=cases[i].name(lang), what=what), None


_EDITION = {"practice": False}


def practice_edition(on: bool = True) -> None:
    """Declare the notebook a practice notebook (its first code cell calls this): checks then grade without
    raising, record passes in the progress file, and ``or_llmlab`` falls back. Without it (the teaching edition)
    a check is an assertion: it raises on a failure and records nothing (the solution was not the learner's)."""
    _EDITION["practice"] = on


def in_practice_edition() -> bool:
    return _EDITION["practice"]


def run_check(
    piece: Piece, fn: Any, *, show: bool = True, record: bool | None = None, strict: bool | None = None
) -> Result:
    """Check the learner's ``fn`` against ``piece``; print the line (``show``), note it in the progress file
    (``record``; a piece not written yet is not noted), and with ``strict`` raise :class:`CheckFailed` instead of
    returning a failed result. ``record`` and ``strict`` default to the edition: a practice notebook records and
    does not raise; a teaching notebook checks its own solution strictly and records nothing."""
    practice = in_practice_edition()
    record = practice if record is None else record
    strict = (not practice) if strict is None else strict
    lang = language()
    if fn is None or fn is Ellipsis:
        status, line, key = "stub", _say("stub", lang, name=piece.title), None
    else:
        # Fresh cases every time: a learner's piece may have changed a case's model or tensors in place.
        piece._cache.clear()
        # The cases seed torch to build models; the notebook's own random numbers must not depend on a check.
        with torch.random.fork_rng(devices=[]):
            status, line, key = _diagnose(piece, fn, lang)
    if status == "pass":
        hint = ""
    elif status == "mistake":
        hint = next(m for m in piece.mistakes if m.key == key).hint(lang)
    else:
        hint = line[2:]  # the line without its mark
    result = Result(
        piece.title,
        status == "pass",
        status,
        line,
        hint,
        key,
        len(piece.case_list()),
        yours=fn,
        reference=piece.reference,
    )
    if record and status != "stub":
        record_progress(piece.title, result.passed)
    if strict and not result.passed:
        raise CheckFailed(line)  # the error shows the line: printing it as well would say it twice
    if show:
        print(line)
        result.shown = True
    return result
