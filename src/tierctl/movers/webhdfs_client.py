"""The request layer of the WebHDFS mover: options, session, requests and error mapping.

One :class:`WebHDFSClient` talks to one WebHDFS NameNode or HttpFS gateway. It owns what
every request shares: the ``requests`` session (pool size, TLS verification, SPNEGO when
``kerberos: true``), the authentication parameters (``user.name``, ``doas``,
``delegation``), the timeout, and the rule that every response's status is checked, the
final one after redirects included. A failed request becomes a classified
:class:`MoverError` (:func:`remote_error`): retryable or not, with a hint where one helps.

It knows HDFS paths and operations, not tier keys: checking a key and turning it into a
path is the mover's (:mod:`.webhdfs`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from tierctl.errors import ConfigError, MissingDependency, MoverError, ObjectChanged, ObjectNotFound
from tierctl.movers.options import (
    BOOLEAN_WORDS,
    Secret,
    boolean_option,
    expand_references,
    positive_int_option,
    positive_number_option,
    reject_unknown,
)

_RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
_RETRYABLE_EXCEPTIONS = {"StandbyException", "RetriableException", "SafeModeException"}

KNOWN_OPTIONS = {
    "user": "the HDFS user (user.name; security off)",
    "proxy_user": "act as this user (doas; the caller must be allowed to proxy)",
    "token": "a delegation token (secured clusters, without Kerberos on this host)",
    "kerberos": "authenticate with SPNEGO/Kerberos (needs requests-kerberos and a kinit ticket)",
    "verify": "swebhdfs: verify the server's TLS certificate (true, false, or a CA bundle path)",
    "max_connections": "concurrent connections",
    "timeout": "seconds to wait for the server to answer (connect and each read)",
}


@dataclass(frozen=True, repr=False)
class WebHDFSOptions:
    """Validated options of one WebHDFS tier."""

    user: str | None = None
    proxy_user: str | None = None
    token: Secret | None = None
    kerberos: bool = False
    verify: bool | str = True
    max_connections: int = 16
    timeout: float = 60.0

    @classmethod
    def parse(cls, options: Mapping[str, Any], *, url: str) -> WebHDFSOptions:
        reject_unknown(options, KNOWN_OPTIONS, url=url)
        values: dict[str, Any] = {}
        for name, raw in options.items():
            value = expand_references(raw, option=name) if isinstance(raw, str) else raw
            if value is None or value == "":
                continue
            if name == "token":
                values[name] = Secret(str(value))
            elif name == "kerberos":
                values[name] = boolean_option(value, name, url)
            elif name == "verify":  # true/false, or the path of a CA bundle
                values[name] = (
                    boolean_option(value, name, url)
                    if isinstance(value, bool) or str(value).lower() in BOOLEAN_WORDS
                    else str(value)
                )
            elif name == "max_connections":
                values[name] = positive_int_option(value, name, url)
            elif name == "timeout":
                values[name] = positive_number_option(value, name, url)
            else:
                values[name] = str(value)
        parsed = cls(**values)
        if parsed.token is not None and (parsed.user or parsed.kerberos):
            raise ConfigError(
                f"{url}: a delegation token already names its user",
                hint="give either token, or user / kerberos, not both",
            )
        return parsed

    def __repr__(self) -> str:
        shown = [
            f"{name}={'***' if name == 'token' else value!r}"
            for name, value in (
                ("user", self.user),
                ("proxy_user", self.proxy_user),
                ("token", self.token),
                ("kerberos", self.kerberos or None),
            )
            if value is not None
        ]
        return f"WebHDFSOptions({', '.join(shown)})"


class WebHDFSClient:
    """Requests to one WebHDFS REST root (``http(s)://host:port/webhdfs/v1``).

    ``url`` is the tier's URL, named in configuration errors; ``what`` arguments name the
    object or listing a request is for, and every error message starts with it."""

    def __init__(self, base: str, options: WebHDFSOptions, *, url: str) -> None:
        self.base = base
        self.options = options
        self.url = url
        self._auth_params: dict[str, str] = {}
        if options.user:
            self._auth_params["user.name"] = options.user
        if options.proxy_user:
            self._auth_params["doas"] = options.proxy_user
        if options.token is not None:
            self._auth_params["delegation"] = options.token.reveal()
        self._session = self._make_session()

    def _make_session(self) -> Any:
        import requests
        from requests.adapters import HTTPAdapter

        session = requests.Session()
        pool = max(10, self.options.max_connections)
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.verify = self.options.verify
        if self.options.kerberos:
            try:
                from requests_kerberos import OPTIONAL, HTTPKerberosAuth  # type: ignore[import-not-found]
            except ImportError:
                raise MissingDependency(
                    f"{self.url}: kerberos: true needs the requests-kerberos package",
                    hint="pip install requests-kerberos (and kinit), or use a delegation token",
                ) from None
            session.auth = HTTPKerberosAuth(mutual_authentication=OPTIONAL)
        return session

    def _request(
        self,
        method: str,
        url: str,
        what: str,
        *,
        params: dict[str, str] | None = None,
        expect: tuple[int, ...] = (200,),
        **kwargs: Any,
    ) -> Any:
        """One request; a status outside ``expect`` raises :func:`remote_error`'s error.
        Redirects are not followed unless ``allow_redirects=True`` is passed."""
        import requests

        kwargs.setdefault("allow_redirects", False)
        kwargs.setdefault("timeout", self.options.timeout)
        try:
            response = self._session.request(method, url, params=params, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise MoverError(
                f"{what}: TLS error ({type(exc).__name__})",
                hint="check the certificate, or the tier's verify option (a CA bundle path)",
            ) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise MoverError(
                f"{what}: cannot reach the server ({type(exc).__name__})", retryable=True
            ) from None
        except requests.exceptions.RequestException as exc:
            raise MoverError(f"{what}: {type(exc).__name__}", retryable=True) from None
        if response.status_code not in expect:
            try:
                raise remote_error(response, what)
            finally:
                response.close()
        return response

    def _url(self, path: str) -> str:
        return self.base + quote(path, safe="/")

    def call(
        self, method: str, path: str, op: str, what: str, *, expect: tuple[int, ...] = (200,), **params: str
    ) -> Any:
        """A namenode request: ``op`` on the HDFS path ``path``."""
        return self._request(
            method, self._url(path), what, params={"op": op, **self._auth_params, **params}, expect=expect
        )

    def open(self, path: str, what: str, **params: str) -> Any:
        """``OPEN`` of ``path``, streamed; the caller reads and closes the response.

        The namenode answers 307 to a datanode (HttpFS: the data itself); the status of
        the final response is checked, so an error body is never taken for content."""
        return self._request(
            "GET",
            self._url(path),
            what,
            params={"op": "OPEN", **params, **self._auth_params},
            allow_redirects=True,
            stream=True,
        )

    def create(self, path: str, chunks: Iterable[bytes], size: int, what: str) -> None:
        """Write a new file at ``path`` (never over an existing one) with exactly ``size``
        bytes from ``chunks``; a source of another length raises :class:`ObjectChanged`."""
        # Step 1: the namenode names the datanode (no body is sent with this request).
        first = self.call("PUT", path, "CREATE", what, expect=(307,), overwrite="false")
        location = first.headers.get("Location")
        first.close()
        if not location:
            raise MoverError(f"{what}: CREATE answered 307 without a Location", retryable=True)
        body: Any = _SizedBody(chunks, size, what)
        if size == 0:
            body = b"".join(body)  # an empty iterable would be sent chunked
        # Step 2: the bytes go to the datanode (HttpFS: back to itself with data=true).
        response = self._request(
            "PUT",
            location,
            what,
            data=body,
            headers={"Content-Type": "application/octet-stream"},
            expect=(200, 201),
        )
        response.close()

    def close(self) -> None:
        self._session.close()


class _SizedBody:
    """A one-shot chunk stream with a known length, so the upload carries Content-Length
    (DataNodes expect it); a source yielding more or fewer bytes aborts the upload."""

    def __init__(self, chunks: Iterable[bytes], size: int, what: str) -> None:
        self._chunks = chunks
        self._size = size
        self._what = what

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        for chunk in self._chunks:
            sent += len(chunk)
            if sent > self._size:
                raise ObjectChanged(f"{self._what}: source longer than the planned {self._size} bytes")
            if chunk:
                yield bytes(chunk)
        if sent != self._size:
            raise ObjectChanged(f"{self._what}: source gave {sent} bytes, planned {self._size}")


# -- answers ----------------------------------------------------------------------------
def json_body(response: Any, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise MoverError(f"{what}: the server did not answer with JSON", retryable=True) from None


def boolean_answer(response: Any) -> bool:
    """The ``{"boolean": ...}`` answer of DELETE and friends (False when absent); closes
    the response."""
    try:
        return bool(response.json().get("boolean"))
    except ValueError:
        return False
    finally:
        response.close()


def renamed(response: Any) -> bool:
    """RENAME with options answers an empty 200; the boolean form ``{"boolean": ...}``."""
    try:
        text = response.text.strip()
    finally:
        response.close()
    if not text:
        return True
    try:
        return bool(json.loads(text).get("boolean"))
    except (ValueError, AttributeError):
        return False


# -- errors -----------------------------------------------------------------------------
class AccessDenied(MoverError):
    """The NameNode refused the operation (AccessControlException)."""


def remote_error(response: Any, what: str) -> MoverError:
    """Classify a failed WebHDFS response from its RemoteException (or its status).

    An operation the server does not know carries ``unsupported_op = True``, so a caller
    can fall back to an older one (``LISTSTATUS_BATCH`` to ``LISTSTATUS``)."""
    status = response.status_code
    exception, message = "", ""
    try:
        remote = response.json().get("RemoteException") or {}
        exception, message = str(remote.get("exception", "")), str(remote.get("message", ""))
    except (ValueError, AttributeError):
        pass
    detail = f"{exception}: {message}" if exception else f"HTTP {status}"
    if exception == "FileNotFoundException" or (status == 404 and not exception):
        return ObjectNotFound(f"{what}: not found")
    if exception in _RETRYABLE_EXCEPTIONS:
        return MoverError(f"{what}: {detail}", retryable=True)
    if status == 401 or exception == "SecurityException":
        return MoverError(
            f"{what}: authentication failed ({detail})",
            hint="check the tier's user / token options, or kinit for kerberos: true",
        )
    if exception == "AccessControlException":
        return AccessDenied(f"{what}: permission denied ({message})", hint="check the HDFS owner and mode")
    error = MoverError(f"{what}: {detail}", retryable=status in _RETRYABLE_STATUS)
    if exception == "UnsupportedOperationException" or "No enum constant" in message:
        error.unsupported_op = True  # type: ignore[attr-defined]
    return error
