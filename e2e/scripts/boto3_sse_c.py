"""boto3 against a running `sublet dev`: server-side encryption with customer keys (SSE-C).

- PUT/GET/HEAD with the key echo its algorithm and MD5, read the bytes back, ranges too;
- without the key a GET or HEAD answers 400, with another key 403; a key given for an
  object stored without one answers 400; a key whose MD5 does not match answers 400;
- copies: SSE-C source to a plain target, plain source to an SSE-C target, one key to
  another in place, and a copy without the source key is refused;
- ETags of SSE-C objects and parts are not the content's MD5 (a hash keyed with the
  customer's key), stable (HEAD, listings, If-Match) and differ per key;
- GetObjectAttributes needs the key; a request without the key MD5 header is 400;
- multipart with SSE-C: every part carries the key (a part without it 400, with another
  403), UploadPartCopy from an SSE-C source, the completed object reads back only with
  the key.

Reads SUBLET_ENDPOINT, BUCKET, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY;
exits non-zero with the failed checks on stderr.
"""

import base64
import hashlib
import os

from botocore.exceptions import ClientError
from s3_checks import check, env_client, finish

s3 = env_client()


def refused_upload(call):
    """A request with a body the gateway refuses before reading it, on the shared client's
    connection: the gateway closes a connection whose request body it left unread, so the
    requests after it on this client are read right (botocore misread them before)."""
    return status_of(lambda: call(s3))
bucket = os.environ["BUCKET"]
s3.create_bucket(Bucket=bucket)

def status_of(call):
    """The HTTP status and S3 error code of a call expected to fail, or (200, None)."""
    try:
        call()
        return 200, None
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"].get("Code")


K1 = bytes(range(32))
K2 = bytes(range(100, 132))
K1_MD5 = base64.b64encode(hashlib.md5(K1).digest()).decode()


def sse(key):
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}


def copy_source_sse(key):
    return {"CopySourceSSECustomerAlgorithm": "AES256", "CopySourceSSECustomerKey": key}


small = b"secret small object"
large = os.urandom(3 * 1024 * 1024 + 17)

for key, body in [("small", small), ("large", large)]:
    put = s3.put_object(Bucket=bucket, Key=key, Body=body, **sse(K1))
    check(f"PUT {key} echoes the algorithm", put.get("SSECustomerAlgorithm") == "AES256", str(put))
    check(f"PUT {key} echoes the key MD5", put.get("SSECustomerKeyMD5") == K1_MD5, str(put))
    check(f"PUT {key} reports no SSE-S3", "ServerSideEncryption" not in put, str(put))
    got = s3.get_object(Bucket=bucket, Key=key, **sse(K1))
    check(f"GET {key} with the key reads it back", got["Body"].read() == body)
    check(f"GET {key} echoes the key MD5", got.get("SSECustomerKeyMD5") == K1_MD5, str(got))
    head = s3.head_object(Bucket=bucket, Key=key, **sse(K1))
    check(f"HEAD {key} with the key", head["ContentLength"] == len(body), str(head))
    check(f"HEAD {key} echoes the algorithm", head.get("SSECustomerAlgorithm") == "AES256", str(head))
    code = status_of(lambda: s3.get_object(Bucket=bucket, Key=key))
    check(f"GET {key} without the key is 400 InvalidRequest", code == (400, "InvalidRequest"), str(code))
    code = status_of(lambda: s3.head_object(Bucket=bucket, Key=key))
    check(f"HEAD {key} without the key is 400", code[0] == 400, str(code))
    code = status_of(lambda: s3.get_object(Bucket=bucket, Key=key, **sse(K2)))
    check(f"GET {key} with another key is 403 AccessDenied", code == (403, "AccessDenied"), str(code))
    code = status_of(lambda: s3.head_object(Bucket=bucket, Key=key, **sse(K2)))
    check(f"HEAD {key} with another key is 403", code[0] == 403, str(code))

def md5_etag(body):
    return '"' + hashlib.md5(body).hexdigest() + '"'


