"""The CNI entry point as a testable object (bring your own I/O, like cni's ``skel``).

``Dispatcher`` takes getenv/stdin/stdout/stderr and a table of handlers; it validates the
environment and the config version, runs the handler, prints its result JSON, and turns
every failure into CNI error JSON on stdout with a non-zero exit. Only exceptions that
are not ``CNIError`` become code 999; a ``CNIError`` is never re-wrapped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO, NamedTuple, TextIO

from cni.protocol import spec
from cni.protocol.jsondecode import decode_json, decode_object, read_bounded
from cni.protocol.log import Log, pod_context
from cnispec.errors import CNIError, DecodeFailure, IncompatibleVersion, os_errors


class Request(NamedTuple):
    env: spec.Env
    conf: dict[str, Any]
    log: Log
    checkpoint: Callable[[str], None] = lambda step: None


Handler = Callable[[Request], "dict[str, Any] | None"]


def _config_version(obj: dict[str, Any] | None) -> str:
    """The version to answer in: the config's when we support it, else ours."""
    v = obj.get("cniVersion") if obj else None
    return v if isinstance(v, str) and v in spec.SUPPORTED_VERSIONS else spec.CURRENT_VERSION


class Dispatcher:
    def __init__(
        self,
        getenv: Callable[[str], str | None],
        stdin: BinaryIO,
        stdout: TextIO,
        stderr: TextIO,
        handlers: Mapping[str, Handler] | Callable[[str], Handler],
        checkpoint: Callable[[str], None] = lambda step: None,
    ) -> None:
        self._getenv = getenv
        self._stdin = stdin
        self._stdout = stdout
        self._handlers = handlers
        self._checkpoint = checkpoint
        self.log = Log(stderr)

    def _handler(self, command: str) -> Handler:
        if callable(self._handlers):
            return self._handlers(command)
        return self._handlers[command]

    def _print(self, obj: dict[str, Any]) -> None:
        self._stdout.write(json.dumps(obj))
        self._stdout.write("\n")
        self._stdout.flush()

    def run(self) -> int:
        obj: dict[str, Any] | None = None
        try:
            command = self._getenv("CNI_COMMAND") or ""
            self.log.set_context(
                command,
                self._getenv("CNI_CONTAINERID") or "",
                *pod_context(self._getenv("CNI_ARGS") or ""),
            )
            if command == "VERSION":
                spec.read_env(self._getenv)
                return self._version()
            try:  # decoded first, so that even an env error answers in the config's version
                conf = obj = decode_object(self._read_stdin())
            except DecodeFailure:
                spec.read_env(self._getenv)  # but a bad env is reported first, as skel does
                raise
            env = spec.read_env(self._getenv)
            version = spec.check_version(conf.get("cniVersion"))
            minimum = spec.MIN_VERSION.get(env.command)
            if minimum and spec.version_tuple(version) < spec.version_tuple(minimum):
                raise IncompatibleVersion(
                    f"config version does not allow {env.command}",
                    f"cniVersion {version} < {minimum}",
                )
            self.log.configure(_str_or_none(conf.get("logFile")), _level(conf.get("logLevel")))
            self.log.debug(f"ifname={env.ifname} netns={env.netns}")
            req = Request(env, conf, self.log, self._checkpoint)
            out = self._handler(env.command)(req)
            if out is not None:
                self._print(out)
            return 0
        except CNIError as e:
            return self._fail(e, obj)
        except Exception as e:  # the only place an unknown error becomes 999
            import traceback

            self.log.error("unexpected error:\n" + traceback.format_exc())
            return self._fail(CNIError("unexpected error", f"{type(e).__name__}: {e}"), obj)

    def _read_stdin(self) -> bytes:
        with os_errors("reading the network configuration from stdin"):
            return read_bounded(self._stdin)

    def _version(self) -> int:
        raw = self._read_stdin()
        want = spec.CURRENT_VERSION
        if raw.strip():
            try:  # VERSION answers whatever stdin holds; a readable cniVersion picks the answer's
                obj = decode_json(raw)
            except DecodeFailure:
                obj = None
            if isinstance(obj, dict) and isinstance(obj.get("cniVersion"), str):
                want = obj["cniVersion"]
        self._print(
            {
                "cniVersion": want if want in spec.SUPPORTED_VERSIONS else spec.CURRENT_VERSION,
                "supportedVersions": list(spec.SUPPORTED_VERSIONS),
            }
        )
        return 0

    def _fail(self, err: CNIError, obj: dict[str, Any] | None) -> int:
        self.log.error(f"code {err.code}: {err}")
        if not self.log.configured and obj is not None:
            # failed before the config was read: its logFile still gets the lines so far
            self.log.configure(_str_or_none(obj.get("logFile")), _level(obj.get("logLevel")))
        self._print(err.to_dict(_config_version(obj)))
        return 1


def _str_or_none(v: object) -> str | None:
    return v if isinstance(v, str) and v else None


def _level(v: object) -> str:
    return v if isinstance(v, str) else "info"
