"""``weft`` / ``python -m cni``: the process boundary (real env, stdio, signals).

Kept to the imports that every command needs; ``cni.commands`` (and with it pyroute2)
is imported only for the commands that touch the network, so VERSION stays cheap.
"""

from __future__ import annotations

import os
import sys

from cni.dispatch import Dispatcher, Handler

FAULT_ENV = "WEFT_FAULT_AT"  # test seam: SIGKILL ourselves at a named ADD step
MODULES_ENV = "WEFT_MODULES_OUT"  # test seam: write the names of the loaded modules here


def _handler(command: str) -> Handler:
    from cni.commands import HANDLERS

    return HANDLERS[command]


def _checkpoint(step: str) -> None:
    if os.environ.get(FAULT_ENV) == step:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def main() -> int:
    if not os.environ.get("CNI_COMMAND"):
        from cni.person import person  # a person at a shell: never on the CNI exec path

        return person(sys.argv[1:])
    code = Dispatcher(
        os.environ.get, sys.stdin.buffer, sys.stdout, sys.stderr, _handler, _checkpoint
    ).run()
    modules_out = os.environ.get(MODULES_ENV)
    if modules_out:  # test seam: which modules this exec loaded (pydantic must not be one)
        with open(modules_out, "w", encoding="utf-8") as f:
            f.write("\n".join(sorted(sys.modules)) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