# ETags: not the MD5 of the content, stable, per key.
put = s3.put_object(Bucket=bucket, Key="etag", Body=small, **sse(K1))
etag = put["ETag"]
check("an SSE-C ETag is not the content's MD5", etag != md5_etag(small), etag)
check("an SSE-C ETag is 32 hex digits", len(etag.strip('"')) == 32, etag)
head = s3.head_object(Bucket=bucket, Key="etag", **sse(K1))
check("HEAD gives the same ETag", head["ETag"] == etag, str(head))
listed = [o["ETag"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="etag")["Contents"]]
check("the listing gives the same ETag", listed == [etag], str(listed))
got = s3.get_object(Bucket=bucket, Key="etag", IfMatch=etag, **sse(K1))
check("If-Match with the SSE-C ETag reads", got["Body"].read() == small)
code = status_of(lambda: s3.get_object(Bucket=bucket, Key="etag", IfMatch=md5_etag(small), **sse(K1)))
check("If-Match with the content's MD5 is 412", code[0] == 412, str(code))
again = s3.put_object(Bucket=bucket, Key="etag", Body=small, **sse(K1))["ETag"]
check("the same content under the same key has the same ETag", again == etag, again)
other = s3.put_object(Bucket=bucket, Key="etag-other", Body=small, **sse(K2))["ETag"]
check("the same content under another key has another ETag", other != etag, other)

# GetObjectAttributes needs the key, as on S3 (botocore does not encode the key for this
# operation: the headers are given encoded).
attrs = ["ETag", "ObjectSize"]


def sse_encoded(key):
    return {
        "SSECustomerAlgorithm": "AES256",
        "SSECustomerKey": base64.b64encode(key).decode(),
        "SSECustomerKeyMD5": base64.b64encode(hashlib.md5(key).digest()).decode(),
    }


code = status_of(lambda: s3.get_object_attributes(Bucket=bucket, Key="etag", ObjectAttributes=attrs))
check("GetObjectAttributes without the key is 400", code == (400, "InvalidRequest"), str(code))
code = status_of(lambda: s3.get_object_attributes(Bucket=bucket, Key="etag", ObjectAttributes=attrs, **sse_encoded(K2)))
check("GetObjectAttributes with another key is 403", code[0] == 403, str(code))
got = s3.get_object_attributes(Bucket=bucket, Key="etag", ObjectAttributes=attrs, **sse_encoded(K1))
check("GetObjectAttributes with the key", got.get("ObjectSize") == len(small), str(got))
check("GetObjectAttributes gives the same ETag", got.get("ETag", "").strip('"') == etag.strip('"'), str(got))

# The key MD5 header is required (boto3 adds it: take it out before signing).
no_md5 = env_client()


def drop_key_md5(request, **kwargs):
    del request.headers["x-amz-server-side-encryption-customer-key-MD5"]


no_md5.meta.events.register("before-sign.s3.PutObject", drop_key_md5)
try:
    no_md5.put_object(Bucket=bucket, Key="no-md5", Body=b"x", **sse(K1))
    code = (200, None)
