"""boto3 against a running `sublet dev`: conditional GETs (If-Match,
If-None-Match, If-Modified-Since, If-Unmodified-Since) answer 304 or 412 as S3
does. The AWS CLI sends If-Match on the ranged GETs of a large download, so a
gateway that ignores it mixes two versions of an object overwritten meanwhile.

Reads SUBLET_ENDPOINT, BUCKET, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY;
exits non-zero with the failed checks on stderr.
"""

import datetime
import os
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

s3 = boto3.client(
    "s3",
    endpoint_url=os.environ["SUBLET_ENDPOINT"],
    config=Config(region_name="us-east-1", s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
)
bucket = os.environ["BUCKET"]
s3.create_bucket(Bucket=bucket)
etag = s3.put_object(Bucket=bucket, Key="k", Body=b"version one")["ETag"]
last_modified = s3.head_object(Bucket=bucket, Key="k")["LastModified"]
past = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)


def status(**conditions):
    try:
        return s3.get_object(Bucket=bucket, Key="k", **conditions)["ResponseMetadata"]["HTTPStatusCode"]
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"]


cases = [
    ("If-Match with the object's ETag", {"IfMatch": etag}, 200),
    ("If-Match with another ETag", {"IfMatch": '"0123456789abcdef0123456789abcdef"'}, 412),
    ("If-None-Match with the object's ETag", {"IfNoneMatch": etag}, 304),
    ("If-None-Match with another ETag", {"IfNoneMatch": '"0123456789abcdef0123456789abcdef"'}, 200),
    # A cache revalidating with the Last-Modified it was given.
    ("If-Modified-Since its Last-Modified", {"IfModifiedSince": last_modified}, 304),
    ("If-Modified-Since in the past", {"IfModifiedSince": past}, 200),
    ("If-Unmodified-Since in the past", {"IfUnmodifiedSince": past}, 412),
]
failed = []
for name, conditions, want in cases:
    got = status(**conditions)
    if got != want:
        failed.append(f"GetObject {name}: {got}, want {want}")
if failed:
    sys.exit("conditional GET checks failed:\n" + "\n".join(failed))
print("conditional checks passed")
