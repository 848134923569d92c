"""boto3 against a running `sublet dev`: bucket policies, anonymous access and
PublicAccessBlock, with two runtime users and a backup user.

- alice shares bucket `photos` read-only with bob by policy (bob's key has no grant on it);
- a `backups` key of user `backupbot` may write but not read (a policy denies reads);
- a public prefix `photos/public/` is read with plain HTTP, no signature; nothing else is;
- PublicAccessBlock: RestrictPublicBuckets shuts the public prefix, BlockPublicPolicy
  refuses a public policy; deleting the block opens the prefix again;
- a malformed policy is refused with MalformedPolicy naming the problem;
- the owner keeps the policy APIs even under a policy denying her everything.

Reads SUBLET_ENDPOINT and ALICE_KEY/ALICE_SECRET, BOB_KEY/BOB_SECRET,
BACKUP_KEY/BACKUP_SECRET; exits non-zero with the failed checks on stderr.
"""

import json

from s3_checks import anonymous, check, client, code_of, error_of, finish

alice, bob, backup = client("ALICE"), client("BOB"), client("BACKUP")


ARN = "arn:aws:s3:::"
alice.create_bucket(Bucket="photos")
alice.put_object(Bucket="photos", Key="album/beach.jpg", Body=b"sand")
alice.put_object(Bucket="photos", Key="public/index.html", Body=b"<h1>hello</h1>")
alice.put_object(Bucket="photos", Key="private/diary.txt", Body=b"secret")

# Before any policy: bob gets nothing, anonymous nothing.
check("bob before policy", code_of(bob.get_object, Bucket="photos", Key="album/beach.jpg") == "AccessDenied")
status, _ = anonymous("GET", "/photos/public/index.html")
check("anonymous before policy", status == 403, status)
check("no policy yet", code_of(alice.get_bucket_policy, Bucket="photos") == "NoSuchBucketPolicy")

family = {
    "Version": "2012-10-17",
    "Statement": [
        {"Sid": "FamilyReads", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::000000000000:user/bob"},
         "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": [ARN + "photos", ARN + "photos/album/*"]},
        {"Sid": "PublicSite", "Effect": "Allow", "Principal": "*",
         "Action": "s3:GetObject", "Resource": ARN + "photos/public/*"},
    ],
}
alice.put_bucket_policy(Bucket="photos", Policy=json.dumps(family))
got = json.loads(alice.get_bucket_policy(Bucket="photos")["Policy"])
check("policy read back", got == family, got)
status = alice.get_bucket_policy_status(Bucket="photos")["PolicyStatus"]["IsPublic"]
check("policy is public", status is True, status)

# Shared read-only with bob.
body = bob.get_object(Bucket="photos", Key="album/beach.jpg")["Body"].read()
check("bob reads the album", body == b"sand", body)
keys = [o["Key"] for o in bob.list_objects_v2(Bucket="photos").get("Contents", [])]
check("bob lists", "album/beach.jpg" in keys, keys)
check("bob may not write", code_of(bob.put_object, Bucket="photos", Key="album/x", Body=b"x") == "AccessDenied")
check("bob may not read outside the album",
      code_of(bob.get_object, Bucket="photos", Key="private/diary.txt") == "AccessDenied")
check("bob may not delete",
      code_of(bob.delete_object, Bucket="photos", Key="album/beach.jpg") == "AccessDenied")
check("bob may not change the policy",
      code_of(bob.put_bucket_policy, Bucket="photos", Policy=json.dumps(family)) == "AccessDenied")
check("bob may not delete the policy",
      code_of(bob.delete_bucket_policy, Bucket="photos") == "AccessDenied")
# DeleteObjects is decided per key: bob's deletes are refused one by one.
out = bob.delete_objects(Bucket="photos", Delete={"Objects": [{"Key": "album/beach.jpg"}]})
codes = [e["Code"] for e in out.get("Errors", [])]
check("bob's batch delete refused per key", codes == ["AccessDenied"], out)

# The public prefix, without a signature; nothing else.
status, body = anonymous("GET", "/photos/public/index.html")
check("anonymous reads the public prefix", status == 200 and body == b"<h1>hello</h1>", (status, body))
status, _ = anonymous("HEAD", "/photos/public/index.html")
check("anonymous heads the public prefix", status == 200, status)
for method, path in [("GET", "/photos/album/beach.jpg"), ("GET", "/photos?list-type=2"),
                     ("PUT", "/photos/public/evil.html"), ("DELETE", "/photos/public/index.html"),
                     ("GET", "/photos?policy"), ("GET", "/")]:
    status, _ = anonymous(method, path, b"evil" if method == "PUT" else None)
    check(f"anonymous {method} {path} refused", status == 403, status)

