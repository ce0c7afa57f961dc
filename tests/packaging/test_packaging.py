"""The frozen weft (packaging/weft.spec) and packaging/install.sh / uninstall.sh.

The frozen tree is ``$WEFT_DIST`` (a built ``dist/weft`` onedir tree) when set, else
``<repo>/dist/weft`` when built, else it is built once per session into a temp dir with
packaging/build.sh (~15-30 s). Nothing is installed on the machine: installs go to a
DESTDIR under tmp_path. The ADD/CHECK/DEL test runs in throwaway ``wp-`` netns (root).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import Node, delete_netns, nat_left, nat_mentions, nat_table, new_netns

ROOT = Path(__file__).resolve().parents[2]
PACKAGING = ROOT / "packaging"
PYTHON = os.environ.get("WEFT_PYTHON", sys.executable)


def _is_onedir(d: Path) -> bool:
    return (d / "weft").is_file() and os.access(d / "weft", os.X_OK) and (d / "_internal").is_dir()


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("WEFT_DIST")
    if given:
        d = Path(given)
        assert _is_onedir(d), f"WEFT_DIST={given} is not a built onedir tree"
        return d
    if _is_onedir(ROOT / "dist" / "weft"):
        return ROOT / "dist" / "weft"
    out = tmp_path_factory.mktemp("weft-build")
    env = dict(os.environ, DISTDIR=str(out / "dist"), WORKDIR=str(out / "work"), PYTHON=PYTHON)
    subprocess.run([str(PACKAGING / "build.sh")], env=env, check=True, timeout=900)
    d = out / "dist" / "weft"
    assert _is_onedir(d)
    return d


def run(
    argv: list[str], env: dict[str, str], stdin: bytes = b"", cwd: str = "/"
) -> subprocess.CompletedProcess[str]:
    """Exec with exactly ``env`` (like ``env -i``): a node's runtime passes little."""
    p = subprocess.run(
        argv, input=stdin, env=env, capture_output=True, timeout=60, cwd=cwd, check=False
    )
    return subprocess.CompletedProcess(argv, p.returncode, p.stdout.decode(), p.stderr.decode())


def assert_version(p: subprocess.CompletedProcess[str]) -> None:
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["cniVersion"] == "1.1.0"
    assert {"0.3.1", "0.4.0", "1.0.0", "1.1.0"} <= set(out["supportedVersions"])
    assert p.stderr == ""


def test_version_minimal_env(dist: Path) -> None:
    assert_version(run([str(dist / "weft")], {"CNI_COMMAND": "VERSION"}))


def test_runs_through_symlink_in_another_directory(dist: Path, tmp_path: Path) -> None:
    bindir = tmp_path / "opt" / "cni" / "bin"
    bindir.mkdir(parents=True)
    link = bindir / "weft"
    link.symlink_to(dist / "weft")
    assert_version(run([str(link)], {"CNI_COMMAND": "VERSION"}))
    # and as libcni does it: found on a path, run from an unrelated cwd
    assert_version(
        run(["weft"], {"CNI_COMMAND": "VERSION", "PATH": str(bindir)}, cwd=str(tmp_path))
    )


def test_error_path_gives_cni_error_json(dist: Path) -> None:
    conf = {"cniVersion": "1.0.0", "name": "cbr0", "type": "weft", "delegate": {}}
    p = run(
        [str(dist / "weft")],
        {"CNI_COMMAND": "ADD", "CNI_IFNAME": "eth0"},
        json.dumps(conf).encode(),
    )
    assert p.returncode != 0
    err = json.loads(p.stdout)
    assert err["code"] == 4 and err["cniVersion"] == "1.0.0"


def test_human_version_and_help(dist: Path) -> None:
    p = run([str(dist / "weft"), "--version"], {})
    assert p.returncode == 0 and p.stdout.startswith("weft 0.1.0"), p
    p = run([str(dist / "weft"), "--help"], {})
    assert p.returncode == 0 and "CNI" in p.stdout, p


def test_bundle_has_no_dead_weight(dist: Path) -> None:
    """The pyroute2 trick works frozen only if the bundle keeps pyroute2's netlink codec;
    and the bundle must not carry what the spec excludes (pyroute2's __init__ world, its
    rtnl message modules, multiprocessing)."""
    internal = dist / "_internal"
    names = {p.name for p in internal.rglob("*")}
    # asyncio is carried for pydantic (the operator's --json only); tests/operator checks
    # that no CNI exec ever loads it
    for heavy in ("_ssl", "_tkinter", "_sqlite3"):
        assert not any(n.startswith(heavy + ".") for n in names), heavy
    loose = {p.relative_to(internal).as_posix() for p in internal.rglob("*.pyc")}
    if loose:  # noarchive build: modules are files
        assert "pyroute2/netlink/__init__.pyc" in loose
        assert not any(
            n.startswith(
                (
                    "pyroute2/iproute/",
                    "pyroute2/ndb/",
                    "pyroute2/netlink/rtnl/",
                    "multiprocessing/",
                )
            )
            for n in loose
        )


