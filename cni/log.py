"""Diagnostics: stderr and an optional log file (``logFile``/``logLevel``), never stdout.

Boundary module; deliberately not ``logging`` (≈8 ms of import per exec for one line).
"""

from __future__ import annotations

import os
import time
from typing import TextIO

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class Log:
    def __init__(self, stderr: TextIO, prefix: str = "weft") -> None:
        self._stderr = stderr
        self._prefix = prefix
        self._file: str | None = None
        self._level = _LEVELS["info"]

    def configure(self, log_file: str | None, level: str) -> None:
        self._file = log_file
        self._level = _LEVELS.get(level, 20)

    def _emit(self, level: str, msg: str) -> None:
        if _LEVELS[level] < self._level:
            return
        line = (
            f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {self._prefix}[{os.getpid()}] {level}: {msg}\n"
        )
        if _LEVELS[level] >= _LEVELS["warning"]:
            try:
                self._stderr.write(line)
                self._stderr.flush()
            except (OSError, ValueError):
                pass
        if self._file:
            try:
                fd = os.open(
                    self._file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640
                )
                try:
                    os.write(fd, line.encode())
                finally:
                    os.close(fd)
            except OSError:
                pass

    def debug(self, msg: str) -> None:
        self._emit("debug", msg)

    def info(self, msg: str) -> None:
        self._emit("info", msg)

    def warning(self, msg: str) -> None:
        self._emit("warning", msg)

    def error(self, msg: str) -> None:
        self._emit("error", msg)
