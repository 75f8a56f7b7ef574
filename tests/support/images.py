"""The local test image ``paramedic-test/busybox:latest``, built without any registry.

No registry is reachable from the test machines, so the one image the tests run is made
here: a root filesystem holding Debian's static busybox (package ``busybox-static``) with a
symlink per applet (``sh``, ``httpd``, ``sleep``, ``kill``, ``wget``, ``nc``, ...), plus
``/tmp``, ``/www`` (with an ``index.html``) and a minimal ``/etc/passwd``, handed to
``docker import`` with ``CMD ["/bin/sh"]``.

Beware: Debian's busybox 1.35 is built without wget's timeout option, and ``wget -T N``
*segfaults* (exit 139). Bound a wget with ``timeout N wget ...`` instead.

This module is the only recipe: ``scripts/setup-test-env`` runs it as a script (system
``python3``, standard library only, so it must never import a third-party package) and the
``busybox_image`` fixture imports it.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

TEST_IMAGE = "paramedic-test/busybox:latest"
IMAGE_CMD = 'CMD ["/bin/sh"]'
INDEX_HTML = b"paramedic-test\n"
_PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = b"root:x:0:\nnogroup:x:65534:\n"


def find_busybox() -> Path:
    """The static busybox binary; Debian's ``busybox-static`` installs ``/bin/busybox``."""
    for candidate in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        if candidate.is_file():
            return candidate.resolve()
    found = shutil.which("busybox")
    if found is None:
        raise FileNotFoundError("busybox not found: apt-get install busybox-static")
    return Path(found).resolve()


def _applets(busybox: Path) -> list[str]:
    listing = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout
    return sorted({name for name in listing.split() if name and name != "busybox"})


def _add(tar: tarfile.TarFile, name: str, kind: bytes, mode: int, data: bytes = b"", target: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    if kind == tarfile.SYMTYPE:
        info.linkname = target
        tar.addfile(info)
    elif kind == tarfile.REGTYPE:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)


def rootfs_tar(busybox: Path | None = None) -> bytes:
    """The image's root filesystem as an uncompressed tar archive, in memory (~2 MB)."""
    binary = busybox or find_busybox()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("bin", "etc", "www", "root", "proc", "sys", "dev"):
            _add(tar, directory, tarfile.DIRTYPE, 0o755)
        _add(tar, "tmp", tarfile.DIRTYPE, 0o1777)
        _add(tar, "bin/busybox", tarfile.REGTYPE, 0o755, binary.read_bytes())
        for applet in _applets(binary):
            _add(tar, f"bin/{applet}", tarfile.SYMTYPE, 0o777, target="busybox")
        _add(tar, "etc/passwd", tarfile.REGTYPE, 0o644, _PASSWD)
        _add(tar, "etc/group", tarfile.REGTYPE, 0o644, _GROUP)
        _add(tar, "www/index.html", tarfile.REGTYPE, 0o644, INDEX_HTML)
    return buffer.getvalue()


def image_exists(name: str = TEST_IMAGE) -> bool:
    """Whether the local engine has ``name`` (asks the ``docker`` CLI)."""
    result = subprocess.run(["docker", "image", "inspect", name], capture_output=True, check=False)
    return result.returncode == 0


def build_image(name: str = TEST_IMAGE) -> None:
    """``docker import`` the busybox root filesystem as ``name`` (replaces any old tag)."""
    subprocess.run(
        ["docker", "import", "--change", IMAGE_CMD, "-", name],
        input=rootfs_tar(),
        capture_output=True,
        check=True,
    )


def main(argv: list[str]) -> int:
    """``images.py [--force]``: build the test image unless it exists (or always)."""
    force = "--force" in argv
    if not force and image_exists():
        print(f"{TEST_IMAGE}: present")
        return 0
    try:
        build_image()
    except subprocess.CalledProcessError as error:
        sys.stderr.write(error.stderr.decode(errors="replace"))
        return 1
    print(f"{TEST_IMAGE}: built")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
