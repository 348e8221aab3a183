"""A self-signed TLS certificate for the sandbox's HTTPS listener.

Why the sandbox needs HTTPS at all: docusign-esign builds its OAuth URLs as
`"https://" + oauth_host_name + "/oauth/token"` (and `/oauth/userinfo`), so the JWT grant can
only reach a server that speaks TLS. The client trusts this certificate by pointing its
`Configuration.ssl_ca_cert` at `cert_path` (see `sandbox.docusign` for the whole recipe).

The certificate is made once per state directory and reused, so a client that pinned the
file keeps working across sandbox restarts. It is regenerated only when it is missing,
unreadable, about to expire, or does not name every requested host.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sandbox.files import write_atomically

CERT_FILENAME = "sandbox-tls-cert.pem"
KEY_FILENAME = "sandbox-tls-key.pem"
DEFAULT_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")

_VALIDITY = timedelta(days=825)  # the longest lifetime macOS and browsers accept for a leaf
_RENEW_BEFORE = timedelta(days=7)


@dataclass(frozen=True)
class TlsFiles:
    """Where the PEM files are: give both to uvicorn, `cert_path` to clients as their CA."""

    cert_path: Path
    key_path: Path


def _san_entries(hosts: Sequence[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for host in hosts:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return entries


def _usable(files: TlsFiles, hosts: Sequence[str]) -> bool:
    """True if the stored pair can be served as is for `hosts` for a while yet."""
    try:
        cert = x509.load_pem_x509_certificate(files.cert_path.read_bytes())
        key = serialization.load_pem_private_key(files.key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return False
    if cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        return False
    if cert.not_valid_after_utc - datetime.now(UTC) < _RENEW_BEFORE:
        return False
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return all(entry in names for entry in _san_entries(hosts))


def generate_self_signed(hosts: Sequence[str] = DEFAULT_HOSTS) -> tuple[bytes, bytes]:
    """A fresh (certificate PEM, private key PEM) pair naming `hosts`.

    The certificate is its own issuer and is marked as a CA with key-cert-sign usage and
    key identifiers, so that it is accepted as a trust anchor by OpenSSL's strict chain
    checks (Python 3.13 turns VERIFY_X509_STRICT on by default), while also carrying the
    server-auth usage and the subject alternative names that hostname checks look at.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dealflow sandbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "localhost"),
        ]
    )
    now = datetime.now(UTC)
    public_key = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))  # tolerate small clock differences
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(_san_entries(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert_pem, key_pem


def ensure_self_signed_cert(state_dir: Path, hosts: Sequence[str] = DEFAULT_HOSTS) -> TlsFiles:
    """Return the certificate and key under `state_dir`, creating them if needed.

    Reuses an existing pair when it still fits (see the module docstring); the key file is
    written readable by the owner only.
    """
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(cert_path=state_dir / CERT_FILENAME, key_path=state_dir / KEY_FILENAME)
    if _usable(files, hosts):
        return files
    cert_pem, key_pem = generate_self_signed(hosts)
    # Key first: a crash between the two writes leaves a mismatched pair, which `_usable`
    # rejects, rather than a new certificate beside a key that cannot serve it.
    write_atomically(files.key_path, key_pem, 0o600)
    write_atomically(files.cert_path, cert_pem, 0o644)
    return files
