"""Python gRPC stubs for ``runtime_v1.proto``, generated with grpcio-tools into a temp dir.

Nothing generated is committed: the proto is the source, ``generate`` runs protoc (the one
bundled with grpcio-tools) into ``out_dir`` and imports the two modules from there.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

PROTO = Path(__file__).resolve().parent / "runtime_v1.proto"


def generate(out_dir: Path) -> tuple[ModuleType, ModuleType]:
    """(messages module, service stubs module) for runtime.v1, built into ``out_dir``."""
    import grpc_tools
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO.parent}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(PROTO),
        ]
    )
    if rc != 0:
        raise RuntimeError(f"protoc failed on {PROTO} (rc={rc})")
    # The generated service module imports its messages module by bare name.
    sys.path.insert(0, str(out_dir))
    try:
        pb2 = importlib.import_module("runtime_v1_pb2")
        pb2_grpc = importlib.import_module("runtime_v1_pb2_grpc")
    finally:
        sys.path.remove(str(out_dir))
    return pb2, pb2_grpc
