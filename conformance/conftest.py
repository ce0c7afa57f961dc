"""pytest wiring for the conformance suite.

    pytest conformance --plugin <binary> --conflist <template> [--deviations <json>]

The plugin is linked into a temp CNI_PATH under the ``type`` of the template's first plugin.
Known deviations (``deviations/<type>.json``: test id -> reason) become
``xfail(strict=True)``: a known failure is reported as xfail, an unexpected pass fails the run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conformance import harness
from tests.netns import guard_machine_paths

_cache: dict[str, Any] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "CNI conformance suite")
    group.addoption("--plugin", help="path to the CNI plugin binary under test")
    group.addoption(
        "--conflist",
        help="conflist template (placeholders @SUBNET_FILE@, "
        "@DATA_DIR@, @POD_SUBNET@, @POD_NETWORK@, @MTU@)",
    )
    group.addoption(
        "--deviations",
        default=None,
        help="known-deviations JSON (default: conformance/deviations/<type>.json)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "root: needs root and a real kernel (network namespaces)")
    config.addinivalue_line("markers", "deviation: known deviation of the plugin under test")


def _opts(config: pytest.Config) -> tuple[Path, Path]:
    plugin, conflist = config.getoption("--plugin"), config.getoption("--conflist")
    if not plugin or not conflist:
        raise pytest.UsageError("the conformance suite needs --plugin <binary> --conflist <file>")
    p, c = Path(plugin).resolve(), Path(conflist).resolve()
    if not os.access(p, os.X_OK):
        raise pytest.UsageError(f"--plugin {p} is not an executable file")
    if not c.is_file():
        raise pytest.UsageError(f"--conflist {c} does not exist")
    return p, c


def _template(config: pytest.Config) -> dict[str, Any]:
    if "template" not in _cache:
        _, conflist = _opts(config)
        _cache["template"] = json.loads(conflist.read_text())
    tmpl: dict[str, Any] = _cache["template"]
    return tmpl


def _claimed(config: pytest.Config) -> list[str]:
    if "claimed" not in _cache:
        plugin, _ = _opts(config)
        info = harness.version_info(plugin)
        _cache["claimed"] = [str(v) for v in info.get("supportedVersions", [])]
    claimed: list[str] = _cache["claimed"]
    return claimed


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``claimed_version``: each claimed version from 0.3.0, ``check_version``: each claimed
    version from 0.4.0 (CHECK), ``any_version``: every known version."""
    if "claimed_version" in metafunc.fixturenames:
        versions = [
            v
            for v in _claimed(metafunc.config)
            if v in harness.KNOWN_VERSIONS and harness.vtuple(v) >= (0, 3, 0)
        ]
        metafunc.parametrize("claimed_version", versions)
    if "check_version" in metafunc.fixturenames:
        versions = [
            v
            for v in _claimed(metafunc.config)
            if v in harness.KNOWN_VERSIONS and harness.vtuple(v) >= (0, 4, 0)
        ]
        metafunc.parametrize("check_version", versions)
    if "any_version" in metafunc.fixturenames:
        metafunc.parametrize("any_version", harness.KNOWN_VERSIONS)


def _deviations(config: pytest.Config) -> tuple[Path, dict[str, str]]:
    path_opt = config.getoption("--deviations")
    tmpl = _template(config)
    path = (
        Path(path_opt)
        if path_opt
        else harness.HERE / "deviations" / f"{tmpl['plugins'][0]['type']}.json"
    )
    if not path.is_file():
        return path, {}
    data = json.loads(path.read_text())
    devs = {k: v for k, v in data.items() if not k.startswith("_")}
    return path, devs


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() != 0:
        raise pytest.UsageError("the conformance suite needs root (network namespaces)")
    harness.build_driver()
    path, devs = _deviations(config)
    used: set[str] = set()
    for item in items:
        base = item.name.split("[", 1)[0]
        for key in (item.name, base):
            if key in devs:
                reason = f"known deviation: {devs[key]}"
                item.add_marker(pytest.mark.xfail(strict=True, reason=reason))
                item.add_marker(pytest.mark.deviation)
                used.add(key)
                break
    _cache["unused_deviations"] = sorted(set(devs) - used)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    unused = _cache.get("unused_deviations")
    if unused:
        terminalreporter.write_line(
            f"conformance: known deviations not matched by any collected test: {unused}",
            yellow=True,
        )


def pytest_report_header(config: pytest.Config) -> list[str]:
    plugin, conflist = _opts(config)
    path, devs = _deviations(config)
    return [
        f"plugin: {plugin}",
        f"conflist: {conflist}",
        f"claimed versions: {', '.join(_claimed(config))}",
        f"deviations: {path} ({len(devs)} known)",
    ]


@pytest.fixture(scope="session")
def plugin(pytestconfig: pytest.Config) -> Path:
    return _opts(pytestconfig)[0]


@pytest.fixture(scope="session")
def template(pytestconfig: pytest.Config) -> dict[str, Any]:
    return _template(pytestconfig)


@pytest.fixture(scope="session")
def claimed(pytestconfig: pytest.Config) -> list[str]:
    return _claimed(pytestconfig)


@pytest.fixture(scope="session", autouse=True)
def schema_counts(record_testsuite_property: Any) -> Iterator[None]:
    """How many results, error objects and VERSION answers conformance/schema.py checked,
    as junit testsuite properties (conformance/table.py prints them)."""
    yield
    for kind, count in sorted(harness.validated.items()):
        record_testsuite_property(f"schema_validated_{kind}", count)


_subnet = iter(range(1, 250))


@pytest.fixture
def sb(plugin: Path, template: dict[str, Any], tmp_path: Path) -> Iterator[harness.Sandbox]:
    """A fresh node netns + temp CNI_PATH/store/cache; everything removed afterwards."""
    box = harness.Sandbox(
        plugin=plugin, template=template, workdir=tmp_path, subnet_index=next(_subnet)
    )
    try:
        yield box
    finally:
        box.close()


# the machine's own CNI paths end the session as they began (tests.netns.MACHINE_PATHS)
_machine_paths_untouched = pytest.fixture(scope="session", autouse=True)(guard_machine_paths)
