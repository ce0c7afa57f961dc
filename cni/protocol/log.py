"""Diagnostics: stderr and an optional log file (``logFile``/``logLevel``), never stdout.

Every line names who it is about, so a node's shared log file can be read per pod::

    2026-11-27T07:40:01.123Z weft[812] warning ADD container=0a1b pod=default/web: ...

(ISO-8601 UTC timestamp, pid, level, CNI command, container id, and the pod's
namespace/name when the runtime passed ``K8S_POD_NAMESPACE``/``K8S_POD_NAME`` in
``CNI_ARGS``). Lines are kept in memory until the log file is known (``configure``), so an
error raised before the config could be parsed still reaches ``logFile`` when the config
names one. A log file that cannot be written costs one warning on stderr per exec, not one
per line. Warnings and errors also go to stderr (the runtime shows stderr when a plugin
fails).

Boundary module; deliberately not ``logging`` (≈8 ms of import per exec for one line).
"""

from __future__ import annotations

import os
import time
from typing import TextIO

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
DEFAULT_LEVEL = "info"


def timestamp(now: float) -> str:
    """ISO-8601 UTC with milliseconds: ``2026-11-27T07:40:01.123Z``."""
    ms = int(now * 1000) % 1000
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(now))}.{ms:03d}Z"


def pod_context(cni_args: str) -> tuple[str, str]:
    """(namespace, name) of the pod from a raw ``CNI_ARGS``; lenient: never raises, so a
    malformed CNI_ARGS still gets its error logged."""
    found = {"K8S_POD_NAMESPACE": "", "K8S_POD_NAME": ""}
    for pair in cni_args.split(";"):
        key, sep, value = pair.partition("=")
        if sep and key in found:
            found[key] = value
    return found["K8S_POD_NAMESPACE"], found["K8S_POD_NAME"]


def _printable(s: str, limit: int = 128) -> str:
    """A value from the environment, safe to put on one log line."""
    s = s[:limit]
    return s if s.isprintable() and " " not in s else repr(s)


class Log:
    def __init__(self, stderr: TextIO, prefix: str = "weft") -> None:
        self._stderr = stderr
        self._prefix = prefix
        self._file: str | None = None
        self._level = LEVELS[DEFAULT_LEVEL]
        self._context = ""
        self._configured = False
        self._pending: list[tuple[int, str]] = []  # (level, line) until the file is known
        self._file_failed = False

    @property
    def configured(self) -> bool:
        return self._configured

    def set_context(
        self, command: str, container_id: str, pod_namespace: str = "", pod_name: str = ""
    ) -> None:
        parts = [_printable(command)] if command else []
        parts.append(f"container={_printable(container_id) if container_id else '-'}")
        if pod_namespace or pod_name:
            parts.append(f"pod={_printable(pod_namespace)}/{_printable(pod_name)}")
        self._context = " ".join(parts)

    def configure(self, log_file: str | None, level: str) -> None:
        """Set the file and level; the first call writes the lines held back so far."""
        self._file = log_file
        self._level = LEVELS.get(level, LEVELS[DEFAULT_LEVEL])
        if self._configured:
            return
        self._configured = True
        pending, self._pending = self._pending, []
        kept = [line for lvl, line in pending if lvl >= self._level]
        if kept and self._file:
            self._append("".join(kept))

    def _append(self, text: str) -> None:
        assert self._file is not None
        try:
            fd = os.open(self._file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            try:
                os.write(fd, text.encode(errors="replace"))
            finally:
                os.close(fd)
        except OSError as e:
            if not self._file_failed:
                self._file_failed = True
                self._to_stderr(
                    f"{self._head('warning')}: cannot write logFile {self._file}: "
                    f"{e.strerror or e}; logging to stderr only\n"
                )

    def _to_stderr(self, line: str) -> None:
        try:
            self._stderr.write(line)
            self._stderr.flush()
        except (OSError, ValueError):
            pass

    def _head(self, level: str) -> str:
        ctx = f" {self._context}" if self._context else ""
        return f"{timestamp(time.time())} {self._prefix}[{os.getpid()}] {level}{ctx}"

    def _emit(self, level: str, msg: str) -> None:
        lvl = LEVELS[level]
        if self._configured and lvl < self._level and lvl < LEVELS["warning"]:
            return  # below the file's level and not for stderr: not worth formatting
        line = f"{self._head(level)}: {msg}\n"
        if lvl >= LEVELS["warning"]:
            self._to_stderr(line)
        if not self._configured:
            self._pending.append((lvl, line))
        elif lvl >= self._level and self._file:
            self._append(line)

    def debug(self, msg: str) -> None:
        self._emit("debug", msg)

    def info(self, msg: str) -> None:
        self._emit("info", msg)

    def warning(self, msg: str) -> None:
        self._emit("warning", msg)

    def error(self, msg: str) -> None:
        self._emit("error", msg)
