"""Distribute components through OCI registries: ``wasmai push`` / ``pull`` and ``oci://`` references.

A component is pushed in the CNCF TAG Runtime **Wasm OCI Artifact** layout
(https://tag-runtime.cncf.io/wgs/wasm/deliverables/wasm-oci-artifact/): an OCI image manifest
whose config (``application/vnd.wasm.config.v0+json``) says ``architecture: wasm``, ``os: wasip2``,
lists ``layerDigests`` and the component's world imports/exports, and whose single layer is the
component (``application/wasm``). The manifest carries ``org.opencontainers.image.*`` annotations
and the model's own (``dev.wasmai.*``, from the component's ``metadata.info``).

Its Sigstore bundle is attached the way cosign 3 stores bundles
(https://github.com/sigstore/cosign/blob/main/specs/BUNDLE_SPEC.md): an OCI 1.1 manifest with
``artifactType: application/vnd.dev.sigstore.bundle.v0.3+json`` whose ``subject`` is the
component's manifest. Registries with the referrers API index it themselves (they answer the
manifest PUT with an ``OCI-Subject`` header); on the others the referrers tag schema
(a ``sha256-<hex>`` tagged image index) is updated, as the distribution spec asks
(https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#pushing-manifests-with-subject).

Reading resolves a tag to a manifest digest once; every manifest and blob is checked against its
digest and kept in a content-addressed cache (``<cache root>/oci/blobs/sha256/<hex>``, the cache
root being :func:`wasmai.toolchain.cache_dir`). :func:`resolve_component` is the one entry point
for ``oci://`` references in ``verify``, ``run`` and ``bench``: it pins the digest, fetches the
component and the bundles attached to it, and (given a policy) returns the bundle that verifies,
so the caller runs exactly those bytes.

HTTP, authentication (``~/.docker/config.json``, ``REGISTRY_AUTH_FILE``, user name + password) and
uploads go through oras-py's :class:`oras.provider.Registry`; this module adds the layouts, the
digest checks, the cache and the referrers.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wasmai._atomic import atomic_path
from wasmai.errors import VerificationError, WasmaiError, first_line

if TYPE_CHECKING:
    import requests

    from wasmai.sign import VerificationPolicy, VerifyResult

__all__ = [
    "OCI_SCHEME", "PullResult", "PushResult", "Reference", "RegistryAuth", "RegistryError", "Resolved",
    "SignReferenceResult", "is_oci_reference", "parse_reference", "pull", "push", "resolve_component",
    "sign_reference",
]

# --- media types and constants ------------------------------------------------------------------

#: Prefix of a registry reference wherever a component path is accepted (``wasmai run oci://...``).
OCI_SCHEME = "oci://"

#: OCI image manifest and index (https://github.com/opencontainers/image-spec/blob/v1.1.0/media-types.md).
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
#: The empty descriptor's media type and content ``{}``
#: (https://github.com/opencontainers/image-spec/blob/v1.1.0/manifest.md#guidance-for-an-empty-descriptor).
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONTENT = b"{}"
#: Wasm OCI Artifact config and layer media types, architecture and OS of a component
#: (https://tag-runtime.cncf.io/wgs/wasm/deliverables/wasm-oci-artifact/).
WASM_CONFIG_MEDIA_TYPE = "application/vnd.wasm.config.v0+json"
WASM_LAYER_MEDIA_TYPE = "application/wasm"
WASM_ARCHITECTURE = "wasm"
WASM_COMPONENT_OS = "wasip2"
#: Sigstore bundle v0.3 media type, also the artifactType of cosign 3's bundle referrers
#: (https://github.com/sigstore/cosign/blob/main/specs/BUNDLE_SPEC.md).
SIGSTORE_BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
#: Pre-defined annotation keys (https://github.com/opencontainers/image-spec/blob/v1.1.0/annotations.md).
ANNOTATION_TITLE = "org.opencontainers.image.title"
ANNOTATION_VERSION = "org.opencontainers.image.version"
ANNOTATION_CREATED = "org.opencontainers.image.created"
ANNOTATION_SOURCE = "org.opencontainers.image.source"
ANNOTATION_LICENSES = "org.opencontainers.image.licenses"
ANNOTATION_DESCRIPTION = "org.opencontainers.image.description"
#: cosign's bundle annotation: ``message-signature`` or ``dsse-envelope`` (BUNDLE_SPEC.md above).
ANNOTATION_BUNDLE_CONTENT = "dev.sigstore.bundle.content"
#: wasmai's own manifest annotations (reverse-DNS keys as the annotations spec asks), from the
#: component's ``metadata.info`` (wit/inference.wit ``model-info``) and its world.
ANNOTATION_PREFIX = "dev.wasmai."
#: Media types a manifest GET accepts; Docker's are accepted only to be refused with a clear message
#: (https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#pulling-manifests).
_ACCEPT = ", ".join([MANIFEST_MEDIA_TYPE, INDEX_MEDIA_TYPE,
                     "application/vnd.docker.distribution.manifest.v2+json",
                     "application/vnd.docker.distribution.manifest.list.v2+json"])
#: Hosts where ``--insecure`` (plain HTTP) is accepted.
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
#: ``sha256:<64 hex>``: the only digest algorithm wasmai reads or writes.
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
#: Largest manifest accepted (the distribution spec lets registries refuse over 4 MiB).
_MAX_MANIFEST_BYTES = 4 << 20


class RegistryError(WasmaiError):
    """A registry could not be reached, refused a request, or served content that does not match
    its digest or layout."""


# --- references and credentials ------------------------------------------------------------------

@dataclass(frozen=True)
class Reference:
    """A parsed ``REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]``."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        """``REGISTRY/REPOSITORY``."""
        return f"{self.registry}/{self.repository}"

    def pinned(self, digest: str) -> str:
        """``REGISTRY/REPOSITORY@digest``: the immutable reference."""
        return f"{self.name}@{digest}"

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def is_oci_reference(text: str | os.PathLike[str]) -> bool:
    """Whether a component argument is an ``oci://`` registry reference rather than a file."""
    return isinstance(text, str) and text.startswith(OCI_SCHEME)


