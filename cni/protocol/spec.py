"""CNI spec plumbing (SPEC.md 1.1.0): versions, commands and the CNI_* environment.

Pure: takes a ``getenv`` callable, imports nothing with side effects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from cnispec.errors import IncompatibleVersion, InvalidEnv
from cnispec.rules import id_problem, interface_name_problem

SUPPORTED_VERSIONS: tuple[str, ...] = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT_VERSION = "1.1.0"
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")

# (command, minimum config version) as libcni/skel enforce them.
MIN_VERSION = {"CHECK": "0.4.0", "STATUS": "1.1.0", "GC": "1.1.0"}


def version_tuple(v: str) -> tuple[int, int, int]:
    parts = v.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise IncompatibleVersion("invalid version", f"{v!r} is not of the form X.Y.Z")
    return int(parts[0]), int(parts[1]), int(parts[2])


def check_version(v: object) -> str:
    """The config's cniVersion when we support it. Missing is code 1 like any version we do
    not support: libcni reads a missing cniVersion as 0.1.0."""
    if v is None:
        raise IncompatibleVersion(
            "cniVersion is missing",
            f"the config must set cniVersion to one of {list(SUPPORTED_VERSIONS)}",
        )
    if not isinstance(v, str):
        raise IncompatibleVersion("cniVersion must be a string", repr(v))
    if v not in SUPPORTED_VERSIONS:
        raise IncompatibleVersion(
            "incompatible CNI versions",
            f"config is {v!r}, plugin supports {list(SUPPORTED_VERSIONS)}",
        )
    return v


def parse_cni_args(raw: str) -> dict[str, str]:
    """``IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;...`` → dict (invalid pair → code 4)."""
    out: dict[str, str] = {}
    if not raw:
        return out
    for pair in raw.split(";"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidEnv("invalid CNI_ARGS", f"pair {pair!r} is not KEY=VALUE")
        out[key] = value
    return out


def _k8s_name(value: str) -> str:
    """A Kubernetes object name (DNS-1123 subdomain: lower-case alphanumerics, '-', '.',
    at most 253) or "" for anything else."""
    ok = 0 < len(value) <= 253 and all(c in _K8S_NAME_CHARS for c in value)
    return value if ok else ""


_K8S_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")


class PodRef(NamedTuple):
    """The Kubernetes pod a runtime names in CNI_ARGS; "" when it names none."""

    namespace: str = ""
    name: str = ""


def pod_ref(args: dict[str, str]) -> PodRef:
    """``K8S_POD_NAMESPACE`` / ``K8S_POD_NAME`` (containerd, cri-o) from parsed CNI_ARGS.

    Only labels for operators, so a value that is not a Kubernetes name is dropped rather
    than refused: it must not make an ADD fail, nor end up unescaped in a record."""
    return PodRef(
        _k8s_name(args.get("K8S_POD_NAMESPACE", "")), _k8s_name(args.get("K8S_POD_NAME", ""))
    )


class Env(NamedTuple):
    command: str
    container_id: str
    netns: str
    ifname: str
    args: dict[str, str]
    path: str


def read_env(getenv: Callable[[str], str | None]) -> Env:
    """Validate the CNI_* variables for the command (skel's per-command requirements)."""
    command = getenv("CNI_COMMAND") or ""
    if not command:
        raise InvalidEnv("required env variables [CNI_COMMAND] missing")
    if command not in COMMANDS:
        raise InvalidEnv("unknown CNI_COMMAND", command)
    cid = getenv("CNI_CONTAINERID") or ""
    netns = getenv("CNI_NETNS") or ""
    ifname = getenv("CNI_IFNAME") or ""
    path = getenv("CNI_PATH") or ""
    if command in ("ADD", "DEL", "CHECK"):
        required = {"CNI_CONTAINERID": cid, "CNI_IFNAME": ifname, "CNI_PATH": path}
        if command != "DEL":
            required["CNI_NETNS"] = netns
        missing = [k for k, v in required.items() if not v]
        if missing:
            raise InvalidEnv(f"required env variables [{', '.join(missing)}] missing")
        problem = id_problem(cid)
        if problem:
            raise InvalidEnv("invalid characters in containerID", problem)
        problem = interface_name_problem(ifname)
        if problem:
            raise InvalidEnv("invalid CNI_IFNAME", f"{ifname!r}: {problem}")
    args = parse_cni_args(getenv("CNI_ARGS") or "")
    return Env(command, cid, netns, ifname, args, path)
