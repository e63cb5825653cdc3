"""The one conformance suite every mover passes: ``MoverContract``.

A backend's test class subclasses it and provides a ``mover`` fixture (a fresh, empty
tier per test). A mover that cannot pass a case says so in ``unsupported`` (case name ->
reason); the case then runs anyway and must fail (raise :class:`Unsupported` or any other
error, or fail an assertion): a declaration that turns out false fails the test. Nothing
is ever skipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from tierctl.errors import ObjectArchived, ObjectExists, ObjectNotFound, VerificationFailed
from tierctl.model import MTIME_WINDOW, Entry
from tierctl.movers.base import Mover, Unsupported
from tierctl.movers.local import LocalMover
from tierctl.movers.transfer import copy_verified

MIB = 1 << 20
LARGE_SIZE = 50 * MIB
MTIME = 1_700_000_000.123_456  # fractional milliseconds on purpose
ODD_KEYS = [
    "odd/with space.txt",
    "odd/plus+sign",
    "odd/100%",
    "odd/%41 not an escape",
    "odd/hash#tag",
    "odd/eq=ual",
    "odd/" + unicodedata.normalize("NFC", "ünïcødé-日本.bin"),
    "odd/mix %2F+# ü=.x",
]


def _blocks(total: int, seed: bytes = b"tierctl", block: int = MIB) -> Iterator[bytes]:
    """Deterministic pseudo-random bytes, generated block by block (bounded memory)."""
    counter = 0
    produced = 0
    while produced < total:
        digest = hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        chunk = (digest * (block // len(digest) + 1))[: min(block, total - produced)]
        # vary every block so part boundaries matter
        chunk = counter.to_bytes(8, "big") + chunk[8:] if len(chunk) >= 8 else chunk
        counter += 1
        produced += len(chunk)
        yield chunk


def _read(mover: Mover, key: str) -> bytes:
    return b"".join(mover.read_chunks(key))


def _put(mover: Mover, key: str, data: bytes, mtime: float = MTIME, **kwargs: object) -> Entry:
    return mover.write(key, [data], size=len(data), mtime=mtime, **kwargs)  # type: ignore[arg-type]


class _CorruptingWrites:
    """Flips one byte of what reaches the store, as a faulty network path would. Such a
    path is what reading back is for: it never counts as a store whose writes verify
    themselves (``Capabilities.verified_writes``), so the copy must read it back."""

    def __init__(self, mover: Mover) -> None:
        self._mover = mover
        self.capabilities = dataclasses.replace(mover.capabilities, verified_writes=False)

    def __getattr__(self, name: str) -> object:
        return getattr(self._mover, name)

    def write(self, key: str, chunks, **kwargs):  # type: ignore[no-untyped-def]
        def corrupt():  # type: ignore[no-untyped-def]
            first = True
            for chunk in chunks:
                if first and chunk:
                    chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                    first = False
                yield chunk

        return self._mover.write(key, corrupt(), **kwargs)


class _ShortWrites(_CorruptingWrites):
    """Stores all but the last byte and says so, as the store itself: whatever a mover
    declares about its writes, a copy that came out short is never verified."""

    def __init__(self, mover: Mover) -> None:
        super().__init__(mover)
        self.capabilities = mover.capabilities

    def write(self, key: str, chunks, **kwargs):  # type: ignore[no-untyped-def]
        data = b"".join(chunks)[:-1]
        return self._mover.write(key, [data], **{**kwargs, "size": len(data)})


CASES = (
    "round_trip_empty",
    "round_trip_small",
    "round_trip_large",
    "list_nested_sorted",
    "list_with_known_entries",
    "odd_keys",
    "overwrite",
    "delete",
    "missing_object",
    "stat_mtime",
    "copy_from_local",
    "copy_to_local",
    "copy_corrupted_destination",
    "storage_class",
    "server_side_copy",
    "restore",
    "write_with_metadata",
    "set_attributes",
    "list_metadata",
    "conditional_create",
)


class MoverContract:
    """Subclass and provide a ``mover`` fixture. Class attributes tune the cases."""

    unsupported: ClassVar[dict[str, str]] = {}
    storage_class: ClassVar[str] = "GLACIER"  # a class the store offers, for the class case

    @pytest.fixture
    def local(self, tmp_path: Path) -> LocalMover:
        return LocalMover((tmp_path / "local-peer").as_uri())

    @contextlib.contextmanager
    def case(self, name: str) -> Iterator[None]:
        assert name in CASES, name
        reason = self.unsupported.get(name)
        if reason is None:
            yield
            return
        try:
            yield
        except (Exception, AssertionError):
            return  # declared unsupported, and indeed it fails
        pytest.fail(f"{type(self).__name__} declares {name!r} unsupported ({reason}) but it passed")

    def test_declarations_name_real_cases(self) -> None:
        assert set(self.unsupported) <= set(CASES)

    def arrange(self, mover: Mover, key: str, data: bytes, mtime: float = MTIME, **kwargs: object) -> Entry:
        """Put an object in place for a case whose subject is not writing it (listings, reads,
        deletes, optional abilities): through ``mover.write``. A backend whose tier cannot be
        written to (``capabilities.writable`` False) overrides this to place the object with
        the store's own tools, and declares the cases that write through the mover unsupported."""
        return _put(mover, key, data, mtime, **kwargs)

    # -- round trips ------------------------------------------------------------------------
    def test_round_trip_empty(self, mover: Mover) -> None:
        with self.case("round_trip_empty"):
            entry = _put(mover, "empty", b"")
            assert entry.size == 0
            assert _read(mover, "empty") == b""
            assert mover.stat("empty").size == 0
            assert [e.key for e in mover.list()] == ["empty"]

    def test_round_trip_small(self, mover: Mover) -> None:
        with self.case("round_trip_small"):
            entry = _put(mover, "dir/small.bin", b"hello tierctl\n")
            assert (entry.key, entry.size) == ("dir/small.bin", 14)
            assert _read(mover, "dir/small.bin") == b"hello tierctl\n"

    def test_round_trip_large(self, mover: Mover) -> None:
        with self.case("round_trip_large"):
            expected = hashlib.sha256()
            sent = (expected.update(b) or b for b in _blocks(LARGE_SIZE))
            entry = mover.write("large.bin", sent, size=LARGE_SIZE, mtime=MTIME)
            assert entry.size == LARGE_SIZE
            got = hashlib.sha256()
            largest = 0
            for chunk in mover.read_chunks("large.bin", chunk_size=MIB):
                largest = max(largest, len(chunk))
                got.update(chunk)
            assert got.hexdigest() == expected.hexdigest()
            assert largest <= MIB  # the reader honours the chunk size (bounded memory)

    # -- listings ---------------------------------------------------------------------------
    NESTED = ("a.txt", "a/b.txt", "a/b/c.txt", "a/b/d/e.txt", "a-b/x", "b", "a/bz")

    def test_list_nested_sorted(self, mover: Mover) -> None:
        with self.case("list_nested_sorted"):
            for i, key in enumerate(self.NESTED):
                self.arrange(mover, key, b"x" * i, mtime=MTIME + i)
            listed = list(mover.list())
            assert [e.key for e in listed] == sorted(self.NESTED)
            assert {e.key: e.size for e in listed} == {k: i for i, k in enumerate(self.NESTED)}
            for e in listed:
                assert abs(e.mtime - (MTIME + self.NESTED.index(e.key))) <= MTIME_WINDOW
            assert [e.key for e in mover.list("a/")] == ["a/b.txt", "a/b/c.txt", "a/b/d/e.txt", "a/bz"]
            assert [e.key for e in mover.list("a/b/")] == ["a/b/c.txt", "a/b/d/e.txt"]
            assert [e.key for e in mover.list("zzz/")] == []

    def test_list_with_known_entries(self, mover: Mover) -> None:
        with self.case("list_with_known_entries"):
            for i, key in enumerate(self.NESTED[:4]):
                self.arrange(mover, key, b"y" * i, mtime=MTIME + i)
            first = {e.key: e for e in mover.list()}
            again = list(mover.list(known=first.get))
            assert again == list(first.values())
            # A known entry whose version token no longer matches is not trusted.
            self.arrange(mover, "a.txt", b"new", mtime=MTIME + 100)
            changed = {e.key: e for e in mover.list(known=first.get)}
            assert abs(changed["a.txt"].mtime - (MTIME + 100)) <= MTIME_WINDOW
            assert changed["a.txt"].size == 3

    def test_odd_keys(self, mover: Mover) -> None:
        with self.case("odd_keys"):
            for i, key in enumerate(ODD_KEYS):
                self.arrange(mover, key, key.encode(), mtime=MTIME + i)
            assert [e.key for e in mover.list()] == sorted(ODD_KEYS)
            for key in ODD_KEYS:
                assert _read(mover, key) == key.encode()
                assert mover.stat(key).size == len(key.encode())
            mover.delete(ODD_KEYS[0])
            assert [e.key for e in mover.list()] == sorted(ODD_KEYS[1:])

    # -- changes ----------------------------------------------------------------------------
    def test_overwrite(self, mover: Mover) -> None:
        with self.case("overwrite"):
            _put(mover, "k", b"first version", mtime=MTIME)
            _put(mover, "k", b"second", mtime=MTIME + 60)
            entry = mover.stat("k")
            assert entry.size == 6
            assert abs(entry.mtime - (MTIME + 60)) <= MTIME_WINDOW
            assert _read(mover, "k") == b"second"
            assert [e.key for e in mover.list()] == ["k"]

    def test_delete(self, mover: Mover) -> None:
        with self.case("delete"):
            self.arrange(mover, "gone/soon", b"bye")
            self.arrange(mover, "stays", b"hi")
            mover.delete("gone/soon")
            with pytest.raises(ObjectNotFound):
                mover.stat("gone/soon")
            assert [e.key for e in mover.list()] == ["stays"]

    def test_missing_object(self, mover: Mover) -> None:
        with self.case("missing_object"):
            with pytest.raises(ObjectNotFound):
                mover.stat("no/such/key")
            with pytest.raises(ObjectNotFound):
                b"".join(mover.read_chunks("no/such/key"))
            with pytest.raises(ObjectNotFound):
                mover.delete("no/such/key")

    def test_stat_mtime(self, mover: Mover) -> None:
        with self.case("stat_mtime"):
            written = _put(mover, "t", b"time", mtime=MTIME)
            for entry in (written, mover.stat("t"), *mover.list()):
                assert abs(entry.mtime - MTIME) <= MTIME_WINDOW, entry
            old = _put(mover, "old", b"x", mtime=86_400.5)  # 1970: ages travel, however old
            assert abs(mover.stat("old").mtime - 86_400.5) <= MTIME_WINDOW
            assert abs(old.mtime - 86_400.5) <= MTIME_WINDOW

    # -- verified copies with a local peer ----------------------------------------------------
    def test_copy_from_local(self, mover: Mover, local: LocalMover) -> None:
        with self.case("copy_from_local"):
            data = os.urandom(3 * MIB + 17)
            source = _put(local, "c/from-local.bin", data)
            result = copy_verified(local, "c/from-local.bin", mover, expected=source, algorithm="crc32c")
            assert result.bytes == len(data)
            expected = "write" if mover.capabilities.verified_writes else "read-back"
            assert result.verified_by == ("store-checksum" if mover.capabilities.native_digests else expected)
            assert _read(mover, "c/from-local.bin") == data
            assert abs(mover.stat("c/from-local.bin").mtime - MTIME) <= MTIME_WINDOW

    def test_copy_to_local(self, mover: Mover, local: LocalMover) -> None:
        with self.case("copy_to_local"):
            data = os.urandom(MIB + 3)
            source = self.arrange(mover, "c/to-local.bin", data)
            result = copy_verified(mover, "c/to-local.bin", local, expected=source, algorithm="sha256")
            assert result.checksum == "sha256:" + hashlib.sha256(data).hexdigest()
            assert _read(local, "c/to-local.bin") == data
            assert abs(local.stat("c/to-local.bin").mtime - MTIME) <= MTIME_WINDOW

    def test_copy_corrupted_destination(self, mover: Mover, local: LocalMover) -> None:
        with self.case("copy_corrupted_destination"):
            data = os.urandom(2 * MIB)
            source = _put(local, "bad.bin", data)
            with pytest.raises(VerificationFailed):
                copy_verified(local, "bad.bin", _CorruptingWrites(mover), expected=source, algorithm="crc32c")  # type: ignore[arg-type]
            with pytest.raises(ObjectNotFound):
                mover.stat("bad.bin")  # an unverified copy is removed
            with pytest.raises(VerificationFailed):
                copy_verified(local, "bad.bin", _ShortWrites(mover), expected=source, algorithm="crc32c")  # type: ignore[arg-type]
            with pytest.raises(ObjectNotFound):
                mover.stat("bad.bin")

    # -- optional abilities -------------------------------------------------------------------
    def test_storage_class(self, mover: Mover) -> None:
        with self.case("storage_class"):
            self.arrange(mover, "sc", b"class act")
            if not mover.capabilities.set_storage_class:
                with pytest.raises(Unsupported):
                    mover.set_storage_class("sc", self.storage_class)
                return
            changed = mover.set_storage_class("sc", self.storage_class)
            entry = mover.stat("sc")
            assert changed.storage_class == entry.storage_class == self.storage_class
            assert abs(entry.mtime - MTIME) <= MTIME_WINDOW  # a transition keeps the age
            assert entry.size == 9
            assert [e.storage_class for e in mover.list()] == [self.storage_class]
            direct = _put(mover, "sc2", b"born cold", storage_class=self.storage_class)
            assert direct.storage_class == self.storage_class

    def test_server_side_copy(self, mover: Mover) -> None:
        with self.case("server_side_copy"):
            self.arrange(mover, "ssc/src", b"copy me")
            if not mover.capabilities.server_side_copy:
                with pytest.raises(Unsupported):
                    mover.server_side_copy("ssc/src", mover, "ssc/dst")
                return
            entry = mover.server_side_copy("ssc/src", mover, "ssc/dst")
            assert entry.size == 7
            assert abs(entry.mtime - MTIME) <= MTIME_WINDOW
            assert _read(mover, "ssc/dst") == b"copy me"
            with pytest.raises(ObjectNotFound):
                mover.server_side_copy("ssc/none", mover, "ssc/dst2")

    def test_restore(self, mover: Mover) -> None:
        with self.case("restore"):
            self.arrange(mover, "r", b"frozen")
            if not mover.capabilities.restore:
                with pytest.raises(Unsupported):
                    mover.restore("r", days=1, tier="Standard")
                return
            mover.set_storage_class("r", self.storage_class)
            assert mover.stat("r").restore_state == "archived"
            with pytest.raises(ObjectArchived):
                _read(mover, "r")
            mover.restore("r", days=1, tier="Standard")
            mover.restore("r", days=1, tier="Standard")  # asking twice is fine
            state = mover.stat("r").restore_state
            assert state in ("restoring", "restored")
            if state == "restored":
                assert _read(mover, "r") == b"frozen"

    # -- attributes and metadata (tierctl migrate --preserve) -----------------------------------
    ATTRIBUTES: ClassVar[dict[str, str]] = {
        "mode": "100640",
        "uid": "65534",
        "gid": "65534",
        "owner": "nobody",
        "group": "nogroup",
    }

    def test_write_with_metadata(self, mover: Mover) -> None:
        """The store holds the attributes (``capabilities.attributes``), records them as user
        metadata (``capabilities.user_metadata``), or keeps none and says so."""
        with self.case("write_with_metadata"):
            caps = mover.capabilities
            wanted = {**self.ATTRIBUTES, "mtime": "12345"}  # the mtime argument wins
            written = _put(mover, "meta/a.bin", b"attrs", metadata=wanted)
            assert abs(written.mtime - MTIME) <= MTIME_WINDOW
            assert abs(mover.stat("meta/a.bin").mtime - MTIME) <= MTIME_WINDOW
            assert _read(mover, "meta/a.bin") == b"attrs"
            held = mover.attributes("meta/a.bin")
            if caps.attributes:
                assert int(held["mode"], 8) & 0o777 == 0o640, held
                # Giving a file away takes root locally; the HDFS fixtures write as the superuser.
                if os.geteuid() == 0 or not isinstance(mover, LocalMover):
                    assert held["owner"] == "nobody" and held["group"] == "nogroup", held
                listed = dict(mover.list_attributes("meta/"))
                assert listed == {"meta/a.bin": held}
            elif caps.user_metadata:
                assert held == self.ATTRIBUTES  # recorded as given (rclone's keys)
            else:
                assert held == {}
                with pytest.raises(Unsupported):
                    mover.set_attributes("meta/a.bin", {"mode": "644"})
            plain = _put(mover, "meta/plain.bin", b"none")
            assert plain.size == 4 and (not caps.user_metadata or mover.attributes("meta/plain.bin") == {})

    def test_set_attributes(self, mover: Mover) -> None:
        with self.case("set_attributes"):
            self.arrange(mover, "sa/f", b"same bytes", metadata={"mode": "644"})
            if not mover.capabilities.attributes:
                with pytest.raises(Unsupported):
                    mover.set_attributes("sa/f", {"mode": "600"})
                with pytest.raises(Unsupported):
                    list(mover.list_attributes())
                return
            mover.set_attributes("sa/f", {"mode": "600"})
            assert int(mover.attributes("sa/f")["mode"], 8) & 0o777 == 0o600
            assert _read(mover, "sa/f") == b"same bytes"
            assert abs(mover.stat("sa/f").mtime - MTIME) <= MTIME_WINDOW  # content mtime stays
            with pytest.raises(ObjectNotFound):
                mover.set_attributes("sa/none", {"mode": "600"})

    # -- tags and user metadata in listings (policy conditions tag.KEY / meta.KEY) ---------------
    def test_list_metadata(self, mover: Mover) -> None:
        """Listings and stats report tags and user metadata only when asked, exactly what
        the store holds for what ``capabilities.read_metadata`` declares, None (unknown) for
        the rest; known entries of unchanged objects stand in for asking again."""
        from .arrange_metadata import arrange_metadata

        with self.case("list_metadata"):
            readable = set(mover.capabilities.read_metadata)
            self.arrange(mover, "md/plain.bin", b"plain")
            self.arrange(mover, "md/tagged.bin", b"tagged")
            held_meta, held_tags = {}, {}
            if readable:
                held_meta, held_tags = arrange_metadata(
                    mover, "md/tagged.bin", {"team": "ml", "cost-center": "42"}, {"tier": "cold"}
                )
            assert all(e.tags is None and e.metadata is None for e in mover.list("md/"))
            assert mover.stat("md/tagged.bin").metadata is None  # not read unless asked
            mover.want_metadata = frozenset({"tags", "metadata"})
            listed = {e.key: e for e in mover.list("md/")}
            expected = {
                "md/plain.bin": ({} if "metadata" in readable else None, {} if "tags" in readable else None),
                "md/tagged.bin": (
                    held_meta if "metadata" in readable else None,
                    held_tags if "tags" in readable else None,
                ),
            }
            for key, (metadata, tags) in expected.items():
                got = listed[key]
                assert (got.metadata, got.tags) == (metadata, tags), key
                assert abs(got.mtime - MTIME) <= MTIME_WINDOW  # the mtime key is not user metadata
                stat = mover.stat(key)
                assert (stat.metadata, stat.tags) == (metadata, tags), key
            assert list(mover.list("md/", known=listed.get)) == list(listed.values())

    # -- conditional creates (write(if_absent=True)) -------------------------------------------
    def test_conditional_create(self, mover: Mover) -> None:
        """``if_absent`` never replaces an object: where ``capabilities.conditional_create``
        the write raises ObjectExists (small and multipart-sized bodies alike) and creates
        absent keys; elsewhere ``write`` refuses the keyword itself. Either way the object
        already there keeps its bytes, size, mtime and version."""
        with self.case("conditional_create"):
            self.arrange(mover, "cc/there", b"first writer")
            self.arrange(mover, "cc/there-large", b"first large writer")
            before = {key: mover.stat(key) for key in ("cc/there", "cc/there-large")}
            large = 6 * MIB + 1  # above the S3 suite's part size: the multipart path
            attempts = [("cc/there", [b"second writer"], 13), ("cc/there-large", _blocks(large), large)]
            capable = mover.capabilities.conditional_create
            for key, chunks, size in attempts:
                with pytest.raises(ObjectExists if capable else (TypeError, Unsupported)):
                    mover.write(key, chunks, size=size, mtime=MTIME + 60, if_absent=True)  # type: ignore[call-arg]
            assert _read(mover, "cc/there") == b"first writer"
            assert _read(mover, "cc/there-large") == b"first large writer"
            for key, entry in before.items():
                after = mover.stat(key)
                assert (after.size, after.mtime, after.etag) == (entry.size, entry.mtime, entry.etag), key
            if not capable:
                return
            created = _put(mover, "cc/new", b"created", if_absent=True)
            assert created.size == 7 and _read(mover, "cc/new") == b"created"
            assert abs(mover.stat("cc/new").mtime - MTIME) <= MTIME_WINDOW
            with pytest.raises(ObjectExists):
                _put(mover, "cc/new", b"again", if_absent=True)
            assert _read(mover, "cc/new") == b"created"
            assert [e.key for e in mover.list("cc/")] == ["cc/new", "cc/there", "cc/there-large"]
