"""boto3 against a running `sublet dev`: answers where clients expect what S3 does.

- a Range S3 cannot parse is ignored: 200 and the whole object (RFC 9110 lets a server
  ignore it; S3 does); a well-formed one outside the object answers 416 InvalidRange;
- GetObjectAttributes answers the ETag unquoted (HeadObject's, without its quotes);
- a copy source naming no key (`bucket/`) answers 400 InvalidArgument;
- the S3 Control API (`s3control`, account-level PublicAccessBlock) answers 501
  NotImplemented.

Reads SUBLET_ENDPOINT, BUCKET, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY;
exits non-zero with the failed checks on stderr.
"""

import os

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from s3_checks import check, endpoint, env_client, finish

s3 = env_client()
bucket = os.environ["BUCKET"]
s3.create_bucket(Bucket=bucket)
data = bytes(range(100))
s3.put_object(Bucket=bucket, Key="obj", Body=data)


def error_of(fn, **kw):
    """("OK", 0, "") when the call succeeds, else its S3 error code, HTTP status and message."""
    try:
        fn(**kw)
        return ("OK", 0, "")
    except ClientError as e:
        return (e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"],
                e.response["Error"].get("Message", ""))


# Ranges.
for bad in ["bytes=abc", "bytes=5-2", "bytes=0-1,3-4", "items=0-9"]:
    r = s3.get_object(Bucket=bucket, Key="obj", Range=bad)
    status = r["ResponseMetadata"]["HTTPStatusCode"]
    body = r["Body"].read()
    check(f"Range {bad} ignored", status == 200 and body == data and "ContentRange" not in r,
          (status, len(body), r.get("ContentRange")))
r = s3.get_object(Bucket=bucket, Key="obj", Range="bytes=-10")
check("a suffix range", r["ResponseMetadata"]["HTTPStatusCode"] == 206 and r["Body"].read() == data[-10:],
      r.get("ContentRange"))
for unsatisfiable in ["bytes=100-", "bytes=500-600"]:
    code, status, _ = error_of(s3.get_object, Bucket=bucket, Key="obj", Range=unsatisfiable)
    check(f"Range {unsatisfiable} unsatisfiable", (code, status) == ("InvalidRange", 416), (code, status))

# GetObjectAttributes' ETag.
etag = s3.head_object(Bucket=bucket, Key="obj")["ETag"]
attrs = s3.get_object_attributes(Bucket=bucket, Key="obj", ObjectAttributes=["ETag", "ObjectSize"])
check("HeadObject's ETag is quoted", etag.startswith('"') and etag.endswith('"'), etag)
check("GetObjectAttributes' ETag is unquoted", attrs["ETag"] == etag.strip('"'), attrs["ETag"])
check("GetObjectAttributes' size", attrs["ObjectSize"] == 100, attrs)

# A copy source without a key.
for source in [f"{bucket}/", {"Bucket": bucket, "Key": ""}]:
    try:
        code, status, message = error_of(s3.copy_object, Bucket=bucket, Key="copy", CopySource=source)
    except Exception as e:  # botocore may refuse an empty Key itself
        code, status, message = ("client: " + type(e).__name__, 0, str(e))
        if isinstance(source, dict):
            continue
    check(f"copy source {source!r}", (code, status) == ("InvalidArgument", 400), (code, status, message))
code, _, _ = error_of(s3.head_object, Bucket=bucket, Key="copy")
check("nothing was copied", code == "404", code)

# The S3 Control API: not implemented, said so in an S3 error.
control = boto3.client("s3control", endpoint_url=endpoint,
                       config=Config(region_name="us-east-1", retries={"max_attempts": 1}))
# botocore puts the account id in front of the endpoint's host (000000000000.127.0.0.1),
# which a wildcard DNS name would resolve; here the request goes to the endpoint itself.
control.meta.events.register(
    "before-sign.s3-control.*",
    lambda request, **kw: setattr(request, "url", request.url.replace("//000000000000.", "//")),
)
for call, kw in [
    (control.get_public_access_block, {}),
    (control.put_public_access_block,
     {"PublicAccessBlockConfiguration": {"BlockPublicAcls": True}}),
    (control.delete_public_access_block, {}),
]:
    code, status, message = error_of(call, AccountId="000000000000", **kw)
    check(f"s3control {call.__name__}", (code, status) == ("NotImplemented", 501) and "PublicAccessBlock" in message,
          (code, status, message))

finish("s3 answer checks passed")