def _tree(root: Path) -> dict[str, str]:
    """Every path under root with its type/content/mode: 'exactly as before' means this."""
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        st = p.lstat()
        if p.is_symlink():
            out[rel] = f"l {os.readlink(p)}"
        elif p.is_dir():
            out[rel] = f"d {oct(st.st_mode)}"
        else:
            out[rel] = f"f {oct(st.st_mode)} {hashlib.sha256(p.read_bytes()).hexdigest()}"
    return out


def _sh(
    script: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    e = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env}
    return subprocess.run(
        [str(PACKAGING / script)], env=e, capture_output=True, text=True, timeout=timeout,
        check=False,
    )


@pytest.fixture
def destdir(tmp_path: Path) -> Path:
    d = tmp_path / "root"
    # a node that already has things there: they must survive untouched
    (d / "etc" / "cni" / "net.d").mkdir(parents=True)
    (d / "etc" / "cni" / "net.d" / "05-other.conflist").write_text('{"name":"other"}')
    (d / "opt" / "cni" / "bin").mkdir(parents=True)
    (d / "opt" / "cni" / "bin" / "portmap").write_bytes(b"\x7fELF not really")
    (d / "var").mkdir()
    return d


def test_install_uninstall_roundtrip(dist: Path, destdir: Path) -> None:
    before = _tree(destdir)
    env = {"DESTDIR": str(destdir), "WEFT_DIST": str(dist)}
    p = _sh("install.sh", env)
    assert p.returncode == 0, p.stderr
    link = destdir / "opt/cni/bin/weft"
    assert link.is_symlink() and os.readlink(link) == "weft.d/weft"
    assert (destdir / "opt/cni/bin/weft.d/_internal").is_dir()
    assert_version(run([str(link)], {"CNI_COMMAND": "VERSION"}))

    conflist = json.loads((destdir / "etc/cni/net.d/10-weft.conflist").read_text())
    assert conflist["name"] == "cbr0" and conflist["cniVersion"] == "1.0.0"
    assert [pl["type"] for pl in conflist["plugins"]] == ["weft", "portmap", "bandwidth"]
    assert conflist["plugins"][0]["delegate"] == {
        "hairpinMode": True,
        "forceAddress": True,
        "isDefaultGateway": True,
    }
    assert conflist["plugins"][1]["capabilities"] == {"portMappings": True}
    assert conflist["plugins"][2]["capabilities"] == {"bandwidth": True}

    # reinstall (upgrade) is idempotent
    p = _sh("install.sh", env)
    assert p.returncode == 0, p.stderr
    p = _sh("uninstall.sh", {"DESTDIR": str(destdir)})
    assert p.returncode == 0, p.stderr
    assert _tree(destdir) == before


K3S_BIN = "var/lib/rancher/k3s/data/current/bin"


def _k3s_node(dest: Path) -> None:
    """What a k3s node has in its bin dir: host-local (a link to k3s's multi-call cni)."""
    (dest / K3S_BIN).mkdir(parents=True)
    (dest / K3S_BIN / "cni").write_bytes(b"\x7fELF not really")
    (dest / K3S_BIN / "host-local").symlink_to("cni")


def test_install_into_empty_destdir_custom_dirs(dist: Path, tmp_path: Path) -> None:
    """k3s layout; install creates the directories and uninstall removes them again."""
    dest = tmp_path / "empty"
    dest.mkdir()
    _k3s_node(dest)
    before = _tree(dest)
    env = {
        "DESTDIR": str(dest),
        "WEFT_DIST": str(dist),
        "CNI_BIN_DIR": "/var/lib/rancher/k3s/data/current/bin",
        "CNI_CONF_DIR": "/var/lib/rancher/k3s/agent/etc/cni/net.d",
        "WEFT_LIB_DIR": "/opt/weft",
    }
    p = _sh("install.sh", env)
    assert p.returncode == 0, p.stderr
    link = dest / "var/lib/rancher/k3s/data/current/bin/weft"
    assert os.readlink(link) == "/opt/weft/weft"  # absolute: lib dir is not under bin dir
    assert (dest / "var/lib/rancher/k3s/agent/etc/cni/net.d/10-weft.conflist").is_file()
    p = _sh("uninstall.sh", {k: v for k, v in env.items() if k != "WEFT_DIST"})
    assert p.returncode == 0, p.stderr
    assert _tree(dest) == before


