"""The blob store contract: every implementation passes every test here; then what only
the folder promises (a killed writer leaves no half blob)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hydracompute.errors import StoreError
from hydracompute.store.blobs import BlobStore, FolderBlobStore, MemoryBlobStore
from hydracompute.store.blobs import folder as folder_module
from hydracompute.store.blobs.base import READ_PIECE_BYTES
from hydracompute.store.blobs.folder import STALE_TEMP_S


@pytest.fixture(params=["memory", "folder", "postgresql"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "postgresql":  # in the database of a PostgreSQL backend
        backend = request.getfixturevalue("postgres").backend()
        yield backend.blobs
        backend.close()
        return
    store: BlobStore
    store = MemoryBlobStore() if request.param == "memory" else FolderBlobStore(tmp_path / "b")
    yield store
    store.close()


def test_put_get_and_replace(blobs: BlobStore) -> None:
    assert blobs.get("job1", "a.bin") is None
    blobs.put("job1", "a.bin", b"first")
    blobs.put("job1", "dir/b.bin", b"")
    assert blobs.get("job1", "a.bin") == b"first"
    assert blobs.get("job1", "dir/b.bin") == b""
    assert blobs.get("job2", "a.bin") is None  # keyed by job too
    blobs.put("job1", "a.bin", b"second, longer")
    assert blobs.get("job1", "a.bin") == b"second, longer"
    assert blobs.names("job1") == ["a.bin", "dir/b.bin"]
    assert blobs.names("job2") == []


def test_a_blob_is_written_and_read_in_pieces(blobs: BlobStore) -> None:
    pieces = [bytes([n]) * (READ_PIECE_BYTES // 3) for n in range(7)]
    assert blobs.put_stream("j", "big", iter(pieces)) == sum(map(len, pieces))
    read = blobs.read_pieces("j", "big")
    assert read is not None
    out = list(read)
    assert b"".join(out) == b"".join(pieces)
    assert max(map(len, out)) <= READ_PIECE_BYTES and len(out) == 3
    assert blobs.read_pieces("j", "nothing") is None


def test_a_reader_keeps_reading_the_blob_it_opened(blobs: BlobStore) -> None:
    blobs.put("j", "x", b"old" * 1000)
    reader = blobs.open("j", "x")
    assert reader is not None
    with reader:
        assert reader.read(3) == b"old"
        blobs.put("j", "x", b"new")
        assert reader.read() == b"old" * 999
    assert blobs.get("j", "x") == b"new"


def test_a_blobs_size_is_found_by_seeking_to_its_end_and_back(blobs: BlobStore) -> None:
    data = bytes(range(256)) * (READ_PIECE_BYTES // 100)  # a few pieces
    blobs.put("j", "sized", data)
    reader = blobs.open("j", "sized")
    assert reader is not None
    with reader:
        assert reader.seek(0, 2) == len(data)  # as an artefact's download finds its size
        assert reader.seek(0) == 0
        assert reader.read() == data


def test_a_failed_writer_leaves_the_old_blob_or_none(blobs: BlobStore) -> None:
    def failing(first: bytes) -> Iterator[bytes]:
        yield first
        raise RuntimeError("the renderer failed")

    with pytest.raises(RuntimeError):
        blobs.put_stream("j", "fresh", failing(b"half"))
    assert blobs.get("j", "fresh") is None
    blobs.put("j", "kept", b"whole")
    with pytest.raises(RuntimeError):
        blobs.put_stream("j", "kept", failing(b"half"))
    assert blobs.get("j", "kept") == b"whole"
    assert blobs.names("j") == ["kept"]


def test_delete_and_delete_job(blobs: BlobStore) -> None:
    for job in ("j1", "j2"):
        blobs.put(job, "a", b"1")
        blobs.put(job, "outputs/b", b"2")
    blobs.delete("j1", "a")
    blobs.delete("j1", "a")  # nothing to delete: no error
    assert blobs.names("j1") == ["outputs/b"]
    blobs.delete_job("j1")
    blobs.delete_job("j1")
    assert blobs.names("j1") == []
    assert blobs.names("j2") == ["a", "outputs/b"]


@pytest.mark.parametrize(
    ("job_id", "name"),
    [("j", ""), ("j", "../x"), ("j", "a/../../x"), ("j", ".hidden"), ("j", "a//b"),
     ("j", "/abs"), ("../j", "x"), ("j/k", "x"), ("", "x"), ("j", "sp ace")],
)  # fmt: skip
def test_names_that_could_leave_their_job_are_refused(
    blobs: BlobStore, job_id: str, name: str
) -> None:
    with pytest.raises(StoreError, match="invalid blob"):
        blobs.put(job_id, name, b"x")
    with pytest.raises(StoreError, match="invalid blob"):
        blobs.open(job_id, name)


def test_scratch_is_a_random_access_file_of_its_own(blobs: BlobStore) -> None:
    with blobs.scratch() as one, blobs.scratch() as two:
        one.seek(1 << 20)
        one.write(b"end")
        one.seek(0)
        assert one.read(4) == b"\0\0\0\0"  # a hole reads as zeros
        one.seek(1 << 20)
        assert one.read() == b"end"
        assert two.read() == b""
    assert blobs.names("j") == []


# --- the folder only -------------------------------------------------------------------------

WRITER = """
import sys
from hydracompute.store.blobs import FolderBlobStore

