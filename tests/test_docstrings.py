"""Every example in a module docstring runs and prints what it says."""

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ("pulse.flows", "pulse.operators", "pulse.state", "pulse.web")
MODULES = sorted(
    f"{pkg}.{mod.name}" for pkg in PACKAGES for mod in pkgutil.iter_modules(importlib.import_module(pkg).__path__)
)


def test_every_package_has_modules():
    assert {"pulse.operators.events", "pulse.state.keys", "pulse.flows.cli"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
