"""boto3 against a running `sublet dev`: object round trip with user metadata,
ranged GET, paginated ListObjectsV2, DeleteObjects, a presigned GET fetched
with plain HTTP, and a client with a wrong secret refused.

Reads SUBLET_ENDPOINT, BUCKET, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY;
exits non-zero with the failed check on stderr.
"""

import hashlib
import os
import sys
import urllib.error
import urllib.request

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["SUBLET_ENDPOINT"]
BUCKET = os.environ["BUCKET"]
CONFIG = Config(
    region_name="us-east-1",
    s3={"addressing_style": "path"},
    retries={"max_attempts": 1, "mode": "standard"},
)
# The endpoint is on loopback: never go through a proxy from the environment.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def check(ok, what):
    if not ok:
        sys.exit(f"boto3 check failed: {what}")


def error_code(call):
    try:
        call()
    except ClientError as e:
        return e.response["Error"]["Code"]
    return None


s3 = boto3.client("s3", endpoint_url=ENDPOINT, config=CONFIG)
s3.create_bucket(Bucket=BUCKET)

# Round trip with user metadata and a content type.
body = os.urandom(1 << 20) + b"tail"
meta = {"owner": "e2e", "note": "hello world"}
put = s3.put_object(
    Bucket=BUCKET, Key="dir/blob.bin", Body=body, Metadata=meta, ContentType="application/x-e2e"
)
check(put["ETag"] == '"%s"' % hashlib.md5(body).hexdigest(), f"PutObject ETag {put['ETag']}")
got = s3.get_object(Bucket=BUCKET, Key="dir/blob.bin")
check(got["Body"].read() == body, "GetObject body differs from the upload")
check(got["Metadata"] == meta, f"GetObject metadata {got['Metadata']}")
check(got["ContentType"] == "application/x-e2e", f"GetObject content type {got['ContentType']}")
head = s3.head_object(Bucket=BUCKET, Key="dir/blob.bin")
check(head["ContentLength"] == len(body), f"HeadObject length {head['ContentLength']}")
check(head["Metadata"] == meta, f"HeadObject metadata {head['Metadata']}")
check(head["ETag"] == put["ETag"], f"HeadObject ETag {head['ETag']}")
ranged = s3.get_object(Bucket=BUCKET, Key="dir/blob.bin", Range="bytes=1048570-1048579")
check(ranged["Body"].read() == body[1048570:1048580], "ranged GetObject bytes")
check(
    error_code(lambda: s3.get_object(Bucket=BUCKET, Key="dir/missing")) == "NoSuchKey",
    "GetObject of a missing key answers NoSuchKey",
)

# ListObjectsV2 in pages of 7 over 25 keys, and with a delimiter.
keys = [f"list/{i:03d}" for i in range(25)]
for k in keys:
    s3.put_object(Bucket=BUCKET, Key=k, Body=k.encode())
pages = list(
    s3.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix="list/", PaginationConfig={"PageSize": 7}
    )
)
check(len(pages) == 4, f"25 keys in pages of 7 make 4 pages, got {len(pages)}")
check(all(p["KeyCount"] <= 7 for p in pages), "a page holds at most MaxKeys keys")
listed = [o["Key"] for p in pages for o in p.get("Contents", [])]
check(listed == keys, f"paginated listing {listed}")
top = s3.list_objects_v2(Bucket=BUCKET, Delimiter="/")
prefixes = [p["Prefix"] for p in top.get("CommonPrefixes", [])]
check(prefixes == ["dir/", "list/"], f"common prefixes {prefixes}")

# DeleteObjects removes them all and reports each.
deleted = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys]})
check(not deleted.get("Errors"), f"DeleteObjects errors {deleted.get('Errors')}")
check(
    sorted(d["Key"] for d in deleted.get("Deleted", [])) == keys,
    f"DeleteObjects reported {deleted.get('Deleted')}",
)
left = s3.list_objects_v2(Bucket=BUCKET, Prefix="list/")
check(left["KeyCount"] == 0, f"{left['KeyCount']} keys left after DeleteObjects")

# boto3 presigns with Signature Version 2 unless told otherwise; sublet refuses SigV2 (a
# captured SigV2 request could be replayed) with a 400 that names Signature Version 4 (docs/s3.md).
v2_url = s3.generate_presigned_url(
    "get_object", Params={"Bucket": BUCKET, "Key": "dir/blob.bin"}, ExpiresIn=300
)
check("Signature=" in v2_url and "X-Amz-Signature" not in v2_url, f"not a SigV2 URL: {v2_url}")
try:
    HTTP.open(v2_url, timeout=30)
    check(False, "a SigV2 presigned URL was accepted")
except urllib.error.HTTPError as e:
    text = e.read().decode(errors="replace")
    check(e.code == 400 and "Signature Version 4" in text, f"SigV2 presigned URL answered {e.code}: {text}")

# A presigned GET signed with SigV4 works from plain HTTP; the same URL for another key does not.
s3v4 = boto3.client("s3", endpoint_url=ENDPOINT, config=CONFIG.merge(Config(signature_version="s3v4")))
url = s3v4.generate_presigned_url(
    "get_object", Params={"Bucket": BUCKET, "Key": "dir/blob.bin"}, ExpiresIn=300
)
with HTTP.open(url, timeout=30) as r:
    check(r.read() == body, "presigned GET body differs from the upload")
try:
    HTTP.open(url.replace("dir/blob.bin", "dir/other.bin"), timeout=30)
    check(False, "a presigned URL edited to another key was accepted")
except urllib.error.HTTPError as e:
    check(e.code == 403, f"edited presigned URL answered {e.code}, not 403")

# A client with the right access key and a wrong secret is refused.
wrong = boto3.client(
    "s3",
    endpoint_url=ENDPOINT,
    config=CONFIG,
    aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
    aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"] + "wrong",
)
code = error_code(lambda: wrong.get_object(Bucket=BUCKET, Key="dir/blob.bin"))
check(code == "SignatureDoesNotMatch", f"wrong secret GetObject answered {code}")
code = error_code(lambda: wrong.put_object(Bucket=BUCKET, Key="dir/intruder", Body=b"x"))
check(code == "SignatureDoesNotMatch", f"wrong secret PutObject answered {code}")
check(
    error_code(lambda: s3.head_object(Bucket=BUCKET, Key="dir/intruder")) == "404",
    "a refused PutObject left no object",
)

s3.delete_object(Bucket=BUCKET, Key="dir/blob.bin")
s3.delete_bucket(Bucket=BUCKET)
print("boto3 checks passed")
