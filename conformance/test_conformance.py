"""CNI spec conformance checks, run against any plugin binary (see conftest.py / README.md).

Every check is plugin-agnostic: it drives the plugin through libcni (the cnidriver) or by
direct exec where libcni cannot (spec 1.1.0, malformed environments), and reads the resulting
kernel state back with ip/tc/iptables inside the sandbox netns.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import time
from typing import Any

import pytest

from conformance import schema
from conformance.harness import (
    KNOWN_VERSIONS,
    LIBCNI_MAX,
    MTU,
    NETWORK,
    Json,
    Pod,
    Sandbox,
    ip_json,
    sh,
    vtuple,
)
from tests.netns import iptables_save

pytestmark = pytest.mark.root

# ---- result schema ---------------------------------------------------------------------------


def assert_result_schema(result: Json, version: str, pod: Pod) -> None:
    """Spec "Success" result for ``version`` (conformance/schema.py: fields, types, indices,
    gateways), with an ip on the sandbox interface named CNI_IFNAME in the pod's netns."""
    assert result.get("cniVersion") == version, f"result version {result.get('cniVersion')}"
    schema.validate_result(result, version)
    if vtuple(version) < (0, 3, 0):
        assert isinstance(result.get("ip4"), dict), result
        return
    ifaces, ips = result.get("interfaces") or [], result.get("ips")
    assert ips, f"no ips: {result}"
    pod_ifaces = [
        i for i, f in enumerate(ifaces) if f["name"] == pod.ifname and f.get("sandbox") == pod.path
    ]
    assert pod_ifaces, f"no interface {pod.ifname} with sandbox {pod.path}: {ifaces}"
    assert any(ipc.get("interface") in pod_ifaces for ipc in ips), (
        f"no ip on the sandbox interface: {ips}"
    )


def pod_ip(result: Json) -> str:
    addrs = [
        ipc["address"]
        for ipc in result["ips"]
        if ipaddress.ip_interface(ipc["address"]).version == 4
    ]
    assert addrs, result
    return str(addrs[0])


# ---- VERSION and version negotiation ---------------------------------------------------------


def test_version_output(sb: Sandbox, claimed: list[str]) -> None:
    """VERSION prints {cniVersion, supportedVersions}; libcni's decoder agrees."""
    res = sb.direct("{}", {"CNI_COMMAND": "VERSION"})
    assert res.ok, res
    info = res.json()
    assert set(info) == {"cniVersion", "supportedVersions"}, info
    assert re.fullmatch(r"\d+\.\d+\.\d+", info["cniVersion"]), info
    assert info["cniVersion"] in info["supportedVersions"], info
    assert info["supportedVersions"] and all(
        v in KNOWN_VERSIONS for v in info["supportedVersions"]
    ), info
    via_lib = sb.driver("version", sb.plugin_type)
    assert via_lib.ok, via_lib
    assert via_lib.json()["supportedVersions"] == info["supportedVersions"]
    assert claimed == info["supportedVersions"]


def test_version_with_config_version(sb: Sandbox, claimed: list[str]) -> None:
    """VERSION ignores other env vars and answers even with a config on stdin (spec: the
    plugin reads cniVersion from stdin only to pick the output format)."""
    res = sb.direct(sb.plugin_conf(), {"CNI_COMMAND": "VERSION"})
    assert res.ok, res
    assert res.json()["supportedVersions"] == claimed


def test_claims_spec_1_1(claimed: list[str]) -> None:
    """The plugin claims CNI spec 1.1.0 (GC/STATUS) and all of 0.3.0..1.0.0."""
    for version in ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"):
        assert version in claimed, f"{version} not claimed: {claimed}"


def test_version_negotiation(sb: Sandbox, claimed: list[str], any_version: str) -> None:
    """A config asking for a claimed version gets a result in exactly that version;
    an unclaimed one is refused with code 1 (incompatible version)."""
    pod = sb.new_pod()
    conf = sb.conflist(any_version, first_only=True)
    via_lib = vtuple(any_version) <= vtuple(LIBCNI_MAX)
    if via_lib:
        res = sb.lib("add", pod, conf)
    else:
        res = sb.direct(sb.plugin_conf(any_version), sb.direct_env("ADD", pod))
    if any_version in claimed:
        assert res.ok, f"ADD at claimed {any_version} failed: {res}"
        assert res.json()["cniVersion"] == any_version
        assert_result_schema(res.json(), any_version, pod)
        assert sb.pod_addrs(pod), "result returned but pod has no address"
    else:
        err = res.error()
        assert err["code"] == 1, f"unclaimed {any_version}: expected code 1, got {err}"
        assert not sb.reservations(), f"refused ADD left reservations {sb.reservations()}"


