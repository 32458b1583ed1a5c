"""What the network tests share: a template that renders only a Service (cheap for the lab),
and certificates made on the spot."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.conftest import Wharf

SERVICE_ONLY = "service-only"


def service_only_template(wharf: Wharf) -> None:
    """A template that renders just a Service: 50 of them are cheap for the lab."""
    body = {
        "kind": "AppTemplate",
        "metadata": {"name": SERVICE_ONLY},
        "spec": {
            "description": "A Service only",
            "versions": [
                {
                    "version": "1.0.0",
                    "published": True,
                    "parameters": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}},
                        "required": ["name"],
                    },
                    "objects": [
                        {
                            "apiVersion": "v1",
                            "kind": "Service",
                            "metadata": {"name": "${name}"},
                            "spec": {"selector": {"app": "${name}"}, "ports": [{"port": 80}]},
                        }
                    ],
                }
            ],
        },
    }
    answer = wharf.admin.put(f"/api/v1/apptemplates/{SERVICE_ONLY}", body)
    assert answer.status_code in (200, 201), answer.text


def certificate(names: list[str], days: int) -> tuple[str, str]:
    """A self-signed certificate for `names` ending `days` from now (negative: expired), and
    its key, both PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=max(1, -days + 1)))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return pem, private
