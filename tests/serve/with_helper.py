"""Run a test tier with every plugin exec going through a ``weft serve`` helper.

    python3 tests/serve/with_helper.py --plugin dist/weft/weft -- pytest -q tests/kernel

Starts ``<plugin> serve --socket <tmp>/run/weft.sock``, writes a wrapper that records its
pid and execs the plugin in place (same pid) with ``WEFT_SOCKET`` pointing there (the tiers
build each plugin's environment from scratch, so the variable has to travel inside the
executable they are given), exports it as ``WEFT_PLUGIN`` and substitutes it for
``@PLUGIN@`` in the command. Afterwards it stops the helper with SIGTERM and fails unless:
the command passed; the helper was alive to the end and exited 0, with no child left and no
more open fds than at the start; no exec fell back to the in-process path
(``WEFT_FALLBACK_LOG``, which fails the exec when it cannot be written); and the helper
served every CNI exec of the run, matched by pid (its log names each request's client pid),
and nothing else. ``--allow-unserved`` is for tiers that kill plugins from outside: an exec
killed before it reached the helper is then listed, not failed.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path


def wait_listening(path: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"with_helper: the helper exited early ({proc.returncode})")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(str(path))
            return
        except OSError:
            time.sleep(0.05)
        finally:
            s.close()
    raise SystemExit(f"with_helper: nothing listens on {path} after {timeout} s")


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


SPARE = "weft-spare"  # cni.helper.server.SPARE_NAME: the child waiting for the next request


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def requests(pid: int) -> list[int]:
    """The helper's children but its spare: requests, and zombies not reaped yet."""
    return [c for c in children(pid) if comm(c) != SPARE]


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def footprint(pid: int) -> tuple[int, int]:
    """(open fds, VmRSS KiB of the helper and its spare) once it has no request left (all
    reaped) and its next spare is forked (its pair and report pipe are the helper's fds)."""
    end = time.monotonic() + 60
    while requests(pid) and time.monotonic() < end:
        time.sleep(0.05)
    end = time.monotonic() + 5
    while not [c for c in children(pid) if comm(c) == SPARE] and time.monotonic() < end:
        time.sleep(0.05)
    rss = sum(rss_kib(p) for p in [pid, *children(pid)])
    return len(os.listdir(f"/proc/{pid}/fd")), rss


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plugin", required=True, help="the weft executable (client and helper)")
    ap.add_argument("--allow-unserved", action="store_true",
                    help="execs the helper never saw (killed before) are listed, not failed")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    plugin = str(Path(args.plugin).resolve())
    tmp = Path(tempfile.mkdtemp(prefix="weft-helper-"))
    sock = tmp / "run" / "weft.sock"
    log = tmp / "serve.log"
    execs = tmp / "execs"
    fallbacks = tmp / "fallbacks"
    wrapper = tmp / "weft"
    wrapper.write_text(
        "#!/bin/sh\n"
        # the pid only: CNI_COMMAND may hold anything (the fuzz tiers send newlines)
        f'[ -n "$CNI_COMMAND" ] && echo "$$" >>{shlex.quote(str(execs))}\n'
        f"WEFT_FALLBACK_LOG={shlex.quote(str(fallbacks))} "
        f"WEFT_SOCKET={shlex.quote(str(sock))} exec {shlex.quote(plugin)} \"$@\"\n"
    )
    wrapper.chmod(0o755)
    with open(log, "wb") as logf:
        helper = subprocess.Popen(
            [plugin, "serve", "--socket", str(sock)], stdin=subprocess.DEVNULL, stderr=logf
        )
    try:
        wait_listening(sock, helper)
        # the baseline once the probe connection is over (accepted, refused, reaped, logged)
        end = time.monotonic() + 30
        while time.monotonic() < end and not re.search(
            r"refused handshake|closed before a request", log.read_text(errors="replace")
        ):
            time.sleep(0.02)
        fds0, rss0 = footprint(helper.pid)
        fds1, rss1, left = fds0, rss0, 0
        env = dict(os.environ, WEFT_PLUGIN=str(wrapper))
        cmd = [c.replace("@PLUGIN@", str(wrapper)) for c in command]
        print(f"with_helper: helper pid {helper.pid} on {sock}; running {shlex.join(cmd)}",
              flush=True)
        rc = subprocess.call(cmd, env=env)
        alive = helper.poll() is None
        if alive:
            fds1, rss1 = footprint(helper.pid)
            left = len(requests(helper.pid))
    finally:
        if helper.poll() is None:
            helper.send_signal(signal.SIGTERM)
        try:
            helper_rc = helper.wait(timeout=120)
        except subprocess.TimeoutExpired:
            helper.kill()
            helper_rc = helper.wait()
    text = log.read_text(errors="replace")
    served = [int(p) for p in re.findall(r"\]: request command=\S* container=\S* "
                                         r"ifname=\S* pid=(\d+) ", text)]
    exec_lines = execs.read_text().splitlines() if execs.exists() else []
    exec_pids = Counter(int(line) for line in exec_lines)
    fell_back = fallbacks.read_text().splitlines() if fallbacks.exists() else []
    # by pid, as multisets: a pid the kernel reused within the run counts once per exec
    unserved = sorted((exec_pids - Counter(served)).elements())
    strangers = sorted((Counter(served) - exec_pids).elements())
    print(f"with_helper: {len(exec_lines)} CNI execs through the wrapper, {len(served)} served "
          f"by the helper, {len(fell_back)} fell back, {len(unserved)} never reached it "
          f"(log: {log})", flush=True)
    print(f"with_helper: helper fds {fds0} -> {fds1}, RSS {rss0} -> {rss1} KiB, "
          f"{left} children left", flush=True)
    problems = []
    if fds1 > fds0:
        problems.append(f"the helper's open fds went from {fds0} to {fds1}")
    if left:
        problems.append(f"{left} children (requests or zombies) left after the run")
    if rc != 0:
        problems.append(f"the command failed ({rc})")
    if not alive:
        problems.append(f"the helper died during the run ({helper_rc})")
    elif helper_rc != 0:
        problems.append(f"the helper exited {helper_rc} on SIGTERM")
    if not served:
        problems.append("the helper served no request")
    if strangers:
        problems.append(f"the helper served {len(strangers)} requests no exec of the run "
                        f"made: pids {strangers[:5]}")
    if unserved:
        if args.allow_unserved:
            print(f"with_helper: killed before reaching the helper: pids {unserved}",
                  flush=True)
        else:
            problems.append(f"{len(unserved)} CNI execs never reached the helper: pids "
                            f"{unserved[:10]}")
    if fell_back:
        problems.append(f"{len(fell_back)} execs fell back to the in-process path: "
                        f"{fell_back[:5]}")
    for p in problems:
        print(f"with_helper: FAIL: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
