"""Rules for names and sizes the CNI spec and the kernel impose. Pure.

Each returns ``None`` when the value is fine and otherwise what is wrong with it, so each
caller raises the error its context calls for (a bad CNI_CONTAINERID is code 4, a bad
network name in the config code 7) with the same explanation.
"""

from __future__ import annotations

ID_PATTERN = "^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$"
MAX_ID_LEN = 255  # an id names files in the store: one path component (NAME_MAX)
MAX_IFNAME_LEN = 15  # IFNAMSIZ - 1
MTU_MIN, MTU_MAX = 68, 65535  # IPv4's minimum; the largest the kernel's u16 field holds

_ID_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_ID_REST = _ID_FIRST | frozenset("_.-")


def is_valid_id(s: object) -> bool:
    """libcni's ValidateContainerID (also host-local's rule for network names); ``s`` may
    come from disk and not even be a string."""
    return (
        isinstance(s, str)
        and 0 < len(s) <= MAX_ID_LEN
        and s[0] in _ID_FIRST
        and all(c in _ID_REST for c in s)
    )


def id_problem(s: object) -> str | None:
    if is_valid_id(s):
        return None
    shown = repr(s[:80]) if isinstance(s, str) else repr(s)
    return f"{shown} must match {ID_PATTERN} (at most {MAX_ID_LEN} characters)"


def interface_name_problem(name: object) -> str | None:
    """libcni's ValidateInterfaceName."""
    if not isinstance(name, str):
        return f"interface name must be a string, got {name!r}"
    if not name:
        return "interface name is empty"
    if len(name) > MAX_IFNAME_LEN:
        return f"interface name is too long ({len(name)} > {MAX_IFNAME_LEN})"
    if name in (".", ".."):
        return "interface name is . or .."
    for c in name:
        if c in "/:\0" or c.isspace():
            return f"interface name contains an invalid character {c!r}"
    return None


def mtu_problem(mtu: object) -> str | None:
    """``mtu`` may be what a file or a config said: anything but an int in range is wrong."""
    if isinstance(mtu, int) and not isinstance(mtu, bool) and MTU_MIN <= mtu <= MTU_MAX:
        return None
    return f"MTU must be an integer in {MTU_MIN}..{MTU_MAX}, got {mtu!r}"
