"""``weft`` / ``python -m cni``: the process boundary (real env, stdio, signals).

A CNI request first goes to the ``weft serve`` helper when one is running (``cni.handoff``,
before any other import); otherwise it runs here. ``cni.commands`` (and with it pyroute2)
is imported only for the commands that touch the network, so VERSION stays cheap.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not typing's: the helper's client must not pay for importing typing
if TYPE_CHECKING:
    from typing import BinaryIO

    from cni.dispatch import Handler

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
    from cni.dispatch import ABOUT, PLUGIN_VERSION
    from cni.spec import SUPPORTED_VERSIONS

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


def run(stdin: BinaryIO) -> int:
    """One CNI request on this process's environment and stdio: the same code in-process
    and in a ``weft serve`` child."""
    from cni.dispatch import Dispatcher

    return Dispatcher(os.environ.get, stdin, sys.stdout, sys.stderr, _handler, _checkpoint).run()


def main() -> int:
    argv = sys.argv[1:]
    if argv[:1] == ["serve"]:
        from cni.serve import main as serve

        return serve(argv[1:])
    stdin = None
    if os.environ.get("CNI_COMMAND"):
        from cni.handoff import try_helper

        outcome = try_helper()
        if outcome.status is not None:
            return outcome.status
        stdin = outcome.stdin
    human = _human(argv)
    if human is not None:
        return human
    import io

    return run(sys.stdin.buffer if stdin is None else io.BytesIO(stdin))


if __name__ == "__main__":
    sys.exit(main())
