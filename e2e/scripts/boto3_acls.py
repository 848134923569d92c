"""boto3 against a running `sublet dev`: ACLs and object ownership, with two runtime users.

- a public-read object (canned ACL on PutObject) is fetched with plain HTTP, no signature;
  a private one next to it is not; PutObjectAcl private shuts it again;
- PublicAccessBlock: IgnorePublicAcls makes the public-read grant count for nothing,
  BlockPublicAcls refuses PUTs of public ACLs (403 AccessDenied);
- a grant to bob by id (x-amz-grant-read) lets bob read one object, and nothing else;
  a bucket ACL READ grant lets him list; GetObjectAcl shows owner and grants;
- a bogus x-amz-acl answers 400 InvalidArgument, canned + grant headers 400 InvalidRequest,
  a grant to an email address UnresolvableGrantByEmailAddress;
- BucketOwnerEnforced refuses ACLs (AccessControlListNotSupported) but takes
  bucket-owner-full-control; ownership controls round-trip and can be deleted;
- CreateBucket with x-amz-acl public-read-write lets anyone write, and with
  x-amz-object-ownership sets the ownership;
- a browser form upload (POST) with the `acl` field public-read is readable unsigned.

Reads SUBLET_ENDPOINT and ALICE_KEY/ALICE_SECRET, BOB_KEY/BOB_SECRET; exits non-zero with
the failed checks on stderr.
"""

import requests
from s3_checks import anonymous, check, client, code_of, finish

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"

alice, bob = client("ALICE"), client("BOB")


def grants(acl):
    return sorted(
        (g["Grantee"].get("ID") or g["Grantee"].get("URI"), g["Permission"]) for g in acl["Grants"]
    )


alice.create_bucket(Bucket="album")
alice.put_object(Bucket="album", Key="public.jpg", Body=b"sunset", ACL="public-read")
alice.put_object(Bucket="album", Key="private.jpg", Body=b"diary")

# A public-read object, unsigned.
status, body = anonymous("GET", "/album/public.jpg")
check("anonymous GET of a public-read object", status == 200 and body == b"sunset", f"{status} {body[:200]!r}")
status, _ = anonymous("HEAD", "/album/public.jpg")
check("anonymous HEAD of a public-read object", status == 200, status)
status, body = anonymous("GET", "/album/private.jpg")
check("anonymous GET of a private object is refused", status == 403, f"{status} {body[:200]!r}")
status, _ = anonymous("GET", "/album")
check("anonymous listing of a private bucket is refused", status == 403, status)
status, _ = anonymous("PUT", "/album/planted.txt", b"x")
check("anonymous PUT into a private bucket is refused", status == 403, status)
status, _ = anonymous("GET", "/album/public.jpg?acl")
check("anonymous GetObjectAcl of a public-read object is refused", status == 403, status)

acl = alice.get_object_acl(Bucket="album", Key="public.jpg")
check("GetObjectAcl owner", acl["Owner"]["ID"] == "alice" and acl["Owner"].get("DisplayName"), acl["Owner"])
check(
    "GetObjectAcl grants of public-read",
    grants(acl) == sorted([("alice", "FULL_CONTROL"), (ALL_USERS, "READ")]),
    grants(acl),
)
acl = alice.get_object_acl(Bucket="album", Key="private.jpg")
check("a private object shows the owner's full control", grants(acl) == [("alice", "FULL_CONTROL")], grants(acl))

# IgnorePublicAcls: the grant stays but counts for nothing; removing the block restores it.
alice.put_public_access_block(
    Bucket="album", PublicAccessBlockConfiguration={"IgnorePublicAcls": True}
)
status, _ = anonymous("GET", "/album/public.jpg")
check("IgnorePublicAcls shuts the public-read object", status == 403, status)
alice.delete_public_access_block(Bucket="album")
status, _ = anonymous("GET", "/album/public.jpg")
check("without the block the object is public again", status == 200, status)

# BlockPublicAcls refuses public ACLs, on objects and on the bucket; private ones pass.
alice.put_public_access_block(Bucket="album", PublicAccessBlockConfiguration={"BlockPublicAcls": True})
check(
    "BlockPublicAcls refuses PutObject public-read",
    code_of(alice.put_object, Bucket="album", Key="more.jpg", Body=b"", ACL="public-read") == "AccessDenied",
)
check(
    "BlockPublicAcls refuses PutObjectAcl public-read",
    code_of(alice.put_object_acl, Bucket="album", Key="private.jpg", ACL="public-read") == "AccessDenied",
)
check(
    "BlockPublicAcls refuses PutBucketAcl authenticated-read",
    code_of(alice.put_bucket_acl, Bucket="album", ACL="authenticated-read") == "AccessDenied",
)
check(
    "BlockPublicAcls takes a private ACL",
    code_of(alice.put_object, Bucket="album", Key="more.jpg", Body=b"x", ACL="private") == "OK",
)
alice.delete_public_access_block(Bucket="album")