except ClientError as e:
    code = (e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"].get("Code"))
    message = e.response["Error"].get("Message", "")
    check("the missing key MD5 is named", "MD5 of the secret key" in message, message)
check("a request without the key MD5 is 400 InvalidArgument", code == (400, "InvalidArgument"), str(code))

ranged = s3.get_object(Bucket=bucket, Key="large", Range="bytes=1000000-2999999", **sse(K1))
check("a ranged GET with the key", ranged["Body"].read() == large[1000000:3000000])

wrong_md5 = {
    "SSECustomerAlgorithm": "AES256",
    "SSECustomerKey": base64.b64encode(K1).decode(),
    "SSECustomerKeyMD5": base64.b64encode(hashlib.md5(K2).digest()).decode(),
}
code = refused_upload(lambda c: c.put_object(Bucket=bucket, Key="md5", Body=b"x", **wrong_md5))
check("a key MD5 that does not match is 400 InvalidArgument", code == (400, "InvalidArgument"), str(code))

s3.put_object(Bucket=bucket, Key="plain", Body=b"plain bytes")
code = status_of(lambda: s3.get_object(Bucket=bucket, Key="plain", **sse(K1)))
check("a key for an object stored without one is 400", code == (400, "InvalidRequest"), str(code))

# Copies.
s3.copy_object(Bucket=bucket, Key="decrypted", CopySource={"Bucket": bucket, "Key": "large"}, **copy_source_sse(K1))
check("copy SSE-C -> plain", s3.get_object(Bucket=bucket, Key="decrypted")["Body"].read() == large)
s3.copy_object(Bucket=bucket, Key="encrypted", CopySource={"Bucket": bucket, "Key": "plain"}, **sse(K2))
check("copy plain -> SSE-C", s3.get_object(Bucket=bucket, Key="encrypted", **sse(K2))["Body"].read() == b"plain bytes")
code = status_of(lambda: s3.get_object(Bucket=bucket, Key="encrypted"))
check("the SSE-C copy needs its key", code[0] == 400, str(code))
rotated = s3.copy_object(
    Bucket=bucket, Key="small", CopySource={"Bucket": bucket, "Key": "small"}, **copy_source_sse(K1), **sse(K2)
)
check("copy in place to another key echoes it", rotated.get("SSECustomerKeyMD5") == base64.b64encode(hashlib.md5(K2).digest()).decode(), str(rotated))
check("the rotated object opens with the new key", s3.get_object(Bucket=bucket, Key="small", **sse(K2))["Body"].read() == small)
code = status_of(lambda: s3.get_object(Bucket=bucket, Key="small", **sse(K1)))
check("the rotated object refuses the old key", code[0] == 403, str(code))
code = status_of(lambda: s3.copy_object(Bucket=bucket, Key="nope", CopySource={"Bucket": bucket, "Key": "large"}))
check("a copy of an SSE-C source without its key is 400", code[0] == 400, str(code))

# Multipart.
part = os.urandom(5 * 1024 * 1024)
upload = s3.create_multipart_upload(Bucket=bucket, Key="multi", **sse(K1))
check("CreateMultipartUpload echoes the key MD5", upload.get("SSECustomerKeyMD5") == K1_MD5, str(upload))
uid = upload["UploadId"]
code = refused_upload(lambda c: c.upload_part(Bucket=bucket, Key="multi", UploadId=uid, PartNumber=1, Body=part))
check("a part without the upload's key is 400", code[0] == 400, str(code))
code = refused_upload(
    lambda c: c.upload_part(Bucket=bucket, Key="multi", UploadId=uid, PartNumber=1, Body=part, **sse(K2))
)
check("a part with another key is 403", code[0] == 403, str(code))
p1 = s3.upload_part(Bucket=bucket, Key="multi", UploadId=uid, PartNumber=1, Body=part, **sse(K1))
check("UploadPart echoes the key MD5", p1.get("SSECustomerKeyMD5") == K1_MD5, str(p1))
check("an SSE-C part's ETag is not its MD5", p1["ETag"] != md5_etag(part), p1["ETag"])
p2 = s3.upload_part_copy(
    Bucket=bucket,
    Key="multi",
    UploadId=uid,
    PartNumber=2,
    CopySource={"Bucket": bucket, "Key": "large"},
    CopySourceRange="bytes=0-1048575",
    **copy_source_sse(K1),
    **sse(K1),
)
s3.complete_multipart_upload(
    Bucket=bucket,
    Key="multi",
    UploadId=uid,
    MultipartUpload={
        "Parts": [
            {"PartNumber": 1, "ETag": p1["ETag"]},
            {"PartNumber": 2, "ETag": p2["CopyPartResult"]["ETag"]},
        ]
    },
)
parts_md5 = hashlib.md5(hashlib.md5(part).digest() + hashlib.md5(large[:1048576]).digest()).hexdigest()
multi = s3.head_object(Bucket=bucket, Key="multi", **sse(K1))["ETag"]
check("an SSE-C multipart ETag is not made of the parts' MD5s", multi != f'"{parts_md5}-2"', multi)
check("an SSE-C multipart ETag counts its parts", multi.endswith('-2"'), multi)
whole = s3.get_object(Bucket=bucket, Key="multi", **sse(K1))["Body"].read()
check("the SSE-C multipart object reads back", whole == part + large[:1048576], f"{len(whole)} bytes")
code = status_of(lambda: s3.get_object(Bucket=bucket, Key="multi"))
check("the SSE-C multipart object needs its key", code[0] == 400, str(code))
code = status_of(lambda: s3.get_object(Bucket=bucket, Key="multi", **sse(K2)))
check("the SSE-C multipart object refuses another key", code[0] == 403, str(code))

finish("boto3 SSE-C checks passed")
