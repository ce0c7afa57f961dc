"""Hostile and broken input. Property-based (hypothesis) runs of the real plugin binary with
random / mutated CNI_* environments, stdin, subnet files and store contents: every run prints
one well-formed CNI result or CNI error JSON object on stdout (int ``code``, str ``msg``;
never a traceback, never code 999) and leaves nothing behind. Path traversal through the
container ID, network name, ifname or dataDir is refused before anything touches the disk.

The stdin generators are structure-aware: a full config of either shape (flannel, bridge,
host-local legacy) with a JSON token spliced in at any field -- nesting thousands deep,
huge and non-finite numbers, lone surrogates, huge strings, arrays and objects -- wrapped
in byte-level envelopes (BOMs, UTF-16/32, non-UTF-8 bytes, duplicate keys, > 4 MiB). And
every field of every shape gets every wrong JSON type (tests/wrongtypes.py).

Bounded in CI (about 250 plugin runs, plus 38 path-traversal cases). WEFT_FUZZ_SCALE=<n>
multiplies the hypothesis examples (WEFT_SOAK=1 = x5) and runs the whole wrong-type table
(1449 runs) instead of a sample; WEFT_FUZZ_WORKER=<i>/<n> gives soak worker i of n its share
of the table, so that n soak processes run side by side (tests/robustness/soak.sh).
Inputs are kept inside the sandbox: absolute paths the fuzzer invents are re-rooted under
the test's temp dir; a config that falls back to weft's default dataDir or subnet file
(/var/lib/cni/networks, /run/flannel/subnet.env) runs in a private mount namespace whose
/var/lib/cni and /run/flannel are directories of the test's temp dir (``PrivateDefaults``),
so those defaults are exercised and the machine's are never touched; /proc, /run, /var, /sys,
/dev never appear in what the fuzzer invents.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import shlex
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import wrongtypes
from tests.netns import (
    Node,
    Outcome,
    nat_table,
    node_veths,
    owners,
    pod_links,
    records,
    tree,
)
from tests.robustness._support import (
    Malformed,
    bump,
    expect_error,
    expect_ok_empty,
    expect_result,
    parse_stdout,
    result_ip,
)

pytestmark = pytest.mark.root

SCALE = int(os.environ.get("WEFT_FUZZ_SCALE", "5" if os.environ.get("WEFT_SOAK") == "1" else "1"))
BASE = "fuzz-baseline-pod"
FORBIDDEN = ("proc", "/run", "/var", "/sys", "/dev", "/etc", "/opt", "netns")


def _settings(n: int) -> settings:
    return settings(
        max_examples=n * SCALE,
        deadline=None,
        database=None,
        derandomize=os.environ.get("WEFT_FUZZ_RANDOM") != "1",
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                               HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# ---- the sandbox: one node with a baseline pod whose state must never change ----------
class Sandbox:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.base_pod = node.pod()
        self.target = node.pod()  # the netns fuzzed ADDs may use
        (node.tmp / "fz").mkdir(exist_ok=True)  # where fuzzed logFiles go (not compared)
        expect_result(node.add(self.base_pod, BASE))
        self._private: PrivateDefaults | None = None
        self.baseline = self.snapshot()

    def private_defaults(self) -> PrivateDefaults:
        """Made on first use; its files join the snapshot (the baseline is retaken)."""
        if self._private is None:
            self._private = PrivateDefaults(self.node)
            self.baseline = self.snapshot()
        return self._private

    def snapshot(self) -> dict[str, Any]:
        files = {
            k: v for k, v in tree(self.node.tmp).items()
            if v != "dir" and not Path(k).name.startswith(("last_reserved_ip", ".tmp-", "lock"))
            and not k.startswith("fz/")  # log files the fuzzer may have pointed at
        }
        return {
            "veths": node_veths(self.node),
            "owners": owners(self.node),
            "records": sorted(records(self.node)),
            "base": pod_links(self.base_pod),
            "target": pod_links(self.target),
            "nat": nat_table(self.node.ns),
            "files": files,
        }

    def judge(self, out: Outcome, command: str) -> dict[str, Any] | None:
        """Well-formedness of one run; counts what it sees. Returns the success object."""
        bump("fuzz.inputs_tried")
        try:
            obj = parse_stdout(out)
        except Malformed:
            bump("fuzz.tracebacks_or_garbage_on_stdout")
            raise
        if out.rc == 0:
            if command == "ADD":
                return expect_result(out)
            if command == "VERSION":
                assert obj is not None and "supportedVersions" in obj
                return None
            expect_ok_empty(out)
            return None
        if obj is not None and obj.get("code") == 999:
            bump("fuzz.code_999")
        expect_error(out)
        return None

    def settle(self, out: Outcome, command: str, conf: Any, env: dict[str, str],
               drop: tuple[str, ...] = (), runner: Node | None = None) -> None:
        """Judge the run, undo a successful ADD as the runtime would (``runner``: the node
        the ADD ran on), compare the state."""
        ok = self.judge(out, command)
        if ok is not None:
            bump("fuzz.accepted_adds")
            rest = {k: v for k, v in env.items() if k != "CNI_COMMAND"}
            dele = (runner or self.node).exec("DEL", conf, env=rest, drop=drop,
                                  cid=env.get("CNI_CONTAINERID", ""),
                                  netns=env.get("CNI_NETNS", ""),
                                  ifname=env.get("CNI_IFNAME", "eth0"))
            assert dele.rc == 0, f"DEL after a successful ADD failed: {dele.stdout}"
        now = self.snapshot()
        assert now == self.baseline, _diff(self.baseline, now)


def _diff(a: dict[str, Any], b: dict[str, Any]) -> str:
    return "; ".join(f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if a[k] != b.get(k))


@pytest.fixture
def sandbox(node: Node) -> Sandbox:
    return Sandbox(node)


# ---- strategies -------------------------------------------------------------------------
TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
               max_size=40)
SAFE_TEXT = TEXT.filter(lambda s: not any(f in s for f in FORBIDDEN))
JSON_LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    SAFE_TEXT, st.sampled_from(["", "10.42.0.0/24", "1.1.0", "eth0", "cni0", "-1", "0"]),
)
JSON = st.recursive(JSON_LEAF, lambda c: st.one_of(st.lists(c, max_size=3),
                                                   st.dictionaries(SAFE_TEXT, c, max_size=3)),
                    max_leaves=6)


def _valid_id() -> str:
    return "fz-" + uuid.uuid4().hex[:12]


# ---- 1. the environment -----------------------------------------------------------------
@given(data=st.data())
@settings(_settings(30))
def test_fuzzed_environment(sandbox: Sandbox, data: st.DataObject) -> None:
    node, tmp = sandbox.node, sandbox.node.tmp
    env = {
        "CNI_COMMAND": data.draw(st.one_of(
            st.sampled_from(["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION", "add", "",
                             "ADD\n", "DEL "]), SAFE_TEXT)),
        "CNI_CONTAINERID": data.draw(st.one_of(
            st.builds(_valid_id), SAFE_TEXT, st.sampled_from(["../x", "a/b", "..", ".", "-a"]),
            st.integers(200, 1100).map(lambda n: "c" * n))),
        "CNI_NETNS": data.draw(st.one_of(
            st.just(sandbox.target.path), st.just(""), st.just("relative/ns"),
            st.just(str(tmp / "missing")), st.just(str(tmp / "subnet.env")), st.just(str(tmp)),
            SAFE_TEXT.map(lambda s: str(tmp / "fz") + "/" + s))),
        "CNI_IFNAME": data.draw(st.one_of(
            st.sampled_from(["eth0", "net1", "..", ".", "a/b", "x" * 16, "eth 0", "lo", ""]),
            SAFE_TEXT)),
        "CNI_ARGS": data.draw(st.one_of(st.just(""), st.just("IgnoreUnknown=1;K8S_POD=a"),
                                        SAFE_TEXT)),
        "CNI_PATH": data.draw(st.sampled_from(["/usr/lib/cni", "", "x"])),
    }
    drop = tuple(data.draw(st.lists(st.sampled_from(sorted(env)), max_size=2, unique=True)))
    conf = node.conf()
    out = node.exec(env["CNI_COMMAND"], conf, env=env, drop=drop)
    sandbox.settle(out, env["CNI_COMMAND"] if "CNI_COMMAND" not in drop else "", conf, env, drop)


# ---- 2. stdin -------------------------------------------------------------------------
@given(raw=st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b"", b"{", b"[]", b"null", b"1", b'"x"', b'{"cniVersion": 1}',
                     b'\xef\xbb\xbf{"cniVersion":"1.0.0"}', b'{"cniVersion":"1.0.0"} junk']),
    JSON.map(lambda v: json.dumps(v).encode()),
))
@settings(_settings(12))
def test_fuzzed_stdin_bytes(sandbox: Sandbox, raw: bytes) -> None:
    env = {"CNI_CONTAINERID": _valid_id(), "CNI_NETNS": sandbox.target.path}
    out = sandbox.node.exec("ADD", raw, cid=env["CNI_CONTAINERID"], netns=env["CNI_NETNS"])
    sandbox.settle(out, "ADD", raw.decode("latin-1"), env)


# ---- 3. mutated configs ------------------------------------------------------------------
DELEGATE_KEYS = ["hairpinMode", "forceAddress", "isDefaultGateway", "isGateway", "ipMasq",
                 "mtu", "bridge", "promiscMode", "dns"]
PATHS: list[tuple[str, ...]] = [
    ("cniVersion",), ("name",), ("type",), ("subnetFile",), ("ipam",), ("ipam", "dataDir"),
    ("ipam", "routes"), ("ipam", "type"), ("ipam", "ranges"), ("ipam", "subnet"),
    ("delegate",), ("lockTimeout",), ("logLevel",), ("logFile",), ("prevResult",),
    ("cni.dev/valid-attachments",), ("runtimeConfig",), ("dns",),
    *[("delegate", k) for k in DELEGATE_KEYS],
]
PATHLIKE = {("ipam", "dataDir"), ("logFile",), ("subnetFile",)}


def _mutate(conf: dict[str, Any], path: tuple[str, ...], value: Any, delete: bool,
            tmp: Path) -> None:
    parent: Any = conf
    for key in path[:-1]:
        if not isinstance(parent.get(key), dict):
            parent[key] = {}
        parent = parent[key]
    if delete:
        parent.pop(path[-1], None)
        return
    if path in PATHLIKE and isinstance(value, str) and value.startswith("/"):
        value = str(tmp / "fz") + value  # never outside the sandbox
    elif path == ("logFile",) and isinstance(value, str) and value:
        value = str(tmp / "fz" / value.replace("/", "_"))  # relative: would land in the cwd
    parent[path[-1]] = value


def _keep_in_sandbox(conf: dict[str, Any], node: Node) -> None:
    """Defaults would point at the machine's /var/lib/cni and /run/flannel: never let them."""
    ipam = conf.get("ipam")
    if ipam is None or (isinstance(ipam, dict) and ipam.get("dataDir") is None):
        conf["ipam"] = dict(ipam or {}, dataDir=str(node.data_dir))
    if conf.get("subnetFile") in (None, ""):
        conf["subnetFile"] = str(node.subnet_file)


