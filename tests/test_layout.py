"""The code base's own rules, checked on the source: function length, the package layout, the
config as the only source of defaults, one definition per concept, and self-contained docstrings."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = ("koemorph", "cli", "pipeline")
MAX_FUNCTION_LINES = 60


def sources(*dirs: str) -> list[Path]:
    return sorted(p for d in dirs for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts)


def test_no_function_is_longer_than_60_lines():
    long = []
    for path in sources(*CODE):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "\n".join(long)


def test_the_package_is_split_by_stage():
    top = sorted(p.name for p in (ROOT / "koemorph").glob("*.py"))
    assert len(top) <= 6, top
    packages = {p.name for p in (ROOT / "koemorph").iterdir() if (p / "__init__.py").is_file()}
    assert {"io", "data", "features", "model", "training", "inference", "evaluation", "demo"} <= packages


def test_the_config_is_the_only_source_of_defaults():
    """No ``getattr(cfg, "key", fallback)``: a fallback is a second default that can disagree."""
    found = []
    for path in sources(*CODE):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "getattr"
                and len(node.args) == 3
            ):
                target = ast.unparse(node.args[0])
                if re.search(r"cfg|config|params", target):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
    assert not found, "\n".join(found)


def test_docstrings_and_comments_stand_on_their_own():
    """No citations of documents outside the repository (design seeds, bug lists, notes) and no
    experiment logs in code: those live in docs/decisions.md."""
    pattern = re.compile(r"\bseeds? \d{3}|§|\bbugs? B\d+|\(B\d+\)|ecosystem notes|\bdemo10\b")
    found = []
    for path in sources(*CODE):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                found.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not found, "\n".join(found)
    assert (ROOT / "docs" / "decisions.md").is_file()


# Module-level names that two modules define on purpose, each for its own thing.
SAME_NAME_OTHER_THING = {"HEADER", "GROUPS", "CHUNK", "STYLE"}


def test_each_constant_is_defined_once():
    """A constant (suffix lists, split names, formats ...) is defined in one module and imported
    everywhere else, so copies cannot drift apart."""
    where: dict[str, list[str]] = {}
    for path in sources("koemorph"):
        for node in ast.parse(path.read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else []
            targets += [node.target] if isinstance(node, ast.AnnAssign) else []
            for t in targets:
                if isinstance(t, ast.Name) and t.id.isupper() and t.id not in SAME_NAME_OTHER_THING:
                    where.setdefault(t.id, []).append(str(path.relative_to(ROOT)))
    twice = {name: paths for name, paths in where.items() if len(paths) > 1}
    assert not twice, twice


def test_hashing_and_walking_live_in_one_place():
    """Short content hashes come from koemorph.io.digest and folder walks from koemorph.io.walk."""
    hashes, walks = [], []
    for path in sources(*CODE):
        rel = str(path.relative_to(ROOT))
        text = path.read_text()
        if "hexdigest()[:16]" in text and rel != "koemorph/io/digest.py":
            hashes.append(rel)
        if re.search(r"rglob\(\"\*\"\)", text) and rel != "koemorph/io/walk.py":
            walks.append(rel)
    assert not hashes and not walks, (hashes, walks)