def parse_reference(text: str, *, default_tag: str | None = "latest") -> Reference:
    """Parse ``[oci://]REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]`` (docker/oras naming, via
    :class:`oras.container.Container`). ``REGISTRY`` must be given (a host with a dot or a port,
    or ``localhost``); a reference without tag or digest gets ``default_tag``.

    Raises :class:`WasmaiError` for a malformed reference or a digest that is not sha256."""
    import oras.container

    raw = text[len(OCI_SCHEME):] if text.startswith(OCI_SCHEME) else text
    first = raw.split("/", 1)[0]
    if "/" not in raw or not ("." in first or ":" in first or first == "localhost"):
        raise WasmaiError(f"{text!r} is not a registry reference: give REGISTRY/REPOSITORY[:TAG] "
                          "with the registry host, e.g. ghcr.io/acme/model:1.0 or localhost:5000/model:1.0")
    try:
        parsed = oras.container.Container(raw)
    except ValueError as exc:
        raise WasmaiError(f"{text!r} is not a registry reference: {exc}") from None
    digest = parsed.digest or None
    if digest is not None and not _DIGEST_RE.match(digest):
        raise WasmaiError(f"{text!r}: only sha256:<64 lowercase hex> digests are supported")
    name_part = raw.rsplit("/", 1)[-1].split("@", 1)[0]
    tag = parsed.tag if ":" in name_part else (default_tag if digest is None else None)
    repository = f"{parsed.namespace}/{parsed.repository}" if parsed.namespace else parsed.repository
    if repository != repository.lower():
        raise WasmaiError(f"{text!r}: repository names are lowercase")
    return Reference(registry=parsed.registry, repository=repository, tag=tag, digest=digest)


@dataclass(frozen=True)
class RegistryAuth:
    """Explicit registry credentials (``--username`` / ``--password-stdin``). Without them, the
    credentials for the registry host come from ``REGISTRY_AUTH_FILE``, ``$DOCKER_CONFIG/config.json``
    and ``~/.docker/config.json`` (``auths``, ``credHelpers``, ``credsStore``)."""

    username: str
    password: str = field(repr=False)


