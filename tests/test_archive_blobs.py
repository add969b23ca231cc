"""The content-addressed blob store: write-once, shared by identical files, verified."""

from __future__ import annotations

import hashlib
import stat
import threading
from pathlib import Path

import pytest

from mailgw.registry.blobs import BlobError, BlobStore, FileBlobStore


def test_put_get_exists_and_layout(tmp_path: Path) -> None:
    store = FileBlobStore.in_data_dir(tmp_path)
    assert isinstance(store, BlobStore)
    data = "Giấy mời họp".encode()
    digest = store.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    path = tmp_path / "blobs" / digest[:2] / digest[2:4] / digest
    assert store.path(digest) == path and path.read_bytes() == data
    assert not stat.S_IMODE(path.stat().st_mode) & 0o222  # read-only
    assert store.exists(digest) and store.get(digest) == data
    assert store.verify(digest).ok
    assert list(store.iterate()) == [digest]
    assert not list(path.parent.glob("*.tmp"))


def test_identical_files_share_one_blob_and_are_never_overwritten(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "b")
    digest = store.put(b"one")
    inode = store.path(digest).stat().st_ino
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(store.put(b"one")))
               for _ in range(8)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [digest] * 8
    assert store.path(digest).stat().st_ino == inode
    assert list(store.iterate()) == [digest]


def test_missing_and_altered_blobs(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "b")
    digest = store.put(b"evidence")
    path = store.path(digest)
    path.chmod(0o640)
    path.write_bytes(b"tampered")
    status = store.verify(digest)
    assert status.state == "altered" and not status.ok
    path.unlink()
    assert store.verify(digest).state == "missing"
    assert not store.exists(digest)
    with pytest.raises(BlobError):
        store.get(digest)


def test_digests_are_checked(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "b")
    with pytest.raises(BlobError):
        store.get("../../etc/passwd")
    with pytest.raises(BlobError):
        store.path("A" * 64)
