"""Network configuration → ``NetConf``. Pure: bytes and an already-parsed subnet file in.

Two shapes are accepted:

1. **flannel** (what k3s writes): ``subnetFile`` and/or ``delegate`` present. The bridge
   options are derived from the subnet file exactly as flannel's CNI plugin builds its
   delegate's config (``mtu`` = FLANNEL_MTU, ``ipMasq`` = not FLANNEL_IPMASQ, ``isGateway``
   true, ranges from FLANNEL_SUBNET / FLANNEL_IPV6_SUBNET, a route to every
   FLANNEL_NETWORK), then the ``delegate`` keys override them. A top-level ``ipam`` section
   may set ``dataDir`` and extra ``routes``.
2. **bridge** (the reference bridge plugin's): top-level bridge options and a host-local
   ``ipam`` section (``ranges`` or the legacy ``subnet``/``rangeStart``/``rangeEnd``/
   ``gateway``, ``routes``, ``dataDir``).

Unknown keys are ignored (runtimes inject ``runtimeConfig``, ``prevResult``,
``capabilities``...); a wrong type or a contradiction is ``InvalidConfig`` naming the field.
"""

from __future__ import annotations

import ipaddress
from typing import Any, NamedTuple

from cni.protocol.spec import check_version
from cni.protocol.types import DNS, Result, Route, result_from_dict
from cnispec.errors import InvalidConfig, InvalidEnv
from cnispec.ip import IPAddress, IPNetwork
from cnispec.rules import id_problem, interface_name_problem, mtu_problem
from ipam.ranges import Range, RangeSet
from ipam.subnetfile import SubnetFile

DEFAULT_SUBNET_FILE = "/run/flannel/subnet.env"
DEFAULT_DATA_DIR = "/var/lib/cni/networks"
DEFAULT_BRIDGE = "cni0"
DEFAULT_LOCK_TIMEOUT = 60.0
# a day: longer than any runtime waits for a plugin, and within what a lock wait can take
MAX_LOCK_TIMEOUT = 86400.0
LOG_LEVELS = ("debug", "info", "warning", "error")


class IPAMConf(NamedTuple):
    data_dir: str
    range_sets: tuple[RangeSet, ...]
    routes: tuple[Route, ...]


class NetConf(NamedTuple):
    cni_version: str
    name: str
    bridge: str
    is_gateway: bool
    is_default_gateway: bool
    force_address: bool
    ip_masq: bool
    mtu: int | None
    hairpin_mode: bool
    promisc_mode: bool
    ipam: IPAMConf
    dns: DNS
    prev_result: Result | None
    valid_attachments: tuple[tuple[str, str], ...] | None
    lock_timeout: float


def is_flannel_shape(obj: dict[str, Any]) -> bool:
    return "subnetFile" in obj or "delegate" in obj


def shape_reason(obj: dict[str, Any]) -> str:
    """Which shape ``parse_netconf`` reads ``obj`` as, and why (for the log)."""
    if is_flannel_shape(obj):
        keys = " and ".join(k for k in ("subnetFile", "delegate") if k in obj)
        return f"flannel shape (the config has {keys}): bridge options from the subnet file"
    return "bridge shape (the config has neither subnetFile nor delegate): host-local ipam ranges"


def subnet_file_path(obj: dict[str, Any]) -> str | None:
    """Where the flannel shape reads its subnet file (None for the bridge shape)."""
    if not is_flannel_shape(obj):
        return None
    return _get(obj, "subnetFile", str, "") or DEFAULT_SUBNET_FILE


# ---- typed getters: every type error names its field ----------------------------------
_TYPE_NAMES = {bool: "boolean", str: "string", int: "integer", dict: "object", list: "array"}


def _get(obj: dict[str, Any], key: str, kind: type, default: Any, where: str = "") -> Any:
    v = obj.get(key)
    if v is None:
        return default
    ok = isinstance(v, kind) and not (kind is int and isinstance(v, bool))
    if kind is float:
        ok = isinstance(v, int | float) and not isinstance(v, bool)
    if not ok:
        field = f"{where}{key}"
        want = _TYPE_NAMES.get(kind, kind.__name__)
        raise InvalidConfig(
            f"invalid network configuration: {field}", f"expected {want}, got {v!r}"
        )
    return v


def _ip(value: Any, field: str) -> IPAddress:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise InvalidConfig(
            f"invalid network configuration: {field}", f"{value!r} is not an IP address"
        ) from None


