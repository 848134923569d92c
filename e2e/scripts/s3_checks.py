"""What the boto3 check scripts share: the endpoint, a path-style S3 client per user, the
list of failed checks, the error code a call answers and unsigned requests.

Imported by the boto3_*.py scripts that check names and details (boto3_policies.py,
boto3_acls.py, boto3_errors.py, ...); Python finds it beside them (a script's directory comes
first on sys.path), whatever directory they run in. Reads SUBLET_ENDPOINT, and
WHO_KEY/WHO_SECRET for each client(WHO) (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for
env_client()).
"""

import os
import sys
import urllib.error
import urllib.request

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint = os.environ["SUBLET_ENDPOINT"]
config = Config(
    region_name="us-east-1",
    s3={"addressing_style": "path"},
    signature_version="s3v4",
    retries={"max_attempts": 1},
)
failures = []


def client(who):
    """An S3 client with the keys in WHO_KEY and WHO_SECRET."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=os.environ[f"{who}_KEY"],
        aws_secret_access_key=os.environ[f"{who}_SECRET"],
        config=config,
    )


def env_client():
    """An S3 client with the keys boto3 finds in the environment (AWS_ACCESS_KEY_ID, ...)."""
    return boto3.client("s3", endpoint_url=endpoint, config=config)


def check(name, ok, detail=""):
    """Records the check `name` as failed, with `detail`, unless `ok`."""
    if not ok:
        failures.append(f"{name}: {detail}")


def error_of(fn, **kw):
    """("OK", "") when the call succeeds, else its S3 error code and message."""
    try:
        fn(**kw)
        return ("OK", "")
    except ClientError as e:
        return (e.response["Error"]["Code"], e.response["Error"].get("Message", ""))


def code_of(fn, **kw):
    """"OK" when the call succeeds, else its S3 error code (e.g. "AccessDenied")."""
    return error_of(fn, **kw)[0]


def anonymous(method, path, body=None):
    """Status and body of an unsigned request."""
    req = urllib.request.Request(endpoint + path, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def finish(passed):
    """Exits non-zero with the failed checks on stderr, or prints `passed`."""
    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)
    print(passed)
