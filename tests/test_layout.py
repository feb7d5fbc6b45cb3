"""Small modules: no module of the package is over 500 lines (the project's rule, so that each file can be read
in one sitting). The failure lists every module over the limit with its length, longest first."""

from pathlib import Path

import groundtune

ROOT = Path(groundtune.__file__).resolve().parent
MAX_LINES = 500


def line_counts() -> dict[str, int]:
    return {str(path.relative_to(ROOT.parent)): len(path.read_text(encoding="utf-8").splitlines())
            for path in sorted(ROOT.rglob("*.py"))}


def test_the_count_sees_every_module():
    counts = line_counts()
    assert len(counts) > 50
    assert counts["groundtune/cli/__init__.py"] > 10  # a package's __init__ counts too
    assert all(n > 0 for name, n in counts.items() if not name.endswith("__init__.py"))


def test_no_module_is_over_500_lines():
    over = sorted(((n, name) for name, n in line_counts().items() if n > MAX_LINES), reverse=True)
    assert not over, (f"{len(over)} module(s) over {MAX_LINES} lines; split them by what they do:\n  "
                      + "\n  ".join(f"{name}: {n} lines" for n, name in over))


def test_every_error_a_user_can_act_on_is_a_groundtune_error():
    """One error family: the CLI's handler prints a GroundtuneError as one line and exits 2, with no special cases,
    so a bare ValueError raised anywhere in the package would reach the user as a traceback. (TypeError and
    KeyError stay for what only a caller's code can get wrong: a lookup the caller catches, a misuse of an API.)"""
    import ast

    bare = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and \
                    getattr(node.exc.func, "id", None) == "ValueError":
                bare.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: {node.exc.func.id}")
    assert not bare, "raise a groundtune.errors class (DataError, ConfigError, ...) instead:\n  " + "\n  ".join(bare)
