"""A tiny TCP peer run inside a sandbox netns with ``python3 -I agent.py ...`` (stdlib only).

    agent.py serve PORT            answer every connection until killed; prints "ready"
    agent.py whoami HOST PORT [T]  prints the source address the server saw for us
                                   (giving up after T seconds, default 10)
    agent.py fetch HOST PORT N     receives N bytes, prints "<count> <sha256>"

A server answers ``whoami`` with the peer address of the connection (what the receiver
observes, after any NAT on the way) and ``bytes N`` with N bytes of a fixed pattern.
"""

from __future__ import annotations

import hashlib
import socket
import socketserver
import sys

TIMEOUT = 10.0


def pattern(n: int) -> bytes:
    block = bytes(range(256)) * 256  # 64 KiB
    return (block * (n // len(block) + 1))[:n]


class Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(TIMEOUT)
        words = self.rfile.readline(100).decode().split()
        if words == ["whoami"]:
            self.wfile.write(self.client_address[0].encode())
        elif len(words) == 2 and words[0] == "bytes" and words[1].isdigit():
            self.wfile.write(pattern(int(words[1])))


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def ask(host: str, port: int, request: str, timeout: float = TIMEOUT) -> bytes:
    with socket.create_connection((host, port), timeout=timeout) as c:
        c.settimeout(timeout)
        c.sendall(request.encode() + b"\n")
        chunks = []
        while chunk := c.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"] and len(argv) == 2:
        with Server(("0.0.0.0", int(argv[1])), Handler) as srv:
            print("ready", flush=True)
            srv.serve_forever()
    elif argv[:1] == ["whoami"] and len(argv) in (3, 4):
        timeout = float(argv[3]) if len(argv) == 4 else TIMEOUT
        print(ask(argv[1], int(argv[2]), "whoami", timeout).decode())
    elif argv[:1] == ["fetch"] and len(argv) == 4:
        data = ask(argv[1], int(argv[2]), f"bytes {int(argv[3])}")
        print(len(data), hashlib.sha256(data).hexdigest())
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