def test_uninstall_keeps_edited_conflist(dist: Path, destdir: Path) -> None:
    env = {"DESTDIR": str(destdir), "WEFT_DIST": str(dist)}
    assert _sh("install.sh", env).returncode == 0
    conf = destdir / "etc/cni/net.d/10-weft.conflist"
    conf.write_text(conf.read_text().replace('"hairpinMode": true', '"hairpinMode": false'))
    p = _sh("uninstall.sh", {"DESTDIR": str(destdir)})
    assert p.returncode == 0 and "kept" in p.stderr
    assert conf.exists() and not (destdir / "opt/cni/bin/weft").exists()


def test_install_into_missing_destdir(dist: Path, tmp_path: Path) -> None:
    """DESTDIR that does not exist yet is created (as `make install DESTDIR=` users expect),
    and the walk up the missing directories ends at / instead of spinning there."""
    dest = tmp_path / "new" / "dir"
    env = {"DESTDIR": str(dest), "WEFT_DIST": str(dist)}
    p = _sh("install.sh", env, timeout=60)
    assert p.returncode == 0, p.stderr
    assert_version(run([str(dest / "opt/cni/bin/weft")], {"CNI_COMMAND": "VERSION"}))
    assert (dest / "etc/cni/net.d/10-weft.conflist").is_file()
    p = _sh("uninstall.sh", {"DESTDIR": str(dest)}, timeout=60)
    assert p.returncode == 0, p.stderr
    assert _tree(dest) == {}  # every directory install made is gone; DESTDIR itself stays


def test_install_loops_are_bounded() -> None:
    """Every loop in the scripts walks a finite input (a file, a list) or has a bound."""
    for script in ("install.sh", "uninstall.sh"):
        text = (PACKAGING / script).read_text()
        for line in text.splitlines():
            code = line.split("#", 1)[0]
            if code.lstrip().startswith(("while ", "until ")):
                bounded = "read " in code or '-lt "$MAX_DEPTH"' in code
                assert bounded, f"{script}: unbounded loop {line!r}"


def _manifest(dest: Path, lib: str = "opt/cni/bin/weft.d") -> str:
    return (dest / lib / ".install-manifest").read_text()


def test_reinstall_keeps_edited_conflist_owned(dist: Path, destdir: Path) -> None:
    """An edited conflist that weft installed is still weft's: kept, not overwritten,
    reported as modified, still in the manifest; uninstall keeps it and says so."""
    env = {"DESTDIR": str(destdir), "WEFT_DIST": str(dist)}
    assert _sh("install.sh", env).returncode == 0
    conf = destdir / "etc/cni/net.d/10-weft.conflist"
    edited = conf.read_text().replace('"hairpinMode": true', '"hairpinMode": false')
    conf.write_text(edited)
    p = _sh("install.sh", env)
    assert p.returncode == 0, p.stderr
    assert "not installed by weft" not in p.stderr
    assert "modified" in p.stderr and str(conf) in p.stderr, p.stderr
    assert conf.read_text() == edited
    assert "/etc/cni/net.d/10-weft.conflist" in _manifest(destdir)
    p = _sh("uninstall.sh", {"DESTDIR": str(destdir)})
    assert p.returncode == 0, p.stderr
    assert "modified" in p.stderr and "kept" in p.stderr and str(conf) in p.stderr, p.stderr
    assert conf.read_text() == edited
    assert not (destdir / "opt/cni/bin/weft").exists()
    assert not (destdir / "opt/cni/bin/weft.d").exists()


def test_reinstall_without_conf_keeps_owning_the_conflist(dist: Path, destdir: Path) -> None:
    env = {"DESTDIR": str(destdir), "WEFT_DIST": str(dist)}
    assert _sh("install.sh", env).returncode == 0
    p = _sh("install.sh", dict(env, WEFT_NO_CONF="1"))
    assert p.returncode == 0, p.stderr
    assert "/etc/cni/net.d/10-weft.conflist" in _manifest(destdir)
    assert _sh("uninstall.sh", {"DESTDIR": str(destdir)}).returncode == 0
    assert not (destdir / "etc/cni/net.d/10-weft.conflist").exists()


def test_reinstall_leaves_a_foreign_conflist_alone(dist: Path, destdir: Path) -> None:
    conf = destdir / "etc/cni/net.d/10-weft.conflist"
    conf.write_text('{"name": "mine"}')
    env = {"DESTDIR": str(destdir), "WEFT_DIST": str(dist)}
    p = _sh("install.sh", env)
    assert p.returncode == 0 and "not installed by weft" in p.stderr, p.stderr
    assert conf.read_text() == '{"name": "mine"}'
    assert "10-weft.conflist" not in _manifest(destdir)
    assert _sh("uninstall.sh", {"DESTDIR": str(destdir)}).returncode == 0
    assert conf.read_text() == '{"name": "mine"}'


