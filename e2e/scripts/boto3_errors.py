"""boto3 against a running `sublet dev`: invalid requests answer as S3 does.

- every error body's RequestId is the answer's x-amz-request-id header (signed requests
  refused by the handler, and anonymous ones refused before it);
- an empty Delimiter is not echoed in listings;
- a DeleteObjects of more than 1000 keys answers 400 MalformedXML;
- a Content-MD5 that is not base64 of 16 bytes answers 400 InvalidDigest;
- a negative MaxKeys answers 400 InvalidArgument;
- partNumber outside 1..10000 answers 400 InvalidArgument, one the object lacks 416;
- a versionId no version could have answers 400 InvalidArgument (GET and DELETE);
- user metadata over 2 KB answers 400 MetadataTooLarge.

Reads SUBLET_ENDPOINT, BUCKET, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY;
exits non-zero with the failed checks on stderr.
"""

import os
import re
import urllib.error
import urllib.request

from botocore.exceptions import ClientError
from s3_checks import check, endpoint, env_client, finish

s3 = env_client()
bucket = os.environ["BUCKET"]
s3.create_bucket(Bucket=bucket)
for key in ["a/1", "a/2", "b"]:
    s3.put_object(Bucket=bucket, Key=key, Body=b"x")


raw = {}


def keep_raw(http_response, **_):
    raw["headers"] = dict(http_response.headers)
    raw["body"] = http_response.content


s3.meta.events.register("after-call.s3.GetObject", keep_raw)
try:
    s3.get_object(Bucket=bucket, Key="missing")
    check("GET of a missing key", False, "answered 200")
except ClientError as e:
    header = raw["headers"].get("x-amz-request-id", "")
    body = re.search(rb"<RequestId>([^<]*)</RequestId>", raw["body"])
    check("a signed error carries x-amz-request-id", bool(header), str(raw["headers"]))
    check(
        "a signed error's RequestId is its header's",
        body is not None and body.group(1).decode() == header,
        f"header {header!r}, body {raw['body']!r}",
    )
    check("a missing key is NoSuchKey", e.response["Error"]["Code"] == "NoSuchKey", str(e.response["Error"]))

# Anonymous: refused by the gateway's access check.
try:
    urllib.request.urlopen(f"{endpoint}/{bucket}/b", timeout=10)
    check("an anonymous GET", False, "answered 200")
except urllib.error.HTTPError as e:
    header = e.headers.get("x-amz-request-id", "")
    body = e.read()
    found = re.search(rb"<RequestId>([^<]*)</RequestId>", body)
    check("an anonymous error carries x-amz-request-id", bool(header), str(dict(e.headers)))
    check(
        "an anonymous error's RequestId is its header's",
        found is not None and found.group(1).decode() == header,
        f"header {header!r}, body {body!r}",
    )

# Two requests, two ids.
ids = set()
for _ in range(2):
    ids.add(s3.head_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPHeaders"].get("x-amz-request-id"))
check("every answer has its own request id", len(ids) == 2 and None not in ids, str(ids))

for name, answer in [
    ("ListObjects", s3.list_objects(Bucket=bucket, Delimiter="")),
    ("ListObjectsV2", s3.list_objects_v2(Bucket=bucket, Delimiter="")),
    ("ListObjectVersions", s3.list_object_versions(Bucket=bucket, Delimiter="")),
]:
    check(f"{name} leaves an empty Delimiter out", "Delimiter" not in answer, str(answer.get("Delimiter")))
    check(f"{name} with an empty Delimiter has no CommonPrefixes", not answer.get("CommonPrefixes"), str(answer))
check(
    "a '/' Delimiter is echoed",
    s3.list_objects_v2(Bucket=bucket, Delimiter="/").get("Delimiter") == "/",
)

try:
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": f"k{i}"} for i in range(1001)]})
    check("DeleteObjects of 1001 keys", False, "answered 200")
except ClientError as e:
    status = e.response["ResponseMetadata"]["HTTPStatusCode"]
    code = e.response["Error"]["Code"]
    check("DeleteObjects of 1001 keys is 400 MalformedXML", (status, code) == (400, "MalformedXML"), f"{status} {code}")
def expect_error(name, call, status, code):
    try:
        call()
        check(name, False, "answered 200")
    except ClientError as e:
        got = (e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"])
        check(name, got == (status, code), str(got))


expect_error(
    "a Content-MD5 that is not base64 of 16 bytes",
    lambda: s3.put_object(Bucket=bucket, Key="md5", Body=b"x", ContentMD5="notbase64!!"),
    400,
    "InvalidDigest",
)
expect_error(
    "a Content-MD5 of the wrong bytes",
    lambda: s3.put_object(Bucket=bucket, Key="md5", Body=b"x", ContentMD5="AAAAAAAAAAAAAAAAAAAAAA=="),
    400,
    "BadDigest",
)
expect_error(
    "a negative MaxKeys",
    lambda: s3.list_objects_v2(Bucket=bucket, MaxKeys=-1),
    400,
    "InvalidArgument",
)
for n in [0, 10001]:
    expect_error(
        f"partNumber {n} on a GET",
        lambda: s3.get_object(Bucket=bucket, Key="a/1", PartNumber=n),
        400,
        "InvalidArgument",
    )
expect_error(
    "a part number the object does not have",
    lambda: s3.get_object(Bucket=bucket, Key="a/1", PartNumber=2),
    416,
    "InvalidPartNumber",
)
expect_error(
    "a versionId no version could have",
    lambda: s3.get_object(Bucket=bucket, Key="a/1", VersionId="nonsense"),
    400,
    "InvalidArgument",
)
expect_error(
    "a DELETE of a versionId no version could have",
    lambda: s3.delete_object(Bucket=bucket, Key="a/1", VersionId="nonsense"),
    400,
    "InvalidArgument",
)
expect_error(
    "user metadata over 2 KB",
    lambda: s3.put_object(Bucket=bucket, Key="meta", Body=b"x", Metadata={"pad": "p" * 2100}),
    400,
    "MetadataTooLarge",
)
expect_error(
    "a multipart upload with user metadata over 2 KB",
    lambda: s3.create_multipart_upload(Bucket=bucket, Key="meta", Metadata={"pad": "p" * 2100}),
    400,
    "MetadataTooLarge",
)
done = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "b"}]})
check("DeleteObjects of one key works", [d["Key"] for d in done.get("Deleted", [])] == ["b"], str(done))

finish("error answer checks passed")
