"""boto3 against a running `sublet dev`: a bucket policy with policy variables gives each
user a home prefix. Users alice and bob have keys with no grant on bucket `homes` (owned by
carol); one policy lets each list, read, write and delete only under `home/<user name>/`
through `${aws:username}`.

- alice writes, reads, lists and deletes under home/alice/, nothing under home/bob/ or
  outside home/ (bob the same the other way round);
- a key named literally `home/${aws:username}/...` is not alice's home;
- anonymous requests (no user name: the statement does not apply) get nothing;
- a policy with a variable but no `"Version": "2012-10-17"` is refused as MalformedPolicy.

Reads SUBLET_ENDPOINT and CAROL_KEY/CAROL_SECRET, ALICE_KEY/ALICE_SECRET, BOB_KEY/BOB_SECRET;
exits non-zero with the failed checks on stderr.
"""

import json

from botocore.exceptions import ClientError
from s3_checks import anonymous, check, client, code_of, finish

carol, alice, bob = client("CAROL"), client("ALICE"), client("BOB")

ARN = "arn:aws:s3:::"
carol.create_bucket(Bucket="homes")
carol.put_object(Bucket="homes", Key="home/alice/notes.txt", Body=b"alice's")
carol.put_object(Bucket="homes", Key="home/bob/notes.txt", Body=b"bob's")
carol.put_object(Bucket="homes", Key="shared/readme.txt", Body=b"carol's")

homes = {
    "Version": "2012-10-17",
    "Statement": [
        {"Sid": "ListOwnHome", "Effect": "Allow", "Principal": {"AWS": ["alice", "bob"]},
         "Action": "s3:ListBucket", "Resource": ARN + "homes",
         "Condition": {"StringLike": {"s3:prefix": ["home/${aws:username}/", "home/${aws:username}/*"]}}},
        {"Sid": "OwnHome", "Effect": "Allow", "Principal": {"AWS": ["alice", "bob"]},
         "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
         "Resource": ARN + "homes/home/${aws:username}/*"},
    ],
}
check("no access before the policy",
      code_of(alice.get_object, Bucket="homes", Key="home/alice/notes.txt") == "AccessDenied")
carol.put_bucket_policy(Bucket="homes", Policy=json.dumps(homes))
got = json.loads(carol.get_bucket_policy(Bucket="homes")["Policy"])
check("policy read back with its variables", got == homes, got)

for me, other, c in [("alice", "bob", alice), ("bob", "alice", bob)]:
    body = c.get_object(Bucket="homes", Key=f"home/{me}/notes.txt")["Body"].read()
    check(f"{me} reads her home", body == f"{me}'s".encode(), body)
    c.put_object(Bucket="homes", Key=f"home/{me}/new.txt", Body=b"mine")
    listed = [o["Key"] for o in c.list_objects_v2(Bucket="homes", Prefix=f"home/{me}/").get("Contents", [])]
    check(f"{me} lists her home", listed == [f"home/{me}/new.txt", f"home/{me}/notes.txt"], listed)
    c.delete_object(Bucket="homes", Key=f"home/{me}/new.txt")
    check(f"{me} may not read {other}'s home",
          code_of(c.get_object, Bucket="homes", Key=f"home/{other}/notes.txt") == "AccessDenied")
    check(f"{me} may not write {other}'s home",
          code_of(c.put_object, Bucket="homes", Key=f"home/{other}/evil", Body=b"x") == "AccessDenied")
    check(f"{me} may not delete in {other}'s home",
          code_of(c.delete_object, Bucket="homes", Key=f"home/{other}/notes.txt") == "AccessDenied")
    check(f"{me} may not list {other}'s home",
          code_of(c.list_objects_v2, Bucket="homes", Prefix=f"home/{other}/") == "AccessDenied")
    check(f"{me} may not list the bucket", code_of(c.list_objects_v2, Bucket="homes") == "AccessDenied")
    check(f"{me} may not read outside home/",
          code_of(c.get_object, Bucket="homes", Key="shared/readme.txt") == "AccessDenied")
    # The variable is substituted, never matched as the literal text.
    check(f"{me} may not write the literal variable",
          code_of(c.put_object, Bucket="homes", Key="home/${aws:username}/x", Body=b"x") == "AccessDenied")

for path in ["/homes/home/alice/notes.txt", "/homes/home/%24%7Baws%3Ausername%7D/x", "/homes?list-type=2"]:
    status, _ = anonymous("GET", path)
    check(f"anonymous GET {path} refused", status == 403, status)

old = dict(homes, Version="2008-10-17")
try:
    carol.put_bucket_policy(Bucket="homes", Policy=json.dumps(old))
    check("a 2008-10-17 policy with variables is refused", False, "accepted")
except ClientError as e:
    err = e.response["Error"]
    check("a 2008-10-17 policy with variables is refused",
          err["Code"] == "MalformedPolicy" and "2012-10-17" in err.get("Message", ""), err)
check("the policy in force is unchanged",
      json.loads(carol.get_bucket_policy(Bucket="homes")["Policy"]) == homes)

finish("policy variable checks passed")
