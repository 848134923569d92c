"""boto3 against a running gateway: presigned URLs answer as S3 answers them.

- a presigned GET and a presigned PUT (with a signed Content-Type) work from plain HTTP;
- X-Amz-Expires beyond a week (604800 s), not positive or not a number answers 403
  AuthorizationQueryParametersError, as do a malformed X-Amz-Date or X-Amz-Credential and a
  missing parameter;
- an expired URL answers 403 AccessDenied "Request has expired" with its X-Amz-Expires,
  Expires and ServerTime;
- an edited signature answers 403 SignatureDoesNotMatch;
- a CompleteMultipartUpload sent twice answers the second time as S3 does (the same
  object, not NoSuchUpload).

Reads SUBLET_ENDPOINT, BUCKET, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY;
exits non-zero with the failed checks on stderr.
"""

import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request

from s3_checks import check, env_client, finish

BUCKET = os.environ["BUCKET"]
s3 = env_client()
# The endpoint is on loopback: never go through a proxy from the environment.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def fetch(url, method="GET", data=None, headers=None):
    """(status, body) of `url`, error answers included."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with HTTP.open(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def element(body, name):
    found = re.search(rb"<" + name.encode() + rb">([^<]*)</" + name.encode() + rb">", body)
    return found.group(1).decode() if found else None


def with_param(url, name, value):
    """`url` with query parameter `name` set to `value` (None: removed)."""
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k != name]
    if value is not None:
        query.append((name, value))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def expect_refusal(name, url, code, message=None):
    status, body = fetch(url)
    check(f"{name}: status", status == 403, f"{status} {body!r}")
    check(f"{name}: code", element(body, "Code") == code, repr(body))
    if message is not None:
        check(f"{name}: message", element(body, "Message") == message, repr(body))
    return body


s3.create_bucket(Bucket=BUCKET)
s3.put_object(Bucket=BUCKET, Key="hello", Body=b"hello, presigned")

# A week is the longest a URL may live, and works.
week = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "hello"}, ExpiresIn=604800)
check("a URL valid for a week", fetch(week) == (200, b"hello, presigned"), str(fetch(week)))

WEEK = "X-Amz-Expires must be less than a week (in seconds) that is 604800"
for expires, message in [
    ("604801", WEEK),
    ("0", "X-Amz-Expires must be positive"),
    ("-5", "X-Amz-Expires must be non-negative"),
    ("tomorrow", "X-Amz-Expires should be a number"),
]:
    expect_refusal(
        f"X-Amz-Expires={expires}",
        with_param(week, "X-Amz-Expires", expires),
        "AuthorizationQueryParametersError",
        message,
    )
expect_refusal(
    "a malformed X-Amz-Date",
    with_param(week, "X-Amz-Date", "2026-01-01T00:00:00Z"),
    "AuthorizationQueryParametersError",
    "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"",
)
expect_refusal(
    "a malformed X-Amz-Credential",
    with_param(week, "X-Amz-Credential", "nobody"),
    "AuthorizationQueryParametersError",
)
expect_refusal(
    "a missing X-Amz-SignedHeaders",
    with_param(week, "X-Amz-SignedHeaders", None),
    "AuthorizationQueryParametersError",
)
signature = urllib.parse.parse_qs(urllib.parse.urlsplit(week).query)["X-Amz-Signature"][0]
edited = "0" * 64 if signature != "0" * 64 else "1" * 64
expect_refusal("an edited signature", with_param(week, "X-Amz-Signature", edited), "SignatureDoesNotMatch")

# Expired: 403 AccessDenied with the times, as S3 sends them.
short = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "hello"}, ExpiresIn=1)
time.sleep(2.2)
body = expect_refusal("an expired URL", short, "AccessDenied", "Request has expired")
check("an expired URL names its X-Amz-Expires", element(body, "X-Amz-Expires") == "1", repr(body))
for name in ["Expires", "ServerTime"]:
    value = element(body, name) or ""
    check(f"an expired URL names its {name}", re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", value), repr(body))

# A presigned PUT, with the Content-Type it was signed for.
put = s3.generate_presigned_url(
    "put_object",
    Params={"Bucket": BUCKET, "Key": "uploaded", "ContentType": "text/plain"},
    ExpiresIn=300,
)
status, body = fetch(put, "PUT", b"sent by a presigned PUT", {"Content-Type": "text/plain"})
check("a presigned PUT", status == 200, f"{status} {body!r}")
got = s3.get_object(Bucket=BUCKET, Key="uploaded")
check("a presigned PUT stores its body", got["Body"].read() == b"sent by a presigned PUT")
check("a presigned PUT keeps its Content-Type", got["ContentType"] == "text/plain", got["ContentType"])
status, body = fetch(put, "PUT", b"other type", {"Content-Type": "image/png"})
check("a presigned PUT with another Content-Type", (status, element(body, "Code")) == (403, "SignatureDoesNotMatch"), f"{status} {body!r}")

# CompleteMultipartUpload twice (a client retrying after a lost answer).
upload = s3.create_multipart_upload(Bucket=BUCKET, Key="retried")["UploadId"]
part = s3.upload_part(Bucket=BUCKET, Key="retried", UploadId=upload, PartNumber=1, Body=b"p" * 1000)
parts = {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
first = s3.complete_multipart_upload(Bucket=BUCKET, Key="retried", UploadId=upload, MultipartUpload=parts)
second = s3.complete_multipart_upload(Bucket=BUCKET, Key="retried", UploadId=upload, MultipartUpload=parts)
check("a repeated completion answers the same ETag", first["ETag"] == second["ETag"], f"{first['ETag']} {second['ETag']}")
check("the completed object reads back", s3.get_object(Bucket=BUCKET, Key="retried")["Body"].read() == b"p" * 1000)

finish("presigned checks passed")