@given(
    muts=st.lists(st.tuples(st.sampled_from(PATHS), JSON, st.booleans()), min_size=1,
                  max_size=3),
    command=st.sampled_from(["ADD", "ADD", "ADD", "DEL", "CHECK", "STATUS", "GC"]),
    version=st.sampled_from(["1.0.0", "1.1.0", "0.4.0"]),
)
@settings(_settings(40))
def test_fuzzed_config_types(
    sandbox: Sandbox, muts: list[tuple[tuple[str, ...], Any, bool]], command: str, version: str
) -> None:
    node = sandbox.node
    conf = node.conf(version)
    for path, value, delete in muts:
        _mutate(conf, path, copy.deepcopy(value), delete, node.tmp)
    _keep_in_sandbox(conf, node)
    va = conf.get("cni.dev/valid-attachments")
    if command == "GC" and isinstance(va, list):  # GC may sweep, but not the baseline pod
        va.append({"containerID": BASE, "ifname": "eth0"})
    env = {"CNI_CONTAINERID": _valid_id(), "CNI_NETNS": sandbox.target.path}
    out = node.exec(command, conf, cid=env["CNI_CONTAINERID"], netns=env["CNI_NETNS"])
    sandbox.settle(out, command, conf, env)


# ---- 4. subnet files ---------------------------------------------------------------------
KEYS = ["FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_MTU", "FLANNEL_IPMASQ",
        "FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET", "OTHER", "export FLANNEL_SUBNET", ""]