def test_unsupported_version_code_1(sb: Sandbox) -> None:
    """A config at a version no one supports: error JSON with code 1, nothing allocated."""
    pod = sb.new_pod()
    conf = sb.plugin_conf()
    conf["cniVersion"] = "99.0.0"
    err = sb.direct(conf, sb.direct_env("ADD", pod)).error()
    assert err["code"] == 1, err
    assert not sb.reservations()
    assert ip_json(pod.netns, "link", "show", "dev", "lo"), "sanity"
    assert len(ip_json(pod.netns, "link", "show")) == 1, "pod got an interface"


def test_validate_chain(sb: Sandbox) -> None:
    """libcni ValidateNetworkList: every plugin of the chain supports the list's version and
    the union of capabilities is reported."""
    res = sb.driver("validate", str(sb.write_conflist(sb.conflist())))
    assert res.ok, res
    caps = sorted(
        {c for p in sb.template["plugins"] for c, on in p.get("capabilities", {}).items() if on}
    )
    assert res.json() == caps


# ---- ADD -------------------------------------------------------------------------------------


def test_add_result_schema(sb: Sandbox, claimed_version: str) -> None:
    """The plugin's own (raw, not libcni-reparsed) ADD output is a well-formed result of the
    requested version."""
    pod = sb.new_pod()
    res = sb.direct(sb.plugin_conf(claimed_version), sb.direct_env("ADD", pod))
    assert res.ok, res
    assert_result_schema(res.json(), claimed_version, pod)


def test_add_chain_result(sb: Sandbox) -> None:
    """The full chain through libcni returns a well-formed result in the list's version."""
    pod = sb.new_pod()
    version = sb.conflist()["cniVersion"]
    assert_result_schema(sb.add(pod), version, pod)


def test_add_allocates_from_flannel_subnet(sb: Sandbox) -> None:
    """The address comes from FLANNEL_SUBNET, the gateway is its .1, routes reach the
    cluster network; the store is host-local's layout."""
    pod = sb.new_pod()
    result = sb.add(pod)
    addr = ipaddress.ip_interface(pod_ip(result))
    assert addr.network == ipaddress.ip_network(sb.pod_subnet), addr
    assert str(addr.ip) != sb.gateway
    gws = {ipc.get("gateway") for ipc in result["ips"]}
    assert gws == {sb.gateway}, gws
    assert sb.reservations() == {str(addr.ip): f"{pod.container_id}\r\n{pod.ifname}"}
    netdir = sb.data_dir / sb.network_name
    assert (netdir / "last_reserved_ip.0").read_text().strip() == str(addr.ip)


def test_pod_has_address(sb: Sandbox) -> None:
    """Kernel oracle: the pod's CNI_IFNAME has the result address, MTU and routes; the host
    side is a veth on cni0 with hairpin, cni0 carries the gateway."""
    pod = sb.new_pod()
    result = sb.add(pod)
    assert sb.pod_addrs(pod) == [pod_ip(result)]
    (link,) = ip_json(pod.netns, "link", "show", "dev", pod.ifname)
    assert link["mtu"] == MTU, link
    assert "UP" in link["flags"], link
    assert link["linkinfo"]["info_kind"] == "veth", link
    routes = ip_json(pod.netns, "route", "show")
    defaults = [r for r in routes if r["dst"] == "default"]
    assert defaults and defaults[0]["gateway"] == sb.gateway, routes
    cluster = [r for r in routes if r["dst"] == NETWORK]
    assert not cluster or cluster[0].get("gateway", sb.gateway) == sb.gateway, routes
    (br,) = ip_json(sb.node, "addr", "show", "dev", "cni0")
    assert f"{sb.gateway}/24" in [f"{a['local']}/{a['prefixlen']}" for a in br["addr_info"]]
    ports = sb.bridge_ports()
    assert len(ports) == 1 and ports[0]["master"] == "cni0", ports
    assert ports[0]["linkinfo"]["info_kind"] == "veth"
    assert ports[0]["linkinfo"]["info_slave_data"]["hairpin"] is True, ports[0]


def test_pod_pings_gateway(sb: Sandbox) -> None:
    pod = sb.new_pod()
    sb.add(pod)
    assert sb.ping(pod.netns, sb.gateway), "pod cannot ping its gateway"