def auth_files() -> list[str]:
    """The credential files read for a registry: ``REGISTRY_AUTH_FILE`` (containers-auth.json,
    https://github.com/containers/image/blob/main/docs/containers-auth.json.5.md) and
    ``$DOCKER_CONFIG/config.json``, when set and present; oras-py adds ``~/.docker/config.json``."""
    files = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(os.environ["REGISTRY_AUTH_FILE"])
    if os.environ.get("DOCKER_CONFIG"):
        files.append(os.path.join(os.environ["DOCKER_CONFIG"], "config.json"))
    return [f for f in files if os.path.isfile(f)]


# --- the registry session ------------------------------------------------------------------------

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


def _descriptor(media_type: str, data_digest: str, size: int, **extra: Any) -> dict[str, Any]:
    """An OCI content descriptor (https://github.com/opencontainers/image-spec/blob/v1.1.0/descriptor.md)."""
    return {"mediaType": media_type, "digest": data_digest, "size": size, **extra}


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _canonical(doc: dict[str, Any]) -> bytes:
    """The bytes wasmai pushes for a JSON document (compact, key order kept)."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


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


# --- push ----------------------------------------------------------------------------------------

@dataclass
class PushResult:
    """What ``wasmai push`` wrote: the manifest digest (what to run by), the pinned reference,
    the component layer, the annotations and the attached signature, if any."""

    reference: str
    digest: str
    pinned: str
    component: str
    component_digest: str
    size_bytes: int
    config_digest: str
    annotations: dict[str, str]
    signature: dict[str, Any] | None
    model_artifact: str | None
    seconds: float


def _wasi_nn_version(imports: list[str]) -> str:
    for item in imports:
        if item.startswith("wasi:nn/") and "@" in item:
            return item.split("@", 1)[1]
    return ""


def _world_target(task: str, exports: list[str]) -> str | None:
    """The ``wasmai:inference`` world a component of ``task`` targets (its template's world, at the
    version of its exports), e.g. ``wasmai:inference/tensor-model@0.2.0``."""
    from wasmai.build.templates import load_template

    version = next((e.split("@", 1)[1] for e in exports if e.startswith("wasmai:inference/") and "@" in e), None)
    try:
        world = load_template(task).world
    except WasmaiError:
        return None
    return f"wasmai:inference/{world}@{version}" if version else None


def _annotations(info: dict[str, Any] | None, imports: list[str], title: str, created: str,
                 source: str | None, licenses: str | None) -> dict[str, str]:
    """The manifest annotations: OCI pre-defined keys and ``dev.wasmai.*`` from ``metadata.info``."""
    notes = {ANNOTATION_TITLE: title, ANNOTATION_CREATED: created}
    if source:
        notes[ANNOTATION_SOURCE] = source
    if licenses:
        notes[ANNOTATION_LICENSES] = licenses
    if info:
        if info.get("version"):
            notes[ANNOTATION_VERSION] = str(info["version"])
        notes[ANNOTATION_DESCRIPTION] = f"{info.get('name', '')} ({info.get('task', '')}) as a wasi-nn component"
        p = ANNOTATION_PREFIX
        notes.update({
            p + "model.name": str(info.get("name", "")),
            p + "model.version": str(info.get("version", "")),
            p + "model.task": str(info.get("task", "")),
            p + "model.sha256": str(info.get("model_sha256", "")),
            p + "model.placement": str(info.get("placement", "")),
            p + "model.inputs": json.dumps(info.get("inputs", []), separators=(",", ":")),
            p + "model.outputs": json.dumps(info.get("outputs", []), separators=(",", ":")),
            p + "wasi-nn.version": _wasi_nn_version(imports),
            p + "version": str(info.get("wasmai_version", "")),
        })
    return notes


def push(component: str | os.PathLike[str], reference: str, *, bundle: str | os.PathLike[str] | None = None,
         model: str | os.PathLike[str] | None = None, source: str | None = None, licenses: str | None = None,
         auth: RegistryAuth | None = None, insecure: bool = False) -> PushResult:
    """Push a component to ``REGISTRY/REPOSITORY[:TAG]`` (tag ``latest`` by default) in the Wasm OCI
    Artifact layout (module docstring), then attach its Sigstore bundle as a referrer when one
    exists: ``bundle``, else :func:`wasmai.sign.default_bundle_path` beside the component.

    A component that loads its model by name (``placement = by-name:NAME``) needs ``model``, the
    ONNX file it was built for (same sha256): it is pushed first as its own artifact (artifact
    type :data:`ONNX_ARTIFACT_TYPE`) in the same repository and the component's manifest names it
    by digest (annotation ``dev.wasmai.model.artifact``).

    Returns a :class:`PushResult`. Raises :class:`WasmaiError` for a missing component, a
    reference with a digest, a bundle signed for other bytes or a missing/mismatched ``model``;
    :class:`RegistryError` when the registry cannot be reached, wants credentials or refuses."""
    from wasmai.manifest import sha256_file
    from wasmai.runtime import inspect_component
    from wasmai.sign import bundle_summary, default_bundle_path

    t0 = time.perf_counter()
    path = Path(component)
    if not path.is_file():
        raise WasmaiError(f"component not found: {path}")
    ref = parse_reference(reference)
    if ref.digest is not None:
        raise WasmaiError(f"push to a tag, not a digest: {reference}")
    described = inspect_component(path)
    if described.info is None:
        raise WasmaiError(f"{path} is not a wasmai component: metadata.info failed ({described.info_error})")
    info = described.info
    bundle_file = Path(bundle) if bundle is not None else default_bundle_path(path)
    if bundle is not None and not bundle_file.is_file():
        raise WasmaiError(f"bundle not found: {bundle_file}")
    summary = bundle_summary(path, bundle_file) if bundle_file.is_file() else None
    if summary is not None and not summary.get("digest_matches"):
        raise WasmaiError(f"{bundle_file} does not sign {path} (it signs {summary.get('signed_digest') or '?'}, "
                          f"the component is sha256 {summary.get('digest')}): sign the component again")
    placement = str(info.get("placement", ""))
    if placement.startswith("by-name:") and model is None:
        raise WasmaiError(f"{path.name} loads its model by name ({placement}): pass --model FILE.onnx "
                          "to push the model as its own artifact")
    if model is not None and not placement.startswith("by-name:"):
        raise WasmaiError(f"{path.name} embeds its model: --model is only for by-name components")
    if model is not None and sha256_file(model) != info.get("model_sha256"):
        raise WasmaiError(f"{model} is not the model {path.name} was built for "
                          f"(the component expects sha256 {info.get('model_sha256')})")

    session = _Session(ref, auth, insecure)
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    notes = _annotations(info, described.imports, path.name, created, source, licenses)
    model_artifact = None
    if model is not None:
        model_artifact = _push_model(session, Path(model), placement.split(":", 1)[1], created)
        notes[ANNOTATION_PREFIX + "model.artifact"] = model_artifact

    layer_digest = "sha256:" + described.sha256
    layer = session.push_blob(path, WASM_LAYER_MEDIA_TYPE, layer_digest, described.size_bytes,
                              annotations={ANNOTATION_TITLE: path.name})
    config = {
        "created": created,
        "architecture": WASM_ARCHITECTURE,
        "os": WASM_COMPONENT_OS,
        "layerDigests": [layer_digest],
        "component": {"exports": described.exports, "imports": described.imports,
                      "target": _world_target(str(info.get("task", "")), described.exports)},
    }
    config_desc = session.push_bytes(_canonical(config), WASM_CONFIG_MEDIA_TYPE)
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE, "config": config_desc,
                "layers": [layer], "annotations": notes}
    data = _canonical(manifest)
    digest = _sha256(data)
    session.put_manifest(data, MANIFEST_MEDIA_TYPE, ref.tag or "latest")
    session.store(digest, data)
    signature = None
    if summary is not None:
        signature = _attach_bundle(session, _descriptor(MANIFEST_MEDIA_TYPE, digest, len(data)), bundle_file)
    return PushResult(reference=str(ref), digest=digest, pinned=ref.pinned(digest), component=str(path),
                      component_digest=layer_digest, size_bytes=described.size_bytes,
                      config_digest=config_desc["digest"], annotations=notes, signature=signature,
                      model_artifact=model_artifact, seconds=time.perf_counter() - t0)


#: The artifact type of a by-name component's ONNX model pushed as its own artifact (wasmai's
#: vendor-tree media type, https://www.rfc-editor.org/rfc/rfc6838#section-3.2; IANA registers none
#: for ONNX) and the media type of its one layer, the ONNX protobuf bytes as written by ``convert``.
ONNX_ARTIFACT_TYPE = "application/vnd.wasmai.onnx.model.v1"
ONNX_LAYER_MEDIA_TYPE = "application/vnd.wasmai.onnx.model.v1+protobuf"


def _push_model(session: _Session, model: Path, name: str, created: str) -> str:
    """Push an ONNX file as its own untagged artifact; returns its manifest digest."""
    from wasmai.manifest import sha256_file

    layer = session.push_blob(model, ONNX_LAYER_MEDIA_TYPE, "sha256:" + sha256_file(model), model.stat().st_size,
                              annotations={ANNOTATION_TITLE: model.name})
    config = session.push_bytes(EMPTY_CONTENT, EMPTY_MEDIA_TYPE)
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE, "artifactType": ONNX_ARTIFACT_TYPE,
                "config": config, "layers": [layer],
                "annotations": {ANNOTATION_CREATED: created, ANNOTATION_TITLE: model.name,
                                ANNOTATION_PREFIX + "model.graph": name}}
    data = _canonical(manifest)
    digest = _sha256(data)
    session.put_manifest(data, MANIFEST_MEDIA_TYPE, digest)
    return digest


def _attach_bundle(session: _Session, subject: dict[str, Any], bundle_file: Path) -> dict[str, Any]:
    """Attach a Sigstore bundle to ``subject`` as cosign 3 does (module docstring); returns the
    referrer's digest and how it is indexed (``referrers-api`` or ``referrers-tag``)."""
    data = bundle_file.read_bytes()
    doc = json.loads(data)
    content = "dsse-envelope" if "dsseEnvelope" in doc else "message-signature"
    blob_digest = _sha256(data)
    layer = session.push_bytes(data, SIGSTORE_BUNDLE_MEDIA_TYPE,
                               annotations={ANNOTATION_TITLE: f"{_referrers_tag(blob_digest)}.sigstore.json"})
    config = session.push_bytes(EMPTY_CONTENT, EMPTY_MEDIA_TYPE)
    notes = {ANNOTATION_BUNDLE_CONTENT: content,
             ANNOTATION_CREATED: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE, "artifactType": SIGSTORE_BUNDLE_MEDIA_TYPE,
                "config": config, "layers": [layer], "subject": subject, "annotations": notes}
    manifest_data = _canonical(manifest)
    digest = _sha256(manifest_data)
    resp = session.put_manifest(manifest_data, MANIFEST_MEDIA_TYPE, digest)
    session.store(digest, manifest_data)
    # A registry that indexed the subject says so with OCI-Subject; otherwise the client keeps the
    # referrers tag schema index up to date (distribution-spec v1.1, pushing manifests with subject).
    if resp.headers.get("OCI-Subject") == subject["digest"]:
        via = "referrers-api"
    else:
        session.add_referrer(subject["digest"], _descriptor(MANIFEST_MEDIA_TYPE, digest, len(manifest_data),
                                                            artifactType=SIGSTORE_BUNDLE_MEDIA_TYPE,
                                                            annotations=notes))
        via = "referrers-tag"
    return {"digest": digest, "bundle_digest": blob_digest, "kind": content, "indexed_by": via}


