"""boto3 against a running `sublet dev`: S3 checksums. boto3 sends a CRC32 with every
upload by default (a header over HTTP; an aws-chunked trailer over HTTPS, forced here by
making botocore think the endpoint is HTTPS) and verifies GetObject bodies against the
checksum answered with ChecksumMode=ENABLED. Every value is checked against Python's own
zlib/hashlib (CRC32C and CRC64NVME with the small table CRCs below).

Reads SUBLET_ENDPOINT, BUCKET, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY;
exits non-zero with the failed checks on stderr.
"""

import base64
import hashlib
import os
import struct
import sys
import urllib.parse
import zlib

import boto3
import botocore.httpchecksum
from botocore.config import Config
from botocore.exceptions import ClientError


def client(**config):
    return boto3.client(
        "s3",
        endpoint_url=os.environ["SUBLET_ENDPOINT"],
        config=Config(
            region_name="us-east-1",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            **config,
        ),
    )


s3 = client()
# A client that sends no checksum of its own, as older SDKs.
plain = client(request_checksum_calculation="when_required", response_checksum_validation="when_required")
bucket = os.environ["BUCKET"]
failed = []


def check(name, got, want):
    if got != want:
        failed.append(f"{name}: got {got!r}, want {want!r}")


def b64(raw):
    return base64.b64encode(raw).decode()


def reflected_table(poly):
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


CRC32C = reflected_table(0x82F63B78)
CRC64NVME = reflected_table(0x9A6C9329AC4BC9B5)


def table_crc(data, table, mask):
    c = mask
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ mask


DIGESTS = {
    "CRC32": lambda d: struct.pack(">I", zlib.crc32(d)),
    "CRC32C": lambda d: struct.pack(">I", table_crc(d, CRC32C, 0xFFFFFFFF)),
    "CRC64NVME": lambda d: struct.pack(">Q", table_crc(d, CRC64NVME, 0xFFFFFFFFFFFFFFFF)),
    "SHA1": lambda d: hashlib.sha1(d).digest(),
    "SHA256": lambda d: hashlib.sha256(d).digest(),
}


def error_code(call):
    try:
        call()
    except ClientError as e:
        return e.response["Error"]["Code"]
    return "no error"


def absent(key):
    return error_code(lambda: s3.head_object(Bucket=bucket, Key=key)) in ("404", "NoSuchKey")


s3.create_bucket(Bucket=bucket)
body = b"hello world"
want_crc32 = b64(DIGESTS["CRC32"](body))
assert want_crc32 == "DUoRhQ==", want_crc32

# boto3's default: a CRC32 header, stored and answered.
r = s3.put_object(Bucket=bucket, Key="crc32", Body=body)
check("PutObject ChecksumCRC32", r.get("ChecksumCRC32"), want_crc32)
check("PutObject ChecksumType", r.get("ChecksumType"), "FULL_OBJECT")
g = s3.get_object(Bucket=bucket, Key="crc32", ChecksumMode="ENABLED")
check("GetObject body (validated by boto3)", g["Body"].read(), body)
check("GetObject ChecksumCRC32", g.get("ChecksumCRC32"), want_crc32)
check("HeadObject ChecksumMode=ENABLED", s3.head_object(Bucket=bucket, Key="crc32", ChecksumMode="ENABLED").get("ChecksumCRC32"), want_crc32)
check("HeadObject without ChecksumMode", s3.head_object(Bucket=bucket, Key="crc32").get("ChecksumCRC32"), None)
ranged = s3.get_object(Bucket=bucket, Key="crc32", Range="bytes=0-4", ChecksumMode="ENABLED")
check("ranged GetObject body", ranged["Body"].read(), b"hello")
check("ranged GetObject ChecksumCRC32", ranged.get("ChecksumCRC32"), None)
copied = s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "crc32"})
check("CopyObject ChecksumCRC32", copied["CopyObjectResult"].get("ChecksumCRC32"), want_crc32)
attrs = s3.get_object_attributes(Bucket=bucket, Key="crc32", ObjectAttributes=["ETag", "Checksum", "ObjectParts", "ObjectSize"])
check("GetObjectAttributes ObjectSize", attrs.get("ObjectSize"), len(body))
check("GetObjectAttributes Checksum", attrs.get("Checksum"), {"ChecksumCRC32": want_crc32, "ChecksumType": "FULL_OBJECT"})
check("GetObjectAttributes ObjectParts of a single PUT", attrs.get("ObjectParts"), None)
check("GetObjectAttributes ETag", attrs.get("ETag", "").strip('"'), hashlib.md5(body).hexdigest())