VALUES = st.one_of(
    st.sampled_from(["10.42.0.0/16", "10.42.3.1/24", "10.42.3.1/29", "10.43.0.1/24",
                     "10.42.0.1/31", "10.42.0.1", "1450", "0", "99999", "true", "false",
                     "'10.42.3.1/24'", '"1400"', "\"x'", "", "fd00::/56", "fd00::1/64",
                     "10.42.3.1/24,10.42.4.1/24"]),
    SAFE_TEXT,
)
LINE = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), VALUES),
    st.sampled_from(["# comment", "", "   ", "=", "FLANNEL_SUBNET"]),
    SAFE_TEXT,
)


@given(lines=st.lists(LINE, max_size=7), junk=st.binary(max_size=8),
       command=st.sampled_from(["ADD", "ADD", "STATUS"]))
@settings(_settings(25))
def test_fuzzed_subnet_file(sandbox: Sandbox, lines: list[str], junk: bytes,
                            command: str) -> None:
    node = sandbox.node
    good = node.subnet_file.read_bytes()
    body = ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass") + junk
    try:
        node.subnet_file.write_bytes(body)
        version = "1.1.0"
        env = {"CNI_CONTAINERID": _valid_id(), "CNI_NETNS": sandbox.target.path}
        conf = node.conf(version)
        out = node.exec(command, conf, cid=env["CNI_CONTAINERID"], netns=env["CNI_NETNS"])
        if command == "STATUS" and out.rc != 0:
            assert expect_error(out)["code"] == 50
        sandbox.judge(out, command)
        if out.rc == 0 and command == "ADD":
            bump("fuzz.accepted_adds")
            expect_ok_empty(node.exec("DEL", conf, env["CNI_CONTAINERID"], env["CNI_NETNS"]))
    finally:
        node.subnet_file.write_bytes(good)
    now = sandbox.snapshot()
    assert now == sandbox.baseline, _diff(sandbox.baseline, now)


