"""boto3 with virtual-host-style addressing against a `sublet serve` whose spec.s3.domains
holds DOMAIN: buckets are named in the Host (`<bucket>.DOMAIN`), and path style to the same
gateway keeps working.

Every host under DOMAIN resolves to the gateway's address here (DNS for a wildcard record).
Reads SUBLET_ENDPOINT (http://DOMAIN:port), SUBLET_ADDRESS (the gateway's IP), DOMAIN,
BUCKET, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; exits non-zero with the failed checks
on stderr.
"""

import os
import socket

import boto3
from botocore.config import Config
from s3_checks import check, finish

ENDPOINT = os.environ["SUBLET_ENDPOINT"]
ADDRESS = os.environ["SUBLET_ADDRESS"]
DOMAIN = os.environ["DOMAIN"]
BUCKET = os.environ["BUCKET"]

real_getaddrinfo = socket.getaddrinfo
hosts_seen = set()


def wildcard_dns(host, *args, **kwargs):
    if host == DOMAIN or host.endswith("." + DOMAIN):
        hosts_seen.add(host)
        host = ADDRESS
    return real_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = wildcard_dns

def client(style):
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        config=Config(
            region_name="us-east-1",
            signature_version="s3v4",
            s3={"addressing_style": style},
            retries={"max_attempts": 1},
        ),
    )


virtual = client("virtual")
path = client("path")
virtual.create_bucket(Bucket=BUCKET)
virtual.put_object(Bucket=BUCKET, Key="dir/photo.jpg", Body=b"virtual bytes")
check(
    "requests went to <bucket>.DOMAIN",
    f"{BUCKET}.{DOMAIN}" in hosts_seen,
    str(hosts_seen),
)
got = virtual.get_object(Bucket=BUCKET, Key="dir/photo.jpg")["Body"].read()
check("a virtual-host GET", got == b"virtual bytes", repr(got))
listed = [o["Key"] for o in virtual.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
check("a virtual-host listing", listed == ["dir/photo.jpg"], str(listed))
got = path.get_object(Bucket=BUCKET, Key="dir/photo.jpg")["Body"].read()
check("path style on the bare domain", got == b"virtual bytes", repr(got))
names = [b["Name"] for b in virtual.list_buckets()["Buckets"]]
check("ListBuckets on the bare domain", BUCKET in names, str(names))
url = virtual.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "dir/photo.jpg"}, ExpiresIn=60)
check("a presigned URL names the bucket in its host", url.startswith(f"http://{BUCKET}.{DOMAIN}:"), url)
virtual.delete_object(Bucket=BUCKET, Key="dir/photo.jpg")
check("a virtual-host DELETE", virtual.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0)

finish("virtual host checks passed")
