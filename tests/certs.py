"""Certificates generated for the tests: a private CA, a server certificate for 127.0.0.1/localhost,
client certificates, and a self-signed certificate no one trusts."""
from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Pair:
    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(folder: Path, stem: str, cert: x509.Certificate, key) -> Pair:
    folder.mkdir(parents=True, exist_ok=True)
    c, k = folder / f"{stem}.crt", folder / f"{stem}.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    k.chmod(0o644)  # mosquitto drops privileges; the test folder is private anyway
    return Pair(c, k)


def _builder(subject: str, issuer: str, key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2)))


class CertAuthority:
    """`ca.cert` signs `server()` and `client(name)` pairs written into `folder`."""

    def __init__(self, folder: Path, name: str = "EdgeSDK test CA") -> None:
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = name
        cert = (_builder(name, name, self.key)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
                .sign(self.key, hashes.SHA256()))
        self.pair = _write(folder, "ca", cert, self.key)
        self.cert = self.pair.cert

    def _leaf(self, stem: str, cn: str, usage, sans: list) -> Pair:
        key = ec.generate_private_key(ec.SECP256R1())
        b = _builder(cn, self.name, key).add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return _write(self.folder, stem, b.sign(self.key, hashes.SHA256()), key)

    def server(self, stem: str = "server") -> Pair:
        return self._leaf(stem, "127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH,
                          [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])

    def client(self, name: str) -> Pair:
        return self._leaf(name, name, ExtendedKeyUsageOID.CLIENT_AUTH, [])


def self_signed(folder: Path, stem: str = "selfsigned") -> Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_builder("127.0.0.1", "127.0.0.1", key)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False).sign(key, hashes.SHA256()))
    return _write(folder, stem, cert, key)
