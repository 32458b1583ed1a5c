"""Cosign simple-signing verification and image references, as pure rules."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from wharf.apps.model import image_field
from wharf.registry.model import (
    ImageRef,
    SigningKey,
    load_public_key,
    parse_image,
    signature_problem,
    signature_tag,
)

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


def _key() -> tuple[ec.EllipticCurvePrivateKey, SigningKey]:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, SigningKey(name="release", publicKey=pem.decode())


def _payload(digest: str, kind: str = "cosign container image signature") -> bytes:
    critical = {
        "identity": {"docker-reference": "127.0.0.1:5000/shop/web/app"},
        "image": {"docker-manifest-digest": digest},
        "type": kind,
    }
    return json.dumps({"critical": critical, "optional": None}).encode()


def _sign(private: ec.EllipticCurvePrivateKey, payload: bytes) -> str:
    return base64.b64encode(private.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()


def test_a_signature_by_a_projects_key_for_the_digest_verifies() -> None:
    private, key = _key()
    payload = _payload(DIGEST)
    assert signature_problem(payload, _sign(private, payload), [key], DIGEST) == ""


def test_another_key_another_digest_and_a_tampered_payload_are_told_apart() -> None:
    private, key = _key()
    stranger, _ = _key()
    payload = _payload(DIGEST)
    assert signature_problem(payload, _sign(stranger, payload), [key], DIGEST) == (
        "not signed by any of the project's keys"
    )
    replayed = _payload(OTHER)
    assert "for another image" in signature_problem(
        replayed, _sign(private, replayed), [key], DIGEST
    )
    signature = _sign(private, payload)
    assert signature_problem(payload + b" ", signature, [key], DIGEST) == (
        "not signed by any of the project's keys"
    )
    assert "not base64" in signature_problem(payload, "%%%", [key], DIGEST)
    foreign = _payload(DIGEST, kind="something else")
    assert "type" in signature_problem(foreign, _sign(private, foreign), [key], DIGEST)


def test_a_key_must_be_an_ecdsa_public_key() -> None:
    rsa_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for text, reason in (("not a key", "not a PEM"), (rsa_pem.decode(), "not an ECDSA key")):
        with pytest.raises(ValueError, match=reason):
            load_public_key(text)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("127.0.0.1:5000/shop/web/app:v1", ImageRef("127.0.0.1:5000", "shop/web/app", "v1", "")),
        ("reg.example.com/a/b", ImageRef("reg.example.com", "a/b", "latest", "")),
        (f"localhost/a/b@{DIGEST}", ImageRef("localhost", "a/b", "", DIGEST)),
        (f"r.io:443/a/b:v2@{DIGEST}", ImageRef("r.io:443", "a/b", "v2", DIGEST)),
        ("nginx:1.25", None),
        ("library/nginx", None),
        ("r.io/UPPER/case:v1", None),
        # What is checked must be what the cluster pulls: no path tricks in tag or digest.
        ("r.io/a/b@sha256:../../manifests/signed", None),
        ("r.io/a/b:v1@../manifests/signed", None),
        (f"r.io/a/b:v1?x@{DIGEST}", None),
        ("r.io/a/b:..%2fsigned", None),
    ],
)
def test_image_references_split_as_docker_reads_them(image: str, expected: ImageRef) -> None:
    assert parse_image(image) == expected


def test_signatures_live_under_the_digests_sig_tag() -> None:
    assert signature_tag(DIGEST) == f"sha256-{'ab' * 32}.sig"


def test_an_images_field_is_found_in_the_values_even_through_a_mirror() -> None:
    values = {"name": "web", "sidecar": {"images": ["r.io/a/log:1"]}, "image": "r.io/a/web:1"}
    assert image_field(values, "r.io/a/web:1") == "spec.values.image"
    assert image_field(values, "r.io/a/log:1") == "spec.values.sidecar.images[0]"
    assert image_field(values, "mirror.io:5000/a/web:1") == "spec.values.image"
    assert image_field(values, "r.io/a/other:1") == "spec.values"


def test_a_schedule_is_due_when_never_run_or_after_its_interval() -> None:
    import datetime as dt

    from wharf.registry.model import due

    now = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
    assert due(None, 60, now)
    assert due("2026-11-29T11:00:00Z", 60, now)
    assert not due("2026-11-29T11:00:01Z", 60, now)
    assert due("garbage", 60, now)
