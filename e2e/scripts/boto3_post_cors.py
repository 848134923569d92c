"""Browser uploads and CORS through boto3 and plain HTTP (python requests), as a web
app's backend and its users' browsers would use them: boto3 sets the bucket's CORS rules
and signs POST policies (generate_presigned_post); requests plays the browser (form
POSTs, preflights, cross-origin GETs). Env: SUBLET_ENDPOINT, BUCKET, AWS keys,
GATEWAY_PID (the gateway whose peak RSS a big form upload must not raise by its size
over a PUT's),
BIG_MB (that upload's size)."""

import os
import time
import xml.etree.ElementTree as ET

import boto3
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint = os.environ["SUBLET_ENDPOINT"]
bucket = os.environ["BUCKET"]
other = bucket + "-other"
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    region_name="us-east-1",
    config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
)
s3.create_bucket(Bucket=bucket)
s3.create_bucket(Bucket=other)
NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def post(policy, data, name="note.txt", fields=None, url=None, **kw):
    form = dict(policy["fields"])
    form.update(fields or {})
    return requests.post(
        url or policy["url"], data=form, files={"file": (name, data)}, timeout=300, **kw
    )


def error_of(r):
    root = ET.fromstring(r.content)
    return root.findtext("Code"), root.findtext("Message") or ""


def expect_error(r, status, code, contains=""):
    assert r.status_code == status, (r.status_code, r.text)
    got, message = error_of(r)
    assert got == code, (got, message)
    assert contains in message, (contains, message)
    assert r.headers.get("x-amz-request-id"), r.headers


def absent(key):
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as e:
        assert e.response["Error"]["Code"] in ("404", "NoSuchKey"), e.response
        return
    raise AssertionError(f"{key} was stored")


# --- POST Object -------------------------------------------------------------------------
# 201 with the XML PostResponse; ${filename} in the key; fields under the policy.
p = s3.generate_presigned_post(
    bucket,
    "uploads/${filename}",
    Fields={"success_action_status": "201", "Content-Type": "text/plain"},
    Conditions=[
        {"success_action_status": "201"},
        ["starts-with", "$key", "uploads/"],
        ["content-length-range", 1, 1024],
        {"Content-Type": "text/plain"},
    ],
    ExpiresIn=300,
)
r = post(p, b"hello from a form", "note.txt")
assert r.status_code == 201, (r.status_code, r.text)
root = ET.fromstring(r.content)
assert root.tag in ("PostResponse", NS + "PostResponse"), r.text
key = root.findtext("Key") or root.findtext(NS + "Key")
assert key == "uploads/note.txt", r.text
got = s3.get_object(Bucket=bucket, Key="uploads/note.txt")
assert got["Body"].read() == b"hello from a form"
assert got["ContentType"] == "text/plain", got["ContentType"]
print("post 201 ok")

# The default answer: 204, no body.
p = s3.generate_presigned_post(bucket, "plain.bin", Conditions=[["content-length-range", 0, 100]])
r = post(p, b"x" * 100)
assert r.status_code == 204 and not r.content, (r.status_code, r.text)
assert s3.get_object(Bucket=bucket, Key="plain.bin")["Body"].read() == b"x" * 100

# success_action_redirect: 303 to the page, with bucket, key and etag.
done = "http://app.example/done?from=form"
p = s3.generate_presigned_post(
    bucket,
    "redirected.txt",
    Fields={"success_action_redirect": done},
    Conditions=[{"success_action_redirect": done}],
)
r = post(p, b"redirect me", allow_redirects=False)
assert r.status_code == 303, (r.status_code, r.text)
loc = r.headers["Location"]
assert loc.startswith("http://app.example/done?from=form&bucket=" + bucket), loc
assert "key=redirected.txt" in loc and "etag=" in loc, loc
print("post 204 and redirect ok")

# content-length-range: larger or smaller than the policy allows.
p = s3.generate_presigned_post(bucket, "ranged.bin", Conditions=[["content-length-range", 10, 20]])
expect_error(post(p, b"y" * 21), 400, "EntityTooLarge")
expect_error(post(p, b"y" * 9), 400, "EntityTooSmall")
absent("ranged.bin")
assert post(p, b"y" * 20).status_code == 204
print("content-length-range ok")

