"""The library never imports the testbed, Mininet or the command line above it."""
import ast
from pathlib import Path

LIBRARY = Path(__file__).resolve().parent.parent / "controller"
ABOVE = ("testbed", "mininet", "bench", "tests")


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_library_imports_nothing_above_it():
    wrong = {f"{p.relative_to(LIBRARY.parent)}: {m}" for p in LIBRARY.rglob("*.py") for m in imported(p)
             if m.split(".")[0] in ABOVE}
    assert not wrong, sorted(wrong)
    assert len(list(LIBRARY.rglob("*.py"))) > 20, "the scan must see the library"