# PublicAccessBlock.
check("no block yet", code_of(alice.get_public_access_block, Bucket="photos") == "NoSuchPublicAccessBlockConfiguration")
alice.put_public_access_block(Bucket="photos", PublicAccessBlockConfiguration={"RestrictPublicBuckets": True})
conf = alice.get_public_access_block(Bucket="photos")["PublicAccessBlockConfiguration"]
check("block read back", conf.get("RestrictPublicBuckets") is True and conf.get("BlockPublicPolicy") is False, conf)
status, _ = anonymous("GET", "/photos/public/index.html")
check("RestrictPublicBuckets shuts the public prefix", status == 403, status)
check("RestrictPublicBuckets shuts the public policy to bob too",
      code_of(bob.get_object, Bucket="photos", Key="album/beach.jpg") == "AccessDenied")
alice.put_public_access_block(Bucket="photos", PublicAccessBlockConfiguration={"BlockPublicPolicy": True})
code, message = error_of(alice.put_bucket_policy, Bucket="photos", Policy=json.dumps(family))
check("BlockPublicPolicy refuses a public policy", code == "AccessDenied" and "BlockPublicPolicy" in message, (code, message))
non_public = {"Statement": [family["Statement"][0]]}
alice.put_bucket_policy(Bucket="photos", Policy=json.dumps(non_public))
check("a non-public policy is accepted under BlockPublicPolicy",
      alice.get_bucket_policy_status(Bucket="photos")["PolicyStatus"]["IsPublic"] is False)
alice.put_public_access_block(Bucket="photos", PublicAccessBlockConfiguration={})
alice.put_bucket_policy(Bucket="photos", Policy=json.dumps(family))
alice.delete_public_access_block(Bucket="photos")
status, body = anonymous("GET", "/photos/public/index.html")
check("without the block the prefix is public again", status == 200, status)

# Malformed policies.
for policy, words in [
    ("{not json", "valid JSON"),
    (json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObjekt",
                                "Resource": ARN + "photos/*"}]}), "invalid action: s3:GetObjekt"),
    (json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                "Resource": ARN + "elsewhere/*"}]}), "invalid resource"),
]:
    code, message = error_of(alice.put_bucket_policy, Bucket="photos", Policy=policy)
    check(f"malformed {policy[:40]}", code == "MalformedPolicy" and words in message, (code, message))

# A write-only backup key: the grant allows read and write, the policy denies reads.
alice.create_bucket(Bucket="backups")
alice.put_bucket_policy(Bucket="backups", Policy=json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Sid": "WriteOnly", "Effect": "Deny", "Principal": {"AWS": "backupbot"},
                   "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket", "s3:DeleteObject"],
                   "Resource": [ARN + "backups", ARN + "backups/*"]}],
}))
backup.put_object(Bucket="backups", Key="db.tar", Body=b"dump")
check("backup key may not read", code_of(backup.get_object, Bucket="backups", Key="db.tar") == "AccessDenied")
check("backup key may not list", code_of(backup.list_objects_v2, Bucket="backups") == "AccessDenied")
check("backup key may not delete", code_of(backup.delete_object, Bucket="backups", Key="db.tar") == "AccessDenied")
check("backup key may not lift the deny",
      code_of(backup.delete_bucket_policy, Bucket="backups") == "AccessDenied")
check("alice reads the backup", alice.get_object(Bucket="backups", Key="db.tar")["Body"].read() == b"dump")

# Owner override: a policy denying alice everything still lets her manage it.
alice.put_bucket_policy(Bucket="backups", Policy=json.dumps({
    "Statement": [{"Effect": "Deny", "Principal": {"AWS": "alice"}, "Action": "s3:*",
                   "Resource": [ARN + "backups", ARN + "backups/*"]}]}))
check("alice denied by her own policy", code_of(alice.get_object, Bucket="backups", Key="db.tar") == "AccessDenied")
alice.get_bucket_policy(Bucket="backups")
alice.delete_bucket_policy(Bucket="backups")
check("alice reads again once it is gone", alice.get_object(Bucket="backups", Key="db.tar")["Body"].read() == b"dump")

finish("policy checks passed")
