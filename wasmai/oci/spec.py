"""Media types, annotation keys and digests of the layouts wasmai reads and writes (sources: the
Wasm OCI Artifact spec, OCI image-spec 1.1, cosign 3's bundle spec), and :class:`RegistryError`."""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING, Any

from wasmai.errors import WasmaiError

if TYPE_CHECKING:

    pass


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


def _descriptor(media_type: str, data_digest: str, size: int, **extra: Any) -> dict[str, Any]:
    """An OCI content descriptor (https://github.com/opencontainers/image-spec/blob/v1.1.0/descriptor.md)."""
    return {"mediaType": media_type, "digest": data_digest, "size": size, **extra}


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _canonical(doc: dict[str, Any]) -> bytes:
    """The bytes wasmai pushes for a JSON document (compact, key order kept)."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


#: The artifact type of a by-name component's ONNX model pushed as its own artifact (wasmai's
#: vendor-tree media type, https://www.rfc-editor.org/rfc/rfc6838#section-3.2; IANA registers none
#: for ONNX) and the media type of its one layer, the ONNX protobuf bytes as written by ``convert``.
ONNX_ARTIFACT_TYPE = "application/vnd.wasmai.onnx.model.v1"


ONNX_LAYER_MEDIA_TYPE = "application/vnd.wasmai.onnx.model.v1+protobuf"