# --- reading: the one resolution of a reference --------------------------------------------------

@dataclass
class Resolved:
    """A reference resolved once: the pinned manifest digest, the component's bytes in the cache
    and, when a policy was given, the attached bundle that verified (``verified``)."""

    reference: str
    pinned: str
    digest: str
    component: Path
    component_digest: str
    size_bytes: int
    annotations: dict[str, str]
    signatures: int
    bundle: Path | None = None
    verified: VerifyResult | None = None
    graphs: dict[str, Path] = field(default_factory=dict)
    found_by: str = ""
    cache_hit: bool = False


def _wasm_layer(session: _Session, manifest: dict[str, Any], where: str) -> dict[str, Any]:
    """The component layer of a Wasm OCI Artifact manifest, after checking the config blob (its
    digest, and ``layerDigests`` when the config is a Wasm config)."""
    layers = [d for d in manifest.get("layers") or [] if isinstance(d, dict)]
    wasm = [d for d in layers if d.get("mediaType") == WASM_LAYER_MEDIA_TYPE]
    if len(wasm) != 1:
        raise RegistryError(f"{where} is not a Wasm component artifact: expected one {WASM_LAYER_MEDIA_TYPE} "
                            f"layer, found {len(wasm)} among {len(layers)} layers")
    config_desc = manifest.get("config") or {}
    config_path = session.fetch_blob(config_desc)
    if config_desc.get("mediaType") == WASM_CONFIG_MEDIA_TYPE:
        try:
            config = json.loads(config_path.read_bytes())
        except ValueError:
            raise RegistryError(f"{where}: the Wasm config is not JSON") from None
        listed = config.get("layerDigests")
        if listed is not None and listed != [d.get("digest") for d in layers]:
            raise RegistryError(f"{where}: the config's layerDigests do not match the manifest's layers")
        if config.get("architecture") not in (None, WASM_ARCHITECTURE):
            raise RegistryError(f"{where}: config architecture is {config.get('architecture')!r}, not wasm")
    return wasm[0]


