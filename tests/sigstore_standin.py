"""A local stand-in for a Sigstore instance (Fulcio + Rekor v1 + an OIDC issuer), for tests only.

It lives in ``tests/`` and is never importable by the ``wasmai`` package, so it can never become
a default trust root. One :class:`StandIn` serves on ``http://127.0.0.1:PORT``:

* ``POST /api/v2/signingCert`` (Fulcio): checks the bearer JWT against the stand-in OIDC issuer's
  key and the CSR's proof of possession, then issues a short-lived leaf certificate from the
  stand-in root CA with the identity as SAN, the Fulcio issuer extensions (OID
  1.3.6.1.4.1.57264.1.8 and legacy .1.1), GitHub claims when the token has them, and an embedded
  SCT signed by the stand-in CT log key.
* ``POST /api/v1/log/entries`` (Rekor v1): accepts ``hashedrekord`` 0.0.1 entries after
  verifying their signature against the embedded certificate, appends them to an RFC 6962 Merkle
  tree and answers with a signed entry timestamp (inclusion promise), an inclusion proof and a
  signed checkpoint.

:meth:`StandIn.trust_config_json` gives a ClientTrustConfig (TrustedRoot + SigningConfig) that
points the unmodified ``sigstore`` signer and verifier at it. Only stdlib + cryptography.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
OID_ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
OID_GH_REPOSITORY_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.5")
OID_GH_REF_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.6")
OID_ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
OID_SOURCE_REPO_URI = ObjectIdentifier("1.3.6.1.4.1.57264.1.12")
OID_SOURCE_REPO_REF = ObjectIdentifier("1.3.6.1.4.1.57264.1.14")
OID_SCT_LIST = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
EPOCH = "2020-01-01T00:00:00Z"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _der_spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _utf8string(text: str) -> bytes:
    raw = text.encode()
    return b"\x0c" + _der_len(len(raw)) + raw


def _octet_string(raw: bytes) -> bytes:
    return b"\x04" + _der_len(len(raw)) + raw


# --- RFC 6962 Merkle tree --------------------------------------------------------------------

def _leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def merkle_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 MTH over leaf hashes."""
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return _node_hash(merkle_root(leaves[:k]), merkle_root(leaves[k:]))


