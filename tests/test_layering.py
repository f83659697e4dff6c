"""The package's layering: each module imports only modules on lower floors (so there are no cycles).

The floors are the reading order of the package (docs/architecture.md shows them): a learner can read
floor 1 without knowing floor 2, and a change to a floor can only break floors above it. Every import
counts, including the ones inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "llmlab"

FLOORS = {
    "validate": 0,
    "files": 0,
    "i18n": 0,
    "signals": 0,
    "config": 1,
    "corpus": 1,
    "plots": 1,
    "metrics": 1,
    "compare": 1,
    "bpe": 1,
    "gpt2_files": 1,
    "tokenizers": 2,
    "sampling": 2,
    "muon": 2,
    "head_loss": 2,
    "model_parts": 2,
    "schedule": 2,
    "model": 3,
    "checkpoint_state": 3,
    "sft": 3,
    "hf_tokenizer": 3,
    "analysis": 4,
    "hf": 4,
    "checkpoint": 4,
    "runtime": 4,
    "data.sources": 4,
    "data.tokenizing": 4,
    "data.batches": 4,
    "data.outputs": 4,
    "trainer_view": 5,
    "data.processing": 5,
    "data.prepare": 6,
    "data": 7,
    "failures": 6,
    "callbacks": 7,
    "train": 8,
    "export": 5,
    "finetune": 9,
    "doctor": 9,
    "widgets.base": 9,
    "widgets.live": 10,
    "widgets.explorer": 10,
    "widgets.sampling": 10,
    "widgets.race": 11,
    "widgets.experiment": 11,
    "widgets": 12,
    "cli_args": 11,
    "cli": 12,
    # practice mode (docs/architecture.md shows the package as one line, like widgets/)
    "check.store": 2,
    "check.core": 3,
    "check.tokenization": 4,
    "check.attention": 4,
    "check.gpt_block": 4,
    "check.training": 4,
    "check.optimisation": 4,
    "check.sampling": 4,
    "check.modern": 4,
    "check.finetuning": 4,
    "check": 5,
}
# The package facade and `python -m llmlab` sit above everything and import lazily.
OUTSIDE = {"__init__", "__main__"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _llmlab_imports(path: Path, modules: set[str]) -> set[str]:
    """Every llmlab module ``path`` imports, resolved to the names used in FLOORS."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "llmlab":
            # `from llmlab import plots` names a module; `from llmlab import GPT` goes through the facade.
            names = [f"llmlab.{a.name}" if a.name in modules else "llmlab" for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            if name == "llmlab":
                found.add("__init__")
            elif name.startswith("llmlab."):
                short = name.removeprefix("llmlab.")
                # `from llmlab.data import TokenBatches` names the package; `from llmlab import plots` a module.
                while short and short not in modules:
                    short = short.rpartition(".")[0]
                if short:
                    found.add(short)
    return found


def test_every_module_has_a_floor() -> None:
    missing = sorted(set(_modules()) - set(FLOORS) - OUTSIDE)
    assert not missing, f"give these modules a floor in FLOORS (and docs/architecture.md): {missing}"


@pytest.mark.parametrize("name", sorted(set(FLOORS)))
def test_imports_only_lower_floors(name: str) -> None:
    modules = _modules()
    if name not in modules:
        pytest.fail(f"FLOORS names llmlab.{name}, which does not exist: remove it or add the module")
    imported = _llmlab_imports(modules[name], set(modules)) - {name}
    # A module may import its own submodules' package parent only through the submodules themselves.
    bad = sorted(m for m in imported if m in OUTSIDE or FLOORS.get(m, 99) >= FLOORS[name])
    assert not bad, (
        f"llmlab.{name} (floor {FLOORS[name]}) imports {bad} "
        f"(floors {[FLOORS.get(m, 'facade') for m in bad]}): move the shared code down a floor."
    )


def test_the_checker_sees_lazy_and_package_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "def f():\n    from llmlab.data import TokenBatches\n    import llmlab.train\nfrom llmlab import plots, GPT\n",
        encoding="utf-8",
    )
    assert _llmlab_imports(src, set(_modules())) == {"data", "train", "plots", "__init__"}


def test_light_modules_stay_light() -> None:
    """Batching needs no `datasets`; the config needs no torch (both slow to import)."""
    code = (
        "import sys, llmlab.config; assert 'torch' not in sys.modules, 'config imports torch'; "
        "import llmlab.data.batches; assert 'datasets' not in sys.modules, 'batches imports datasets'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _trainer_names(node: ast.AST) -> bool:
    """``trainer`` or ``self.trainer`` / ``x.trainer``: an expression that names a Trainer."""
    return (isinstance(node, ast.Name) and node.id == "trainer") or (
        isinstance(node, ast.Attribute) and node.attr == "trainer"
    )


def test_only_train_touches_a_trainers_private_attributes_and_nobody_types_it_any() -> None:
    """The Trainer owns its state: elsewhere it is a TrainerView (llmlab.trainer_view), read through public names."""
    problems = []
    for name, path in _modules().items():
        if name == "train":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and _trainer_names(node.value):
                problems.append(f"llmlab/{path.relative_to(PACKAGE)}:{node.lineno} reads trainer.{node.attr}")
            if isinstance(node, ast.arg) and node.arg == "trainer" and node.annotation is not None:
                if ast.unparse(node.annotation) in ("Any", "typing.Any"):
                    problems.append(f"llmlab/{path.relative_to(PACKAGE)}:{node.lineno} types trainer as Any")
    assert not problems, "; ".join(problems)


def test_the_private_attribute_check_sees_a_violation(tmp_path: Path) -> None:
    tree = ast.parse("def f(trainer: Any):\n    trainer._emit('x')\n    self.trainer._batches\n")
    seen = [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and _trainer_names(n.value)]
    assert sorted(seen) == ["_batches", "_emit"]


def test_the_architecture_page_shows_these_floors() -> None:
    """FLOORS is the one definition; docs/architecture.md's table shows it (module -> floor) and may not drift."""
    readme = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = readme.split("floor  module             what it holds\n", 1)[1].split("```", 1)[0]
    shown = {}
    for line in table.splitlines():
        match = re.match(r"(\d+)\+?\s+([\w/]+)\.py\s", line)
        if match:
            shown[match.group(2).replace("/", ".").removesuffix(".__init__")] = int(match.group(1))
    assert shown, "docs/architecture.md's table was not found"
    for name, floor in shown.items():
        assert FLOORS.get(name) == floor, f"docs/architecture.md: {name} on floor {floor}; FLOORS: {FLOORS.get(name)}"
    top = {n for n in FLOORS if not n.startswith(("widgets", "check"))} - set(shown)
    assert not top, f"modules missing from docs/architecture.md: {sorted(top)}"
