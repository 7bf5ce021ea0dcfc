"""Every docstring example in the poolhttp package runs and shows what it claims.

Examples marked `# doctest: +SKIP` (they need a network) are skipped by doctest itself and do
not count as attempted.
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil

import pytest

import poolhttp

# Importing `poolhttp.__main__` runs the command line and exits; it holds no examples.
_NOT_IMPORTABLE = frozenset({"poolhttp.__main__"})


def _import_failed(name: str) -> None:
    # walk_packages ignores a package that fails to import unless told otherwise, which would
    # let its examples go silently untested.
    raise ImportError(f"cannot import {name} to collect its examples")


def module_names() -> list[str]:
    found = pkgutil.walk_packages(poolhttp.__path__, "poolhttp.", onerror=_import_failed)
    names = {"poolhttp", *(info.name for info in found)}  # the walk leaves out the root
    return sorted(names - _NOT_IMPORTABLE)


def run_examples(name: str) -> tuple[doctest.TestResults, str]:
    """Run the examples of module `name`: (failed, attempted) and the failure report."""
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report = io.StringIO()
    failed = attempted = 0
    for test in doctest.DocTestFinder().find(module):
        result = runner.run(test, out=report.write)
        failed += result.failed
        attempted += result.attempted
    return doctest.TestResults(failed, attempted), report.getvalue()


MODULES = module_names()


def test_the_walk_finds_the_modules_with_examples() -> None:
    assert {"poolhttp._urls", "poolhttp._config", "poolhttp._retry",
            "poolhttp._core.dns"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_examples_pass(name: str) -> None:
    result, report = run_examples(name)
    assert result.failed == 0, f"{result.failed} example(s) failed in {name}:\n{report}"


def test_examples_were_attempted() -> None:
    attempted = sum(run_examples(name)[0].attempted for name in MODULES)
    assert attempted > 0, "no docstring example ran: the collection is broken"