def test_two_pods_ping_each_other(sb: Sandbox) -> None:
    a, b = sb.new_pod(), sb.new_pod()
    ip_a = pod_ip(sb.add(a)).split("/")[0]
    ip_b = pod_ip(sb.add(b)).split("/")[0]
    assert ip_a != ip_b
    assert sb.ping(a.netns, ip_b) and sb.ping(b.netns, ip_a)


def test_add_existing_ifname_fails_cleanly(sb: Sandbox) -> None:
    """ADD when CNI_IFNAME already exists in the pod fails with an error object and leaves no
    host veth and no IP reservation behind."""
    pod = sb.new_pod()
    sh(["ip", "-n", pod.netns, "link", "add", pod.ifname, "type", "veth", "peer", "name", "wcpeer"])
    (before,) = ip_json(pod.netns, "link", "show", "dev", pod.ifname)
    res = sb.lib("add", pod)
    res.error()
    assert not sb.veths(), f"leaked veth: {sb.veths()}"
    assert not sb.reservations_of(pod), sb.reservations()
    (after,) = ip_json(pod.netns, "link", "show", "dev", pod.ifname)
    assert after["ifindex"] == before["ifindex"], "pre-existing interface was replaced"
    assert not [
        a
        for a in ip_json(pod.netns, "addr", "show", "dev", pod.ifname)[0]["addr_info"]
        if a["family"] == "inet"
    ], "pre-existing interface got an address"


def test_add_distinct_ifnames_same_pod(sb: Sandbox) -> None:
    """Two attachments (eth0, net1) of one container get distinct addresses and both live."""
    pod = sb.new_pod()
    first = sb.add(pod, first_only=True)
    second_pod = Pod(netns=pod.netns, container_id=pod.container_id, ifname="net1")
    second = sb.add(second_pod, first_only=True)
    assert pod_ip(first) != pod_ip(second)
    assert sb.pod_addrs(pod) and sb.pod_addrs(second_pod)
    assert len(sb.reservations_of(pod)) == 2


# ---- CHECK -----------------------------------------------------------------------------------


def test_check_after_add(sb: Sandbox, check_version: str) -> None:
    """CHECK of the plugin under test right after its ADD succeeds, for each claimed version
    with CHECK (0.4.0+): through libcni (cached prevResult) up to 1.0.0, direct exec above."""
    pod = sb.new_pod()
    result = sb.add(pod, check_version, first_only=True)
    if vtuple(check_version) <= vtuple(LIBCNI_MAX):
        res = sb.lib("check", pod, sb.conflist(check_version, first_only=True))
    else:
        conf = sb.plugin_conf(check_version)
        conf["prevResult"] = result
        res = sb.direct(conf, sb.direct_env("CHECK", pod))
    assert res.ok, res


BW_CAPS = {
    "bandwidth": {
        "ingressRate": 1_000_000,
        "ingressBurst": 100_000,
        "egressRate": 1_000_000,
        "egressBurst": 100_000,
    }
}


def test_check_chain_after_add(sb: Sandbox) -> None:
    """libcni CHECK of the whole k3s chain right after ADD succeeds. The bandwidth capability
    is passed because bandwidth 1.1.1 CHECK panics (nil pointer) when it has none."""
    pod = sb.new_pod()
    sb.add(pod, cap_args=BW_CAPS)
    res = sb.lib("check", pod, cap_args=BW_CAPS)
    assert res.ok, res


def test_check_detects_missing_interface(sb: Sandbox) -> None:
    """CHECK fails (error object) when the pod interface was removed behind the plugin."""
    pod = sb.new_pod()
    sb.add(pod, first_only=True)
    sh(["ip", "-n", pod.netns, "link", "del", pod.ifname])
    sb.lib("check", pod, sb.conflist(first_only=True)).error()


# ---- DEL -------------------------------------------------------------------------------------


def _assert_released(sb: Sandbox, pod: Pod) -> None:
    assert not sb.reservations_of(pod), f"reservation left: {sb.reservations()}"
    # A deleted netns is torn down asynchronously by the kernel (and its veth with it).
    deadline = time.monotonic() + 5.0
    while sb.veths() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not sb.veths(), f"veth left on node: {sb.veths()}"