def _resolve_manifest(session: _Session, ref: Reference) -> tuple[dict[str, Any], str]:
    """The component manifest of ``ref`` and its digest (tag resolved once, here)."""
    got = session.get_manifest(ref.digest or ref.tag or "latest")
    assert got is not None
    data, media_type, digest = got
    where = str(ref)
    if media_type != MANIFEST_MEDIA_TYPE:
        raise RegistryError(f"{where} is a {media_type or 'manifest of unknown type'}, not an OCI image manifest "
                            "holding a Wasm component")
    return json.loads(data), digest


def _fetch_bundles(session: _Session, digest: str) -> tuple[list[Path], str]:
    """The Sigstore bundles attached to manifest ``digest``, newest first, in the cache."""
    found, via = session.referrers(digest, SIGSTORE_BUNDLE_MEDIA_TYPE)
    bundles = []
    for desc in found:
        got = session.get_manifest(str(desc["digest"]))
        assert got is not None
        referrer = json.loads(got[0])
        if (referrer.get("subject") or {}).get("digest") != digest:
            continue  # an index entry whose manifest names another subject
        layers = [d for d in referrer.get("layers") or [] if d.get("mediaType") == SIGSTORE_BUNDLE_MEDIA_TYPE]
        if layers:
            bundles.append(session.fetch_blob(layers[0]))
    return bundles, via