# PutObjectAcl private closes the public object.
alice.put_object_acl(Bucket="album", Key="public.jpg", ACL="private")
status, _ = anonymous("GET", "/album/public.jpg")
check("PutObjectAcl private closes it", status == 403, status)

# A grant to bob by id: he reads that object, not its neighbour, and cannot list.
check("bob cannot read before the grant", code_of(bob.get_object, Bucket="album", Key="private.jpg") == "AccessDenied")
alice.put_object_acl(Bucket="album", Key="private.jpg", GrantRead='id="bob"', GrantFullControl='id="alice"')
got = bob.get_object(Bucket="album", Key="private.jpg")["Body"].read()
check("bob reads the object granted to him by id", got == b"diary", got)
check("bob still cannot read its neighbour", code_of(bob.get_object, Bucket="album", Key="public.jpg") == "AccessDenied")
check("bob cannot list the bucket", code_of(bob.list_objects_v2, Bucket="album") == "AccessDenied")
check("bob cannot read the object's ACL (READ only)", code_of(bob.get_object_acl, Bucket="album", Key="private.jpg") == "AccessDenied")
check(
    "bob cannot change the object's ACL",
    code_of(bob.put_object_acl, Bucket="album", Key="private.jpg", ACL="public-read") == "AccessDenied",
)
check("bob cannot write into the bucket", code_of(bob.put_object, Bucket="album", Key="b.txt", Body=b"") == "AccessDenied")
acl = alice.get_object_acl(Bucket="album", Key="private.jpg")
check("the grant shows", grants(acl) == sorted([("alice", "FULL_CONTROL"), ("bob", "READ")]), grants(acl))
bob_grant = [g for g in acl["Grants"] if g["Grantee"].get("ID") == "bob"]
check("grantees are canonical users", bob_grant and bob_grant[0]["Grantee"]["Type"] == "CanonicalUser", bob_grant)

# A bucket ACL: READ lets bob list, WRITE lets him put; an AccessControlPolicy body works.
owner = alice.get_bucket_acl(Bucket="album")["Owner"]
alice.put_bucket_acl(
    Bucket="album",
    AccessControlPolicy={
        "Owner": owner,
        "Grants": [
            {"Grantee": {"Type": "CanonicalUser", "ID": "alice"}, "Permission": "FULL_CONTROL"},
            {"Grantee": {"Type": "CanonicalUser", "ID": "bob"}, "Permission": "READ"},
            {"Grantee": {"Type": "CanonicalUser", "ID": "bob"}, "Permission": "WRITE"},
        ],
    },
)
keys = [o["Key"] for o in bob.list_objects_v2(Bucket="album").get("Contents", [])]
check("a bucket READ grant lets bob list", "private.jpg" in keys, keys)
check("a bucket WRITE grant lets bob put", code_of(bob.put_object, Bucket="album", Key="from-bob.txt", Body=b"hi") == "OK")
acl = alice.get_object_acl(Bucket="album", Key="from-bob.txt")
check("bob owns what he wrote (ObjectWriter)", acl["Owner"]["ID"] == "bob", acl["Owner"])
check("bob cannot read alice's bucket ACL (no READ_ACP)", code_of(bob.get_bucket_acl, Bucket="album") == "AccessDenied")
check(
    "an ACL body naming another owner is refused",
    code_of(
        alice.put_bucket_acl,
        Bucket="album",
        AccessControlPolicy={"Owner": {"ID": "bob"}, "Grants": []},
    )
    == "AccessDenied",
)
alice.put_bucket_acl(Bucket="album", ACL="private")
check("a private bucket ACL takes bob's listing back", code_of(bob.list_objects_v2, Bucket="album") == "AccessDenied")

# Errors S3 answers.
for name, kw, expected in [
    ("a bogus x-amz-acl", {"ACL": "public"}, "InvalidArgument"),
    ("a canned ACL with grant headers", {"ACL": "private", "GrantRead": 'id="bob"'}, "InvalidRequest"),
    ("a grant by email address", {"GrantRead": 'emailAddress="bob@example.org"'}, "UnresolvableGrantByEmailAddress"),
    ("a grant to an unknown user", {"GrantRead": 'id="nobody-here"'}, "InvalidArgument"),
]:
    # An empty body: the refusal comes before the body is read, and a client still
    # sending one may see the connection close instead of the answer.
    got = code_of(alice.put_object, Bucket="album", Key="err.txt", Body=b"", **kw)
    check(name, got == expected, got)