# Every algorithm: SHA1 and SHA256 computed by boto3, CRC32C and CRC64NVME sent as values.
for alg in ["SHA1", "SHA256"]:
    r = s3.put_object(Bucket=bucket, Key=alg, Body=body, ChecksumAlgorithm=alg)
    check(f"PutObject {alg}", r.get(f"Checksum{alg}"), b64(DIGESTS[alg](body)))
for alg in ["CRC32C", "CRC64NVME"]:
    value = b64(DIGESTS[alg](body))
    s3.put_object(Bucket=bucket, Key=alg, Body=body, **{f"Checksum{alg}": value})
    h = s3.head_object(Bucket=bucket, Key=alg, ChecksumMode="ENABLED")
    check(f"HeadObject {alg}", h.get(f"Checksum{alg}"), value)

# A client that sends none gets S3's default, CRC64NVME.
plain.put_object(Bucket=bucket, Key="default", Body=body)
h = s3.head_object(Bucket=bucket, Key="default", ChecksumMode="ENABLED")
check("default ChecksumCRC64NVME", h.get("ChecksumCRC64NVME"), b64(DIGESTS["CRC64NVME"](body)))
check("default ChecksumCRC32", h.get("ChecksumCRC32"), None)

# A checksum header that does not match: BadDigest, nothing stored.
check("mismatched header", error_code(lambda: s3.put_object(Bucket=bucket, Key="bad-header", Body=body, ChecksumCRC32="AAAAAA==")), "BadDigest")
check("nothing stored after a mismatched header", absent("bad-header"), True)

# Trailers: botocore sends them only over TLS; make it believe the endpoint is HTTPS.
real_urlparse = botocore.httpchecksum.urlparse
botocore.httpchecksum.urlparse = lambda url: real_urlparse(url)._replace(scheme="https")
try:
    r = s3.put_object(Bucket=bucket, Key="trailer", Body=body, ChecksumAlgorithm="SHA256")
    check("trailer PutObject SHA256", r.get("ChecksumSHA256"), b64(DIGESTS["SHA256"](body)))
    r = s3.put_object(Bucket=bucket, Key="trailer-crc32", Body=body)
    check("trailer PutObject CRC32", r.get("ChecksumCRC32"), want_crc32)
    real_digest = botocore.httpchecksum.Crc32Checksum.b64digest
    botocore.httpchecksum.Crc32Checksum.b64digest = lambda self: "AAAAAA=="
    try:
        check("mismatched trailer", error_code(lambda: s3.put_object(Bucket=bucket, Key="bad-trailer", Body=body)), "BadDigest")
    finally:
        botocore.httpchecksum.Crc32Checksum.b64digest = real_digest
finally:
    botocore.httpchecksum.urlparse = real_urlparse
check("nothing stored after a mismatched trailer", absent("bad-trailer"), True)

