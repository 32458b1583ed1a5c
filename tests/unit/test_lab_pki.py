import ssl

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wharf.lab.pki import CertificateAuthority


def _load(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_server_certificate_covers_loopback_and_service_names(tmp_path):
    ca = CertificateAuthority(tmp_path)
    pair = ca.issue("apiserver", "kube-apiserver", server_names=("127.0.0.1", "kubernetes"))
    cert = _load(pair.cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["kubernetes"]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usage
    # The CA's own key verifies the certificate.
    ca_cert = _load(ca.pair.cert)
    ca_key = ca_cert.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    cert.verify_directly_issued_by(ca_cert)


def test_client_certificate_carries_user_and_groups(tmp_path):
    ca = CertificateAuthority(tmp_path)
    pair = ca.issue("admin", "alice", ("system:masters", "devs"))
    subject = _load(pair.cert).subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    orgs = [a.value for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["system:masters", "devs"]
    assert oct(pair.key.stat().st_mode & 0o777) == "0o600"
    # Loads as a TLS client identity.
    ssl.create_default_context().load_cert_chain(pair.cert, pair.key)


def test_the_authority_and_issued_certificates_are_kept(tmp_path):
    first = CertificateAuthority(tmp_path)
    pair = first.issue("admin", "alice")
    before = pair.cert.read_bytes()
    again = CertificateAuthority(tmp_path)
    assert again.pair.cert.read_bytes() == first.pair.cert.read_bytes()
    assert again.issue("admin", "alice").cert.read_bytes() == before
