"""Wording rules of the package's messages and docstrings.

* The library (everything outside ``gsmflow_nflows/cli/``) words its messages with the API's
  names (``calibrate=True``, ``protocol 'final'``, ``data_root``), never with command-line
  flags (``--calibrate``): a Python caller has no flags. A whole shell command in backticks
  (```gsmflow download apy --root DIR```) may be suggested.
* No docstring or comment cites a document that is not in the repository.
"""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gsmflow_nflows"
LIBRARY = sorted(p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts)
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")
COMMAND = re.compile(r"`gsmflow [^`]*`")


def _docstrings(tree: ast.AST) -> set[int]:
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef))]
    ids = set()
    for node in nodes:
        body = getattr(node, "body", [])
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            ids.add(id(body[0].value))
    return ids


def _texts(tree: ast.AST):
    """Every string literal but docstrings; an f-string with ``{}`` for each placeholder."""
    docstrings = _docstrings(tree)
    inside_fstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            inside_fstrings.update(id(part) for part in node.values)
            yield (
                node.lineno,
                "".join(
                    part.value if isinstance(part, ast.Constant) else "{}" for part in node.values
                ),
            )
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings | inside_fstrings
        ):
            yield node.lineno, node.value


def _flags(text: str) -> list[str]:
    return FLAG.findall(COMMAND.sub("", text))


def test_flag_finder():
    assert _flags("drop --calibrate or use --protocol final") == ["--calibrate", "--protocol"]
    assert _flags("run `gsmflow download apy --root /data` first") == []
    assert _flags("calibrate=True needs protocol 'final'; a-b -- c") == []


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_library_messages_name_no_cli_flags(path):
    tree = ast.parse(path.read_text())
    found = [(line, text) for line, text in _texts(tree) if _flags(text)]
    assert found == [], f"{path.name}: word these with the API's names: {found}"


CITATIONS = re.compile(r"\bspec\b|spec's|gsmflow-spec|\.\./shared|architecture\.md|style\.md")


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_no_citation_of_documents_outside_the_repository(path):
    hits = [
        (number, line.strip())
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if CITATIONS.search(line)
    ]
    assert hits == [], f"{path.name}: cite the paper or state the fact: {hits}"
