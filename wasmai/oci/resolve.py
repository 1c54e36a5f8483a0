"""Reading: the one resolution of an ``oci://`` reference (:func:`resolve_component`), ``pull``,
and signing a pushed reference."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wasmai._atomic import atomic_path
from wasmai.errors import VerificationError, WasmaiError
from wasmai.oci.push import _attach_bundle
from wasmai.oci.reference import Reference, RegistryAuth, parse_reference
from wasmai.oci.registry import _cached, _Session
from wasmai.oci.spec import (
    _DIGEST_RE,
    ANNOTATION_PREFIX,
    ANNOTATION_TITLE,
    MANIFEST_MEDIA_TYPE,
    ONNX_ARTIFACT_TYPE,
    ONNX_LAYER_MEDIA_TYPE,
    SIGSTORE_BUNDLE_MEDIA_TYPE,
    WASM_ARCHITECTURE,
    WASM_CONFIG_MEDIA_TYPE,
    WASM_LAYER_MEDIA_TYPE,
    RegistryError,
    _descriptor,
    _sha256,
)

if TYPE_CHECKING:

    from wasmai.sign import VerificationPolicy, VerifyResult


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
    if len(candidates) == 1:
        raise VerificationError(f"{result.pinned}: {failures[0]}")
    # The registry lists referrers in no promised order: every bundle's reason, in that order.
    reasons = "; ".join(f"bundle {i}: {reason}" for i, reason in enumerate(failures, 1))
    raise VerificationError(f"{result.pinned}: none of the {len(candidates)} attached signatures verifies: {reasons}")


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