def pieces():
    yield b"x" * 100_000
    print("half written", flush=True)
    sys.stdin.read()  # until killed
    yield b"never"

FolderBlobStore(sys.argv[1]).put_stream("job", sys.argv[2], pieces())
"""


def test_a_writer_killed_half_way_leaves_no_half_blob(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    store = FolderBlobStore(root)
    store.put("job", "kept", b"whole")
    for name in ("kept", "fresh"):
        with subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        ) as writer:
            assert writer.stdout is not None
            assert writer.stdout.readline() == b"half written\n"
            writer.send_signal(signal.SIGKILL)
            assert writer.wait() == -signal.SIGKILL
    assert store.get("job", "kept") == b"whole"
    assert store.get("job", "fresh") is None
    leftovers = list((root / "tmp").iterdir())
    assert len(leftovers) == 2 and all(p.stat().st_size == 100_000 for p in leftovers)
    FolderBlobStore(root)  # young leftovers may be another coordinator's writes: kept
    assert sorted((root / "tmp").iterdir()) == sorted(leftovers)
    old = time.time() - STALE_TEMP_S - 60
    for leftover in leftovers:
        os.utime(leftover, (old, old))
    FolderBlobStore(root)
    assert list((root / "tmp").iterdir()) == []
    assert store.get("job", "kept") == b"whole"


def test_folder_blobs_outlive_the_store_that_wrote_them(tmp_path: Path) -> None:
    FolderBlobStore(tmp_path / "b").put("job", "outputs/1-abc.json", b"{}")
    assert FolderBlobStore(tmp_path / "b").get("job", "outputs/1-abc.json") == b"{}"
    assert (tmp_path / "b" / "jobs" / "job" / "outputs" / "1-abc.json").read_bytes() == b"{}"


def test_a_blob_written_for_a_later_sync_is_whole_at_once(blobs: BlobStore) -> None:
    blobs.put("j", "outputs/1-a.json", b"deferred", durable=False)
    assert blobs.get("j", "outputs/1-a.json") == b"deferred"
    blobs.sync()
    blobs.sync()  # nothing left to sync
    assert blobs.get("j", "outputs/1-a.json") == b"deferred"


def test_the_folder_syncs_deferred_blobs_and_their_folders_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    monkeypatch.setattr(folder_module, "_sync_file", synced.append)
    monkeypatch.setattr(folder_module, "_sync_folder", synced.append)
    store = FolderBlobStore(tmp_path / "b")
    store.put("j", "outputs/1.json", b"1", durable=False)
    store.put("j", "outputs/2.json", b"2", durable=False)
    assert synced == []  # not one by one
    store.sync()
    jobs = tmp_path / "b" / "jobs"
    outputs = jobs / "j" / "outputs"
    assert sorted(synced) == sorted(
        [outputs / "1.json", outputs / "2.json", outputs, jobs / "j", jobs]
    )
    synced.clear()
    store.sync()
    assert synced == []
    store.put("j", "a", b"now")  # durable at once: its folder synced before put returns
    assert synced == [jobs / "j"]
    store.close()
