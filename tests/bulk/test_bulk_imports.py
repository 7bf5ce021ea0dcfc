"""`poolhttp.bulk` and `poolhttp.cli` are built on the public API only (checked with `ast`).

Allowed: what `poolhttp/__init__.py` exports (its `__all__`), what `poolhttp.bulk` exports,
and a package's own modules (`bulk/_window.py` may import `bulk/_types.py`). Anything else
of poolhttp (`poolhttp._config`, `.._core.pool`, `poolhttp.bulk._types` from cli, a name
that is not in `__all__`) is private.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import poolhttp
import poolhttp.bulk
import poolhttp.cli

SRC = Path(poolhttp.__file__).resolve().parent
CHECKED = ("bulk", "cli")
#: The public modules and the names each exports.
EXPORTS = {"poolhttp": set(poolhttp.__all__), "poolhttp.bulk": set(poolhttp.bulk.__all__),
           "poolhttp.cli": set(poolhttp.cli.__all__)}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str, str]]:
    """(line, module, name) for every import, relative ones resolved; name "" for `import m`.
    Imports inside functions and `if TYPE_CHECKING:` blocks count too."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ""
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                yield node.lineno, target, alias.name


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    own = ".".join(module.split(".")[:2])  # poolhttp.bulk or poolhttp.cli
    found = []
    for line, target, name in imported(ast.parse(source), module, is_package):
        if target != "poolhttp" and not target.startswith("poolhttp."):
            continue  # the standard library, rich, ...
        if target == own or target.startswith(own + "."):
            continue  # the package's own modules
        if target not in EXPORTS:
            what = f"{name} from {target}" if name else f"import {target}"
            found.append(f"line {line}: {what}, a private module")
        elif name and name not in EXPORTS[target] and f"{target}.{name}" not in EXPORTS:
            found.append(f"line {line}: {name} from {target} (not in its __all__)")
    return found


def checked_modules() -> list[Path]:
    return sorted(p for package in CHECKED for p in (SRC / package).rglob("*.py"))


def test_every_module_is_checked() -> None:
    names = {module_name(p) for p in checked_modules()}
    assert {"poolhttp.bulk", "poolhttp.bulk._async", "poolhttp.cli", "poolhttp.cli._fetch",
            "poolhttp.cli._server"} <= names


@pytest.mark.parametrize("path", checked_modules(), ids=module_name)
def test_bulk_and_cli_import_only_the_public_api(path: Path) -> None:
    problems = violations(path.read_text(encoding="utf-8"), module_name(path),
                          path.name == "__init__.py")
    assert not problems, f"{module_name(path)} imports private poolhttp code: " + \
        "; ".join(problems)


@pytest.mark.parametrize(("source", "module"), [
    ("from .._config import Limits", "poolhttp.bulk._options"),
    ("from .. import _config", "poolhttp.bulk._options"),
    ("from poolhttp._core.pool import PoolStats", "poolhttp.cli._report"),
    ("import poolhttp._models", "poolhttp.cli._get"),
    ("from poolhttp import check_method", "poolhttp.cli._inputs"),
    ("from ..bulk._types import Job", "poolhttp.cli._drive"),
    ("def f():\n    from .._urls import URL\n", "poolhttp.cli._drive"),
    ("from ... import _tls", "poolhttp.bulk.sub._x"),
    ("from poolhttp.cli import _server", "poolhttp.bulk._sync"),
])
def test_the_check_sees_private_imports(source: str, module: str) -> None:
    assert violations(source, module)


@pytest.mark.parametrize(("source", "module"), [
    ("from .. import Limits, Timeout", "poolhttp.bulk._options"),
    ("from poolhttp import URL, AsyncClient", "poolhttp.cli._get"),
    ("from poolhttp.bulk import DEFAULT_CONCURRENCY", "poolhttp.cli"),
    ("import poolhttp\nfrom poolhttp import bulk", "poolhttp.cli._fetch"),
    ("from ._window import Window", "poolhttp.bulk._async"),
    ("from ._errors import CliError", "poolhttp.cli"),
    ("import asyncio\nfrom rich.table import Table", "poolhttp.cli._report"),
])
def test_the_check_allows_the_public_api(source: str, module: str) -> None:
    assert violations(source, module, is_package=module == "poolhttp.cli") == []