def test_uninstall_with_other_variables_says_where_it_looked(
    dist: Path, destdir: Path
) -> None:
    env = {"DESTDIR": str(destdir), "WEFT_DIST": str(dist), "WEFT_LIB_DIR": "/opt/weft"}
    assert _sh("install.sh", env).returncode == 0
    installed = _tree(destdir)
    p = _sh("uninstall.sh", {"DESTDIR": str(destdir)})  # WEFT_LIB_DIR forgotten
    assert p.returncode != 0, p.stderr
    looked = str(destdir / "opt/cni/bin/weft.d/.install-manifest")
    assert looked in p.stderr, p.stderr
    assert "same variables" in p.stderr and "WEFT_LIB_DIR" in p.stderr, p.stderr
    # the entry point it found tells where the install is
    assert "WEFT_LIB_DIR=/opt/weft" in p.stderr, p.stderr
    assert _tree(destdir) == installed  # nothing touched
    p = _sh("uninstall.sh", {"DESTDIR": str(destdir), "WEFT_LIB_DIR": "/opt/weft"})
    assert p.returncode == 0, p.stderr
    assert not (destdir / "opt/weft").exists() and not (destdir / "opt/cni/bin/weft").exists()


def test_uninstall_where_nothing_is_installed_fails_and_says_so(destdir: Path) -> None:
    before = _tree(destdir)
    env = {"DESTDIR": str(destdir), "CNI_BIN_DIR": "/usr/libexec/cni"}
    p = _sh("uninstall.sh", env)
    assert p.returncode != 0
    assert str(destdir / "usr/libexec/cni/weft.d/.install-manifest") in p.stderr, p.stderr
    assert "CNI_BIN_DIR=/usr/libexec/cni" in p.stderr, p.stderr
    assert _tree(destdir) == before


@pytest.mark.parametrize("layout", ["missing", "no-host-local"])
def test_k3s_bin_dir_must_be_a_real_k3s_bin_dir(
    dist: Path, tmp_path: Path, layout: str
) -> None:
    """The README's k3s recipe on a node without that k3s dir must not create a bin dir
    no runtime reads and call it installed."""
    dest = tmp_path / "node"
    dest.mkdir()
    if layout == "no-host-local":
        (dest / K3S_BIN).mkdir(parents=True)
    before = _tree(dest)
    env = {
        "DESTDIR": str(dest),
        "WEFT_DIST": str(dist),
        "CNI_BIN_DIR": "/" + K3S_BIN,
        "WEFT_LIB_DIR": "/opt/weft",
    }
    p = _sh("install.sh", env)
    assert p.returncode != 0, p.stdout
    assert "installed weft" not in p.stdout
    assert "host-local" in p.stderr and str(dest / K3S_BIN) in p.stderr, p.stderr
    assert _tree(dest) == before  # refused before anything was made
    _k3s_node(dest) if layout == "missing" else (dest / K3S_BIN / "host-local").touch()
    p = _sh("install.sh", env)
    assert p.returncode == 0, p.stderr


@pytest.fixture
def frozen_node(dist: Path, tmp_path: Path) -> Iterator[Node]:
    ns = new_netns("wp")
    node = Node(ns, tmp_path, plugin=str(dist / "weft"), nat_before=nat_table(ns))
    node.write_subnet()
    try:
        yield node
    finally:
        for p in node.pods:
            delete_netns(p)
        delete_netns(ns)


@pytest.mark.root
def test_frozen_add_check_del(frozen_node: Node) -> None:
    """The frozen binary does the real thing (pyroute2 trick frozen, ipMasq via iptables)."""
    node = frozen_node
    pod = node.pod()
    cid = uuid.uuid4().hex
    conf = node.conf(ipMasq=True)  # flannel would set ipMasq=false for FLANNEL_IPMASQ=true
    r = node.add(pod, cid, conf, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert r.rc == 0, (r.stdout, r.stderr)
    res = r.json
    assert res["ips"][0]["address"] == "10.42.0.2/24"
    assert pod.addrs("eth0") == ["10.42.0.2/24"]
    assert nat_mentions(node, cid) and nat_left(node)
    r = node.check(pod, cid, res, conf)
    assert r.rc == 0, (r.stdout, r.stderr)
    r = node.delete(pod, cid, conf)
    assert r.rc == 0, (r.stdout, r.stderr)
    assert node.veths() == [] and node.reservations() == {}
    assert nat_left(node) == []