check("failed ACL PUTs stored nothing", code_of(alice.head_object, Bucket="album", Key="err.txt") == "404")

# Ownership controls.
check(
    "no ownership controls answer OwnershipControlsNotFoundError",
    code_of(alice.get_bucket_ownership_controls, Bucket="album") == "OwnershipControlsNotFoundError",
)
alice.put_bucket_ownership_controls(
    Bucket="album", OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
)
got = alice.get_bucket_ownership_controls(Bucket="album")["OwnershipControls"]["Rules"]
check("ownership round-trips", got == [{"ObjectOwnership": "BucketOwnerEnforced"}], got)
check(
    "BucketOwnerEnforced refuses public-read",
    code_of(alice.put_object, Bucket="album", Key="e.txt", Body=b"", ACL="public-read") == "AccessControlListNotSupported",
)
check(
    "BucketOwnerEnforced refuses PutBucketAcl grants",
    code_of(alice.put_bucket_acl, Bucket="album", GrantRead='id="bob"') == "AccessControlListNotSupported",
)
check(
    "BucketOwnerEnforced takes bucket-owner-full-control",
    code_of(alice.put_object, Bucket="album", Key="e.txt", Body=b"x", ACL="bucket-owner-full-control") == "OK",
)
check("BucketOwnerEnforced: bob's object grant counts for nothing", code_of(bob.get_object, Bucket="album", Key="private.jpg") == "AccessDenied")
acl = alice.get_object_acl(Bucket="album", Key="from-bob.txt")
check(
    "BucketOwnerEnforced: GetObjectAcl shows the bucket owner's full control",
    acl["Owner"]["ID"] == "alice" and grants(acl) == [("alice", "FULL_CONTROL")],
    acl,
)
alice.delete_bucket_ownership_controls(Bucket="album")
got = bob.get_object(Bucket="album", Key="private.jpg")["Body"].read()
check("deleting the controls brings the grants back", got == b"diary", got)

# A browser form upload with an acl field.
p = alice.generate_presigned_post(
    "album", "posted.jpg", Fields={"acl": "public-read"}, Conditions=[{"acl": "public-read"}], ExpiresIn=300
)
r = requests.post(p["url"], data=p["fields"], files={"file": ("posted.jpg", b"form")}, timeout=30)
check("a form upload with acl public-read", r.status_code == 204, f"{r.status_code} {r.text[:200]}")
status, body = anonymous("GET", "/album/posted.jpg")
check("the form-uploaded public-read object reads unsigned", status == 200 and body == b"form", f"{status} {body[:200]!r}")
p = alice.generate_presigned_post(
    "album", "bogus.jpg", Fields={"acl": "everyone"}, Conditions=[{"acl": "everyone"}], ExpiresIn=300
)
r = requests.post(p["url"], data=p["fields"], files={"file": ("bogus.jpg", b"x")}, timeout=30)
check("a form upload with a bogus acl is refused", r.status_code == 400 and "InvalidArgument" in r.text, f"{r.status_code} {r.text[:200]}")

# CreateBucket with a canned ACL and an ownership setting.
alice.create_bucket(Bucket="dropbox", ACL="public-read-write")
status, _ = anonymous("PUT", "/dropbox/note.txt", b"anyone")
check("public-read-write lets anyone write", status == 200, status)
status, body = anonymous("GET", "/dropbox")
check("public-read-write lets anyone list", status == 200 and b"note.txt" in body, f"{status} {body[:200]!r}")
status, _ = anonymous("GET", "/dropbox/note.txt")
check("an anonymous write is private to the bucket owner", status == 403, status)
check(
    "CreateBucket with BucketOwnerEnforced and a public ACL is refused",
    code_of(
        alice.create_bucket, Bucket="enforced", ACL="public-read", ObjectOwnership="BucketOwnerEnforced"
    )
    == "InvalidBucketAclWithObjectOwnership",
)
alice.create_bucket(Bucket="enforced", ObjectOwnership="BucketOwnerEnforced")
got = alice.get_bucket_ownership_controls(Bucket="enforced")["OwnershipControls"]["Rules"]
check("x-amz-object-ownership on CreateBucket", got == [{"ObjectOwnership": "BucketOwnerEnforced"}], got)

finish("acl checks passed")
