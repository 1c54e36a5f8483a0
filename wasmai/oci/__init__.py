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

Modules: :mod:`~wasmai.oci.spec` (media types, annotations), :mod:`~wasmai.oci.reference`
(references, credentials), :mod:`~wasmai.oci.registry` (the session, cache, referrers),
:mod:`~wasmai.oci.push` and :mod:`~wasmai.oci.resolve` (resolve, pull, sign a reference).
"""

from __future__ import annotations

from wasmai.oci.push import PushResult, push
from wasmai.oci.reference import Reference, RegistryAuth, auth_files, is_oci_reference, parse_reference
from wasmai.oci.registry import cache_root
from wasmai.oci.resolve import PullResult, Resolved, SignReferenceResult, pull, resolve_component, sign_reference
from wasmai.oci.spec import (
    MANIFEST_MEDIA_TYPE,
    OCI_SCHEME,
    SIGSTORE_BUNDLE_MEDIA_TYPE,
    WASM_CONFIG_MEDIA_TYPE,
    WASM_LAYER_MEDIA_TYPE,
    RegistryError,
)

__all__ = [
    "MANIFEST_MEDIA_TYPE",
    "OCI_SCHEME",
    "PullResult",
    "PushResult",
    "Reference",
    "RegistryAuth",
    "RegistryError",
    "Resolved",
    "SIGSTORE_BUNDLE_MEDIA_TYPE",
    "SignReferenceResult",
    "WASM_CONFIG_MEDIA_TYPE",
    "WASM_LAYER_MEDIA_TYPE",
    "auth_files",
    "cache_root",
    "is_oci_reference",
    "parse_reference",
    "pull",
    "push",
    "resolve_component",
    "sign_reference",
]
