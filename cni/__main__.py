"""``weft`` / ``python -m cni``: the process boundary (real env, stdio, signals).

A CNI request first goes to the ``weft serve`` helper when one is running (``cni.helper.client``,
before any other import); otherwise it runs here. ``cni.plugin.handlers`` (and with it pyroute2)
is imported only for the commands that touch the network, so VERSION stays cheap.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not typing's: the helper's client must not pay for importing typing
if TYPE_CHECKING:
    from typing import BinaryIO

    from cni.protocol.dispatch import Handler

FAULT_ENV = "WEFT_FAULT_AT"  # test seam: SIGKILL ourselves at a named ADD step
MODULES_ENV = "WEFT_MODULES_OUT"  # test seam: write the names of the loaded modules here


def _handler(command: str) -> Handler:
    from cni.plugin.handlers import HANDLERS

    return HANDLERS[command]


def _checkpoint(step: str) -> None:
    if os.environ.get(FAULT_ENV) == step:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def run(stdin: BinaryIO) -> int:
    """One CNI request on this process's environment and stdio: the same code in-process
    and in a ``weft serve`` child."""
    from cni.protocol.dispatch import Dispatcher

    code = Dispatcher(os.environ.get, stdin, sys.stdout, sys.stderr, _handler, _checkpoint).run()
    modules_out = os.environ.get(MODULES_ENV)
    if modules_out:  # test seam: which modules this exec loaded (pydantic must not be one)
        with open(modules_out, "w", encoding="utf-8") as f:
            f.write("\n".join(sorted(sys.modules)) + "\n")
    return code


def main() -> int:
    if not os.environ.get("CNI_COMMAND"):
        from cni.operator.cli import person  # a person at a shell: never on the CNI exec path

        return person(sys.argv[1:])
    from cni.helper.client import try_helper

    outcome = try_helper()
    if outcome.status is not None:
        return outcome.status
    if outcome.stdin is None:
        return run(sys.stdin.buffer)
    import io

    return run(io.BytesIO(outcome.stdin))


if __name__ == "__main__":
    sys.exit(main())
