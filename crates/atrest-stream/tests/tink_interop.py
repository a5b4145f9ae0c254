"""Google Tink side of the interoperability test (driven by tink_interop.rs).

Usage: tink_interop.py JOB_DIR

JOB_DIR/job.json lists cases; for each case N the directory holds
  N.key            the 32-byte file key
  N.plaintext      the plaintext
  N.ad             Tink's associated data (atrest prefix || context)
  N.atrest_body    the atrest stream without its 42-byte prefix
This script writes
  N.tink_plaintext  Tink's decryption of N.atrest_body
  N.tink_body       Tink's encryption of N.plaintext
"""
import io
import json
import pathlib
import sys

import tink
from tink import secret_key_access, streaming_aead
from tink.proto import aes_gcm_hkdf_streaming_pb2, common_pb2, tink_pb2

TYPE_URL = "type.googleapis.com/google.crypto.tink.AesGcmHkdfStreamingKey"


def primitive(key_bytes: bytes, segment_size: int):
    params = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingParams(
        ciphertext_segment_size=segment_size,
        derived_key_size=32,
        hkdf_hash_type=common_pb2.SHA256,
    )
    key = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingKey(version=0, key_value=key_bytes, params=params)
    keyset = tink_pb2.Keyset(
        primary_key_id=1,
        key=[
            tink_pb2.Keyset.Key(
                key_data=tink_pb2.KeyData(
                    type_url=TYPE_URL,
                    value=key.SerializeToString(),
                    key_material_type=tink_pb2.KeyData.SYMMETRIC,
                ),
                status=tink_pb2.ENABLED,
                key_id=1,
                output_prefix_type=tink_pb2.RAW,
            )
        ],
    )
    handle = tink.proto_keyset_format.parse(keyset.SerializeToString(), secret_key_access.TOKEN)
    return handle.primitive(streaming_aead.StreamingAead)


class Capture(io.BytesIO):
    """Keeps its contents when Tink closes it."""

    def close(self):
        self.captured = self.getvalue()
        super().close()


def main(job_dir: pathlib.Path) -> None:
    streaming_aead.register()
    job = json.loads((job_dir / "job.json").read_text())
    for case in job["cases"]:
        n = case["name"]
        read = lambda suffix: (job_dir / f"{n}.{suffix}").read_bytes()
        p = primitive(read("key"), case["segment_size"])
        ad = read("ad")

        with p.new_decrypting_stream(io.BytesIO(read("atrest_body")), ad) as stream:
            (job_dir / f"{n}.tink_plaintext").write_bytes(stream.read())

        sink = Capture()
        with p.new_encrypting_stream(sink, ad) as stream:
            stream.write(read("plaintext"))
        (job_dir / f"{n}.tink_body").write_bytes(sink.captured)
    print(f"tink {tink.__version__ if hasattr(tink, '__version__') else ''}: {len(job['cases'])} cases in both directions")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
