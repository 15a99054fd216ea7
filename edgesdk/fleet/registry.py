"""HTTP(S) to an OCI distribution registry: TLS with an optional private CA, basic and token auth.

Auth follows the distribution spec: a request answered 401 is retried once with what the
`WWW-Authenticate` challenge asks for (`Basic`, or `Bearer realm=...` whose token is fetched
with the same credentials). Every failure becomes a `RegistryError` that says what to do:
unreachable, untrusted certificate (pass `ca`), refused credentials, not found.
"""
from __future__ import annotations

import base64
import http.client
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from ..errors import PackageError
from .ociref import OciRef

PathLike = Union[str, Path]


class RegistryError(PackageError):
    """The registry could not be reached, refused us, or answered something unusable.

    `transient`: worth retrying (connection lost, HTTP 5xx); a 4xx or a bad answer is not."""

    def __init__(self, message: str, status: Optional[int] = None, transient: bool = False) -> None:
        super().__init__(message)
        self.status, self.transient = status, transient


@dataclass
class Credentials:
    username: str
    password: str

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


class _NoRedirectAuth(urllib.request.HTTPRedirectHandler):
    """Follow redirects (blob storage may redirect) but never carry our Authorization elsewhere."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 (urllib's signature)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
            new.headers.pop("Authorization", None)
        return new


class Registry:
    """One registry host: `request()` returns an open response or raises RegistryError."""

    def __init__(self, host: str, credentials: Optional[Credentials] = None, ca: Optional[PathLike] = None,
                 plain_http: bool = False, timeout: float = 30.0) -> None:
        self.host, self.credentials, self.timeout = host, credentials, timeout
        self.scheme = "http" if plain_http else "https"
        self.ca = Path(ca) if ca else None
        if self.ca is not None and not self.ca.is_file():
            raise RegistryError(f"--ca {self.ca}: no such file; pass the PEM certificate of the CA that signed "
                                "the registry's certificate")
        handlers: list = [_NoRedirectAuth()]
        if not plain_http:
            try:
                ctx = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)
            except ssl.SSLError as exc:
                raise RegistryError(f"--ca {self.ca} is not a PEM certificate: {exc}") from exc
            handlers.append(urllib.request.HTTPSHandler(context=ctx))
        self._opener = urllib.request.build_opener(*handlers)
        self._auth: Optional[str] = None  # the Authorization header that last worked
        self.bytes_sent = 0

    def url(self, ref: OciRef, kind: str, name: str = "") -> str:
        return f"{self.scheme}://{self.host}/v2/{ref.repo}/{kind}/{name}"

    def absolute(self, location: str) -> str:
        return urllib.parse.urljoin(f"{self.scheme}://{self.host}/", location)

    def request(self, method: str, url: str, headers: Optional[dict] = None, data: Optional[bytes] = None,
                ok: tuple[int, ...] = (200,), what: str = "") -> http.client.HTTPResponse:
        """Send one request (with auth when challenged); a status outside `ok` raises."""
        headers = dict(headers or {})
        for attempt in (1, 2):
            if self._auth:
                headers["Authorization"] = self._auth
            req = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                resp = self._opener.open(req, timeout=self.timeout)
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and attempt == 1 and self._answer_challenge(exc):
                    continue
                if exc.code in ok:
                    return exc  # an HTTPError is a response too (e.g. 404 for a HEAD probe)
                raise self._status_error(exc, url, what) from exc
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", exc)
                if isinstance(reason, ssl.SSLCertVerificationError):  # urllib wraps it, or not
                    raise RegistryError(
                        f"the certificate of registry {self.host} is not trusted ({reason.verify_message}); if it "
                        "is self-signed or from a private CA, pass --ca CA.pem with the certificate that signed "
                        "it") from exc
                raise RegistryError(f"cannot reach registry {self.host} ({self.scheme}): {reason}; check the "
                                    "address and that the registry runs" +
                                    ("" if self.scheme == "http" else " (a registry without TLS needs "
                                     "--plain-http)"), transient=True) from exc
            if data:
                self.bytes_sent += len(data)
            if resp.status not in ok:
                resp.close()
                raise RegistryError(f"registry {self.host}: {method} {what or url} answered HTTP {resp.status}",
                                    resp.status)
            return resp
        raise AssertionError("unreachable")

    def _status_error(self, exc: urllib.error.HTTPError, url: str, what: str) -> RegistryError:
        err = self._status_message(exc, url, what)
        err.status, err.transient = exc.code, exc.code >= 500
        return err

    def _status_message(self, exc: urllib.error.HTTPError, url: str, what: str) -> RegistryError:
        detail = _error_detail(exc)
        if exc.code == 401:
            if self.credentials is None:
                return RegistryError(f"registry {self.host} needs credentials for {what or url}: pass --username "
                                     "and the password on stdin (--password-stdin) or in EDGESDK_REGISTRY_PASSWORD")
            return RegistryError(f"registry {self.host} refused the credentials of user "
                                 f"{self.credentials.username!r} (HTTP 401{detail}); check the username and password")
        if exc.code == 403:
            return RegistryError(f"registry {self.host}: user is not allowed to access {what or url} (HTTP 403{detail})")
        if exc.code == 404:
            return RegistryError(f"registry {self.host}: {what or url} not found (HTTP 404{detail})")
        return RegistryError(f"registry {self.host}: {what or url} failed with HTTP {exc.code} {exc.reason}{detail}")

    def _answer_challenge(self, exc: urllib.error.HTTPError) -> bool:
        """Set `_auth` from a 401's challenge; False when there is nothing (new) to try."""
        challenge = exc.headers.get("WWW-Authenticate", "")
        if self.credentials is None and not challenge.lower().startswith("bearer"):
            return False
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "basic" and self.credentials is not None:
            self._auth = self.credentials.basic()
            return True
        if scheme.lower() == "bearer":
            self._auth = "Bearer " + self._token(dict(re.findall(r'(\w+)="([^"]*)"', params)))
            return True
        return False

    def _token(self, params: dict) -> str:
        realm = params.pop("realm", None)
        if not realm:
            raise RegistryError(f"registry {self.host}: a Bearer challenge without a realm; cannot log in")
        url = realm + "?" + urllib.parse.urlencode(params)
        headers = {"Authorization": self.credentials.basic()} if self.credentials else {}
        try:
            with self._opener.open(urllib.request.Request(url, headers=headers), timeout=self.timeout) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise RegistryError(f"registry {self.host}: the token service {realm} refused us (HTTP {exc.code}); "
                                "check --username and the password") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RegistryError(f"registry {self.host}: cannot get a token from {realm}: {exc}") from exc
        token = body.get("token") or body.get("access_token")
        if not token:
            raise RegistryError(f"registry {self.host}: the token service {realm} returned no token")
        return token


def _error_detail(exc: urllib.error.HTTPError) -> str:
    """The registry's own error code/message (distribution spec JSON errors), if any."""
    try:
        errors = json.loads(exc.read() or b"{}").get("errors") or []
    except (ValueError, OSError, AttributeError):
        return ""
    return "".join(f"; {e.get('code')}: {e.get('message')}" for e in errors[:2] if isinstance(e, dict))
