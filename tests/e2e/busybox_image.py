"""Build OCI image archives locally: busybox (from Debian's busybox-static) and a pause image.

No registry is reachable, so the e2e tests make their own images. The busybox one: one uncompressed
layer holding ``/bin/busybox`` plus a symlink per applet (from ``busybox --list-full``),
an image config with Entrypoint/Cmd, a manifest, and an OCI image layout
(``oci-layout``, ``index.json``, ``blobs/sha256/...``) packed into a tar that
``ctr images import`` accepts. Every digest is computed here with hashlib; the
archive is byte-for-byte reproducible for a given busybox binary. The pause image (the CRI
tier's sandbox image) is the same layout around one static ``/pause`` binary.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

BUSYBOX = Path("/bin/busybox")

MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"

# Fixed timestamp so that the layer (and hence every digest) is reproducible.
EPOCH = 946684800  # 2000-01-01T00:00:00Z
EPOCH_ISO = "2000-01-01T00:00:00Z"

# Directories every runc container expects or that busybox applets like to find.
BASE_DIRS = (
    "bin",
    "dev",
    "etc",
    "proc",
    "root",
    "run",
    "sbin",
    "sys",
    "tmp",
    "usr",
    "usr/bin",
    "usr/sbin",
    "var",
)


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}


@dataclass(frozen=True)
class BusyboxImage:
    """The built image: its name as containerd will list it and the archive path."""

    name: str
    archive: Path
    manifest_digest: str
    config_digest: str
    layer_digest: str


def _goarch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(
        machine, machine
    )


def _canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _applets(busybox: Path) -> list[str]:
    """Applet paths relative to / (e.g. ``sbin/ip``), as the binary itself reports them."""
    out = subprocess.run(
        [str(busybox), "--list-full"], check=True, capture_output=True, text=True
    ).stdout
    return sorted({line.strip().lstrip("/") for line in out.splitlines() if line.strip()})


def _tarinfo(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode
    ti.mtime = EPOCH
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    return ti


def build_layer(busybox: Path = BUSYBOX) -> bytes:
    """The rootfs layer: busybox at /bin/busybox, one relative symlink per applet."""
    binary = busybox.read_bytes()
    applets = [a for a in _applets(busybox) if a != "bin/busybox"]
    dirs = set(BASE_DIRS)
    for applet in applets:
        parent = str(Path(applet).parent)
        while parent not in ("", "."):
            dirs.add(parent)
            parent = str(Path(parent).parent)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in sorted(dirs):
            tar.addfile(_tarinfo(d, tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755))
        ti = _tarinfo("bin/busybox", tarfile.REGTYPE, 0o755)
        ti.size = len(binary)
        tar.addfile(ti, io.BytesIO(binary))
        for applet in applets:
            link = _tarinfo(applet, tarfile.SYMTYPE, 0o777)
            depth = applet.count("/")
            link.linkname = "../" * depth + "bin/busybox"
            tar.addfile(link)
        for name, content in (
            ("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
            ("etc/group", b"root:x:0:\n"),
        ):
            ti = _tarinfo(name, tarfile.REGTYPE, 0o644)
            ti.size = len(content)
            tar.addfile(ti, io.BytesIO(content))
    return buf.getvalue()


def build_image_archive(
    dest: Path,
    name: str = "docker.io/library/wd-busybox:e2e",
    busybox: Path = BUSYBOX,
) -> BusyboxImage:
    """Write a busybox OCI image-layout tar to ``dest`` and describe what is in it."""
    return write_oci_archive(
        dest, name, build_layer(busybox), entrypoint=["/bin/busybox"], cmd=["sh"]
    )


def build_pause_layer(pause: Path) -> bytes:
    """A rootfs layer holding only ``/pause`` (a static binary) and the dirs runc expects."""
    binary = pause.read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("dev", "etc", "proc", "sys"):
            tar.addfile(_tarinfo(d, tarfile.DIRTYPE, 0o755))
        ti = _tarinfo("pause", tarfile.REGTYPE, 0o755)
        ti.size = len(binary)
        tar.addfile(ti, io.BytesIO(binary))
    return buf.getvalue()


def build_pause_archive(dest: Path, name: str, pause: Path) -> BusyboxImage:
    """A pause-like sandbox image (what a CRI runtime starts as each pod's infra container):
    one layer with the static ``pause`` binary, entrypoint ``/pause``."""
    return write_oci_archive(dest, name, build_pause_layer(pause), entrypoint=["/pause"], cmd=[])


def write_oci_archive(
    dest: Path, name: str, layer_data: bytes, *, entrypoint: list[str], cmd: list[str]
) -> BusyboxImage:
    """Write a one-layer OCI image-layout tar (uncompressed layer) to ``dest``."""
    layer = Blob(MT_LAYER, layer_data)
    arch, osname = _goarch(), "linux"
    config = Blob(
        MT_CONFIG,
        _canonical_json(
            {
                "architecture": arch,
                "os": osname,
                "created": EPOCH_ISO,
                "config": {
                    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                    "Entrypoint": entrypoint,
                    "Cmd": cmd,
                    "WorkingDir": "/",
                },
                # Uncompressed layer: its diff_id is its own digest.
                "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
                "history": [{"created": EPOCH_ISO, "created_by": "weft e2e busybox_image.py"}],
            }
        ),
    )
    manifest = Blob(
        MT_MANIFEST,
        _canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": MT_MANIFEST,
                "config": config.descriptor(),
                "layers": [layer.descriptor()],
            }
        ),
    )
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    manifest_desc = manifest.descriptor() | {
        "platform": {"architecture": arch, "os": osname},
        "annotations": {
            "io.containerd.image.name": name,
            "org.opencontainers.image.ref.name": tag,
        },
    }
    index = _canonical_json(
        {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [manifest_desc]}
    )
    files: list[tuple[str, bytes]] = [
        ("oci-layout", _canonical_json({"imageLayoutVersion": "1.0.0"})),
        ("index.json", index),
    ]
    for blob in (layer, config, manifest):
        files.append((f"blobs/sha256/{blob.digest.split(':', 1)[1]}", blob.data))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("blobs", "blobs/sha256"):
            tar.addfile(_tarinfo(d, tarfile.DIRTYPE, 0o755))
        for fname, data in files:
            ti = _tarinfo(fname, tarfile.REGTYPE, 0o644)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    return BusyboxImage(
        name=name,
        archive=dest,
        manifest_digest=manifest.digest,
        config_digest=config.digest,
        layer_digest=layer.digest,
    )


if __name__ == "__main__":  # pragma: no cover - manual use
    import sys

    img = build_image_archive(Path(sys.argv[1] if len(sys.argv) > 1 else "busybox-oci.tar"))
    print(img)