# ---- 5. store contents -------------------------------------------------------------------
NAME = st.one_of(
    st.integers(10, 250).map(lambda i: f"10.42.0.{i}"),
    st.sampled_from(["last_reserved_ip.0", "last_reserved_ip.1", "10.42.0.010", "::1",
                     "10.42.0.1", "10.42.0.255", ".weft/x.json", "junk"]),
    st.text("abcdef0123456789.-_:", min_size=1, max_size=20).filter(
        lambda s: s not in (".", "..", "lock") and not s.startswith(".tmp-")),
)
CONTENT = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([b"", b"\r\n", b"x\r\neth0", b"x\r\n", f"{BASE}\r\neth1".encode(),
                     b"10.42.0.77", b"not json", b'{"containerID": 1}', b"a" * 5000]),
)


@given(files=st.lists(st.tuples(NAME, CONTENT, st.sampled_from(["file", "file", "dir",
                                                                 "link"])),
                      min_size=1, max_size=4, unique_by=lambda t: t[0]))
@settings(_settings(12))
def test_fuzzed_store_contents(sandbox: Sandbox, files: list[tuple[str, bytes, str]]) -> None:
    """Random files in the store: other pods still ADD (to an address no planted file
    sits on) and DEL, the planted files are left as they were."""
    node = sandbox.node
    store = node.store_dir()
    planted: list[Path] = []
    outside = node.tmp / "fz" / "outside-target"
    outside.parent.mkdir(exist_ok=True)
    outside.write_bytes(b"x\r\neth0")
    try:
        for name, content, kind in files:
            p = store / name
            if p.exists() or p.is_symlink():
                continue
            p.parent.mkdir(exist_ok=True)
            if kind == "dir":
                p.mkdir()
            elif kind == "link":
                p.symlink_to(outside)
            else:
                p.write_bytes(content)
            planted.append(p)
        before = {p.name: tree(store).get(str(p.relative_to(store))) for p in planted}
        cid, pod = _valid_id(), sandbox.target
        out = node.exec("ADD", node.conf(), cid, pod.path)
        res = sandbox.judge(out, "ADD")
        assert res is not None, "planted store files made ADD of an unrelated pod fail"
        assert result_ip(res) not in {p.name for p in planted}
        ipaddress.ip_address(result_ip(res))
        bump("fuzz.accepted_adds")
        expect_ok_empty(node.exec("DEL", node.conf(), cid, pod.path))
        bump("fuzz.inputs_tried")
        after = {p.name: tree(store).get(str(p.relative_to(store))) for p in planted}
        for name in before:
            if not name.startswith("last_reserved_ip"):
                assert after[name] == before[name], f"{name} changed"
    finally:
        for p in planted:
            if p.is_dir() and not p.is_symlink():
                p.rmdir()
            else:
                p.unlink(missing_ok=True)
    now = sandbox.snapshot()
    assert now == sandbox.baseline, _diff(sandbox.baseline, now)