def _open(reference: str, auth: RegistryAuth | None, insecure: bool) -> tuple[Reference, _Session]:
    ref = parse_reference(reference)
    return ref, _Session(ref, auth, insecure)


def _resolve(session: _Session, ref: Reference) -> Resolved:
    """Pin ``ref`` to its manifest digest and fetch the component (and a by-name model) into the cache."""
    manifest, digest = _resolve_manifest(session, ref)
    pinned = ref.pinned(digest)
    layer = _wasm_layer(session, manifest, pinned)
    hit = _cached(str(layer["digest"]), layer.get("size")) is not None
    component = session.fetch_blob(layer)
    notes = {str(k): str(v) for k, v in (manifest.get("annotations") or {}).items()}
    graphs = {}
    if (model_digest := notes.get(ANNOTATION_PREFIX + "model.artifact")) is not None:
        graphs = _fetch_model(session, model_digest, component, pinned)
    return Resolved(reference=str(ref), pinned=pinned, digest=digest, component=component,
                    component_digest=str(layer["digest"]), size_bytes=int(layer["size"]), annotations=notes,
                    signatures=0, graphs=graphs, cache_hit=hit)


def resolve_component(reference: str, *, policy: VerificationPolicy | None = None,
                      bundle: str | os.PathLike[str] | None = None, auth: RegistryAuth | None = None,
                      insecure: bool = False) -> Resolved:
    """Resolve an ``oci://`` (or bare) reference ONCE to a manifest digest, fetch the component
    (and, for a by-name component, its model artifact) into the cache with every digest checked,
    and, when ``policy`` is given, the Sigstore bundles attached to that digest: the first that
    verifies the component's bytes under the policy (:func:`wasmai.sign.verify_component`) is
    returned in ``bundle`` / ``verified``. ``bundle`` replaces the attached ones with a local file.
    The caller then runs ``component`` with that bundle and policy, whose verified digest
    :func:`wasmai.runtime.load_verified` pins, so exactly the verified bytes run.

    This is the one function ``verify``, ``run``, ``bench`` (and any server) call for ``oci://``.
    Returns a :class:`Resolved`. Raises :class:`WasmaiError` for a bad reference,
    :class:`RegistryError` for registry failures and content that does not match its digest or
    the Wasm layout, and :class:`VerificationError` when no signature is attached or none verifies."""
    from wasmai.manifest import sha256_file
    from wasmai.sign import verify_component

    ref, session = _open(reference, auth, insecure)
    result = _resolve(session, ref)
    if policy is None:
        return result
    if bundle is not None:
        candidates, result.found_by = [Path(bundle)], "local file"
    else:
        candidates, result.found_by = _fetch_bundles(session, result.digest)
    result.signatures = len(candidates)
    if not candidates:
        raise VerificationError(f"no signature attached to {result.pinned} (looked up by the {result.found_by}); "
                                "sign it and push again, or `wasmai sign oci://...`")
    failures = []
    for candidate in candidates:
        try:
            verified = verify_component(result.component, policy, bundle=candidate)
        except VerificationError as exc:
            failures.append(str(exc))
            continue
        if "sha256:" + verified.digest != result.component_digest or sha256_file(result.component) != verified.digest:
            failures.append("the verified bytes are not the manifest's component layer")
            continue
        result.bundle, result.verified = candidate, verified
        return result
    many = f" ({len(candidates)} attached, none verifies)" if len(candidates) > 1 else ""
    raise VerificationError(f"{result.pinned}: {failures[0]}{many}")


