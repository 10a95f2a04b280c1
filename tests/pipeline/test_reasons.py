"""The one list of reasons: every reason the code can emit is declared, every declaration is
used, and the README's table is the generated one."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from pipeline import reasons
from pipeline.sources.registry import KINDS

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "filters", "translators")
# Calls that take a drop reason, and the position of the reason among their arguments.
REASON_ARGUMENT = {
    "Drop": 1,  # Drop(source_name, reason, ...)
    "drop": 1,  # Reasons.drop(pair, reason, ...)
    "_drop": 1,  # a reader's helper: _drop(page, reason, detail)
    "Reject": 0,
    "Rejected": 0,  # the image stage's exception: Rejected(reason, detail)
}
# Functions whose returned strings are drop reasons.
VERDICTS = ("caption_problem", "quality_problem", "language_verdict", "choose_caption")


def _text(node: ast.AST) -> str | None:
    """A literal string, or an f-string with each `{...}` read as a word (`http_404`)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "x0" for v in node.values)
    return None


def _strings(node: ast.AST) -> list[str]:
    """The literal strings an expression may evaluate to (both arms of `a if c else b`)."""
    if isinstance(node, ast.IfExp):
        return _strings(node.body) + _strings(node.orelse)
    if isinstance(node, ast.Tuple):
        return [s for elt in node.elts[-1:] for s in _strings(elt)]
    text = _text(node)
    return [text] if text is not None else []


def emitted_reasons() -> dict[str, str]:
    """Every reason literal in the production code: reason → where."""
    found: dict[str, str] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
                if isinstance(node, ast.Call):
                    name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                    i = REASON_ARGUMENT.get(name)
                    if i is not None and len(node.args) > i:
                        for s in _strings(node.args[i]):
                            found.setdefault(s, where)
                elif isinstance(node, ast.FunctionDef) and node.name in VERDICTS:
                    for ret in ast.walk(node):
                        if isinstance(ret, ast.Return) and ret.value is not None:
                            value = ret.value
                            if isinstance(value, ast.Tuple):  # (text, field, reason)
                                value = value.elts[-1]
                            for s in _strings(value):
                                found.setdefault(s, where)
    found.pop("", None)
    return found


def test_the_scan_finds_reasons_of_every_kind_of_call():
    found = emitted_reasons()
    # A reader's Drop, a filter's verdict, a translation check, an image rejection, a family.
    for reason in ("other_language", "too_short", "length_ratio", "not_an_image", "http_x0"):
        assert reason in found, reason


def test_every_reason_the_code_can_emit_is_declared():
    found = emitted_reasons()
    missing = {r: found[r] for r in reasons.undeclared(found)}
    assert not missing, f"declare these in their stage's REASONS: {missing}"


def literals_outside_declarations() -> set[str]:
    """Every string (f-strings read as by `_text`) in the production code, but the keys of the
    `Reasons(...)` declarations and of the dicts they are built from."""
    found = set()
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            skipped = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.Dict) and any(
                    isinstance(v, ast.Constant) and isinstance(v.value, str) and " " in v.value
                    for v in node.values
                ):  # a table of meanings: its keys declare, they do not emit
                    skipped.update(id(k) for k in node.keys if k is not None)
            for node in ast.walk(tree):
                if id(node) in skipped:
                    continue
                text = _text(node) if isinstance(node, (ast.Constant, ast.JoinedStr)) else None
                if text:
                    found.add(text)
    return found


def test_every_declared_reason_is_emitted_somewhere():
    found = literals_outside_declarations()
    unused = []
    for d in reasons.declarations():
        for name in d:
            if name == d.catch_all:
                continue  # emitted by the base (Reasons.failed) or by the reader's own catch-all
            if "<" in name:
                if not any(d.declared(r) == name for r in found):
                    unused.append(f"{d.stage}: {name}")
            elif name not in found:
                unused.append(f"{d.stage}: {name}")
    assert not unused, f"declared but never emitted: {unused}"


def test_the_demos_reasons_are_declared_with_their_meaning():
    recorded = json.loads((Path(__file__).parent / "demo_rows.json").read_text("utf-8"))
    seen = {r for s in recorded["stats"]["sources"].values() for r in s["dropped"]}
    assert seen and not reasons.undeclared(seen)
    assert reasons.meaning("missing_image_file", "flickr8k")[0] == "flickr8k"
    assert reasons.meaning("duplicate")[0] == "dedupe"
    assert reasons.meaning("http_404")[0] == "images"
    assert reasons.meaning("no_such_reason") is None


def test_the_drifted_names_are_one():
    declared = {name for d in reasons.declarations() for name in d}
    assert "missing_image_file" in declared
    assert not declared & {"no_image_file", "file_missing", "missing_file"}


def test_every_source_kind_declares_its_catch_all():
    for kind in KINDS.values():
        assert kind.reasons.stage == kind.kind
        assert kind.reasons.catch_all in kind.reasons


def test_the_readmes_table_is_the_generated_one():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert reasons.with_table(readme) == readme, (
        "the README's table of drop reasons is stale: python -m pipeline.reasons --write README.md"
    )
    table = reasons.markdown_table()
    assert "| dedupe | `duplicate` |" in table
    with pytest.raises(ValueError, match="no"):
        reasons.with_table("no table here")