# ---- 6. path traversal -------------------------------------------------------------------
LONG = "a" * 300
TRAVERSAL: list[tuple[str, str, str, str, str]] = [
    # (case id, container id, ifname, network name, dataDir relative to tmp ("" = default))
    ("cid-dotdot", "../../escape", "eth0", "cbr0", ""),
    ("cid-inner-dotdot", "a/../../escape", "eth0", "cbr0", ""),
    ("cid-absolute", "/escape", "eth0", "cbr0", ""),
    ("cid-dot-dot", "..", "eth0", "cbr0", ""),
    ("cid-300", LONG, "eth0", "cbr0", ""),
    ("cid-1100", "a" * 1100, "eth0", "cbr0", ""),
    ("ifname-dotdot", _valid_id(), "../x", "cbr0", ""),
    ("ifname-slash", _valid_id(), "a/b", "cbr0", ""),
    ("ifname-dot-dot", _valid_id(), "..", "cbr0", ""),
    ("ifname-16", _valid_id(), "x" * 16, "cbr0", ""),
    ("name-dotdot", _valid_id(), "eth0", "../escape", ""),
    ("name-slash", _valid_id(), "eth0", "a/b", ""),
    ("name-dot-dot", _valid_id(), "eth0", "..", ""),
    ("name-nul", _valid_id(), "eth0", "a\x00b", ""),
    ("name-300", _valid_id(), "eth0", "n" * 300, ""),
    ("datadir-dotdot", _valid_id(), "eth0", "cbr0", "sandbox/../escape"),
    ("datadir-relative", _valid_id(), "eth0", "cbr0", "<relative>"),
    ("datadir-nul", _valid_id(), "eth0", "cbr0", "sandbox/x\x00y"),
    ("datadir-long-component", _valid_id(), "eth0", "cbr0", "sandbox/" + "d" * 300),
]


@pytest.mark.parametrize(("cid", "ifname", "name", "data_dir"),
                         [c[1:] for c in TRAVERSAL], ids=[c[0] for c in TRAVERSAL])
@pytest.mark.parametrize("command", ["ADD", "DEL"])
def test_path_traversal_refused_before_touching_disk(
    node: Node, command: str, cid: str, ifname: str, name: str, data_dir: str
) -> None:
    pod = node.pod()
    conf = node.conf()
    conf["name"] = name
    if data_dir == "<relative>":
        conf["ipam"] = {"dataDir": "relative/networks"}
    else:
        conf["ipam"] = {"dataDir": str(node.tmp / (data_dir or "sandbox/networks"))}
    before = tree(node.tmp)
    cwd_before = set(os.listdir("."))
    out = node.exec(command, conf, cid, pod.path, ifname=ifname)
    bump("fuzz.traversal_inputs")
    try:
        obj = parse_stdout(out)
    except Malformed:
        bump("fuzz.tracebacks_or_garbage_on_stdout")
        raise
    if command == "ADD" or out.rc != 0:
        if obj is not None and obj.get("code") == 999:
            bump("fuzz.code_999")
        expect_error(out)  # ADD: refused; DEL: success (nothing to do) or a clean error
    else:
        expect_ok_empty(out)
    assert tree(node.tmp) == before, f"created: {sorted(set(tree(node.tmp)) - set(before))}"
    assert not (node.tmp / "escape").exists()
    assert set(os.listdir(".")) == cwd_before
    assert pod_links(pod) == set() and node_veths(node) == set()


def test_corrupt_store_files_are_reported(node: Node) -> None:
    """A corrupt or foreign file in the store is reported (stderr or logFile), so the
    operator can find it -- by the commands that scan the whole store (STATUS, GC)."""
    pod = node.pod()
    expect_result(node.add(pod, "reported-pod"))
    store = node.store_dir()
    (store / "10.42.0.77").write_bytes(b"\xff\xfegarbage")
    (store / "10.42.0.078").write_bytes(b"someone\r\neth0")
    log = node.tmp / "weft.log"
    conf = node.conf("1.1.0")
    conf["logFile"] = str(log)
    conf["logLevel"] = "debug"
    status = node.exec("STATUS", conf)
    expect_ok_empty(status)  # not fatal
    gc = dict(conf, **{"cni.dev/valid-attachments": [{"containerID": "reported-pod",
                                                      "ifname": "eth0"}]})
    expect_ok_empty(node.exec("GC", gc))
    said = status.stderr + (log.read_text() if log.exists() else "")
    for name in ("10.42.0.77", "10.42.0.078"):
        assert name in said, f"corrupt store file {name} was not reported: {said[-600:]!r}"


# ---- 7. structure-aware stdin --------------------------------------------------------------
MARK = "@@fuzz-token@@"  # a string in the rendered config, replaced by the raw token
PATHLIKE_KEYS = ("dataDir", "subnetFile", "logFile")