def test_del_releases(sb: Sandbox) -> None:
    pod = sb.new_pod()
    sb.add(pod)
    res = sb.lib("del", pod)
    assert res.ok, res
    _assert_released(sb, pod)
    links = [x["ifname"] for x in ip_json(pod.netns, "link", "show")]
    assert pod.ifname not in links, links


def test_del_twice(sb: Sandbox) -> None:
    pod = sb.new_pod()
    sb.add(pod)
    for _ in range(2):
        res = sb.lib("del", pod)
        assert res.ok, res
    _assert_released(sb, pod)


def test_del_after_netns_deleted(sb: Sandbox) -> None:
    pod = sb.new_pod()
    sb.add(pod)
    path = pod.path
    sb.delete_netns(pod)
    res = sb.lib("del", pod, netns_path=path)
    assert res.ok, res
    _assert_released(sb, pod)


def test_del_empty_netns(sb: Sandbox) -> None:
    """DEL with CNI_NETNS="" (runtime lost the netns) releases the IP, succeeds."""
    pod = sb.new_pod()
    sb.add(pod, first_only=True)
    sb.delete_netns(pod)
    res = sb.lib("del", pod, sb.conflist(first_only=True), netns_path="")
    assert res.ok, res
    _assert_released(sb, pod)


def test_del_unknown_container(sb: Sandbox) -> None:
    """DEL for a container never added succeeds (spec: DEL must tolerate missing state)."""
    pod = sb.new_pod()
    res = sb.direct(sb.plugin_conf(), sb.direct_env("DEL", pod))
    assert res.ok, res
    assert res.stdout.strip() == "", f"DEL printed output: {res.stdout!r}"


def test_readd_after_del_reuses_nothing_stale(sb: Sandbox) -> None:
    """ADD, DEL, ADD of the same container works and leaves exactly one reservation."""
    pod = sb.new_pod()
    sb.add(pod)
    assert sb.lib("del", pod).ok
    sb.add(pod)
    assert len(sb.reservations_of(pod)) == 1
    assert len(sb.pod_addrs(pod)) == 1


# ---- errors ----------------------------------------------------------------------------------

BAD_ENVS: dict[str, dict[str, str | None]] = {
    "missing-CNI_CONTAINERID": {"CNI_CONTAINERID": None},
    "missing-CNI_NETNS": {"CNI_NETNS": None},
    "missing-CNI_IFNAME": {"CNI_IFNAME": None},
    "bad-CNI_CONTAINERID": {"CNI_CONTAINERID": "bad/../id with spaces"},
    "ifname-too-long": {"CNI_IFNAME": "eth0123456789abcdef"},
    "ifname-slash": {"CNI_IFNAME": "eth/0"},
    "unknown-CNI_COMMAND": {"CNI_COMMAND": "FROB"},
}


@pytest.mark.parametrize("case", sorted(BAD_ENVS))
def test_bad_env_code_4(sb: Sandbox, case: str) -> None:
    """ADD with a missing/invalid environment variable: error JSON, code 4, no side effects."""
    pod = sb.new_pod()
    env = sb.direct_env("ADD", pod)
    env.update(BAD_ENVS[case])
    res = sb.direct(sb.plugin_conf(), env)
    err = res.error()
    assert not sb.reservations(), f"left reservations {sb.reservations()}"
    assert not sb.veths(), "left a veth"
    assert err["code"] == 4, f"{case}: expected code 4, got {err}"


def test_missing_command_is_about_mode_or_code_4(sb: Sandbox) -> None:
    """No CNI_COMMAND: either code-4 error JSON, or skel's "about" convention (a person ran the
    binary: banner on stderr, nothing on stdout, exit 0). Never a side effect."""
    pod = sb.new_pod()
    env = sb.direct_env("ADD", pod)
    env["CNI_COMMAND"] = None
    res = sb.direct(sb.plugin_conf(), env)
    if res.returncode == 0:
        assert res.stdout.strip() == "", res.stdout
        assert res.stderr.strip(), "about mode prints a banner on stderr"
    else:
        assert res.error()["code"] == 4
    assert not sb.reservations() and not sb.veths()


def test_bad_json_code_6(sb: Sandbox) -> None:
    pod = sb.new_pod()
    err = sb.direct('{"cniVersion": "1.0.0", "name": ', sb.direct_env("ADD", pod)).error()
    assert err["code"] == 6, err