def inclusion_path(index: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 PATH(m, D[n]) over leaf hashes, lowest level first."""
    if len(leaves) <= 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return inclusion_path(index, leaves[:k]) + [merkle_root(leaves[k:])]
    return inclusion_path(index - k, leaves[k:]) + [merkle_root(leaves[:k])]


# --- the stand-in ------------------------------------------------------------------------------

class StandIn:
    """Fulcio + Rekor v1 + OIDC issuer keys on 127.0.0.1. Use as a context manager.

    ``log_time_offset`` shifts the log's integrated time (seconds) to simulate a log entry made
    outside the certificate's validity; ``cert_lifetime`` is the leaf validity in seconds.
    """

    def __init__(self, name: str = "standin", *, log_time_offset: int = 0, cert_lifetime: int = 600):
        self.name = name
        self.log_time_offset = log_time_offset
        self.cert_lifetime = cert_lifetime
        self.oidc_issuer_url = f"https://oidc.{name}.test"
        self.oidc_key = ec.generate_private_key(ec.SECP256R1())
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ct_key = ec.generate_private_key(ec.SECP256R1())
        self.rekor_key = ec.generate_private_key(ec.SECP256R1())
        self.ct_log_id = hashlib.sha256(_der_spki(self.ct_key.public_key())).digest()
        self.rekor_log_id = hashlib.sha256(_der_spki(self.rekor_key.public_key())).digest()
        now = dt.datetime.now(dt.UTC)
        ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
                             x509.NameAttribute(NameOID.COMMON_NAME, f"{name} fulcio root")])
        ski = x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key())
        self.ca_cert = (
            x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
            .public_key(self.ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.leaves: list[bytes] = []
        self.entries: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # lifecycle
    def start(self) -> StandIn:
        """Start serving in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (if started) and close the socket."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # OIDC
    def token(self, email: str | None = "dev@example.com", *, issuer: str | None = None,
              lifetime: int = 300, **claims: Any) -> str:
        """An ES256 JWT from the stand-in OIDC issuer with aud ``sigstore`` (no email claim if None)."""
        now = int(time.time())
        body: dict[str, Any] = {"iss": issuer or self.oidc_issuer_url, "sub": email, "aud": "sigstore",
                                "iat": now, "nbf": now, "exp": now + lifetime}
        if email is not None:
            body.update(email=email, email_verified=True)
        body.update(claims)
        header = {"alg": "ES256", "typ": "JWT", "kid": self.name}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(body).encode())}"
        der = self.oidc_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = utils.decode_dss_signature(der)
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def github_token(self, repository: str = "acme/models", ref: str = "refs/heads/main",
                     workflow: str = ".github/workflows/wasmai.yml") -> str:
        """A token shaped like a GitHub Actions OIDC token (issuer, sub, repository, ref claims)."""
        return self.token(issuer=GITHUB_ISSUER, email=None, sub=f"repo:{repository}:ref:{ref}",
                          repository=repository, ref=ref,
                          job_workflow_ref=f"{repository}/{workflow}@{ref}")

    def _check_token(self, raw: str) -> dict[str, Any]:
        head, body, sig = raw.split(".")
        sig_raw = _b64url_decode(sig)
        der = utils.encode_dss_signature(int.from_bytes(sig_raw[:32], "big"), int.from_bytes(sig_raw[32:], "big"))
        self.oidc_key.public_key().verify(der, f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
        claims = json.loads(_b64url_decode(body))
        if claims.get("aud") != "sigstore" or claims["exp"] < time.time():
            raise ValueError("bad audience or expired token")
        return claims

    # Fulcio
    def issue(self, csr_pem: bytes, token: str) -> list[str]:
        """Issue a leaf certificate (PEM chain: leaf, root) for a CSR and an identity token."""
        claims = self._check_token(token)
        csr = x509.load_pem_x509_csr(csr_pem)
        if not csr.is_signature_valid:
            raise ValueError("CSR signature invalid")
        issuer = claims["iss"]
        if "job_workflow_ref" in claims:
            san: x509.GeneralName = x509.UniformResourceIdentifier(f"https://github.com/{claims['job_workflow_ref']}")
        else:
            san = x509.RFC822Name(claims["email"])
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        builder = (
            x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(self.ca_cert.subject)
            .public_key(csr.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(seconds=5))
            .not_valid_after(now + dt.timedelta(seconds=self.cert_lifetime))
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([san]), critical=True)
            .add_extension(x509.UnrecognizedExtension(OID_ISSUER_V1, issuer.encode()), critical=False)
            .add_extension(x509.UnrecognizedExtension(OID_ISSUER_V2, _utf8string(issuer)), critical=False)
        )
        if "repository" in claims:
            builder = (
                builder
                .add_extension(x509.UnrecognizedExtension(OID_GH_REPOSITORY_V1, claims["repository"].encode()),
                               critical=False)
                .add_extension(x509.UnrecognizedExtension(OID_GH_REF_V1, claims["ref"].encode()), critical=False)
                .add_extension(x509.UnrecognizedExtension(
                    OID_SOURCE_REPO_URI, _utf8string(f"https://github.com/{claims['repository']}")), critical=False)
                .add_extension(x509.UnrecognizedExtension(OID_SOURCE_REPO_REF, _utf8string(claims["ref"])),
                               critical=False)
            )
        # The SCT signs the TBS certificate without the SCT list: sign a "precertificate" first.
        precert = builder.sign(self.ca_key, hashes.SHA256())
        sct = self._sct(precert.tbs_certificate_bytes)
        sct_list = struct.pack("!H", len(sct) + 2) + struct.pack("!H", len(sct)) + sct
        leaf = builder.add_extension(x509.UnrecognizedExtension(OID_SCT_LIST, _octet_string(sct_list)),
                                     critical=False).sign(self.ca_key, hashes.SHA256())
        assert leaf.tbs_precertificate_bytes == precert.tbs_certificate_bytes
        return [c.public_bytes(serialization.Encoding.PEM).decode() for c in (leaf, self.ca_cert)]

    def _sct(self, tbs: bytes) -> bytes:
        timestamp = int(time.time() * 1000)
        issuer_key_id = hashlib.sha256(_der_spki(self.ca_key.public_key())).digest()
        signed = (struct.pack("!BBQH", 0, 0, timestamp, 1) + issuer_key_id
                  + struct.pack("!I", len(tbs))[1:] + tbs + struct.pack("!H", 0))
        sig = self.ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        # SCT v1: version, log id, timestamp, no extensions, digitally-signed(sha256=4, ecdsa=3).
        return (struct.pack("!B", 0) + self.ct_log_id + struct.pack("!QH", timestamp, 0)
                + struct.pack("!BBH", 4, 3, len(sig)) + sig)

    # Rekor v1
    def add_entry(self, proposed: dict[str, Any]) -> dict[str, Any]:
        """Verify and log a hashedrekord 0.0.1 entry; returns the Rekor v1 API response."""
        if proposed.get("kind") != "hashedrekord" or proposed.get("apiVersion") != "0.0.1":
            raise ValueError("only hashedrekord 0.0.1 is supported")
        spec = proposed["spec"]
        cert = x509.load_pem_x509_certificate(base64.b64decode(spec["signature"]["publicKey"]["content"]))
        if spec["data"]["hash"]["algorithm"] != "sha256":
            raise ValueError("only sha256")
        cert.public_key().verify(base64.b64decode(spec["signature"]["content"]),
                                 bytes.fromhex(spec["data"]["hash"]["value"]),
                                 ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        body = json.dumps(proposed, sort_keys=True, separators=(",", ":")).encode()
        with self._lock:
            index = len(self.leaves)
            self.leaves.append(_leaf_hash(body))
            size = len(self.leaves)
            root = merkle_root(self.leaves)
            path = inclusion_path(index, self.leaves)
        integrated = int(time.time()) + self.log_time_offset
        log_id = self.rekor_log_id.hex()
        body_b64 = _b64(body)
        set_payload = json.dumps({"body": body_b64, "integratedTime": integrated, "logID": log_id,
                                  "logIndex": index}, sort_keys=True, separators=(",", ":")).encode()
        entry = {
            "body": body_b64, "integratedTime": integrated, "logID": log_id, "logIndex": index,
            "verification": {
                "signedEntryTimestamp": _b64(self.rekor_key.sign(set_payload, ec.ECDSA(hashes.SHA256()))),
                "inclusionProof": {"logIndex": index, "treeSize": size, "rootHash": root.hex(),
                                   "hashes": [h.hex() for h in path], "checkpoint": self._checkpoint(size, root)},
            },
        }
        self.entries.append(entry)
        return {hashlib.sha256(body).hexdigest(): entry}

    def _checkpoint(self, size: int, root: bytes) -> str:
        origin = f"{self.name}.rekor.test"
        note = f"{origin}\n{size}\n{_b64(root)}\n"
        sig = self.rekor_key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        return f"{note}\n\u2014 {origin} {_b64(self.rekor_log_id[:4] + sig)}\n"

    # trust material
    def trusted_root(self) -> dict[str, Any]:
        """The TrustedRoot (protobuf-specs JSON) for this instance."""
        def tlog(key: ec.EllipticCurvePrivateKey, log_id: bytes) -> dict[str, Any]:
            return {"baseUrl": self.url, "hashAlgorithm": "SHA2_256",
                    "publicKey": {"rawBytes": _b64(_der_spki(key.public_key())),
                                  "keyDetails": "PKIX_ECDSA_P256_SHA_256", "validFor": {"start": EPOCH}},
                    "logId": {"keyId": _b64(log_id)}}
        return {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [tlog(self.rekor_key, self.rekor_log_id)],
            "certificateAuthorities": [{
                "subject": {"organization": self.name, "commonName": f"{self.name} fulcio root"},
                "uri": self.url,
                "certChain": {"certificates": [
                    {"rawBytes": _b64(self.ca_cert.public_bytes(serialization.Encoding.DER))},
                ]},
                "validFor": {"start": EPOCH},
            }],
            "ctlogs": [tlog(self.ct_key, self.ct_log_id)],
            "timestampAuthorities": [],
        }

    def signing_config(self) -> dict[str, Any]:
        """The SigningConfig v0.2 pointing at this instance (no TSA)."""
        def service(url: str) -> dict[str, Any]:
            return {"url": url, "majorApiVersion": 1, "validFor": {"start": EPOCH}, "operator": self.name}
        return {
            "mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
            "caUrls": [service(self.url)], "oidcUrls": [service(f"{self.url}/oauth")],
            "rekorTlogUrls": [service(self.url)], "tsaUrls": [],
            "rekorTlogConfig": {"selector": "ANY"}, "tsaConfig": {"selector": "ANY"},
        }

    def trust_config_json(self) -> str:
        """A ClientTrustConfig JSON document for ``--trust-config``."""
        return json.dumps({"mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
                           "trustedRoot": self.trusted_root(), "signingConfig": self.signing_config()})


def _handler_for(standin: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def _reply(self, code: int, doc: dict[str, Any]) -> None:
            data = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 - http.server API
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                doc = json.loads(raw)
                if self.path == "/api/v2/signingCert":
                    token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    pem = base64.b64decode(doc["certificateSigningRequest"])
                    chain = standin.issue(pem, token)
                    self._reply(201, {"signedCertificateEmbeddedSct": {"chain": {"certificates": chain}}})
                elif self.path == "/api/v1/log/entries":
                    self._reply(201, standin.add_entry(doc))
                else:
                    self._reply(404, {"code": 404, "message": "not found"})
            except (ValueError, KeyError, InvalidSignature) as exc:
                self._reply(400, {"code": 400, "message": f"rejected: {exc!r}"})

    return Handler