def _deep(n: int, kind: str) -> str:
    if kind == "arrays":
        return "[" * n + "]" * n
    if kind == "objects":
        return '{"a":' * n + "1" + "}" * n
    if kind == "mixed":
        return '[{"a":' * (n // 2) + "1" + "}]" * (n // 2)
    return "[" * n + "{" * n  # never closed


DEPTHS = st.one_of(st.sampled_from([63, 64, 65, 100, 999, 1000, 5000, 100_000]),
                   st.integers(1, 200_000))
DIGITS = st.one_of(st.sampled_from([19, 20, 309, 310, 4300, 4301, 20_000]),
                   st.integers(1, 5000))
TOKENS = st.one_of(
    st.builds(_deep, DEPTHS, st.sampled_from(["arrays", "objects", "mixed", "unclosed"])),
    st.builds(lambda k, sign, frac: sign + "9" * k + frac, DIGITS, st.sampled_from(["", "-"]),
              st.sampled_from(["", ".5", "e5", "e-5"])),
    st.sampled_from(["1e999", "-1e999", "1e-999", "1.7976931348623157e308", "1.8e308", "-0",
                     "-0.0", "4.9e-324", "1E400", "123456789012345678901234567890.5", "65536",
                     "65535", "-1", "0", "68", "67", "2147483648", "18446744073709551616",
                     "86400", "86401", "1e10", "0.000001"]),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "nan", "inf", "+1", "01", ".5", "0x10",
                     "1.", "--1", "tru", "nul"]),
    st.sampled_from(['"\\ud800"', '"a\\udfffb"', '"\\ude00\\ud83d"', '"\\ud83d\\ude00"',
                     '"\\u0000"', '"eth0\\u0000"', '"\\\\ud800"', '"\\uDBFF"', '"\\u00e9"',
                     '"\\ud800', '"\\u12"', '"\\x41"', '"tab\there"']),
    st.builds(lambda k, c: '"' + c * k + '"',
              st.one_of(st.sampled_from([15, 16, 255, 256, 4096, 4097]),
                        st.integers(0, 2_000_000)),
              st.sampled_from(["a", "[", "{", "/", "\\\\", '\\"', "\u00e9", "\\u00e9", " "])),
    st.builds(lambda k, el: "[" + ",".join([el] * k) + "]", st.integers(0, 300_000),
              st.sampled_from(["0", '"x"', "{}", "[]", "null", '{"dst": "10.0.0.0/8"}',
                               '[{"subnet": "10.42.0.0/24"}]', '"10.43.0.10"',
                               '{"containerID": "x", "ifname": "eth0"}'])),
    st.builds(lambda k: "{" + ",".join(f'"k{i}": {i}' for i in range(k)) + "}",
              st.integers(0, 100_000)),
    st.builds(lambda k, key: "{" + ",".join([f'"{key}": {i}' for i in range(k)]) + "}",
              st.integers(2, 50_000), st.sampled_from(["dst", "subnet", "a"])),
    JSON.map(json.dumps),
    st.sampled_from(["null", "true", "false", "{}", "[]", '""', "0", "1.5", '"x"']),
)
ENVELOPES = st.sampled_from([
    "plain", "plain", "plain", "plain", "bom", "bom-twice", "utf16", "utf16le", "utf32",
    "invalid-byte", "encoded-surrogate", "truncated-utf8", "dup-first", "dup-last",
    "trailing-junk", "trailing-nul", "leading-ws", "oversize", "truncated",
])


def _reroot(token: str, tmp: Path) -> str:
    """A path-like field never names a real path: any string lands under tmp/fz."""
    try:
        value = json.loads(token)
    except (ValueError, RecursionError):
        return token
    if not isinstance(value, str):
        return token
    return json.dumps(str(tmp / "fz") + "/" + value.replace("/", "_")[:200])