BAD_CONFIGS: dict[str, Any] = {
    "missing-name": lambda c: c.pop("name"),
    "invalid-name": lambda c: c.__setitem__("name", "bad name/.."),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_code_7(sb: Sandbox, case: str) -> None:
    pod = sb.new_pod()
    conf = sb.plugin_conf()
    BAD_CONFIGS[case](conf)
    err = sb.direct(conf, sb.direct_env("ADD", pod)).error()
    assert err["code"] == 7, f"{case}: expected code 7, got {err}"
    assert not sb.reservations()


def test_error_carries_cni_version(sb: Sandbox) -> None:
    """Error objects name the cniVersion of the request (spec: same version as the config)."""
    pod = sb.new_pod()
    env = sb.direct_env("ADD", pod)
    env["CNI_CONTAINERID"] = None
    res = sb.direct(sb.plugin_conf("0.4.0"), env)
    err = res.error()
    assert err.get("cniVersion") == "0.4.0", err


# ---- GC / STATUS (spec 1.1.0) ----------------------------------------------------------------


def test_gc_valid_attachments(sb: Sandbox) -> None:
    """GC (1.1.0) releases reservations of attachments not in cni.dev/valid-attachments and
    keeps the valid ones. Pods are added through libcni at 1.0.0 (same store)."""
    keep, stale = sb.new_pod(), sb.new_pod()
    sb.add(keep, first_only=True)
    sb.add(stale, first_only=True)
    assert sb.reservations_of(keep) and sb.reservations_of(stale)
    valid = [{"containerID": keep.container_id, "ifname": keep.ifname}]
    res = sb.driver(
        "gc", str(sb.write_conflist(sb.conflist("1.1.0", first_only=True))), json.dumps(valid)
    )
    assert res.ok, res
    assert sb.reservations_of(keep), "GC released a valid attachment"
    assert not sb.reservations_of(stale), f"GC kept a stale reservation: {sb.reservations()}"


def test_status(sb: Sandbox) -> None:
    """STATUS (1.1.0) succeeds when the plugin is ready (subnet file present, store writable)."""
    res = sb.driver("status", str(sb.write_conflist(sb.conflist("1.1.0", first_only=True))))
    assert res.ok, res
    assert res.stdout.strip() == "", res


# ---- chaining --------------------------------------------------------------------------------


def test_chain_portmap_hostport(sb: Sandbox) -> None:
    """portmap after the plugin: a TCP connection from the node to <node IP>:hostPort reaches a
    listener in the pod; DEL removes the DNAT rule."""
    pod = sb.new_pod()
    caps = {"portMappings": [{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}]}
    sb.add(pod, cap_args=caps)
    rules = iptables_save(sb.node)
    assert "--dport 18080" in rules and "8080" in rules, rules
    with sb.tcp_listener(pod.netns, 8080, "hello-from-pod"):
        assert sb.tcp_fetch(sb.node, sb.gateway, 18080) == "hello-from-pod"
    assert sb.lib("del", pod, cap_args=caps).ok  # runtimes pass the same cap args on DEL
    rules = iptables_save(sb.node)
    assert "--dport 18080" not in rules, rules


def test_chain_bandwidth(sb: Sandbox) -> None:
    """bandwidth after the plugin accepts the prevResult and shapes the host veth."""
    pod = sb.new_pod()
    caps = BW_CAPS
    sb.add(pod, cap_args=caps)
    (port,) = sb.bridge_ports()
    qdiscs = json.loads(
        sh(["tc", "-j", "-n", sb.node, "qdisc", "show", "dev", port["ifname"]]).stdout
    )
    assert any(q.get("kind") == "tbf" for q in qdiscs), qdiscs
    assert sb.lib("del", pod, cap_args=caps).ok
    _assert_released(sb, pod)


def test_concurrent_adds_get_distinct_ips(sb: Sandbox) -> None:
    """Eight simultaneous ADDs (libcni, full chain) all succeed with distinct addresses."""
    import concurrent.futures

    pods = [sb.new_pod() for _ in range(8)]
    with concurrent.futures.ThreadPoolExecutor(len(pods)) as pool:
        results = list(pool.map(lambda p: sb.lib("add", p), pods))
    assert all(r.ok for r in results), [str(r) for r in results if not r.ok]
    ips = {pod_ip(r.json()) for r in results}
    assert len(ips) == len(pods), ips
    assert len(sb.reservations()) == len(pods)


# ---- the schema checks themselves, on the plugin's own output -----------------------------------


def _real_outputs(sb: Sandbox) -> dict[str, Json]:
    """The plugin's own ADD results (1.0.0 and 0.3.1), error object and VERSION answer."""
    pod_a, pod_b = sb.new_pod(), sb.new_pod()
    r100 = sb.direct(sb.plugin_conf("1.0.0"), sb.direct_env("ADD", pod_a))
    r031 = sb.direct(sb.plugin_conf("0.3.1"), sb.direct_env("ADD", pod_b))
    assert r100.ok and r031.ok, (r100, r031)
    err = sb.direct('{"cniVersion": "1.0.0", "name": ', sb.direct_env("ADD", sb.new_pod()))
    version = sb.direct("{}", {"CNI_COMMAND": "VERSION"})
    assert version.ok, version
    return {
        "1.0.0": r100.json(),
        "0.3.1": r031.json(),
        "error": err.error(),
        "VERSION": version.json(),
    }


def _first_ip(out: Json) -> Json:
    ip: Json = out["ips"][0]
    return ip


MALFORMED: dict[str, tuple[str, Any]] = {
    "unknown-top-level-field": ("1.0.0", lambda r: r.__setitem__("podIP", "10.42.0.2")),
    "unknown-ip-field": ("1.0.0", lambda r: _first_ip(r).__setitem__("prefix", 24)),
    "missing-cniVersion": ("1.0.0", lambda r: r.pop("cniVersion")),
    "missing-ip-address": ("1.0.0", lambda r: _first_ip(r).pop("address")),
    "missing-interface-name": ("1.0.0", lambda r: r["interfaces"][0].pop("name")),
    "interface-index-as-string": (
        "1.0.0",
        lambda r: _first_ip(r).__setitem__("interface", str(_first_ip(r)["interface"])),
    ),
    "interface-index-out-of-range": (
        "1.0.0",
        lambda r: _first_ip(r).__setitem__("interface", len(r["interfaces"])),
    ),
    "gateway-outside-subnet": ("1.0.0", lambda r: _first_ip(r).__setitem__("gateway", "192.0.2.1")),
    "address-without-prefix": (
        "1.0.0",
        lambda r: _first_ip(r).__setitem__("address", _first_ip(r)["address"].split("/")[0]),
    ),
    "ip-version-in-1.0.0": ("1.0.0", lambda r: _first_ip(r).__setitem__("version", "4")),
    "interface-mtu-before-1.1.0": ("1.0.0", lambda r: r["interfaces"][0].__setitem__("mtu", 1450)),
    "route-gw-other-family": ("1.0.0", lambda r: r["routes"][0].__setitem__("gw", "fe80::1")),
    "dns-nameservers-not-a-list": ("1.0.0", lambda r: r.__setitem__("dns", {"nameservers": "a"})),
    "ip-version-missing-in-0.3.1": ("0.3.1", lambda r: _first_ip(r).pop("version")),
    "ip-version-wrong-family-in-0.3.1": (
        "0.3.1",
        lambda r: _first_ip(r).__setitem__("version", "6"),
    ),
    "error-code-as-string": ("error", lambda e: e.__setitem__("code", str(e["code"]))),
    "error-unknown-field": ("error", lambda e: e.__setitem__("reason", "x")),
    "error-missing-msg": ("error", lambda e: e.pop("msg")),
    "version-unknown-field": ("VERSION", lambda v: v.__setitem__("plugin", "x")),
    "version-missing-supportedVersions": ("VERSION", lambda v: v.pop("supportedVersions")),
}


def _validate(kind: str, data: Json) -> None:
    if kind == "error":
        schema.validate_error(data)
    elif kind == "VERSION":
        schema.validate_version_info(data)
    else:
        schema.validate_result(data, kind)


def test_schema_accepts_own_output(sb: Sandbox) -> None:
    """The plugin's own 1.0.0 and 0.3.1 ADD results, error object and VERSION answer pass the
    strict models (the harness also checks every output as it is received)."""
    for kind, data in _real_outputs(sb).items():
        _validate(kind, data)


@pytest.mark.parametrize("case", list(MALFORMED))
def test_schema_rejects_malformed(sb: Sandbox, case: str) -> None:
    """The strict models reject the plugin's own output with one defect added: an unknown or
    missing field, a wrong type, an interface index out of range, a gateway outside its
    subnet, a field of another spec version."""
    kind, mutate = MALFORMED[case]
    data = copy.deepcopy(_real_outputs(sb)[kind])
    mutate(data)
    with pytest.raises(AssertionError, match="violates the CNI spec"):
        _validate(kind, data)
