"""Person mode (no CNI_COMMAND), without root: the subcommand table, exit codes, usage,
config discovery; and the CNI path never imports pydantic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cni.operator.commands import UsageError, parse_options
from cni.operator.discovery import OperatorError, find_conf, plugin_conf
from tests.netns import ROOT


def weft(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    e["PYTHONPATH"] = str(ROOT)
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "cni", *args], capture_output=True, text=True, env=e, timeout=60
    )


def test_no_argument_is_the_about_text_on_stderr_exit_0() -> None:
    out = weft()
    assert out.returncode == 0 and out.stdout == ""
    assert "CNI plugin" in out.stderr and "weft ls" in out.stderr


@pytest.mark.parametrize("args", [["bogus"], ["--bogus"], ["ls", "--bogus"], ["gc", "extra"]])
def test_unknown_subcommand_or_option_is_exit_2_with_usage(args: list[str], tmp_path: Path) -> None:
    out = weft(*args, env={"WEFT_CONF_DIRS": str(tmp_path)})
    assert out.returncode == 2, out
    assert "usage: weft" in out.stderr and out.stdout == ""


def test_version_and_help() -> None:
    v = weft("--version")
    assert v.returncode == 0 and v.stdout.startswith("weft ")
    h = weft("--help")
    assert h.returncode == 0 and "weft gc" in h.stdout


def test_no_config_found_is_exit_1_naming_the_dirs(tmp_path: Path) -> None:
    out = weft("ls", env={"WEFT_CONF_DIRS": str(tmp_path)})
    assert out.returncode == 1 and str(tmp_path) in out.stderr and "--conf" in out.stderr


def test_conf_discovery_takes_the_first_file_with_weft_by_name(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "05-other.conflist").write_text(json.dumps({"name": "x", "plugins": [{"type": "bridge"}]}))
    (a / "10-weft.conflist").write_text(
        json.dumps({"name": "cbr0", "cniVersion": "1.0.0", "plugins": [{"type": "weft"}]})
    )
    (a / "20-weft.conflist").write_text(
        json.dumps({"name": "later", "cniVersion": "1.0.0", "plugins": [{"type": "weft"}]})
    )
    (b / "00-weft.conf").write_text(json.dumps({"name": "b", "type": "weft"}))
    path, conf = find_conf(None, [str(a), str(b)])
    assert path.endswith("10-weft.conflist")
    assert conf == {"type": "weft", "name": "cbr0", "cniVersion": "1.0.0"}
    assert find_conf(None, [str(tmp_path / "missing"), str(b)])[1]["name"] == "b"
    with pytest.raises(OperatorError):
        find_conf(str(a / "05-other.conflist"), [])


def test_plugin_conf_and_options() -> None:
    assert plugin_conf({"plugins": [{"type": "portmap"}]}) is None
    assert parse_options(["--conf", "/x", "--json"], frozenset({"--conf", "--json"})) == (
        "/x",
        True,
        False,
    )
    assert parse_options(["--conf=/y"], frozenset({"--conf"})).conf == "/y"
    with pytest.raises(UsageError):
        parse_options(["--dry-run"], frozenset({"--json"}))


def test_operator_json_path_does_import_pydantic() -> None:
    """The seam above would notice pydantic: the operator's --json path does load it."""
    code = "import sys, cni.operator.jsonout; print('pydantic' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "True"


def test_build_id_is_described_with_arch_glibc_and_kind() -> None:
    from cni.operator.cli import BuildInfo, describe_build, parse_build_id

    info = parse_build_id("weft 0.1.0 0123456789abcdef0123 arch=arm64 glibc=2.31 build=release\n")
    assert info == BuildInfo("0.1.0", "0123456789abcdef0123", "arm64", "2.31", "release")
    line = describe_build(info)
    assert line.startswith(
        "weft 0.1.0 linux/arm64, needs glibc >= 2.31, release build 0123456789ab"
    )
    dev = describe_build(parse_build_id("weft 0.1.0 ffff arch=amd64 glibc=2.35 build=dev"))
    assert "not for distribution" in dev and "linux/amd64" in dev
    # an older bundle's id (no fields) still says what it can; garbage is not a build id
    old = parse_build_id("weft 0.0.9 abcd")
    assert old is not None and old.arch == "?"
    assert parse_build_id("") is None and parse_build_id("something else") is None
    assert "source tree" in describe_build(None)


def test_the_version_is_written_once_in_pyproject() -> None:
    """Source tree: --version and the about text read pyproject.toml's version (a bundle
    reads the copy the build put in its build id); no module carries its own."""
    import tomllib

    with open(ROOT / "pyproject.toml", "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    assert weft("--version").stdout.startswith(f"weft {version} (source tree;")
    assert f"weft {version};" in weft().stderr
    literal = f'"{version}"'
    holders = [str(p.relative_to(ROOT)) for pkg in ("cni", "cnispec", "ipam")
               for p in (ROOT / pkg).rglob("*.py") if literal in p.read_text()]
    assert holders == []
