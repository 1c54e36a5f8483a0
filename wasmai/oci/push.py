"""``wasmai push``: a component in the Wasm OCI Artifact layout, its by-name model, its bundle as a referrer."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wasmai.errors import WasmaiError
from wasmai.oci.reference import RegistryAuth, parse_reference
from wasmai.oci.registry import _referrers_tag, _Session
from wasmai.oci.spec import (
    ANNOTATION_BUNDLE_CONTENT,
    ANNOTATION_CREATED,
    ANNOTATION_DESCRIPTION,
    ANNOTATION_LICENSES,
    ANNOTATION_PREFIX,
    ANNOTATION_SOURCE,
    ANNOTATION_TITLE,
    ANNOTATION_VERSION,
    EMPTY_CONTENT,
    EMPTY_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    ONNX_ARTIFACT_TYPE,
    ONNX_LAYER_MEDIA_TYPE,
    SIGSTORE_BUNDLE_MEDIA_TYPE,
    WASM_ARCHITECTURE,
    WASM_COMPONENT_OS,
    WASM_CONFIG_MEDIA_TYPE,
    WASM_LAYER_MEDIA_TYPE,
    _canonical,
    _descriptor,
    _sha256,
)

if TYPE_CHECKING:

    pass


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