def _fetch_model(session: _Session, model_digest: str, component: Path, where: str) -> dict[str, Path]:
    """A by-name component's model artifact: ``{graph name: ONNX file in the cache}``. Its ONNX
    layer must be the model the component itself names (``model_sha256`` of its ``metadata.info``,
    part of the signed bytes; annotations are not signed), so the host loads exactly that model."""
    from wasmai.runtime import inspect_component

    if not _DIGEST_RE.match(model_digest):
        raise RegistryError(f"{where}: bad model artifact digest {model_digest!r}")
    got = session.get_manifest(model_digest)
    assert got is not None
    manifest = json.loads(got[0])
    layers = [d for d in manifest.get("layers") or [] if d.get("mediaType") == ONNX_LAYER_MEDIA_TYPE]
    name = str((manifest.get("annotations") or {}).get(ANNOTATION_PREFIX + "model.graph", ""))
    if manifest.get("artifactType") != ONNX_ARTIFACT_TYPE or len(layers) != 1 or not name:
        raise RegistryError(f"{where}: {model_digest} is not a wasmai ONNX model artifact")
    info = inspect_component(component).info or {}
    if str(layers[0].get("digest")) != f"sha256:{info.get('model_sha256')}" or \
            info.get("placement") != f"by-name:{name}":
        raise RegistryError(f"{where}: the model artifact {model_digest} is not the model the component names")
    return {name: session.fetch_blob(layers[0])}


# --- pull ----------------------------------------------------------------------------------------

@dataclass
class PullResult:
    """What ``wasmai pull`` fetched: the pinned digest, the component (in the cache and at
    ``output``), the newest attached bundle written beside it, and the timings."""

    reference: str
    digest: str
    pinned: str
    component_digest: str
    size_bytes: int
    output: str
    cached: str
    bundle: str | None
    signatures: int
    graphs: dict[str, str]
    annotations: dict[str, str]
    cache_hit: bool
    seconds: float