def _envelope(text: str, kind: str, key: str, token: str) -> bytes:
    raw = text.encode("utf-8", "surrogatepass")
    if kind == "bom":
        return b"\xef\xbb\xbf" + raw
    if kind == "bom-twice":
        return b"\xef\xbb\xbf\xef\xbb\xbf" + raw
    if kind in ("utf16", "utf16le", "utf32"):
        codec = {"utf16": "utf-16", "utf16le": "utf-16-le", "utf32": "utf-32"}[kind]
        return text.encode(codec, "surrogatepass")
    if kind in ("invalid-byte", "encoded-surrogate", "truncated-utf8"):
        bad = {"invalid-byte": b"\xff", "encoded-surrogate": b"\xed\xa0\x80",
               "truncated-utf8": b"\xc3"}[kind]
        if raw.startswith(b"{"):  # in a string of its own, whatever the token replaced
            return b'{"fuzzBytes": "we' + bad + b'ft", ' + raw[1:]
        return bad + raw
    if kind == "dup-first":  # the original key comes later and wins
        return b"{" + json.dumps(key).encode() + b": " + token.encode("utf-8", "surrogatepass") \
            + b", " + raw[1:]
    if kind == "dup-last":  # the duplicate comes later and wins
        return raw[:-1] + b", " + json.dumps(key).encode() + b": " \
            + token.encode("utf-8", "surrogatepass") + b"}"
    if kind == "trailing-junk":
        return raw + b" x"
    if kind == "trailing-nul":
        return raw + b"\x00"
    if kind == "leading-ws":
        return b" \t\r\n" * 100 + raw
    if kind == "oversize":
        return raw + b" " * (4 * 1024 * 1024)
    if kind == "truncated":
        return raw[: len(raw) // 2]
    return raw


SANDBOX, DEFAULTS = "sandbox", "defaults"


def _where_to_run(raw: bytes, command: str, tmp: Path) -> str | None:
    """Where a plugin that accepts ``raw`` stays inside the sandbox: ``SANDBOX`` (every path
    it names is under ``tmp``), ``DEFAULTS`` (it may fall back to weft's default dataDir or
    subnet file: run it under ``PrivateDefaults``), or None (it names another path of the
    machine, or a GC list that would sweep the baseline pod). Python's decoder accepts a
    superset of what weft does, so what it cannot decode, weft refuses."""
    try:
        conf = json.loads(raw)
    except (ValueError, RecursionError):
        return SANDBOX
    if not isinstance(conf, dict):
        return SANDBOX
    inside = str(tmp)
    where = SANDBOX
    ipam = conf.get("ipam")
    if ipam is None or isinstance(ipam, dict):  # weft reads dataDir (or its default)
        data_dir = (ipam or {}).get("dataDir")
        if not isinstance(data_dir, str) or not data_dir:
            where = DEFAULTS  # absent or not a path: the default, or refused
        elif data_dir.startswith("/") and not data_dir.startswith(inside + "/"):
            return None
    for key in ("logFile", "subnetFile"):
        v = conf.get(key)
        if isinstance(v, str) and v and not v.startswith(inside + "/"):
            return None
    if ("subnetFile" in conf or "delegate" in conf) and conf.get("subnetFile") in (None, ""):
        where = DEFAULTS  # the flannel shape's default subnet file
    va = conf.get("cni.dev/valid-attachments")
    if command == "GC" and isinstance(va, list) and all(isinstance(a, dict) for a in va):
        # a list weft could accept must keep the baseline pod valid, or GC sweeps it
        return where if wrongtypes.BASE_ATTACHMENT in va else None
    return where


class PrivateDefaults:
    """The sandbox node's plugin run in a private mount namespace (unshare(1), inside the
    node's netns) in which /run is a tmpfs holding only the netns mounts, /var/lib is a
    tmpfs, and /var/lib/cni and /run/flannel are bind mounts of two directories of the
    test's temp dir: weft's default dataDir (/var/lib/cni/networks) and subnet file
    (/run/flannel/subnet.env, a copy of the node's) are real paths of the run, and the
    snapshot of the temp dir sees whatever a run leaves in them."""

    def __init__(self, node: Node) -> None:
        base = node.tmp / "private-defaults"
        self.var_lib_cni = base / "var-lib-cni"
        self.run_flannel = base / "run-flannel"
        old_run = base / "old-run"  # where the real /run stays reachable for the netns mounts
        for d in (self.var_lib_cni, self.run_flannel, old_run):
            d.mkdir(parents=True)
        shutil.copyfile(node.subnet_file, self.run_flannel / "subnet.env")
        unshare = shutil.which("unshare")
        assert unshare is not None, "unshare (util-linux) is needed"
        script = "\n".join([
            "set -e",
            f"mount --rbind /run {shlex.quote(str(old_run))}",
            "mount -t tmpfs -o mode=0755 weft-fuzz-run /run",
            "mkdir /run/netns /run/flannel",
            f"mount --rbind {shlex.quote(str(old_run))}/netns /run/netns",
            f"mount --bind {shlex.quote(str(self.run_flannel))} /run/flannel",
            "mount -t tmpfs -o mode=0755 weft-fuzz-var-lib /var/lib",
            "mkdir /var/lib/cni",
            f"mount --bind {shlex.quote(str(self.var_lib_cni))} /var/lib/cni",
            f'exec {shlex.quote(node.plugin)} "$@"',
        ])
        wrapper = base / "weft"
        wrapper.write_text(
            "#!/bin/sh\n"
            f"exec {unshare} --mount --propagation private /bin/sh -c {shlex.quote(script)} "
            'weft "$@"\n'
        )
        wrapper.chmod(0o755)
        self.node = Node(node.ns, node.tmp, node.subnet_x, str(wrapper))


def _fill(node: Node) -> dict[str, str]:
    return {wrongtypes.DATA_DIR: str(node.data_dir),
            wrongtypes.SUBNET_FILE: str(node.subnet_file),
            wrongtypes.LOG_FILE: str(node.tmp / "fz" / "weft.log")}


FIELDS = {shape: sorted(wrongtypes.fields(shape), key=str) for shape in wrongtypes.FULL}


@given(data=st.data(), shape=st.sampled_from(sorted(wrongtypes.FULL)), token=TOKENS,
       envelope=ENVELOPES, other=st.sampled_from(["", "", "", "DEL", "STATUS"]))
@settings(_settings(60))
def test_structured_stdin(sandbox: Sandbox, data: st.DataObject, shape: str, token: str,
                          envelope: str, other: str) -> None:
    node = sandbox.node
    where = data.draw(st.one_of(st.sampled_from(FIELDS[shape]), st.just(("fuzzExtra",)),
                                st.just(())), label="path")
    conf = wrongtypes.build(shape, ("name",), "cbr0", _fill(node))
    command = other or wrongtypes.command_for(where)
    if where and where[-1] in PATHLIKE_KEYS:
        token = _reroot(token, node.tmp)
    if where:
        parent: Any = conf
        for key in where[:-1]:
            parent = parent[key]
        parent[where[-1]] = MARK
        text = json.dumps(conf, ensure_ascii=False).replace(json.dumps(MARK), token, 1)
    else:
        text = token  # the whole document
    key = data.draw(st.sampled_from(sorted(k for k in conf if k not in PATHLIKE_KEYS)),
                    label="duplicated key")
    raw = _envelope(text, envelope, key, token)
    where = _where_to_run(raw, command, node.tmp)
    if where is None:
        bump("fuzz.structured_skipped_outside_sandbox")
        return
    runner = node
    if where == DEFAULTS:
        runner = sandbox.private_defaults().node
        bump("fuzz.structured_default_paths")
    bump(f"fuzz.structured_envelope.{envelope}")
    env = {"CNI_CONTAINERID": _valid_id(), "CNI_NETNS": sandbox.target.path}
    out = runner.exec(command, raw, cid=env["CNI_CONTAINERID"], netns=env["CNI_NETNS"])
    if envelope in ("oversize", "utf16", "utf16le", "utf32", "invalid-byte",
                    "encoded-surrogate", "truncated-utf8", "trailing-junk", "trailing-nul",
                    "truncated", "bom-twice"):
        assert expect_error(out, 6)  # never a valid UTF-8 JSON text of at most 4 MiB
    sandbox.settle(out, command, raw, env, runner=runner)


def test_private_defaults_exercise_weft_default_paths(sandbox: Sandbox) -> None:
    """The control for the structured examples run under ``PrivateDefaults``: k3s's config
    without subnetFile and dataDir goes to weft's defaults, and they are the private ones:
    the reservation appears under the private /var/lib/cni/networks, DEL removes it, and
    the machine's paths stay as they were (the session's guard_machine_paths)."""
    private = sandbox.private_defaults()
    conf = sandbox.node.conf()
    del conf["subnetFile"]
    del conf["ipam"]
    pod = sandbox.node.pod()
    out = private.node.exec("ADD", conf, "fuzz-defaults", pod.path)
    res = expect_result(out)
    store = private.var_lib_cni / "networks" / "cbr0"
    assert (store / result_ip(res)).read_bytes() == b"fuzz-defaults\r\neth0"
    expect_ok_empty(private.node.exec("DEL", conf, "fuzz-defaults", pod.path))
    assert not (store / result_ip(res)).exists() and pod_links(pod) == set()
    assert sandbox.snapshot() == sandbox.baseline


# ---- 8. every field, every wrong JSON type ------------------------------------------------
def _table_share() -> list[tuple[str, wrongtypes.Path, str, Any]]:
    """CI: an even sample across shapes, fields and types; soak: all of it (this worker's)."""
    cases = wrongtypes.cases()
    if SCALE == 1:
        step = max(1, len(cases) // 70)
        return cases[::step]
    worker, _, workers = os.environ.get("WEFT_FUZZ_WORKER", "0/1").partition("/")
    return cases[int(worker)::int(workers)]


def test_every_field_every_wrong_type(sandbox: Sandbox) -> None:
    node = sandbox.node
    fill = _fill(node)
    refused = 0
    for shape, path, tname, value in _table_share():
        conf = wrongtypes.build(shape, path, value, fill)
        command = wrongtypes.command_for(path)
        env = {"CNI_CONTAINERID": _valid_id(), "CNI_NETNS": sandbox.target.path}
        out = node.exec(command, conf, cid=env["CNI_CONTAINERID"], netns=env["CNI_NETNS"])
        bump("fuzz.wrong_type_cases")
        try:
            sandbox.settle(out, command, conf, env)
        except AssertionError as e:
            raise AssertionError(f"{wrongtypes.case_id(shape, path)} = {tname} "
                                 f"({command}): {e}") from None
        refused += out.rc != 0
    assert refused > 0  # the table is not all accepted: the sample reaches the type checks
