#!/usr/bin/env python3
"""Independent reference implementation of the atrest stream format, version 1,
written from FORMAT.md. It regenerates `stream_v1.json`:

    python3 vectors/generate.py > vectors/stream_v1.json

Requires the `cryptography` package. All inputs are derived from labels with
SHA-256, so the output is reproducible.
"""
import hashlib
import json
import struct

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    h = hmac.HMAC(salt if salt else b"\x00" * 32, hashes.SHA256())
    h.update(ikm)
    prk = h.finalize()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        h = hmac.HMAC(prk, hashes.SHA256())
        h.update(block + info + bytes([counter]))
        block = h.finalize()
        out += block
        counter += 1
    return out[:length]


def commitment(key: bytes) -> bytes:
    return hkdf(key, b"atrest/v1 key commitment", b"\x00atrest/v1 key commitment", 32)


def prefix(key: bytes, segment_size: int) -> bytes:
    return b"ATRS" + bytes([1, 1]) + struct.pack(">I", segment_size) + commitment(key)


def split(plaintext: bytes, segment_size: int, empty_tail: bool = False):
    first, rest = segment_size - 56, segment_size - 16
    segments = [plaintext[:first]]
    pos = first
    while pos < len(plaintext):
        segments.append(plaintext[pos:pos + rest])
        pos += rest
    if empty_tail:
        segments.append(b"")  # non-canonical: an empty last segment
    return segments


def encrypt(key, ctx, plaintext, segment_size, salt, nonce_prefix, empty_tail=False):
    p = prefix(key, segment_size)
    stream_key = hkdf(key, salt, p + ctx, 32)
    aead = AESGCM(stream_key)
    out = p + bytes([40]) + salt + nonce_prefix
    segments = split(plaintext, segment_size, empty_tail)
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        nonce = nonce_prefix + struct.pack(">I", i) + bytes([1 if last else 0])
        out += aead.encrypt(nonce, segment, None)
    return out


def det(label: str, n: int) -> bytes:
    out, counter = b"", 0
    while len(out) < n:
        out += hashlib.sha256(f"{label}/{counter}".encode()).digest()
        counter += 1
    return out[:n]


POSITIVE = [
    ("empty plaintext", 256, 0),
    ("one byte", 256, 1),
    ("exactly one full first segment", 256, 200),
    ("one byte into the second segment", 256, 201),
    ("exactly two full segments", 256, 440),
    ("several segments", 256, 1000),
    ("default segment size", 65536, 70000),
]

vectors = []
for i, (comment, s, n) in enumerate(POSITIVE):
    key, ctx = det(f"v{i}/key", 32), f"tenant {i} / file {i} / version 1".encode()
    pt, salt, np_ = det(f"v{i}/plaintext", n), det(f"v{i}/salt", 32), det(f"v{i}/nonce-prefix", 7)
    vectors.append({
        "comment": comment, "result": "valid", "segment_size": s,
        "key": key.hex(), "context": ctx.hex(), "salt": salt.hex(), "nonce_prefix": np_.hex(),
        "plaintext": pt.hex(), "stream": encrypt(key, ctx, pt, s, salt, np_).hex(),
    })

# Negative vectors: each must be rejected with the named error.
key, ctx = det("neg/key", 32), b"tenant n / file n / version 1"
salt, np_ = det("neg/salt", 32), det("neg/nonce-prefix", 7)
full = det("neg/plaintext", 440)
good = encrypt(key, ctx, full, 256, salt, np_)
negative = [
    ("empty final segment after a full one", "Malformed", encrypt(key, ctx, full, 256, salt, np_, empty_tail=True)),
    ("17 trailing bytes", "TrailingData", good + b"\x00" * 17),
    ("cut after an inner segment", "Truncated", good[:82 + 216]),
    ("cut inside the header", "Truncated", good[:60]),
    ("wrong key commitment", "CommitmentMismatch", good[:10] + bytes(32) + good[42:]),
    ("unknown format version", "UnsupportedVersion", good[:4] + b"\x02" + good[5:]),
    ("segment size below the minimum", "Malformed", good[:6] + struct.pack(">I", 255) + good[10:]),
]
for comment, error, stream in negative:
    vectors.append({
        "comment": comment, "result": "invalid", "error": error, "segment_size": 256,
        "key": key.hex(), "context": ctx.hex(), "plaintext": full.hex(), "stream": stream.hex(),
    })

print(json.dumps({
    "format": "atrest stream",
    "format_version": 1,
    "suite": "AES-256-GCM, HKDF-SHA256, Tink STREAM segments",
    "description": "Valid vectors: encrypting `plaintext` under `key` with associated data "
                   "`context`, segment size `segment_size`, and the given salt and nonce prefix "
                   "gives `stream`; decrypting `stream` gives `plaintext`. Invalid vectors: "
                   "decrypting `stream` must fail with `error`.",
    "vectors": vectors,
}, indent=1))
