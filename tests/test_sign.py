"""wasmai sign / verify / keygen.

Keyless tests run the unmodified sigstore signer and verifier end to end against the local
stand-in in ``sigstore_standin.py`` (Fulcio + Rekor v1 on 127.0.0.1); key-based tests run
model-signing with real ECDSA keys. No network.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import sys
from pathlib import Path

import pytest
from sigstore_standin import GITHUB_ISSUER, StandIn
from typer.testing import CliRunner

from wasmai import sign as ws
from wasmai.errors import VerificationError, WasmaiError

EMAIL = "dev@example.com"


# --- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    """A running stand-in and its trust config file."""
    with StandIn("alpha") as s:
        s.config_path = tmp_path_factory.mktemp("alpha") / "trust.json"
        s.config_path.write_text(s.trust_config_json())
        yield s


@pytest.fixture(scope="module")
def other_standin(tmp_path_factory):
    """A second, unrelated Sigstore instance (different CA, CT and log keys)."""
    with StandIn("beta") as s:
        s.config_path = tmp_path_factory.mktemp("beta") / "trust.json"
        s.config_path.write_text(s.trust_config_json())
        yield s


@pytest.fixture
def component(tmp_path) -> Path:
    path = tmp_path / "model.wasm"
    path.write_bytes(b"\0asm\x0d\0\x01\0" + os.urandom(4096))
    return path


def _policy(standin, identity=EMAIL, issuer=None, **kw) -> ws.VerificationPolicy:
    return ws.VerificationPolicy(cert_identity=identity, cert_oidc_issuer=issuer or standin.oidc_issuer_url,
                                 trust_config=standin.config_path, **kw)


def _sign_keyless(standin, component, token=None, **kw) -> ws.SignResult:
    return ws.sign_component(component, identity_token=token or standin.token(EMAIL),
                             trust_config=standin.config_path, **kw)


@pytest.fixture(scope="module")
def cli():
    from wasmai.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


# --- keyless -----------------------------------------------------------------------------------

def test_keyless_round_trip(standin, component):
    before = component.read_bytes()
    res = _sign_keyless(standin, component)
    assert component.read_bytes() == before  # never modified
    assert res.bundle == ws.default_bundle_path(component) == Path(f"{component}.sigstore.json")
    assert res.kind == "keyless" and res.digest == hashlib.sha256(before).hexdigest()
    assert (res.identity, res.issuer) == (EMAIL, standin.oidc_issuer_url)
    assert res.log_index == len(standin.entries) - 1
    doc = json.loads(res.bundle.read_text())
    assert doc["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert base64.b64decode(doc["messageSignature"]["messageDigest"]["digest"]).hex() == res.digest

    ok = ws.verify_component(component, _policy(standin))
    assert ok.verified and (ok.identity, ok.issuer, ok.digest, ok.log_index) == (
        EMAIL, standin.oidc_issuer_url, res.digest, res.log_index)


def test_keyless_verify_with_trusted_root_file(standin, component, tmp_path):
    _sign_keyless(standin, component)
    root = tmp_path / "trusted_root.json"
    root.write_text(json.dumps(standin.trusted_root()))
    policy = ws.VerificationPolicy(cert_identity=EMAIL, cert_oidc_issuer=standin.oidc_issuer_url, trusted_root=root)
    assert ws.verify_component(component, policy).identity == EMAIL


def test_keyless_tampered_component(standin, component):
    _sign_keyless(standin, component)
    data = bytearray(component.read_bytes())
    data[100] ^= 1
    component.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="^digest mismatch"):
        ws.verify_component(component, _policy(standin))


def test_keyless_wrong_identity(standin, component):
    _sign_keyless(standin, component)
    with pytest.raises(VerificationError, match="^wrong identity: signed by dev@example.com"):
        ws.verify_component(component, _policy(standin, identity="someone@example.com"))


def test_keyless_wrong_issuer(standin, component):
    _sign_keyless(standin, component)
    with pytest.raises(VerificationError, match="^wrong issuer"):
        ws.verify_component(component, _policy(standin, issuer="https://accounts.google.com"))


def test_keyless_bundle_from_another_trust_root(standin, other_standin, component):
    _sign_keyless(other_standin, component)
    # Same identity and issuer URL claims would not help: the chain is what fails.
    policy = _policy(standin, issuer=other_standin.oidc_issuer_url)
    with pytest.raises(VerificationError, match="^untrusted certificate chain"):
        ws.verify_component(component, policy)
    assert ws.verify_component(component, _policy(other_standin)).verified


def test_keyless_bundle_rejected_by_offline_production_root(standin, component, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _sign_keyless(standin, component)
    policy = ws.VerificationPolicy(cert_identity=EMAIL, cert_oidc_issuer=standin.oidc_issuer_url, offline=True)
    with pytest.raises(VerificationError, match="^untrusted certificate chain"):
        ws.verify_component(component, policy)


def test_keyless_expired_certificate(component, tmp_path):
    # The log records the entry an hour later than the 10-minute certificate allows.
    with StandIn("late", log_time_offset=3600) as late:
        config = tmp_path / "late.json"
        config.write_text(late.trust_config_json())
        ws.sign_component(component, identity_token=late.token(EMAIL), trust_config=config)
        policy = ws.VerificationPolicy(cert_identity=EMAIL, cert_oidc_issuer=late.oidc_issuer_url,
                                       trust_config=config)
        with pytest.raises(VerificationError, match="^expired"):
            ws.verify_component(component, policy)


def test_keyless_tampered_log_entry(standin, component):
    res = _sign_keyless(standin, component)
    doc = json.loads(res.bundle.read_text())
    entry = doc["verificationMaterial"]["tlogEntries"][0]
    entry["integratedTime"] = str(int(entry["integratedTime"]) - 1)  # breaks the signed entry timestamp
    res.bundle.write_text(json.dumps(doc))
    with pytest.raises(VerificationError, match="^untrusted transparency log entry"):
        ws.verify_component(component, _policy(standin))


def test_keyless_tampered_signature(standin, component):
    res = _sign_keyless(standin, component)
    doc = json.loads(res.bundle.read_text())
    sig = bytearray(base64.b64decode(doc["messageSignature"]["signature"]))
    sig[-1] ^= 1
    doc["messageSignature"]["signature"] = base64.b64encode(bytes(sig)).decode()
    res.bundle.write_text(json.dumps(doc))
    with pytest.raises(VerificationError):
        ws.verify_component(component, _policy(standin))


def test_keyless_github_policy(standin, component):
    res = _sign_keyless(standin, component, token=standin.github_token("acme/models", "refs/heads/main"))
    workflow = "https://github.com/acme/models/.github/workflows/wasmai.yml@refs/heads/main"
    assert (res.identity, res.issuer) == (workflow, GITHUB_ISSUER)

    def policy(**kw):
        return ws.VerificationPolicy(trust_config=standin.config_path, **kw)

    assert ws.verify_component(component, policy(github_repository="acme/models")).identity == workflow
    ws.verify_component(component, policy(github_repository="acme/models", github_ref="refs/heads/main",
                                          cert_identity=workflow))
    with pytest.raises(VerificationError, match="^wrong repository"):
        ws.verify_component(component, policy(github_repository="evil/models"))
    with pytest.raises(VerificationError, match="^wrong ref"):
        ws.verify_component(component, policy(github_repository="acme/models", github_ref="refs/heads/dev"))
    with pytest.raises(VerificationError, match="^wrong identity"):
        ws.verify_component(component, policy(github_repository="acme/models",
                                              cert_identity=workflow.replace("wasmai.yml", "other.yml")))


def test_email_identity_fails_github_policy(standin, component):
    _sign_keyless(standin, component)
    with pytest.raises(VerificationError, match="^wrong issuer"):
        ws.verify_component(component, ws.VerificationPolicy(github_repository="acme/models",
                                                             trust_config=standin.config_path))


def test_forged_token_rejected_by_fulcio(standin, component):
    forger = StandIn("forger")  # never started: only its OIDC key is used
    forger.stop()
    token = forger.token(EMAIL, issuer=standin.oidc_issuer_url)
    from sigstore.oidc import IdentityToken

    assert IdentityToken(token).identity == EMAIL  # sigstore-python does not check JWT signatures...
    with pytest.raises(WasmaiError, match="keyless signing failed"):  # ...Fulcio (the stand-in) does
        _sign_keyless(standin, component, token=token)
    assert not ws.default_bundle_path(component).exists()


def test_keyless_unreachable_instance_leaves_no_bundle(component, tmp_path):
    down = StandIn("down").start()
    config = tmp_path / "down.json"
    config.write_text(down.trust_config_json())
    token = down.token(EMAIL)
    down.stop()
    with pytest.raises(WasmaiError, match="keyless signing failed"):
        ws.sign_component(component, identity_token=token, trust_config=config)
    assert set(tmp_path.iterdir()) == {component, config}


def test_keyless_ambient_credential(standin, component, monkeypatch):
    import sigstore.oidc

    monkeypatch.setattr(sigstore.oidc, "detect_credential", lambda *a, **k: standin.token("ci@example.com"))
    assert ws.sign_component(component, trust_config=standin.config_path).identity == "ci@example.com"


def test_keyless_needs_a_token(standin, component, monkeypatch):
    import sigstore.oidc

    monkeypatch.setattr(sigstore.oidc, "detect_credential", lambda *a, **k: None)
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # not a terminal: no interactive flow
    with pytest.raises(WasmaiError, match="no identity token"):
        ws.sign_component(component, trust_config=standin.config_path)
    with pytest.raises(WasmaiError, match="identity token rejected"):
        ws.sign_component(component, identity_token="not-a-jwt", trust_config=standin.config_path)
    expired = standin.token(EMAIL, lifetime=-60)
    with pytest.raises(WasmaiError, match="identity token rejected"):
        ws.sign_component(component, identity_token=expired, trust_config=standin.config_path)
    assert not ws.default_bundle_path(component).exists()


def test_keyless_ambient_detection_error(standin, component, monkeypatch):
    import sigstore.oidc

    def fail(*a, **k):
        raise sigstore.oidc.IdentityError("GitHub: missing or insufficient OIDC token permissions")

    monkeypatch.setattr(sigstore.oidc, "detect_credential", fail)
    with pytest.raises(WasmaiError, match="id-token: write"):
        ws.sign_component(component, trust_config=standin.config_path)


def test_keyless_bundle_is_not_accepted_by_key_policy(standin, component, tmp_path):
    _sign_keyless(standin, component)
    pair = ws.keygen(tmp_path / "keys")
    with pytest.raises(VerificationError, match="keyless"):
        ws.verify_component(component, ws.VerificationPolicy(key=pair.public_key))


# --- key-based ---------------------------------------------------------------------------------

def test_key_round_trip(component, tmp_path):
    pair = ws.keygen(tmp_path / "keys")
    before = component.read_bytes()
    res = ws.sign_component(component, key=pair.private_key)
    assert component.read_bytes() == before
    assert res.kind == "key" and res.key_fingerprint == pair.fingerprint
    assert res.digest == hashlib.sha256(before).hexdigest()
    # The signed model-signing manifest covers exactly the component's sha256.
    doc = json.loads(res.bundle.read_text())
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    assert statement["predicate"]["resources"] == [{"name": ".", "algorithm": "sha256", "digest": res.digest}]
    assert doc["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"

    ok = ws.verify_component(component, ws.VerificationPolicy(key=pair.public_key))
    assert ok.verified and ok.key_fingerprint == pair.fingerprint and ok.digest == res.digest

    # A renamed copy still verifies (the digest, not the file name, is what counts).
    copy = tmp_path / "elsewhere" / "renamed.wasm"
    copy.parent.mkdir()
    copy.write_bytes(before)
    ws.verify_component(copy, ws.VerificationPolicy(key=pair.public_key), bundle=res.bundle)


@pytest.mark.parametrize("where", [0, 2048, -1])
def test_key_tampered_component(component, tmp_path, where):
    pair = ws.keygen(tmp_path / "keys")
    ws.sign_component(component, key=pair.private_key)
    data = bytearray(component.read_bytes())
    data[where] ^= 0x80
    component.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="^digest mismatch"):
        ws.verify_component(component, ws.VerificationPolicy(key=pair.public_key))


def test_key_appended_bytes(component, tmp_path):
    pair = ws.keygen(tmp_path / "keys")
    ws.sign_component(component, key=pair.private_key)
    with component.open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(VerificationError, match="^digest mismatch"):
        ws.verify_component(component, ws.VerificationPolicy(key=pair.public_key))


def test_key_wrong_key(component, tmp_path):
    pair = ws.keygen(tmp_path / "a")
    other = ws.keygen(tmp_path / "b")
    ws.sign_component(component, key=pair.private_key)
    with pytest.raises(VerificationError, match="^wrong key"):
        ws.verify_component(component, ws.VerificationPolicy(key=other.public_key))


def test_key_forged_signature_with_matching_hint(component, tmp_path):
    # An attacker re-signs a modified payload with their own key but keeps the victim's key hint.
    pair = ws.keygen(tmp_path / "a")
    attacker = ws.keygen(tmp_path / "b")
    bundle = ws.sign_component(component, key=pair.private_key).bundle
    real_hint = json.loads(bundle.read_text())["verificationMaterial"]["publicKey"]["hint"]
    ws.sign_component(component, key=attacker.private_key)
    doc = json.loads(bundle.read_text())
    doc["verificationMaterial"]["publicKey"]["hint"] = real_hint
    bundle.write_text(json.dumps(doc))
    with pytest.raises(VerificationError, match="^signature invalid"):
        ws.verify_component(component, ws.VerificationPolicy(key=pair.public_key))


def test_key_bundle_is_not_accepted_by_identity_policy(standin, component, tmp_path):
    pair = ws.keygen(tmp_path / "keys")
    ws.sign_component(component, key=pair.private_key)
    with pytest.raises(VerificationError, match="key-signed"):
        ws.verify_component(component, _policy(standin))


@pytest.mark.parametrize("content", [
    "{not json",
    "[]",
    json.dumps({"mediaType": "x", "verificationMaterial": {"publicKey": {"hint": "00"}}}),
    json.dumps({"verificationMaterial": {"publicKey": {"hint": ""}},
                "dsseEnvelope": {"payload": "@@@", "payloadType": "x", "signatures": []}}),
    json.dumps({"verificationMaterial": {}}),
])
def test_malformed_bundle(component, tmp_path, content):
    pair = ws.keygen(tmp_path / "keys")
    ws.default_bundle_path(component).write_text(content)
    with pytest.raises(VerificationError, match="^malformed bundle"):
        ws.verify_component(component, ws.VerificationPolicy(key=pair.public_key))


def test_malformed_keyless_bundle(standin, component):
    res = _sign_keyless(standin, component)
    doc = json.loads(res.bundle.read_text())
    doc["verificationMaterial"]["certificate"]["rawBytes"] = base64.b64encode(b"not a certificate").decode()
    res.bundle.write_text(json.dumps(doc))
    with pytest.raises(VerificationError, match="^malformed bundle"):
        ws.verify_component(component, _policy(standin))


def test_missing_bundle(component, tmp_path):
    pair = ws.keygen(tmp_path / "keys")
    with pytest.raises(VerificationError, match="^missing bundle"):
        ws.verify_component(component, ws.VerificationPolicy(key=pair.public_key))


def test_encrypted_private_key(component, tmp_path, monkeypatch):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    priv = tmp_path / "enc.key"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"hunter2")))
    pub = tmp_path / "enc.pub"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    monkeypatch.delenv(ws.KEY_PASSWORD_ENV, raising=False)
    with pytest.raises(WasmaiError, match="encrypted"):
        ws.sign_component(component, key=priv)
    monkeypatch.setenv(ws.KEY_PASSWORD_ENV, "hunter2")
    ws.sign_component(component, key=priv)
    assert ws.verify_component(component, ws.VerificationPolicy(key=pub)).verified


def test_unsupported_private_key(component, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    priv = tmp_path / "ed.key"
    priv.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(WasmaiError, match="P-256"):
        ws.sign_component(component, key=priv)
    (tmp_path / "junk.key").write_text("junk")
    with pytest.raises(WasmaiError, match="cannot read private key"):
        ws.sign_component(component, key=tmp_path / "junk.key")
    assert not ws.default_bundle_path(component).exists()


def test_key_cannot_mix_with_keyless_options(component, tmp_path):
    pair = ws.keygen(tmp_path / "keys")
    with pytest.raises(WasmaiError, match="cannot be combined"):
        ws.sign_component(component, key=pair.private_key, identity_token="x")


def test_model_signing_without_pyopenssl(component, tmp_path, monkeypatch):
    pair = ws.keygen(tmp_path / "keys")
    for name in [n for n in sys.modules if n == "model_signing" or n.startswith("model_signing.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "OpenSSL", None)  # makes `import OpenSSL` fail
    with pytest.raises(WasmaiError, match="pyOpenSSL"):
        ws.sign_component(component, key=pair.private_key)
    assert not ws.default_bundle_path(component).exists()


# --- keygen ------------------------------------------------------------------------------------

def test_keygen_files_and_permissions(tmp_path):
    from cryptography.hazmat.primitives import serialization

    pair = ws.keygen(tmp_path / "k", name="release")
    assert pair.private_key == tmp_path / "k" / "release.key" and pair.public_key == tmp_path / "k" / "release.pub"
    assert stat.S_IMODE(pair.private_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(pair.public_key.stat().st_mode) == 0o644
    pub = serialization.load_pem_public_key(pair.public_key.read_bytes())
    assert pub.curve.name == "secp256r1" and pair.curve == "P-256"
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert pair.fingerprint == hashlib.sha256(der).hexdigest()
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["release.key", "release.pub"]  # no temp files
    with pytest.raises(WasmaiError, match="exists"):
        ws.keygen(tmp_path / "k", name="release")
    assert ws.keygen(tmp_path / "k", name="release", force=True).fingerprint != pair.fingerprint


# --- policy ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({}, "no verification policy"),
    ({"trust_config": Path("t.json")}, "no verification policy"),
    ({"key": Path("k.pub"), "cert_identity": "a@b"}, "ambiguous"),
    ({"key": Path("k.pub"), "staging": True}, "keyless bundles"),
    ({"cert_identity": "a@b"}, "--cert-oidc-issuer"),
    ({"cert_oidc_issuer": "https://x"}, "--cert-identity"),
    ({"github_ref": "refs/heads/main"}, "--github-repository"),
    ({"github_repository": "justaname"}, "OWNER/REPO"),
    ({"github_repository": "a/b", "cert_oidc_issuer": "https://accounts.google.com"}, "conflicting"),
    ({"cert_identity": "a@b", "cert_oidc_issuer": "https://x", "staging": True,
      "trusted_root": Path("r.json")}, "choose one"),
])
def test_policy_validate_rejects(kwargs, message):
    with pytest.raises(WasmaiError, match=message):
        ws.VerificationPolicy(**kwargs).validate()


def test_policy_validate_accepts():
    ws.VerificationPolicy(key=Path("k.pub"), offline=True).validate()
    ws.VerificationPolicy(cert_identity="a@b", cert_oidc_issuer="https://x").validate()
    ws.VerificationPolicy(github_repository="a/b", github_ref="refs/tags/v1", staging=True).validate()


def test_missing_policy_refuses_before_reading(component):
    with pytest.raises(WasmaiError, match="no verification policy"):
        ws.verify_component(component, ws.VerificationPolicy())


def test_policy_from_file(tmp_path):
    (tmp_path / "p").mkdir()
    f = tmp_path / "p" / "policy.toml"
    f.write_text('cert_identity = "dev@example.com"\ncert_oidc_issuer = "https://issuer"\n'
                 'trust_config = "trust.json"\noffline = true\n')
    p = ws.VerificationPolicy.from_file(f)
    assert p == ws.VerificationPolicy(cert_identity="dev@example.com", cert_oidc_issuer="https://issuer",
                                      trust_config=tmp_path / "p" / "trust.json", offline=True)
    f.write_text('[policy]\nkey = "/abs/k.pub"\n')
    assert ws.VerificationPolicy.from_file(f).key == Path("/abs/k.pub")
    f.write_text('identity = "x"\n')
    with pytest.raises(WasmaiError, match="unknown key"):
        ws.VerificationPolicy.from_file(f)
    f.write_text('offline = "yes"\nkey = "k.pub"\n')
    with pytest.raises(WasmaiError, match="offline must be a bool"):
        ws.VerificationPolicy.from_file(f)
    f.write_text("offline = true\n")
    with pytest.raises(WasmaiError, match="no verification policy"):
        ws.VerificationPolicy.from_file(f)


def test_policy_from_options(tmp_path):
    assert ws.policy_from_options() is None
    assert ws.policy_from_options(key=None, cert_identity="", offline=False) is None
    p = ws.policy_from_options(key="k.pub", offline=True)
    assert p == ws.VerificationPolicy(key=Path("k.pub"), offline=True)
    f = tmp_path / "policy.toml"
    f.write_text('github_repository = "acme/models"\ngithub_ref = "refs/heads/main"\n')
    p = ws.policy_from_options(policy=f, github_ref="refs/tags/v1")
    assert (p.github_repository, p.github_ref) == ("acme/models", "refs/tags/v1")
    with pytest.raises(WasmaiError, match="no verification policy"):
        ws.policy_from_options(offline=True)


# --- inspect summary ---------------------------------------------------------------------------

def test_bundle_summary(standin, component, tmp_path):
    assert ws.bundle_summary(component) is None
    res = _sign_keyless(standin, component)
    s = ws.bundle_summary(component)
    assert s["kind"] == "keyless" and s["identity"] == EMAIL and s["issuer"] == standin.oidc_issuer_url
    assert s["log_index"] == res.log_index and s["digest_matches"] is True and s["verified"] is False
    component.write_bytes(component.read_bytes() + b"x")
    assert ws.bundle_summary(component)["digest_matches"] is False

    pair = ws.keygen(tmp_path / "keys")
    ws.sign_component(component, key=pair.private_key)
    s = ws.bundle_summary(component)
    assert s["kind"] == "key" and s["digest_matches"] is True and s["log_index"] is None
    ws.default_bundle_path(component).write_text("{")
    assert ws.bundle_summary(component)["kind"] == "malformed"


# --- CLI ---------------------------------------------------------------------------------------

def _one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.output
    return lines[0]


def test_cli_keygen(cli, tmp_path):
    r = cli("keygen", "-o", tmp_path / "keys", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["curve"] == "P-256" and len(out["fingerprint"]) == 64
    assert stat.S_IMODE(Path(out["private_key"]).stat().st_mode) == 0o600
    r = cli("keygen", "-o", tmp_path / "keys")
    assert r.exit_code == 1 and "exists" in _one_error_line(r)


def test_cli_keyless_sign_verify(cli, standin, component):
    r = cli("sign", component, "--identity-token", standin.token(EMAIL), "--trust-config", standin.config_path,
            "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["digest"] == hashlib.sha256(component.read_bytes()).hexdigest()
    assert (out["identity"], out["issuer"], out["kind"]) == (EMAIL, standin.oidc_issuer_url, "keyless")
    assert isinstance(out["log_index"], int)

    r = cli("verify", component, "--cert-identity", EMAIL, "--cert-oidc-issuer", standin.oidc_issuer_url,
            "--trust-config", standin.config_path, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["verified"] is True

    r = cli("verify", component, "--cert-identity", "eve@example.com", "--cert-oidc-issuer",
            standin.oidc_issuer_url, "--trust-config", standin.config_path)
    assert r.exit_code == 1 and _one_error_line(r).startswith("error: wrong identity")

    r = cli("verify", component, "--cert-identity", "eve@example.com", "--cert-oidc-issuer",
            standin.oidc_issuer_url, "--trust-config", standin.config_path, "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["error"].startswith("wrong identity")


def test_cli_key_sign_verify_and_failures(cli, component, tmp_path):
    keys = tmp_path / "keys"
    assert cli("keygen", "-o", keys).exit_code == 0
    r = cli("sign", component, "--key", keys / "wasmai.key", "--bundle", tmp_path / "b.json", "--json")
    assert r.exit_code == 0, r.output
    signed = json.loads(r.stdout)
    assert signed["kind"] == "key" and signed["digest"] == hashlib.sha256(component.read_bytes()).hexdigest()
    r = cli("verify", component, "--key", keys / "wasmai.pub", "--bundle", tmp_path / "b.json", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["key_fingerprint"] == signed["key_fingerprint"]
    r = cli("verify", component, "--key", keys / "wasmai.pub", "--bundle", tmp_path / "b.json")
    assert r.exit_code == 0 and "verified" in r.stdout

    r = cli("verify", component, "--key", keys / "wasmai.pub")  # default bundle path: none there
    assert r.exit_code == 1 and _one_error_line(r).startswith("error: missing bundle")

    r = cli("verify", component, "--bundle", tmp_path / "b.json")
    assert r.exit_code == 1 and "no verification policy" in _one_error_line(r)

    r = cli("verify", component, "--key", keys / "wasmai.pub", "--cert-identity", "a@b", "--bundle",
            tmp_path / "b.json")
    assert r.exit_code == 1 and "ambiguous" in _one_error_line(r)

    component.write_bytes(component.read_bytes()[:-1])
    r = cli("verify", component, "--key", keys / "wasmai.pub", "--bundle", tmp_path / "b.json")
    assert r.exit_code == 1 and _one_error_line(r).startswith("error: digest mismatch")

    r = cli("sign", tmp_path / "missing.wasm", "--key", keys / "wasmai.key")
    assert r.exit_code == 1 and "component not found" in _one_error_line(r)


def test_cli_verify_policy_file(cli, component, tmp_path):
    pair = ws.keygen(tmp_path)
    ws.sign_component(component, key=pair.private_key)
    policy = tmp_path / "policy.toml"
    policy.write_text(f'key = "{pair.public_key.name}"\n')
    r = cli("verify", component, "--policy", policy, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["key_fingerprint"] == pair.fingerprint


def test_keyless_tampered_component_and_bundle_digest(standin, component):
    # The attacker also rewrites the digest recorded in the bundle: sigstore's signature check fails.
    res = _sign_keyless(standin, component)
    component.write_bytes(component.read_bytes() + b"payload")
    doc = json.loads(res.bundle.read_text())
    new = hashlib.sha256(component.read_bytes()).digest()
    doc["messageSignature"]["messageDigest"]["digest"] = base64.b64encode(new).decode()
    res.bundle.write_text(json.dumps(doc))
    with pytest.raises(VerificationError, match="^digest mismatch: .* does not sign the bytes"):
        ws.verify_component(component, _policy(standin))


def test_key_tampered_component_and_payload_digest(component, tmp_path):
    # The attacker rewrites the signed manifest to the new digest without the private key.
    pair = ws.keygen(tmp_path / "keys")
    bundle = ws.sign_component(component, key=pair.private_key).bundle
    component.write_bytes(component.read_bytes() + b"payload")
    doc = json.loads(bundle.read_text())
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["digest"] = hashlib.sha256(component.read_bytes()).hexdigest()
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    bundle.write_text(json.dumps(doc))
    with pytest.raises(VerificationError, match="^signature invalid"):
        ws.verify_component(component, ws.VerificationPolicy(key=pair.public_key))


def test_key_sign_through_symlink(component, tmp_path):
    pair = ws.keygen(tmp_path / "keys")
    link = tmp_path / "link.wasm"
    link.symlink_to(component)
    res = ws.sign_component(link, key=pair.private_key)
    assert res.bundle == tmp_path / "link.wasm.sigstore.json" and link.is_symlink()
    assert ws.verify_component(component, ws.VerificationPolicy(key=pair.public_key), bundle=res.bundle).verified


def test_policy_file_with_trust_only_completed_by_options(tmp_path):
    f = tmp_path / "policy.toml"
    f.write_text('trusted_root = "root.json"\noffline = true\n')
    p = ws.policy_from_options(policy=f, cert_identity="a@b", cert_oidc_issuer="https://x")
    assert p == ws.VerificationPolicy(cert_identity="a@b", cert_oidc_issuer="https://x",
                                      trusted_root=tmp_path / "root.json", offline=True)
