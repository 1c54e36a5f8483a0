"""``oci://REGISTRY/REPOSITORY[:TAG][@DIGEST]`` references and registry credentials."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wasmai.errors import WasmaiError
from wasmai.oci.spec import _DIGEST_RE, OCI_SCHEME

if TYPE_CHECKING:

    pass


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
