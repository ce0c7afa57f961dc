"""The operator CLI (``weft ls|status|gc``, ``--version``): a person at a shell, never on the
CNI exec path; the only part that may load pydantic (``--json``)."""
