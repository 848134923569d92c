"""boto3 against a running `sublet dev`: a PUT refused before its body is read does not
spoil the keep-alive connection it came on.

botocore sends `Expect: 100-continue` with file-like bodies. A PUT refused before its body
is wanted gets its final answer without `100 Continue`; botocore then keeps that answer's
status line on the connection and, if the connection stays open, gives it to the next
request sent with `Expect: 100-continue` on it (the next PUT "fails" with the refusal's
status). The gateway closes such connections, so every PUT after a refusal succeeds.

Reads SUBLET_ENDPOINT, BUCKET, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY;
exits non-zero with the failed checks on stderr.
"""

import io
import os
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint = os.environ["SUBLET_ENDPOINT"]
bucket = os.environ["BUCKET"]
# One connection, no retries: every request goes over the same keep-alive connection and
# a misread answer shows as it is.
config = Config(
    region_name="us-east-1",
    s3={"addressing_style": "path"},
    retries={"max_attempts": 1},
    max_pool_connections=1,
)
s3 = boto3.client("s3", endpoint_url=endpoint, config=config)
s3.create_bucket(Bucket=bucket)

failures = []
ROUNDS = 30
for i in range(ROUNDS):
    # Refused before its body is read: there is no such bucket.
    try:
        s3.put_object(Bucket=bucket + "-missing", Key="k", Body=io.BytesIO(b"r" * 2048))
        failures.append(f"round {i}: a PUT to a missing bucket succeeded")
    except ClientError as e:
        code = e.response["Error"]["Code"]
        if code != "NoSuchBucket":
            failures.append(f"round {i}: the refused PUT answered {code}")
    # The next PUT on the connection, also waiting for 100 Continue.
    try:
        s3.put_object(Bucket=bucket, Key=f"after-{i}", Body=io.BytesIO(b"a" * 2048))
    except ClientError as e:
        failures.append(f"round {i}: the PUT after a refused one failed: {e.response['Error']}")

listed = s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0)
if listed != ROUNDS:
    failures.append(f"{listed} objects stored, not {ROUNDS}")

if failures:
    print("\n".join(failures[:10]), file=sys.stderr)
    print(f"{len(failures)} failures", file=sys.stderr)
    sys.exit(1)
print("keep-alive checks passed")