# Expired.
p = s3.generate_presigned_post(bucket, "late.txt", ExpiresIn=1)
time.sleep(2.2)
expect_error(post(p, b"too late"), 403, "AccessDenied", "Policy expired")
absent("late.txt")

# A policy for one bucket posted to another.
p = s3.generate_presigned_post(bucket, "moved.txt")
expect_error(
    post(p, b"elsewhere", url=f"{endpoint}/{other}"), 403, "AccessDenied", "Invalid according to Policy"
)
# A key outside the policy's prefix; a field the policy does not name.
p = s3.generate_presigned_post(bucket, "uploads/a.txt", Conditions=[["starts-with", "$key", "uploads/"]])
expect_error(post(p, b"k", fields={"key": "secret/a.txt"}), 403, "AccessDenied", "Invalid according to Policy")
expect_error(
    post(p, b"k", fields={"x-amz-meta-owner": "mallory"}), 403, "AccessDenied", "Invalid according to Policy"
)
# A tampered signature; a credential swapped for another key.
bad = dict(p["fields"])
sig = bad["x-amz-signature"]
bad["x-amz-signature"] = ("0" if sig[0] != "0" else "1") + sig[1:]
expect_error(post({"url": p["url"], "fields": bad}, b"k"), 403, "SignatureDoesNotMatch")
bad = dict(p["fields"])
bad["x-amz-credential"] = "AKIDNOBODY" + bad["x-amz-credential"][bad["x-amz-credential"].index("/"):]
# (as S3: the key is looked up and the signature checked before the policy's conditions)
expect_error(post({"url": p["url"], "fields": bad}, b"k"), 403, "InvalidAccessKeyId")
# An unsigned form.
r = requests.post(f"{endpoint}/{bucket}", data={"key": "anon.txt"}, files={"file": ("a", b"a")}, timeout=60)
expect_error(r, 403, "AccessDenied")
# Fields past S3's 20 KB before the file.
p = s3.generate_presigned_post(bucket, "big-fields.txt", Conditions=[["starts-with", "$x-amz-meta-pad", ""]])
r = post(p, b"k", fields={"x-amz-meta-pad": "p" * (21 << 10)})
assert r.status_code == 400, (r.status_code, r.text)
for k in ["secret/a.txt", "uploads/a.txt", "anon.txt", "big-fields.txt", "moved.txt"]:
    absent(k)
print("refusals ok")


# A big upload streams: after a PUT of the same size (the write path's own peak: segments
# under the upload budget, shards, encoding), the form upload raises the gateway's peak RSS
# by far less than its size. Gathered in memory, it would add the whole file.
def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


pid = os.environ.get("GATEWAY_PID")
big_mb = int(os.environ.get("BIG_MB", "100"))
if pid:
    size = big_mb << 20
    data = os.urandom(1 << 20) * big_mb
    start = peak_rss_mib(pid)
    s3.put_object(Bucket=bucket, Key="big-put.bin", Body=data)
    after_put = peak_rss_mib(pid)
    p = s3.generate_presigned_post(bucket, "big.bin", Conditions=[["content-length-range", size, size]])
    started = time.time()
    r = post(p, data, "big.bin")
    took = time.time() - started
    assert r.status_code == 204, (r.status_code, r.text)
    after_post = peak_rss_mib(pid)
    head = s3.head_object(Bucket=bucket, Key="big.bin")
    assert head["ContentLength"] == size, head
    body = s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read()
    assert body == data, "big.bin read back differs"
    print(
        f"big post: {big_mb} MiB in {took:.1f}s; gateway peak RSS {start:.0f} MiB at start, "
        f"{after_put:.0f} after a {big_mb} MiB PUT, {after_post:.0f} after the {big_mb} MiB POST"
    )
    assert after_post - after_put < big_mb / 2, (
        f"the POST raised the peak RSS by {after_post - after_put:.0f} MiB over the PUT's"
    )

# --- CORS --------------------------------------------------------------------------------
try:
    s3.get_bucket_cors(Bucket=bucket)
    raise AssertionError("a bucket without CORS rules answered GetBucketCors")
