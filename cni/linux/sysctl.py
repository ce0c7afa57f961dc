"""Sysctls under /proc/sys. Boundary module.

``/proc/sys/net`` resolves against the network namespace of the *calling thread* when the
file is opened, so a pod's sysctls are written while inside its netns (``cni.linux.netns``).
"""

from __future__ import annotations

import os

from cnispec.errors import os_errors

ROOT = "/proc/sys/"


def read(key: str) -> str:
    return read_path(ROOT + key, "reading sysctl")


def read_path(path: str, what: str) -> str:
    """A /proc value, with one open and one read: Python's text ``open`` costs several more
    syscalls."""
    with os_errors(what, path):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, 4096)
        finally:
            os.close(fd)
    return data.decode("ascii").strip()


def write(key: str, value: str) -> None:
    """E.g. a read-only /proc/sys is code 5, a busy one 11 (``cnispec.errors.os_error``)."""
    with os_errors("writing sysctl", ROOT + key):
        fd = os.open(ROOT + key, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)


def ensure(key: str, value: str) -> None:
    """Write only when different: a node whose /proc/sys is read-only but already set
    (a container) must not fail, as the reference's ``echo1`` does not."""
    if read(key) != value:
        write(key, value)