# Multipart: composite and full-object checksums, as S3 defines them.
p1, p2 = os.urandom(5 << 20), os.urandom(1 << 20)
for alg, kind in [("CRC32", "COMPOSITE"), ("SHA256", "COMPOSITE"), ("CRC32", "FULL_OBJECT")]:
    key = f"mp-{alg}-{kind}"
    name = f"multipart {alg} {kind}"
    up = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm=alg, ChecksumType=kind)
    check(f"{name}: CreateMultipartUpload type", (up.get("ChecksumAlgorithm"), up.get("ChecksumType")), (alg, kind))
    uid = up["UploadId"]
    parts = []
    for n, data in [(1, p1), (2, p2)]:
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=n, Body=data, ChecksumAlgorithm=alg)
        check(f"{name}: UploadPart {n}", r.get(f"Checksum{alg}"), b64(DIGESTS[alg](data)))
        parts.append({"PartNumber": n, "ETag": r["ETag"], f"Checksum{alg}": r.get(f"Checksum{alg}")})
    listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=uid)
    check(f"{name}: ListParts", [p.get(f"Checksum{alg}") for p in listed["Parts"]], [p[f"Checksum{alg}"] for p in parts])
    if kind == "COMPOSITE":
        want = b64(DIGESTS[alg](DIGESTS[alg](p1) + DIGESTS[alg](p2))) + "-2"
        bare = [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in parts]
        check(f"{name}: completion without part checksums", error_code(lambda: s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid, MultipartUpload={"Parts": bare})), "InvalidRequest")
    else:
        want = b64(DIGESTS[alg](p1 + p2))
        wrong = {"ChecksumCRC32": "AAAAAA==", "ChecksumType": "FULL_OBJECT"}
        check(f"{name}: wrong whole-object checksum", error_code(lambda: s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid, MultipartUpload={"Parts": parts}, **wrong)), "BadDigest")
    done = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid, MultipartUpload={"Parts": parts})
    check(f"{name}: CompleteMultipartUpload", (done.get(f"Checksum{alg}"), done.get("ChecksumType")), (want, kind))
    h = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    check(f"{name}: HeadObject", (h.get(f"Checksum{alg}"), h.get("ChecksumType")), (want, kind))
    g = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    check(f"{name}: GetObject body", g["Body"].read() == p1 + p2, True)
    if kind == "COMPOSITE":
        h2 = s3.head_object(Bucket=bucket, Key=key, PartNumber=2, ChecksumMode="ENABLED")
        check(f"{name}: HeadObject part 2", h2.get(f"Checksum{alg}"), b64(DIGESTS[alg](p2)))
    attrs = s3.get_object_attributes(Bucket=bucket, Key=key, ObjectAttributes=["Checksum", "ObjectParts", "ObjectSize"])
    check(f"{name}: GetObjectAttributes Checksum", attrs.get("Checksum"), {f"Checksum{alg}": want.split("-")[0], "ChecksumType": kind})
    check(f"{name}: GetObjectAttributes ObjectSize", attrs.get("ObjectSize"), len(p1) + len(p2))
    op = attrs.get("ObjectParts", {})
    check(f"{name}: GetObjectAttributes TotalPartsCount", op.get("TotalPartsCount"), 2)
    check(f"{name}: GetObjectAttributes parts", [(p.get("PartNumber"), p.get("Size"), p.get(f"Checksum{alg}")) for p in op.get("Parts", [])], [(1, len(p1), b64(DIGESTS[alg](p1))), (2, len(p2), b64(DIGESTS[alg](p2)))])

# A multipart upload naming no algorithm gets S3's default, a full-object CRC64NVME made
# from the parts': the same value a single PUT of the same bytes gets.
up = plain.create_multipart_upload(Bucket=bucket, Key="mp-default")
parts = []
for n, data in [(1, p1), (2, p2)]:
    r = plain.upload_part(Bucket=bucket, Key="mp-default", UploadId=up["UploadId"], PartNumber=n, Body=data)
    parts.append({"PartNumber": n, "ETag": r["ETag"]})
plain.complete_multipart_upload(Bucket=bucket, Key="mp-default", UploadId=up["UploadId"], MultipartUpload={"Parts": parts})
plain.put_object(Bucket=bucket, Key="single-default", Body=p1 + p2)
combined = s3.head_object(Bucket=bucket, Key="mp-default", ChecksumMode="ENABLED")
single = s3.head_object(Bucket=bucket, Key="single-default", ChecksumMode="ENABLED")
check("default multipart CRC64NVME", (combined.get("ChecksumCRC64NVME"), combined.get("ChecksumType")), (single.get("ChecksumCRC64NVME"), "FULL_OBJECT"))
check("default single PUT has a CRC64NVME", single.get("ChecksumCRC64NVME") is not None, True)

if failed:
    sys.exit("checksum checks failed:\n" + "\n".join(failed))
print("checksum checks passed")
