"""The production packages (those in the wheel) never import the stand-ins, which are not."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PRODUCTION = ("pipeline", "translators", "filters")
IMPORTERS = frozenset({"import_module", "__import__"})


def standins_imports(source: str) -> list[str]:
    """The modules of `standins` that `source` imports, statically or by name, anywhere."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args:
            called = node.func.attr if isinstance(node.func, ast.Attribute) else None
            called = node.func.id if isinstance(node.func, ast.Name) else called
            first = node.args[0]
            is_name = isinstance(first, ast.Constant) and isinstance(first.value, str)
            names = [first.value] if called in IMPORTERS and is_name else []
        else:
            continue
        found += [n for n in names if n == "standins" or n.startswith("standins.")]
    return found


@pytest.mark.parametrize("package", PRODUCTION)
def test_a_production_package_never_imports_the_standins(package):
    files = sorted((REPO / package).rglob("*.py"))
    assert files
    imports = {
        str(path.relative_to(REPO)): found
        for path in files
        if (found := standins_imports(path.read_text(encoding="utf-8")))
    }
    assert imports == {}


def test_the_check_finds_every_way_of_importing():
    source = """
import standins
import os, standins.demo as demo
from standins.images import ImageHost

def later():
    from standins import wiki
    importlib.import_module("standins.upload")
    __import__("standins")

from . import standins_like
import standinsx
importlib.import_module("pipeline.build")
"""
    assert sorted(standins_imports(source)) == [
        "standins",
        "standins",
        "standins",
        "standins.demo",
        "standins.images",
        "standins.upload",
    ]
