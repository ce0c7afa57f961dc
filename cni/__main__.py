"""``weft`` / ``python -m cni``: the process boundary (real env, stdio, signals).

Kept to the imports that every command needs; ``cni.commands`` (and with it pyroute2)
is imported only for the commands that touch the network, so VERSION stays cheap.
"""

from __future__ import annotations

import os
import sys

from cni.dispatch import ABOUT, PLUGIN_VERSION, Dispatcher, Handler
from cni.spec import SUPPORTED_VERSIONS

FAULT_ENV = "WEFT_FAULT_AT"  # test seam: SIGKILL ourselves at a named ADD step


def _handler(command: str) -> Handler:
    from cni.commands import HANDLERS

    return HANDLERS[command]


def _checkpoint(step: str) -> None:
    if os.environ.get(FAULT_ENV) == step:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def _human(argv: list[str]) -> int | None:
    """A person running the binary (no CNI_COMMAND): a short message, exit 0."""
    if os.environ.get("CNI_COMMAND"):
        return None
    versions = ", ".join(SUPPORTED_VERSIONS)
    if "--version" in argv or "-v" in argv:
        print(f"weft {PLUGIN_VERSION} (CNI spec versions {versions})")
        return 0
    text = (
        f"{ABOUT}\nweft {PLUGIN_VERSION}; CNI protocol versions supported: {versions}\n"
        "It is run by a container runtime (containerd, cri-o, cnitool) with CNI_COMMAND and the\n"
        "other CNI_* variables set and the network config on stdin; see README.md.\n"
    )
    if "--help" in argv or "-h" in argv:
        sys.stdout.write(text)
    else:  # as the reference plugins do (skel's "about"): stderr, exit 0
        sys.stderr.write(text)
    return 0


def main() -> int:
    human = _human(sys.argv[1:])
    if human is not None:
        return human
    return Dispatcher(
        os.environ.get, sys.stdin.buffer, sys.stdout, sys.stderr, _handler, _checkpoint
    ).run()


if __name__ == "__main__":
    sys.exit(main())
