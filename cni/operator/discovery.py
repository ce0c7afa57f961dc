"""Config discovery for the operator CLI: the conflist a runtime would hand weft (libcni's
file order over k3s's and the standard directories, or one named file), weft's plugin out
of it, and its subnet file read as ADD reads it (boundary: reads files)."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, NamedTuple

from cni.plugin.config import NetConf, parse_netconf, subnet_file_path
from cnispec.errors import CNIError
from ipam.subnetfile import SubnetFile

CONF_DIRS_ENV = "WEFT_CONF_DIRS"
DEFAULT_CONF_DIRS = ("/var/lib/rancher/k3s/agent/etc/cni/net.d", "/etc/cni/net.d")
CONF_EXTENSIONS = (".conf", ".conflist", ".json")  # libcni's ConfFiles
PLUGIN_TYPE = "weft"


class OperatorError(Exception):
    """The node or its config cannot be read: exit 1 with this message."""


def conf_dirs(getenv: Any = os.environ.get) -> list[str]:
    raw = getenv(CONF_DIRS_ENV)
    return [d for d in raw.split(":") if d] if raw else list(DEFAULT_CONF_DIRS)


def plugin_conf(doc: dict[str, Any]) -> dict[str, Any] | None:
    """weft's own plugin config out of a conflist or a single .conf, with the list's
    ``name`` and ``cniVersion`` injected as libcni does; None when weft is not in it."""
    plugins = doc.get("plugins")
    if isinstance(plugins, list):
        for p in plugins:
            if isinstance(p, dict) and p.get("type") == PLUGIN_TYPE:
                out = dict(p)
                out["name"] = doc.get("name")
                out["cniVersion"] = doc.get("cniVersion")
                return out
        return None
    return dict(doc) if doc.get("type") == PLUGIN_TYPE else None


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise OperatorError(f"cannot read {path}: {e}") from None
    if not isinstance(doc, dict):
        raise OperatorError(f"{path}: not a JSON object")
    return doc


def find_conf(explicit: str | None, dirs: list[str]) -> tuple[str, dict[str, Any]]:
    if explicit:
        conf = plugin_conf(_read_json(explicit))
        if conf is None:
            raise OperatorError(f"{explicit} has no plugin of type {PLUGIN_TYPE!r}")
        return explicit, conf
    for d in dirs:
        try:
            names = sorted(n for n in os.listdir(d) if n.endswith(CONF_EXTENSIONS))
        except OSError:
            continue
        for n in names:
            path = os.path.join(d, n)
            with contextlib.suppress(OperatorError):
                conf = plugin_conf(_read_json(path))
                if conf is not None:
                    return path, conf
    raise OperatorError(
        f"no CNI config with a {PLUGIN_TYPE!r} plugin in {', '.join(dirs)}; "
        "name one with --conf FILE"
    )


class Loaded(NamedTuple):
    path: str
    obj: dict[str, Any]
    conf: NetConf
    subnet_file: str | None
    subnet: SubnetFile | None
    subnet_error: str


def load(explicit: str | None) -> Loaded:
    """The config a runtime would give weft (``explicit``, else discovered), parsed, with
    its subnet file read as ADD reads it."""
    from cni.plugin.network import read_subnet_file  # the exec path's modules: only now

    path, obj = find_conf(explicit, conf_dirs())
    sf_path = subnet_file_path(obj)
    subnet: SubnetFile | None = None
    error = ""
    if sf_path:
        try:  # as ADD reads it, so status says what ADD would answer
            subnet = read_subnet_file(sf_path, required=True)
        except CNIError as e:
            error = str(e)
    try:
        conf = parse_netconf(obj, subnet)
    except CNIError as e:
        raise OperatorError(f"{path}: {e}") from None
    return Loaded(path, obj, conf, sf_path, subnet, error)
