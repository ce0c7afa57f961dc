"""The CNI versions weft speaks, and VERSION answered without the dispatcher's imports.

VERSION is the one command a runtime may call on every plugin of a chain before any other,
and it needs no more than this: ``answer`` builds its line from stdin and CNI_ARGS with the
interpreter's own modules and the C half of ``json`` (``_json``), without importing
``json``, ``re``, ``typing`` or the dispatcher. It answers only when the dispatcher's answer
is certain (stdin empty, or a JSON text its decoder accepts: within the size and nesting
bounds, no BOM, no ``\\u`` escape, no non-finite number; CNI_ARGS that parse) and returns
None otherwise, so that the dispatcher answers: the bytes are the dispatcher's either way
(``tests/unit/test_version.py`` compares them).
"""

import _json

SUPPORTED_VERSIONS: tuple[str, ...] = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT_VERSION = "1.1.0"

_MAX_BYTES = 4 * 1024 * 1024  # cni.protocol.jsondecode.MAX_BYTES (a unit test holds them)
MAX_READ = _MAX_BYTES + 1  # what cni.protocol.jsondecode.read_bounded reads
_MAX_BRACKETS = 64  # cni.protocol.jsondecode.MAX_DEPTH: this many brackets cannot nest deeper
_JSON_SPACE = " \t\n\r"  # what json's decoder skips around a value


def line(version: str) -> str:
    """VERSION's JSON, as ``json.dumps`` writes it (every version is plain ASCII)."""
    listed = ", ".join(f'"{v}"' for v in SUPPORTED_VERSIONS)
    return f'{{"cniVersion": "{version}", "supportedVersions": [{listed}]}}'


def answer(raw: bytes, cni_args: str) -> str | None:
    """VERSION's line for this stdin and CNI_ARGS, or None: the dispatcher answers."""
    for pair in cni_args.split(";"):  # cni.protocol.spec.parse_cni_args refuses these: code 4
        key, sep, _ = pair.partition("=")
        if pair and (not sep or not key):
            return None
    if not raw.strip():
        return line(CURRENT_VERSION)
    value = _decoded(raw)
    if value is None:
        return None
    want = value[0].get("cniVersion") if isinstance(value[0], dict) else None
    return line(want if isinstance(want, str) and want in SUPPORTED_VERSIONS else CURRENT_VERSION)


class _Scanning:
    """The attributes ``_json.make_scanner`` reads, as ``json.loads`` in ``cni.protocol.jsondecode``
    sets them (but any constant or non-finite number stops the scan)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_int = int

    @staticmethod
    def parse_float(text: str) -> float:
        f = float(text)
        if f in (float("inf"), float("-inf")):
            raise ValueError(text)
        return f

    @staticmethod
    def parse_constant(name: str) -> float:
        raise ValueError(name)


def _decoded(raw: bytes) -> tuple[object] | None:
    """(the JSON value,) when ``cni.protocol.jsondecode.decode_json`` surely decodes ``raw`` to it;
    None when it might refuse it (the dispatcher then decides)."""
    if (
        len(raw) > _MAX_BYTES
        or raw.count(b"[") + raw.count(b"{") > _MAX_BRACKETS
        or b"\\u" in raw
        or raw.startswith(b"\xef\xbb\xbf")
    ):
        return None
    try:
        text = raw.decode("utf-8")
        start = len(text) - len(text.lstrip(_JSON_SPACE))
        # typeshed types the context as a scanner; the C code reads only these attributes
        value, end = _json.make_scanner(_Scanning)(text, start)  # type: ignore[arg-type]
    except (ValueError, StopIteration, RecursionError):
        return None
    if text[end:].strip(_JSON_SPACE):
        return None
    return (value,)
