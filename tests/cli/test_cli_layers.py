"""The CLI's modules import downward only, and the exit codes live beside the watcher."""

from __future__ import annotations

import ast
from pathlib import Path

import copyai_poll

#: Top to bottom: each may import only those below it.
LAYERS = ["_cli", "_cli_demo", "_cli_options", "_cli_watch", "_cli_display"]
PACKAGE = Path(copyai_poll.__file__).parent


def cli_imports(module: str) -> set[str]:
    """The `_cli*` modules ``module`` imports, at run time or for type checking."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level == 1:
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "_cli" or name.startswith("_cli_")}


def test_every_cli_module_is_in_a_layer() -> None:
    """No `_cli*` module escapes the layering check."""
    modules = [PACKAGE / "_cli.py", *PACKAGE.glob("_cli_*.py")]
    assert sorted(LAYERS) == sorted(p.stem for p in modules)


def test_cli_modules_import_downward_only() -> None:
    """Each CLI module imports only the CLI modules below it: no cycle, even for types."""
    upward = {
        module: sorted(cli_imports(module) - set(LAYERS[index + 1 :]))
        for index, module in enumerate(LAYERS)
    }
    assert {module: [] for module in LAYERS} == upward


def test_exit_codes_live_beside_the_watcher() -> None:
    """The exit codes are defined in `_cli_watch`, not in the display."""
    from copyai_poll import _cli_display, _cli_watch

    assert (0, 1, 2, 3, 4, 130) == (
        _cli_watch.EXIT_OK,
        _cli_watch.EXIT_FAILED,
        _cli_watch.EXIT_USAGE,
        _cli_watch.EXIT_TIMEOUT,
        _cli_watch.EXIT_API,
        _cli_watch.EXIT_INTERRUPTED,
    )
    assert not [name for name in vars(_cli_display) if name.startswith("EXIT_")]