def _net(value: Any, field: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise InvalidConfig(
            f"invalid network configuration: {field}", f"{value!r} is not a CIDR"
        ) from None


def _path_problem(path: str) -> str | None:
    """dataDir must be a plain absolute path: checked before anything touches the disk."""
    if not path.startswith("/"):
        return f"{path[:100]!r} is not an absolute path"
    if "\0" in path or len(path) > 4000:
        return "contains NUL or is too long"
    parts = path.split("/")
    if ".." in parts or "." in parts:
        return f"{path[:100]!r} has a '.' or '..' component"
    if any(len(p) > 255 for p in parts):
        return "a path component is longer than 255 bytes"
    return None


def _range(spec: dict[str, Any], field: str) -> Range:
    if not isinstance(spec, dict):
        raise InvalidConfig(f"invalid network configuration: {field}", "expected object")
    subnet_s = _get(spec, "subnet", str, None, f"{field}.")
    if subnet_s is None:
        raise InvalidConfig(f"invalid network configuration: {field}.subnet", "missing")
    try:
        subnet = ipaddress.ip_network(subnet_s, strict=True)
    except ValueError as e:
        raise InvalidConfig(f"invalid network configuration: {field}.subnet", str(e)) from None
    opt = {}
    for key in ("rangeStart", "rangeEnd", "gateway"):
        v = _get(spec, key, str, None, f"{field}.")
        opt[key] = _ip(v, f"{field}.{key}") if v else None
    return Range.canonicalize(subnet, opt["rangeStart"], opt["rangeEnd"], opt["gateway"])


def _routes(value: Any, field: str) -> list[Route]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidConfig(f"invalid network configuration: {field}", "expected array")
    out = []
    for i, r in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(r, dict) or "dst" not in r:
            raise InvalidConfig(f"invalid network configuration: {where}", "expected {dst, gw}")
        dst = _net(_get(r, "dst", str, None, f"{where}."), f"{where}.dst")
        gw_s = _get(r, "gw", str, None, f"{where}.")
        gw = _ip(gw_s, f"{where}.gw") if gw_s else None
        if gw is not None and gw.version != dst.version:
            raise InvalidConfig(
                f"invalid network configuration: {where}", "gw and dst differ in family"
            )
        out.append(Route(dst, gw))
    return out


def _ipam(ipam: dict[str, Any], ranges: list[list[Range]], extra_routes: list[Route]) -> IPAMConf:
    ipam_type = _get(ipam, "type", str, "host-local", "ipam.")
    if ipam_type != "host-local":
        raise InvalidConfig(
            "invalid network configuration: ipam.type",
            f"{ipam_type!r}: weft implements host-local IPAM only",
        )
    data_dir = _get(ipam, "dataDir", str, DEFAULT_DATA_DIR, "ipam.")
    problem = _path_problem(data_dir)
    if problem:
        raise InvalidConfig("invalid network configuration: ipam.dataDir", problem)
    sets = []
    for i, rs in enumerate(ranges):
        try:
            sets.append(RangeSet(tuple(rs)))
        except InvalidConfig as e:
            raise InvalidConfig(
                f"invalid network configuration: ipam.ranges[{i}]", str(e)
            ) from None
    for i, a in enumerate(sets):
        for b in sets[i + 1 :]:
            if any(x.overlaps(y) for x in a.ranges for y in b.ranges):
                raise InvalidConfig(
                    "invalid network configuration: ipam.ranges", "range sets overlap"
                )
    routes = _routes(ipam.get("routes"), "ipam.routes") + extra_routes
    return IPAMConf(data_dir, tuple(sets), tuple(routes))


def _host_local_ranges(ipam: dict[str, Any]) -> list[list[Range]]:
    raw = ipam.get("ranges")
    if raw is not None:
        if not isinstance(raw, list) or not all(isinstance(rs, list) and rs for rs in raw):
            raise InvalidConfig(
                "invalid network configuration: ipam.ranges", "expected [[{subnet}]]"
            )
        return [
            [_range(r, f"ipam.ranges[{i}][{j}]") for j, r in enumerate(rs)]
            for i, rs in enumerate(raw)
        ]
    if ipam.get("subnet") is not None:  # host-local's legacy single-range form
        return [[_range(ipam, "ipam")]]
    return []


def _from_subnet_file(sf: SubnetFile) -> tuple[list[list[Range]], list[Route]]:
    ranges: list[list[Range]] = []
    for sub in (sf.subnet, sf.ipv6_subnet):
        if sub is not None:
            ranges.append([Range.canonicalize(sub.network, None, None, None)])
    routes = [Route(n) for n in sf.networks]
    return ranges, routes


def _dns(value: Any) -> DNS:
    if value is None:
        return DNS()
    if not isinstance(value, dict):
        raise InvalidConfig("invalid network configuration: dns", "expected object")

    def strs(key: str) -> tuple[str, ...]:
        v = _get(value, key, list, [], "dns.")
        if not all(isinstance(x, str) for x in v):
            raise InvalidConfig(f"invalid network configuration: dns.{key}", "expected strings")
        return tuple(v)

    return DNS(
        strs("nameservers"), _get(value, "domain", str, "", "dns."), strs("search"), strs("options")
    )


def _valid_attachments(obj: dict[str, Any]) -> tuple[tuple[str, str], ...] | None:
    raw = obj.get("cni.dev/valid-attachments")
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidConfig(
            "invalid network configuration: cni.dev/valid-attachments", "expected array"
        )
    out = []
    for i, a in enumerate(raw):
        if not isinstance(a, dict):
            raise InvalidConfig(
                f"invalid network configuration: cni.dev/valid-attachments[{i}]", "expected object"
            )
        cid = _get(a, "containerID", str, "", f"cni.dev/valid-attachments[{i}].")
        ifname = _get(a, "ifname", str, "", f"cni.dev/valid-attachments[{i}].")
        out.append((cid, ifname))
    return tuple(out)


def parse_netconf(obj: dict[str, Any], subnet: SubnetFile | None) -> NetConf:
    """Build the NetConf. For the flannel shape ``subnet`` is the parsed subnet file, or None
    when it could not be read (DEL/GC still work then; ADD refuses earlier)."""
    version = check_version(obj.get("cniVersion"))
    name = _get(obj, "name", str, "")
    problem = id_problem(name)
    if problem:
        raise InvalidConfig("invalid network configuration: name", problem)
    ipam_obj = _get(obj, "ipam", dict, {})
    flannel = is_flannel_shape(obj)
    if flannel:
        opts: dict[str, Any] = {"isGateway": True}
        ranges: list[list[Range]] = []
        routes: list[Route] = []
        if subnet is not None:
            if subnet.mtu is not None:
                opts["mtu"] = subnet.mtu
            opts["ipMasq"] = not subnet.ipmasq if subnet.ipmasq is not None else True
            ranges, routes = _from_subnet_file(subnet)
        opts.update(_get(obj, "delegate", dict, {}))
        where = "delegate."
    else:
        opts = obj
        ranges = _host_local_ranges(ipam_obj)
        routes = []
        where = ""
    bridge = _get(opts, "bridge", str, DEFAULT_BRIDGE, where)
    problem = interface_name_problem(bridge)
    if problem:
        raise InvalidConfig(f"invalid network configuration: {where}bridge", problem)
    is_default_gw = _get(opts, "isDefaultGateway", bool, False, where)
    hairpin = _get(opts, "hairpinMode", bool, False, where)
    promisc = _get(opts, "promiscMode", bool, False, where)
    if hairpin and promisc:
        raise InvalidConfig(
            f"invalid network configuration: {where}hairpinMode",
            "cannot set hairpin mode and promiscuous mode at the same time",
        )
    mtu = _get(opts, "mtu", int, None, where)
    problem = mtu_problem(mtu) if mtu is not None else None
    if problem:
        raise InvalidConfig(f"invalid network configuration: {where}mtu", problem)
    ipam = _ipam(ipam_obj, ranges, routes)
    prev = obj.get("prevResult")
    # The dispatcher has set the log up from these already (it logs before any config is
    # parsed); a wrong one is still a config error.
    _get(obj, "logFile", str, None)
    log_level = _get(obj, "logLevel", str, "info")
    if log_level not in LOG_LEVELS:
        raise InvalidConfig(
            "invalid network configuration: logLevel", f"{log_level!r} not in {LOG_LEVELS}"
        )
    lock_timeout = _get(obj, "lockTimeout", float, DEFAULT_LOCK_TIMEOUT)
    if not 0 < lock_timeout <= MAX_LOCK_TIMEOUT:  # compared before float(): ints may be huge
        raise InvalidConfig(
            "invalid network configuration: lockTimeout",
            f"must be more than 0 and at most {MAX_LOCK_TIMEOUT:g} seconds",
        )
    return NetConf(
        cni_version=version,
        name=name,
        bridge=bridge,
        # isDefaultGateway implies isGateway, as in the reference bridge plugin
        is_gateway=_get(opts, "isGateway", bool, False, where) or is_default_gw,
        is_default_gateway=is_default_gw,
        force_address=_get(opts, "forceAddress", bool, False, where),
        ip_masq=_get(opts, "ipMasq", bool, False, where),
        mtu=mtu,
        hairpin_mode=hairpin,
        promisc_mode=promisc,
        ipam=ipam,
        dns=_dns(opts.get("dns") if flannel else obj.get("dns")),
        prev_result=result_from_dict(prev) if prev is not None else None,
        valid_attachments=_valid_attachments(obj),
        lock_timeout=float(lock_timeout),
    )


# ---- addresses the runtime asks for -----------------------------------------------------------
def requested_ips(obj: dict[str, Any], cni_args: dict[str, str]) -> tuple[IPAddress, ...]:
    """The addresses an ADD is asked for, as host-local reads them: ``IP=<addr>`` in
    CNI_ARGS first, then the ``ips`` capability (``runtimeConfig.ips``: addresses, or
    addresses with a prefix); each once. Read for ADD only: DEL and GC never depend on
    them. A value that is not an address is refused (CNI_ARGS: code 4, config: 7)."""
    out: list[IPAddress] = []
    env_ip = cni_args.get("IP")
    if env_ip is not None:
        try:
            if "%" in env_ip:  # a zone: never an address a pod is given
                raise ValueError
            out.append(ipaddress.ip_address(env_ip))
        except ValueError:
            raise InvalidEnv(
                "invalid CNI_ARGS", f"IP={env_ip[:100]!r}: cannot understand ip"
            ) from None
    runtime = obj.get("runtimeConfig")
    raw = runtime.get("ips") if isinstance(runtime, dict) else None
    if raw is not None:
        if not isinstance(raw, list):
            raise InvalidConfig(
                "invalid network configuration: runtimeConfig.ips", "expected array"
            )
        for i, value in enumerate(raw):
            try:
                if not isinstance(value, str) or "%" in value:
                    raise ValueError
                out.append(ipaddress.ip_interface(value).ip)
            except ValueError:
                raise InvalidConfig(
                    f"invalid network configuration: runtimeConfig.ips[{i}]",
                    f"{str(value)[:100]!r}: cannot understand ip",
                ) from None
    return tuple(dict.fromkeys(out))


def assign_requested(
    range_sets: tuple[RangeSet, ...], requested: tuple[IPAddress, ...]
) -> tuple[tuple[IPAddress | None, ...], tuple[IPAddress, ...]]:
    """Each range set's requested address (the first one it holds, None for none) and the
    requested addresses no range set takes, which host-local refuses ("failed to allocate
    all requested IPs")."""
    left = list(requested)
    per_set: list[IPAddress | None] = []
    for rs in range_sets:
        mine = next((ip for ip in left if rs.contains(ip) is not None), None)
        if mine is not None:
            left.remove(mine)
        per_set.append(mine)
    return tuple(per_set), tuple(left)


# ---- config mistakes: warnings, never errors -----------------------------------------------
# Keys any plugin of a chain may receive from the runtime or libcni, and k3s's own.
_RUNTIME_KEYS = frozenset(
    {"cniVersion", "name", "type", "args", "runtimeConfig", "capabilities", "prevResult"}
)
_WEFT_KEYS = frozenset({"logFile", "logLevel", "lockTimeout", "ipam", "dns"})
_BRIDGE_KEYS = frozenset(
    {
        "bridge",
        "isGateway",
        "isDefaultGateway",
        "forceAddress",
        "ipMasq",
        "mtu",
        "hairpinMode",
        "promiscMode",
    }
)
# the reference bridge's options weft does not implement: accepted, ignored, said so
_BRIDGE_UNSUPPORTED = frozenset(
    {
        "vlan",
        "vlanTrunk",
        "preserveDefaultVlan",
        "macspoofchk",
        "enabledad",
        "disableContainerInterface",
        "portIsolation",
        "ipMasqBackend",
    }
)
_FLANNEL_KEYS = frozenset({"subnetFile", "dataDir", "delegate"})
_DELEGATE_KEYS = _BRIDGE_KEYS | {"type", "name", "cniVersion", "dns"}
_IPAM_KEYS = frozenset(
    {"type", "dataDir", "ranges", "subnet", "rangeStart", "rangeEnd", "gateway", "routes"}
)
_IPAM_FLANNEL_KEYS = frozenset({"type", "dataDir", "routes"})
_RANGE_KEYS = frozenset({"subnet", "rangeStart", "rangeEnd", "gateway"})
_DNS_KEYS = frozenset({"nameservers", "domain", "search", "options"})
_MAX_TYPO_DISTANCE = 2


def edit_distance(a: str, b: str, limit: int = _MAX_TYPO_DISTANCE) -> int:
    """Levenshtein distance, case-insensitive, capped at ``limit + 1`` (cheap: no difflib)."""
    a, b = a.lower(), b.lower()
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        if min(cur) > limit:
            return limit + 1
        prev = cur
    return min(prev[-1], limit + 1)


def probable_key(key: str, known: frozenset[str] | set[str]) -> str | None:
    """The known key ``key`` was probably meant to be, or None."""
    best: tuple[int, str] | None = None
    for k in known:
        d = edit_distance(key, k)
        if d <= _MAX_TYPO_DISTANCE and (best is None or (d, k) < best):
            best = (d, k)
    return best[1] if best else None


def _unknown(section: dict[str, Any], known: frozenset[str], where: str) -> list[str]:
    out = []
    for key in sorted(section):
        if key in known or key.startswith("cni.dev/"):
            continue
        guess = probable_key(key, known)
        hint = f" (did you mean {guess!r}?)" if guess else ""
        out.append(f"config: unknown key '{where}{key}' ignored{hint}")
    return out


def config_warnings(obj: dict[str, Any]) -> list[str]:
    """Unknown keys in weft's own sections (top level, delegate, ipam, ipam.ranges, dns),
    each with the key probably meant; keys the runtime, libcni or k3s add never warn."""
    flannel = is_flannel_shape(obj)
    out: list[str] = []
    top_known = _RUNTIME_KEYS | _WEFT_KEYS | _FLANNEL_KEYS | _BRIDGE_KEYS | _BRIDGE_UNSUPPORTED
    out += _unknown(obj, frozenset(top_known), "")
    if flannel:
        for key in sorted(_BRIDGE_KEYS & obj.keys()):
            out.append(
                f"config: {key!r} at the top level is ignored in the flannel shape; "
                "put it under 'delegate'"
            )
    else:
        out += [
            f"config: {k!r} is a flannel-shape key, ignored in the bridge shape"
            for k in sorted({"dataDir"} & obj.keys())
        ]
    for key in sorted(_BRIDGE_UNSUPPORTED & obj.keys()):
        out.append(f"config: {key!r} (a reference bridge option) is not supported by weft, ignored")
    delegate = obj.get("delegate")
    if isinstance(delegate, dict):
        out += _unknown(
            delegate, frozenset(_DELEGATE_KEYS | _BRIDGE_UNSUPPORTED | {"ipam"}), "delegate."
        )
        if "ipam" in delegate:
            out.append(
                "config: 'delegate.ipam' is ignored: the ranges come from the subnet "
                "file; set dataDir and routes in the top-level 'ipam'"
            )
    ipam = obj.get("ipam")
    if isinstance(ipam, dict):
        out += _unknown(ipam, _IPAM_KEYS, "ipam.")
        if flannel:
            for key in sorted((_IPAM_KEYS - _IPAM_FLANNEL_KEYS) & ipam.keys()):
                out.append(
                    f"config: 'ipam.{key}' is ignored in the flannel shape: the ranges "
                    "come from the subnet file"
                )
        ranges = ipam.get("ranges")
        if isinstance(ranges, list):
            for i, rs in enumerate(ranges):
                for j, r in enumerate(rs if isinstance(rs, list) else []):
                    if isinstance(r, dict):
                        out += _unknown(r, _RANGE_KEYS, f"ipam.ranges[{i}][{j}].")
    for where, dns in (
        ("dns.", obj.get("dns")),
        ("delegate.dns.", (delegate or {}).get("dns") if isinstance(delegate, dict) else None),
    ):
        if isinstance(dns, dict):
            out += _unknown(dns, _DNS_KEYS, where)
    return out
