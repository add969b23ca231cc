"""Content-addressed, write-once blob store: ``<root>/ab/cd/<sha256>``.

A blob is written to a unique temporary file, fsync'd, then hard-linked to its final name (the
link fails if the blob is already there: identical files share one blob and nothing is ever
overwritten), and the folder is fsync'd. Files are made read-only. Only retention removes a
blob (mailgw/retention.py). ``BlobStore`` is the interface another backend (an S3-compatible
object store) would implement.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from mailgw.spool import fsync_dir

BLOB_DIR = "blobs"
_HEX = frozenset("0123456789abcdef")


class BlobError(Exception):
    pass


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_digest(digest: str) -> str:
    if len(digest) != 64 or not set(digest) <= _HEX:
        raise BlobError(f"not a SHA-256 hex digest: {digest!r}")
    return digest


@dataclass(frozen=True)
class BlobStatus:
    sha256: str
    state: str  # "ok", "missing", "altered"
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "ok"


@runtime_checkable
class BlobStore(Protocol):
    def put(self, data: bytes) -> str:
        """Store ``data`` (if not there yet) and return its SHA-256 hex digest."""
        ...

    def get(self, sha256: str) -> bytes:
        """The blob's bytes; raises BlobError when it is missing."""
        ...

    def exists(self, sha256: str) -> bool: ...

    def size(self, sha256: str) -> int | None:
        """The blob's size in bytes; None when it is missing."""
        ...

    def delete(self, sha256: str) -> bool:
        """Remove the blob (retention only); False when it was not there."""
        ...

    def verify(self, sha256: str) -> BlobStatus:
        """Re-hash the stored bytes."""
        ...

    def iterate(self) -> Iterator[str]:
        """Every stored digest (by file name)."""
        ...


class FileBlobStore:
    """Blobs under a folder of the data directory (or a shared filesystem)."""

    def __init__(self, root: Path):
        self.root = root
        self._known_dirs: set[Path] = set()

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> FileBlobStore:
        return cls(data_dir / BLOB_DIR)

    def path(self, sha256: str) -> Path:
        digest = _check_digest(sha256)
        return self.root / digest[:2] / digest[2:4] / digest

    def _ensure_dir(self, folder: Path) -> None:
        if folder in self._known_dirs:
            return
        missing = [p for p in (folder, folder.parent, self.root) if not p.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        for created in missing:
            fsync_dir(created.parent)
        self._known_dirs.add(folder)

    def put(self, data: bytes) -> str:
        digest = sha256_hex(data)
        path = self.path(digest)
        if path.exists():
            return digest
        self._ensure_dir(path.parent)
        tmp = path.with_name(f".{digest}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o440)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # write-once: never replaces an existing blob
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(path.parent)
        return digest

    def get(self, sha256: str) -> bytes:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            raise BlobError(f"blob {sha256} is missing") from None

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def size(self, sha256: str) -> int | None:
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            return None

    def delete(self, sha256: str) -> bool:
        try:
            self.path(sha256).unlink()
        except FileNotFoundError:
            return False
        return True

    def verify(self, sha256: str) -> BlobStatus:
        path = self.path(sha256)
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
        except FileNotFoundError:
            return BlobStatus(sha256, "missing", str(path))
        actual = digest.hexdigest()
        if actual != sha256:
            return BlobStatus(sha256, "altered", f"{path} now hashes to {actual}")
        return BlobStatus(sha256, "ok")

    def iterate(self) -> Iterator[str]:
        if not self.root.is_dir():
            return
        for first in sorted(self.root.iterdir()):
            if not first.is_dir():
                continue
            for second in sorted(first.iterdir()):
                if not second.is_dir():
                    continue
                for blob in sorted(second.iterdir()):
                    if not blob.name.startswith("."):
                        yield blob.name
