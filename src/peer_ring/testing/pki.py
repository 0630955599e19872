"""A throwaway certificate authority for tests, demos and local clusters.

:class:`TestPKI` writes a CA and certificates it signs as PEM files into a
directory: a node certificate names its node id (subject CN and a DNS SAN)
and its loopback IP, so the same file serves as server and client
certificate under mutual TLS. ``valid_from``/``valid_until`` make expired
and not-yet-valid certificates for refusal tests; :meth:`TestPKI.issue`
called again for the same name rewrites the files (rotation tests).

Never use these keys outside tests: they sit unencrypted on disk.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Issued", "TestPKI"]


@dataclass(frozen=True, slots=True)
class Issued:
    """Paths of one issued certificate and its key (PEM)."""

    cert: str
    key: str
    serial: int


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


class TestPKI:
    """A CA in ``directory`` (``ca.pem``, ``ca.key``) issuing ECDSA P-256 certificates."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, directory: str | Path, name: str = "peer-ring test CA") -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca = str(self.dir / "ca.pem")
        Path(self.ca).write_bytes(self.ca_cert.public_bytes(serialization.Encoding.PEM))
        _write_key(self.dir / "ca.key", self.ca_key)

    def issue(
        self,
        name: str,
        *,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = ("127.0.0.1",),
        valid_from: dt.datetime | None = None,
        valid_until: dt.datetime | None = None,
        file_stem: str | None = None,
    ) -> Issued:
        """Issue a certificate with subject CN ``name`` and DNS SANs ``name`` and
        ``dns``, IP SANs ``ips``; usable for TLS server and client auth.
        Written to ``<file_stem or name>.pem`` / ``.key`` (overwriting)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        serial = x509.random_serial_number()
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in (name, *dns)]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(valid_from or now - dt.timedelta(minutes=5))
            .not_valid_after(valid_until or now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        stem = file_stem or name
        cert_path, key_path = self.dir / f"{stem}.pem", self.dir / f"{stem}.key"
        # key first: a reader that sees the new certificate finds its key
        tmp_key, tmp_cert = key_path.with_suffix(".key.tmp"), cert_path.with_suffix(".pem.tmp")
        _write_key(tmp_key, key)
        tmp_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        tmp_key.replace(key_path)
        tmp_cert.replace(cert_path)
        return Issued(str(cert_path), str(key_path), serial)
