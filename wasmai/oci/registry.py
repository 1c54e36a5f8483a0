"""The registry session (oras-py's :class:`oras.provider.Registry` with digest checks, the
content-addressed cache and the referrers API or referrers-tag fallback)."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wasmai._atomic import atomic_path
from wasmai.errors import WasmaiError, first_line
from wasmai.oci.reference import Reference, RegistryAuth, auth_files
from wasmai.oci.spec import (
    _ACCEPT,
    _DIGEST_RE,
    _MAX_MANIFEST_BYTES,
    ANNOTATION_CREATED,
    INDEX_MEDIA_TYPE,
    LOCAL_HOSTS,
    MANIFEST_MEDIA_TYPE,
    RegistryError,
    _canonical,
    _descriptor,
    _sha256,
)

if TYPE_CHECKING:
    import requests



def _oci_error(resp: requests.Response) -> str:
    """The first ``errors[].message`` of an OCI error body, else the HTTP reason."""
    try:
        errors = resp.json().get("errors") or []
        parts = [f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors if isinstance(e, dict)]
        if parts:
            return parts[0]
    except ValueError:
        pass
    return resp.reason or "error"


def cache_root() -> Path:
    """``<wasmai cache>/oci``: the content-addressed blob cache (``blobs/sha256/<hex>``)."""
    from wasmai.toolchain import cache_dir

    return cache_dir() / "oci"


def _cache_path(digest: str) -> Path:
    return cache_root() / "blobs" / "sha256" / digest.split(":", 1)[1]


def _cached(digest: str, size: int | None = None) -> Path | None:
    """The cached blob for ``digest`` if present and intact (re-hashed on every use; a corrupt
    entry is removed)."""
    from wasmai.manifest import sha256_file

    path = _cache_path(digest)
    if not path.is_file():
        return None
    if (size is None or path.stat().st_size == size) and "sha256:" + sha256_file(path) == digest:
        return path
    path.unlink(missing_ok=True)
    return None


@functools.lru_cache(maxsize=1)
def _registry_class() -> type[Any]:
    """oras-py's :class:`oras.provider.Registry` without its retry loop (five attempts with sleeps
    of up to 83 s on a refused connection), sending basic credentials up front when the registry
    asked for basic authentication, and raising RegistryError for transport failures. Built on
    first use so that ``import wasmai.oci`` stays light."""
    import oras.provider
    import requests

    # oras-py's do_request is wrapped by its retry decorator (functools.wraps keeps the original).
    unretried: Callable[..., requests.Response] = oras.provider.Registry.do_request.__wrapped__

    class _Registry(oras.provider.Registry):  # type: ignore[misc]
        send_basic = False

        def do_request(self, url: str, method: str = "GET", data: Any = None, headers: dict[str, str] | None = None,
                       json: Any = None, stream: bool = False) -> requests.Response:
            headers = dict(headers or {})
            if self.send_basic:
                headers.update(self.auth.get_auth_header())
            try:
                return unretried(self, url, method, data, headers, json, stream)
            except requests.RequestException as exc:
                raise RegistryError(f"{method} {url} failed: {type(exc).__name__}") from None
            except ValueError as exc:  # oras-py: "Cannot respond to request for authentication."
                raise RegistryError(f"{self.hostname}: authentication failed ({first_line(exc)})") from None

    return _Registry


class _Session:
    """One registry repository: oras-py's :class:`oras.provider.Registry` for HTTP and
    credentials, plus digest-checked manifest and blob transfers."""

    def __init__(self, ref: Reference, auth: RegistryAuth | None, insecure: bool) -> None:
        import requests

        # oras-py reports through logging what is raised here as RegistryError: keep stderr to the
        # CLI's one `error:` line.
        oras_logger = logging.getLogger("oras")
        if not oras_logger.handlers:
            oras_logger.addHandler(logging.NullHandler())
        oras_logger.propagate = False

        host = ref.registry.rsplit(":", 1)[0] if not ref.registry.startswith("[") else ref.registry.split("]")[0] + "]"
        if insecure and host not in LOCAL_HOSTS:
            raise WasmaiError(f"--insecure (plain HTTP) is only accepted for a registry on this machine "
                              f"({', '.join(LOCAL_HOSTS)}), not {ref.registry}")
        self.ref = ref
        self.scheme = "http" if insecure else "https"
        self.base = f"{self.scheme}://{ref.registry}/v2/{ref.repository}"
        # The API version check (GET /v2/) tells whether the registry answers and which
        # authentication it wants (https://distribution.github.io/distribution/spec/api/#api-version-check).
        try:
            ping = requests.get(f"{self.scheme}://{ref.registry}/v2/", timeout=30)
        except requests.exceptions.SSLError as exc:
            raise RegistryError(f"TLS failed for {ref.registry}: {first_line(exc)} (a registry with a private CA: "
                                "set REQUESTS_CA_BUNDLE; a plain-HTTP registry on localhost: --insecure)") from None
        except requests.RequestException as exc:
            raise RegistryError(f"cannot reach registry {ref.registry} over {self.scheme}: "
                                f"{type(exc).__name__}") from None
        challenge = ping.headers.get("Www-Authenticate", "") if ping.status_code == 401 else ""
        basic = challenge.lower().startswith("basic")
        if ping.status_code not in (200, 401):
            raise RegistryError(f"{ref.registry} is not an OCI registry (GET /v2/ answered HTTP {ping.status_code})")

        self.client = _registry_class()(hostname=ref.registry, insecure=insecure,
                                        auth_backend="basic" if basic else "token")
        self.container = self.client.get_container(ref.name + ":" + (ref.tag or "latest"))
        if auth is not None:
            self.client.auth.set_basic_auth(auth.username, auth.password)
        else:
            self.client.auth.load_configs(self.container, configs=auth_files() or None)
        # oras-py keeps loaded basic credentials on the backend's `_basic_auth` attribute.
        self.has_credentials = bool(getattr(self.client.auth, "_basic_auth", None))
        self.client.send_basic = basic and self.has_credentials
        if ping.status_code == 401 and not self.has_credentials:
            raise RegistryError(f"{ref.registry} requires authentication: log in (docker login, "
                                "REGISTRY_AUTH_FILE) or pass --username and --password-stdin")
        if self.client.send_basic:
            # Basic credentials are checked once, here, rather than as a failed upload later.
            again = self.client.do_request(f"{self.scheme}://{ref.registry}/v2/", "GET")
            if again.status_code in (401, 403):
                raise RegistryError(f"{ref.registry} refused the credentials (HTTP {again.status_code}): "
                                    "check the user name and password")

    # -- HTTP ----------------------------------------------------------------------------------

    def request(self, method: str, url: str, what: str, ok: tuple[int, ...], *, data: bytes | None = None,
                headers: dict[str, str] | None = None, stream: bool = False,
                allow: tuple[int, ...] = ()) -> requests.Response:
        """One request through oras-py; a status outside ``ok`` + ``allow`` is a RegistryError."""
        resp: requests.Response = self.client.do_request(url, method, data=data, headers=headers or {},
                                                         stream=stream)
        if resp.status_code in ok or resp.status_code in allow:
            return resp
        if resp.status_code in (401, 403):
            raise RegistryError(f"{self.ref.registry} refused to {what} (HTTP {resp.status_code}, "
                                f"{_oci_error(resp)}): check the credentials and their permissions")
        raise RegistryError(f"{self.ref.registry} refused to {what} (HTTP {resp.status_code}, {_oci_error(resp)})")

    def manifest_url(self, reference: str) -> str:
        return f"{self.base}/manifests/{reference}"

    # -- manifests -----------------------------------------------------------------------------

    def get_manifest(self, reference: str, *, missing_ok: bool = False) -> tuple[bytes, str, str] | None:
        """``(bytes, media type, digest)`` of the manifest at a tag or digest, checked against the
        digest asked for (by digest) or announced (``Docker-Content-Digest``). None if absent and
        ``missing_ok``. Raises RegistryError for anything else."""
        if _DIGEST_RE.match(reference) and (hit := _cached(reference)) is not None:
            data = hit.read_bytes()
            return data, str(json.loads(data).get("mediaType", MANIFEST_MEDIA_TYPE)), reference
        resp = self.request("GET", self.manifest_url(reference), f"serve manifest {self.ref.name}:{reference}",
                            (200,), headers={"Accept": _ACCEPT}, allow=(404,) if missing_ok else ())
        if resp.status_code == 404:
            return None
        data = resp.content
        if len(data) > _MAX_MANIFEST_BYTES:
            raise RegistryError(f"manifest {self.ref.name}:{reference} is over {_MAX_MANIFEST_BYTES} bytes")
        digest = _sha256(data)
        expected = reference if _DIGEST_RE.match(reference) else resp.headers.get("Docker-Content-Digest")
        if expected and expected != digest:
            raise RegistryError(f"manifest {self.ref.name}:{reference} does not match its digest "
                                f"(expected {expected}, got {digest})")
        try:
            doc = json.loads(data)
        except ValueError:
            raise RegistryError(f"manifest {self.ref.name}:{reference} is not JSON") from None
        media_type = str(doc.get("mediaType") or resp.headers.get("Content-Type", "").split(";")[0])
        self.store(digest, data)
        return data, media_type, digest

    def put_manifest(self, data: bytes, media_type: str, reference: str) -> requests.Response:
        """PUT a manifest under a tag or its digest; checks the digest the registry computed."""
        resp = self.request("PUT", self.manifest_url(reference), f"accept manifest {self.ref.name}:{reference}",
                            (201, 200), data=data, headers={"Content-Type": media_type})
        announced = resp.headers.get("Docker-Content-Digest")
        if announced and announced != _sha256(data):
            raise RegistryError(f"{self.ref.registry} stored manifest {self.ref.name}:{reference} as {announced}, "
                                f"not {_sha256(data)}")
        return resp

    # -- blobs ---------------------------------------------------------------------------------

    def push_blob(self, path: Path, media_type: str, digest: str, size: int,
                  annotations: dict[str, str] | None = None) -> dict[str, Any]:
        """Upload a file as a blob (skipped when the registry has it); returns its descriptor."""
        desc = _descriptor(media_type, digest, size, **({"annotations": annotations} if annotations else {}))
        try:
            resp = self.client.upload_blob(str(path), self.container, desc)
        except ValueError as exc:  # oras-py: "Issue retrieving session url: ..." (a refused upload)
            raise RegistryError(f"{self.ref.registry} refused the upload of {digest}: "
                                f"{first_line(exc)[:200]}") from None
        if resp.status_code not in (200, 201, 202):
            if resp.status_code in (401, 403):
                raise RegistryError(f"{self.ref.registry} refused the upload to {self.ref.name} "
                                    f"(HTTP {resp.status_code}, {_oci_error(resp)}): check the credentials")
            raise RegistryError(f"{self.ref.registry} refused blob {digest} (HTTP {resp.status_code}, "
                                f"{_oci_error(resp)})")
        return desc

    def push_bytes(self, data: bytes, media_type: str, **extra: Any) -> dict[str, Any]:
        """Upload bytes as a blob; returns its descriptor."""
        digest = _sha256(data)
        with tempfile.TemporaryDirectory(prefix="wasmai-oci-") as tmp:
            path = Path(tmp) / "blob"
            path.write_bytes(data)
            return self.push_blob(path, media_type, digest, len(data), **extra)

    def store(self, digest: str, data: bytes) -> Path:
        """Write verified bytes into the cache (atomically)."""
        path = _cache_path(digest)
        if not path.is_file():
            with atomic_path(path) as tmp:
                tmp.write_bytes(data)
        return path

    def fetch_blob(self, desc: dict[str, Any]) -> Path:
        """The blob of a descriptor in the cache: downloaded, checked against its digest and size
        while streaming, then renamed into place. Raises RegistryError on a mismatch."""
        digest, size = str(desc.get("digest", "")), desc.get("size")
        if not _DIGEST_RE.match(digest) or not isinstance(size, int) or size < 0:
            raise RegistryError(f"{self.ref.name}: bad descriptor {json.dumps(desc)[:200]}")
        if (hit := _cached(digest, size)) is not None:
            return hit
        resp = self.request("GET", f"{self.base}/blobs/{digest}", f"serve blob {digest}", (200,), stream=True)
        h, got = hashlib.sha256(), 0
        dest = _cache_path(digest)
        with resp, atomic_path(dest) as tmp, open(tmp, "wb") as out:
            for chunk in resp.iter_content(chunk_size=1 << 20):
                got += len(chunk)
                if got > size:
                    break
                h.update(chunk)
                out.write(chunk)
            if got != size or "sha256:" + h.hexdigest() != digest:
                raise RegistryError(f"blob {digest} from {self.ref.name} does not match its descriptor "
                                    f"({'size ' + str(got) if got != size else 'sha256:' + h.hexdigest()})")
        return dest

    # -- referrers -----------------------------------------------------------------------------

    def referrers(self, subject: str, artifact_type: str) -> tuple[list[dict[str, Any]], str]:
        """Descriptors of the manifests whose subject is ``subject`` with ``artifact_type``, and
        how they were found: the referrers API, else the referrers tag schema (``sha256-<hex>``)
        (https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#listing-referrers)."""
        resp = self.request("GET", f"{self.base}/referrers/{subject}?artifactType={artifact_type}",
                            f"list referrers of {subject}", (200,), headers={"Accept": INDEX_MEDIA_TYPE},
                            allow=(404,))
        via = "referrers-api"
        if resp.status_code == 200 and resp.headers.get("Content-Type", "").startswith(INDEX_MEDIA_TYPE):
            index = resp.json()
        else:
            via = "referrers-tag"
            got = self.get_manifest(_referrers_tag(subject), missing_ok=True)
            index = json.loads(got[0]) if got is not None else {"manifests": []}
        found = [d for d in index.get("manifests") or [] if isinstance(d, dict)
                 and d.get("artifactType") == artifact_type and _DIGEST_RE.match(str(d.get("digest", "")))]
        # The newest first (cosign's org.opencontainers.image.created annotation).
        found.sort(key=lambda d: str((d.get("annotations") or {}).get(ANNOTATION_CREATED, "")), reverse=True)
        return found, via

    def add_referrer(self, subject: str, desc: dict[str, Any]) -> None:
        """Add ``desc`` to the referrers tag schema index of ``subject`` (created if absent)."""
        tag = _referrers_tag(subject)
        got = self.get_manifest(tag, missing_ok=True)
        index: dict[str, Any] = (json.loads(got[0]) if got is not None else
                                 {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": []})
        manifests = [d for d in index.get("manifests") or [] if d.get("digest") != desc["digest"]]
        index["manifests"] = [*manifests, desc]
        self.put_manifest(_canonical(index), INDEX_MEDIA_TYPE, tag)


def _referrers_tag(digest: str) -> str:
    """The referrers tag schema's tag for a digest: ``<alg>-<hex>``."""
    return digest.replace(":", "-")