def pull(reference: str, output: str | os.PathLike[str] | None = None, *, auth: RegistryAuth | None = None,
         insecure: bool = False) -> PullResult:
    """Pull a component by tag or digest (every manifest and blob checked against its digest and
    cached) and copy it atomically to ``output``: a file, or a folder (existing, or a path ending in
    ``/``); default: the layer's title in the current folder.
    The newest Sigstore bundle attached to it, if any, is written beside it
    (:func:`wasmai.sign.default_bundle_path`) for ``wasmai verify FILE``; a by-name component's
    model is written beside it as ``NAME.onnx``. Nothing is verified against a policy here.

    Returns a :class:`PullResult`. Raises :class:`WasmaiError` for a bad reference or output path,
    :class:`RegistryError` for registry failures and mismatching content."""
    from wasmai.sign import default_bundle_path

    t0 = time.perf_counter()
    ref, session = _open(reference, auth, insecure)
    resolved = _resolve(session, ref)
    title = Path(resolved.annotations.get(ANNOTATION_TITLE) or "").name
    default_name = title if title.endswith(".wasm") else ref.repository.rsplit("/", 1)[-1] + ".wasm"
    out = Path(output) if output is not None else Path(default_name)
    if out.is_dir() or str(output).endswith(("/", os.sep)):
        out = out / default_name
    _copy(resolved.component, out)
    bundles, _ = _fetch_bundles(session, resolved.digest)
    bundle_out = None
    if bundles:
        bundle_out = default_bundle_path(out)
        _copy(bundles[0], bundle_out)
    graphs = {}
    for name, model in resolved.graphs.items():
        graphs[name] = str(out.parent / f"{Path(name).name}.onnx")
        _copy(model, Path(graphs[name]))
    return PullResult(reference=resolved.reference, digest=resolved.digest, pinned=resolved.pinned,
                      component_digest=resolved.component_digest, size_bytes=resolved.size_bytes, output=str(out),
                      cached=str(resolved.component), bundle=str(bundle_out) if bundle_out else None,
                      signatures=len(bundles), graphs=graphs, annotations=resolved.annotations,
                      cache_hit=resolved.cache_hit, seconds=time.perf_counter() - t0)


def _copy(src: Path, dest: Path) -> None:
    """Copy a cached blob to ``dest`` atomically."""
    try:
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
    except OSError as exc:
        raise WasmaiError(f"cannot write {dest}: {exc.strerror or exc}") from None


# --- sign a pushed reference ---------------------------------------------------------------------

@dataclass
class SignReferenceResult:
    """``wasmai sign oci://REF``: the signature made over the pinned component and its referrer."""

    reference: str
    pinned: str
    sign: Any
    attached: dict[str, Any]


def sign_reference(reference: str, *, key: str | os.PathLike[str] | None = None, identity_token: str | None = None,
                   trust_config: str | os.PathLike[str] | None = None, staging: bool = False,
                   auth: RegistryAuth | None = None, insecure: bool = False) -> SignReferenceResult:
    """Sign a pushed component: resolve ``reference`` once (:func:`resolve_component`), sign the
    cached bytes with :func:`wasmai.sign.sign_component` (key or keyless, same options) and attach
    the bundle to the pinned manifest as a referrer.

    Returns a :class:`SignReferenceResult`. Raises what :func:`resolve_component` and
    :func:`wasmai.sign.sign_component` raise."""
    from wasmai.sign import sign_component

    ref, session = _open(reference, auth, insecure)
    resolved = _resolve(session, ref)
    got = session.get_manifest(resolved.digest)
    assert got is not None
    with tempfile.TemporaryDirectory(prefix="wasmai-sign-") as tmp:
        signed = sign_component(resolved.component, key=key, identity_token=identity_token,
                                trust_config=trust_config, staging=staging, bundle=Path(tmp) / "bundle.sigstore.json")
        data = Path(signed.bundle).read_bytes()
    # The bundle is kept in the cache by its digest, like everything fetched from the registry.
    signed.bundle = session.store(_sha256(data), data)
    attached = _attach_bundle(session, _descriptor(MANIFEST_MEDIA_TYPE, resolved.digest, len(got[0])),
                              signed.bundle)
    return SignReferenceResult(reference=resolved.reference, pinned=resolved.pinned, sign=signed, attached=attached)
