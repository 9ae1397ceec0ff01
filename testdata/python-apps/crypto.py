"""cryptography. basic: a SHA-256; more: Fernet, RSA signatures, an X.509 certificate."""

import datetime
import json
import sys
from importlib.metadata import version

from cryptography.hazmat.primitives import hashes


def basic() -> dict[str, object]:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(b"scratchpack")
    return {"sha256": digest.finalize().hex()}


def more() -> dict[str, object]:
    from cryptography import x509
    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.x509.oid import NameOID

    fernet = Fernet(Fernet.generate_key())
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signature = key.sign(b"payload", padding.PKCS1v15(), hashes.SHA256())
    key.public_key().verify(signature, b"payload", padding.PKCS1v15(), hashes.SHA256())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scratch.example")])
    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(42)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    blake = hashes.Hash(hashes.BLAKE2b(64))
    blake.update(b"scratchpack")
    return {
        "fernet": fernet.decrypt(fernet.encrypt(b"secret")).decode(),
        "signature_bytes": len(signature),
        "serial": cert.serial_number,
        "cn": cert.subject.rfc4514_string(),
        "blake2b": blake.finalize().hex(),
        "version": version("cryptography"),
    }


if __name__ == "__main__":
    print(json.dumps({"basic": basic, "more": more}[sys.argv[1]](), sort_keys=True))
