#!/usr/bin/env python3
"""Independent reference implementation of the atrest wrapped-file-key format,
version 1, written from the specification in `src/wrap.rs` and `src/ids.rs`.
It regenerates `wrapped_file_key_v1.json`:

    python3 vectors/generate.py > vectors/wrapped_file_key_v1.json

Requires the `cryptography` package. Inputs are fixed (derived from labels with
SHA-256), so the output is reproducible.
"""
import hashlib
import json
import struct

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    h = hmac.HMAC(salt, hashes.SHA256())
    h.update(ikm)
    return h.finalize()


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, counter = b"", b"", 1
    while len(out) < length:
        h = hmac.HMAC(prk, hashes.SHA256())
        h.update(block + info + bytes([counter]))
        block = h.finalize()
        out += block
        counter += 1
    return out[:length]


def encode_id(tag: int, value: bytes) -> bytes:
    return bytes([tag, len(value)]) + value


def context(tenant: bytes, file: bytes, version: int) -> bytes:
    return (encode_id(0x01, tenant) + encode_id(0x02, file)
            + encode_id(0x03, struct.pack(">Q", version)))


def wrap(kek, kek_id, kek_version, tenant, file, version, salt, file_key):
    header = bytes([1, 1]) + kek_id + struct.pack(">I", kek_version)
    prk = hkdf_extract(b"atrest/v1 wrap", kek)
    wrap_key = hkdf_expand(prk, b"\x01atrest/v1 wrap key" + salt, 32)
    aad = header + context(tenant, file, version)
    sealed = AESGCM(wrap_key).encrypt(b"\x00" * 12, file_key, aad)
    return header + salt + sealed


def det(label: str, n: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{label}/{counter}".encode()).digest()
        counter += 1
    return out[:n]


CASES = [
    ("simple", 1, 1),
    ("later versions", 7, 4294967295),
    ("large file version", 2**64 - 1, 3),
    ("same inputs, other salt", 1, 1),
]

vectors = []
for i, (comment, file_version, kek_version) in enumerate(CASES):
    seed = "case0" if comment == "same inputs, other salt" else f"case{i}"
    kek = det(f"{seed}/kek", 32)
    kek_id = det(f"{seed}/kek-id", 16)
    tenant = det(f"{seed}/tenant", 16)
    file = det(f"{seed}/file", 16)
    file_key = det(f"{seed}/file-key", 32)
    salt = det(f"case{i}/salt", 32)
    wrapped = wrap(kek, kek_id, kek_version, tenant, file, file_version, salt, file_key)
    assert len(wrapped) == 102
    vectors.append({
        "comment": comment,
        "kek": kek.hex(),
        "kek_id": kek_id.hex(),
        "kek_version": kek_version,
        "tenant_id": tenant.hex(),
        "file_id": file.hex(),
        "file_version": file_version,
        "salt": salt.hex(),
        "file_key": file_key.hex(),
        "wrapped": wrapped.hex(),
    })

print(json.dumps({
    "format": "atrest wrapped file key",
    "format_version": 1,
    "suite": "HKDF-SHA256 + AES-256-GCM",
    "description": "Wrapping `file_key` under `kek` (id `kek_id`, version `kek_version`) "
                   "for the context (tenant_id, file_id, file_version) with the given salt "
                   "gives `wrapped`; unwrapping `wrapped` with the same inputs gives `file_key`, "
                   "and with any other context or KEK fails.",
    "vectors": vectors,
}, indent=2))