except ClientError as e:
    assert e.response["Error"]["Code"] == "NoSuchCORSConfiguration", e.response
rules = [
    {
        "ID": "app",
        "AllowedOrigins": ["https://*.example.com"],
        "AllowedMethods": ["GET", "PUT", "POST"],
        "AllowedHeaders": ["*"],
        "ExposeHeaders": ["ETag", "x-amz-request-id"],
        "MaxAgeSeconds": 600,
    },
    {"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]},
]
s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": rules})
back = s3.get_bucket_cors(Bucket=bucket)["CORSRules"]
assert back == rules, back
for bad_rules, code in [
    ([{"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]}], "InvalidRequest"),
    ([{"AllowedOrigins": ["https://*.*.example"], "AllowedMethods": ["GET"]}], "InvalidRequest"),
    ([{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}] * 101, "InvalidRequest"),
]:
    try:
        s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": bad_rules})
        raise AssertionError(f"accepted {bad_rules[0]}")
    except ClientError as e:
        assert e.response["Error"]["Code"] == code, e.response
assert s3.get_bucket_cors(Bucket=bucket)["CORSRules"] == rules

url = f"{endpoint}/{bucket}/uploads/note.txt"
app = "https://app.example.com"
r = requests.options(
    url,
    headers={
        "Origin": app,
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "content-type, x-amz-date",
    },
    timeout=30,
)
assert r.status_code == 200, (r.status_code, r.text)
h = r.headers
assert h["Access-Control-Allow-Origin"] == app, h
assert h["Access-Control-Allow-Methods"] == "GET, PUT, POST", h
assert h["Access-Control-Allow-Headers"] == "content-type, x-amz-date", h
assert h["Access-Control-Max-Age"] == "600", h
assert h["Access-Control-Expose-Headers"] == "ETag, x-amz-request-id", h
assert "Origin" in h["Vary"], h
# Another origin may only GET (the second rule); unknown buckets look like no rules.
r = requests.options(url, headers={"Origin": "https://evil.net", "Access-Control-Request-Method": "PUT"}, timeout=30)
expect_error(r, 403, "AccessForbidden", "CORSResponse")
r = requests.options(url, headers={"Origin": "https://evil.net", "Access-Control-Request-Method": "GET"}, timeout=30)
assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "*", r.headers
r = requests.options(f"{endpoint}/no-such-bucket/k", headers={"Origin": app, "Access-Control-Request-Method": "GET"}, timeout=30)
expect_error(r, 403, "AccessForbidden")
r = requests.options(url, headers={"Access-Control-Request-Method": "GET"}, timeout=30)
expect_error(r, 400, "BadRequest", "Origin")
# Actual requests: the headers on answers and on errors.
signed = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "uploads/note.txt"})
r = requests.get(signed, headers={"Origin": app}, timeout=30)
assert r.status_code == 200 and r.content == b"hello from a form", r.status_code
assert r.headers["Access-Control-Allow-Origin"] == app, r.headers
assert r.headers["Access-Control-Expose-Headers"] == "ETag, x-amz-request-id", r.headers
missing = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "nothing-here"})
r = requests.get(missing, headers={"Origin": app}, timeout=30)
assert r.status_code == 404 and r.headers["Access-Control-Allow-Origin"] == app, r.headers
r = requests.get(signed, timeout=30)
assert "Access-Control-Allow-Origin" not in r.headers, r.headers
# Rules of one bucket are not another's.
other_url = s3.generate_presigned_url("list_objects_v2", Params={"Bucket": other})
r = requests.get(other_url, headers={"Origin": app}, timeout=30)
assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers, r.headers
# Deleted: preflights are refused at once (the cache forgets on change).
s3.delete_bucket_cors(Bucket=bucket)
r = requests.options(url, headers={"Origin": app, "Access-Control-Request-Method": "GET"}, timeout=30)
expect_error(r, 403, "AccessForbidden")
try:
    s3.get_bucket_cors(Bucket=bucket)
    raise AssertionError("deleted CORS rules still answered")
except ClientError as e:
    assert e.response["Error"]["Code"] == "NoSuchCORSConfiguration", e.response
print("cors ok")
print("post and cors checks passed")
