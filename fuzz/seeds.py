#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target: fuzz/corpus/<target>/seed-*. Seeds are
valid inputs (or, for the structure-aware modes, the parameters the target builds a valid
input from with the real encoders); libFuzzer mutates from there. Run from anywhere:
    python3 fuzz/seeds.py
"""
import json, os, struct

ROOT = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(ROOT)


def write(target, name, data):
    d = os.path.join(ROOT, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def u64(n):
    return struct.pack("<Q", n & 0xFFFFFFFFFFFFFFFF)


def u32(n):
    return struct.pack("<I", n)


# s3_xml: the bodies the gateway takes.
write("s3_xml", "lifecycle", """<LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
<Rule><ID>expire-logs</ID><Filter><Prefix>logs/</Prefix></Filter><Status>Enabled</Status>
<Expiration><Days>30</Days></Expiration>
<NoncurrentVersionExpiration><NoncurrentDays>7</NoncurrentDays></NoncurrentVersionExpiration>
<AbortIncompleteMultipartUpload><DaysAfterInitiation>2</DaysAfterInitiation></AbortIncompleteMultipartUpload>
</Rule>
<Rule><ID>to-cold</ID><Prefix>old/</Prefix><Status>Disabled</Status>
<Transition><Days>90</Days><StorageClass>cold</StorageClass></Transition></Rule>
<Rule><Status>Enabled</Status><Expiration><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker></Expiration></Rule>
</LifecycleConfiguration>""")
write("s3_xml", "delete", """<Delete><Quiet>true</Quiet>
<Object><Key>a/b.txt</Key></Object><Object><Key>c &amp; d</Key><VersionId>v1</VersionId></Object>
</Delete>""")
write("s3_xml", "complete", """<CompleteMultipartUpload>
<Part><PartNumber>1</PartNumber><ETag>"0123456789abcdef0123456789abcdef"</ETag></Part>
<Part><PartNumber>2</PartNumber><ETag>"fedcba9876543210fedcba9876543210"</ETag></Part>
</CompleteMultipartUpload>""")
write("s3_xml", "versioning", "<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>")
write("s3_xml", "create-bucket", "<CreateBucketConfiguration><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>")

# s3_headers: object size, then a header.
for name, size, text in [
    ("range", 1000, "bytes=0-99"),
    ("suffix", 1000, "bytes=-500"),
    ("open", 1 << 40, "bytes=100-"),
    ("empty-object", 0, "bytes=-1"),
    ("copy-source", 10, "bucket/dir/key%20name.txt?versionId=3HL4kqtJlcpXroDTDmJ"),
    ("etag", 10, '"0123456789abcdef", W/"weak"'),
]:
    write("s3_headers", name, u64(size) + text.encode())

# crds_yaml: the example files, a size and a duration.
examples = os.path.join(REPO, "crds", "examples")
for f in sorted(os.listdir(examples)):
    if f.endswith(".yaml"):
        with open(os.path.join(examples, f), "rb") as src:
            write("crds_yaml", f, src.read())
write("crds_yaml", "size", "16Mi")
write("crds_yaml", "duration", "1h30m")
write("crds_yaml", "overlay", """applied:
- apiVersion: sublet.dev/v1alpha1
  kind: StoragePlan
  metadata: {name: scratch}
  spec:
    redundancy: {replicas: 2}
deleted:
- {kind: StoragePlan, name: old}
""")

# tree_proof, honest mode: [1|x, length, offset, len, piece size, fill].
for name, length, offset, ln, piece in [
    ("one-group", 1000, 10, 100, 7),
    ("three-groups", 40000, 16000, 1000, 4096),
    ("to-the-end", 131172, 100000, 0xFFFFFFFF, 65535),
    ("empty", 0, 0, 10, 1),
]:
    write("tree_proof", "honest-" + name, b"\x01" + u64(length) + u64(offset) + u64(ln) + struct.pack("<H", piece) + b"\x05")
write("tree_proof", "honest-flipped", b"\x01" + u64(50000) + u64(20000) + u64(5000) + struct.pack("<H", 1000) + b"\x09" + u32(9) + b"\x01" + u32(70) + b"\x80")
write("tree_proof", "hostile", b"\x00" + bytes(32) + u64(0) + u64(100) + u64(100) + bytes(100))
write("tree_proof", "hostile-bao", b"\x02" + bytes(32) + u64(0) + u64(100) + u64(100) + bytes(100))

# shard_file, honest mode: [mode, offset, len, length, flips...].
for name, mode, offset, ln, length, flips in [
    ("small", 1, 0, 0, 100, b""),
    ("groups", 1, 17000, 20000, 50000, b""),
    ("rotten-byte", 1, 0, 0, 3000, u32(200) + b"\x01"),
    ("changed-length", 3, 0, 0, 3000, u32(13) + b"\x01"),
    ("changed-version", 3, 100, 100, 70000, u32(8) + b"\x03"),
]:
    write("shard_file", name, bytes([mode]) + u32(offset) + u32(ln) + u32(length) + flips)

# shard_file, raw mode with the checksum rewritten ([2]): a format-2 header (magic,
# version, id length, length, stored_at, hash, id, checksum) and the data; the hash is not
# the data's, so the store indexes it and every read refuses it.
def shard_file(version, length, outboard):
    sid = b"fuzz-shard"
    header = (b"SUBLSHRD" + struct.pack("<HH", version, len(sid)) + u64(length) + u64(1700000000)
              + bytes(range(32)) + sid)
    return header + bytes(32) + bytes(length) + bytes(outboard)


write("shard_file", "raw-format-2", b"\x02" + u32(0) + u32(0) + shard_file(2, 100, 0))
write("shard_file", "raw-format-1", b"\x02" + u32(10) + u32(20) + shard_file(1, 100, 8))

# journal_segment: [1] + one entry a line, as the gateway writes them.
bucket = {"name": "photos", "created": 1700000000000, "defaultPlan": None, "versioning": "enabled"}
layout = {"scheme": {"kind": "erasure", "data": 2, "parity": 1}, "encryption": {"kind": "none"},
          "segmentSize": 1048576, "segments": [{"plainLength": 5, "sealedLength": 5, "shards": [
              {"provider": "p1", "shardId": "s-1", "hash": "00" * 32, "length": 3},
              {"provider": "", "shardId": "s-2", "hash": "11" * 32, "length": 3},
              {"provider": "p3", "shardId": "s-3", "hash": "22" * 32, "length": 3}]}]}
version = {"bucket": "photos", "key": "a.jpg", "versionId": "v1", "deleteMarker": False, "size": 5,
           "etag": "d41d8cd98f00b204e9800998ecf8427e", "contentType": "image/jpeg", "userMetadata": {"k": "v"},
           "lastModified": 1700000000001, "plan": "default", "layout": layout}
entries = [
    {"op": "createBucket", "bucket": bucket},
    {"op": "setVersioning", "name": "photos", "versioning": "suspended"},
    {"op": "setLifecycle", "bucket": "photos", "rules": "[]"},
    {"op": "putVersion", "version": version},
    {"op": "deleteVersion", "bucket": "photos", "key": "a.jpg", "versionId": "v1"},
    {"op": "deleteBucket", "name": "photos"},
]
write("journal_segment", "entries", b"\x01" + "\n".join(json.dumps(e) for e in entries).encode())
write("journal_segment", "forged", b"\x00SJL1\x00\x04abcd" + bytes(28))

# snapshot_manifest: mode byte (odd: seal this JSON, even: a hostile blob), then a manifest as
# store_snapshot writes it before sealing.
write("snapshot_manifest", "manifest", b"\x01" + json.dumps({"created": 1700000000000, "size": 5, "blake3": "ab" * 32,
      "plan": "default", "layout": layout, "journalCut": "000001700000000-0000000007"}).encode())
write("snapshot_manifest", "multipart", b"\x01" + json.dumps({"created": 1, "size": 10, "blake3": "cd" * 32, "plan": "p",
      "layout": {**layout, "segments": [], "parts": [layout, layout]}}).encode())
write("snapshot_manifest", "hostile", b"\x00" + b"\x00" * 12 + b"not sealed by the master key")

# market_signature: server clock, then method, path, party, timestamp, nonce, signature, body.
write("market_signature", "signed", u64(1700000000) + b"POST\n/v1/offers\n0123456789abcdef0123456789abcdef\n1700000000\n0123456789abcdef0123456789abcdef\nAAAA\n{\"capacity_bytes\": 1}")
write("market_signature", "stale", u64(1700000000) + b"GET\n/v1/contracts\nabc\n1600000000\nshort\n!!\n")

# market_api: requests [route, sender, hours, body length, body].
ROUTES = ["POST /v1/deposits", "POST /v1/withdrawals", "POST /v1/held-back/release", "POST /v1/offers",
          "GET /v1/offers?$B", "GET /v1/offers/$O", "DELETE /v1/offers/$O", "POST /v1/contracts",
          "GET /v1/contracts", "GET /v1/contracts/$C", "POST /v1/contracts/$C/accept",
          "POST /v1/contracts/$C/reject", "POST /v1/contracts/$C/prepay", "POST /v1/contracts/$C/terminate",
          "POST /v1/contracts/$C/receipts", "GET /v1/contracts/$C/periods",
          "POST /v1/contracts/$C/periods/$N/settle", "POST /v1/contracts/$C/observations",
          "POST /v1/contracts/$C/feedback", "GET /v1/contracts/$C/feedback", "POST /v1/contracts/$C/disputes",
          "GET /v1/contracts/$C/disputes", "GET /v1/disputes", "GET /v1/disputes/$X",
          "POST /v1/disputes/$X/decide", "GET /v1/parties/$P", "GET /v1/parties/$D/balances",
          "GET /v1/parties/$P/rating", "POST /v1/parties/$P/attestations", "GET /v1/parties/$P/attestations",
          "POST /v1/challenges", "POST /v1/parties", "GET /v1/ledger"]
R = {r: i for i, r in enumerate(ROUTES)}
PROVIDER, DEMANDER, ARBITER = 0, 1, 2
GIB = 1 << 30


def req(route, sender, body="", hours=0):
    b = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
    b = b.encode()
    assert len(b) < 256, b
    return bytes([R[route], sender, hours, len(b)]) + b


offer = {"capacity_bytes": 100 * GIB, "price_per_gib_month": 7300000, "egress_price_per_gib": 1000000,
         "region": "eu-west", "min_term_days": 30, "promised_uptime_bps": 9950}
flow = (req("POST /v1/deposits", DEMANDER, {"op_id": "dep-1", "amount": 100000000, "reference": "t"})
        + req("POST /v1/offers", PROVIDER, offer)
        + req("POST /v1/contracts", DEMANDER, '{"offer_id":"$O","reserved_bytes":10737418240,"term_days":30}')
        + req("POST /v1/contracts/$C/accept", PROVIDER, "{}")
        + req("POST /v1/contracts/$C/prepay", DEMANDER, {"op_id": "pre-1", "amount": 5000000})
        + req("POST /v1/contracts/$C/receipts", PROVIDER, '{"period_start":$N,"period_end":$N,"gib_hours":10,"egress_bytes":1073741824,"audits_passed":10,"audits_failed":0}', hours=2)
        + req("GET /v1/contracts/$C/periods", DEMANDER)
        + req("POST /v1/contracts/$C/periods/$N/settle", DEMANDER, "{}")
        + req("GET /v1/parties/$D/balances", DEMANDER))
write("market_api", "contract-flow", flow)
write("market_api", "dispute", flow
      + req("POST /v1/contracts/$C/disputes", DEMANDER, {"reason": "lost data", "claim": 1000})
      + req("POST /v1/disputes/$X/decide", ARBITER, {"award_to_demander": 500, "penalty": 0, "note": "half"})
      + req("POST /v1/contracts/$C/terminate", DEMANDER, "{}", hours=200)
      + req("POST /v1/withdrawals", DEMANDER, {"op_id": "wd-1", "amount": 1, "reference": "t"}))
write("market_api", "search", req("POST /v1/offers", PROVIDER, offer)
      + req("GET /v1/offers?$B", 3, "region=eu-west&min_free_bytes=1&max_price_per_gib_month=9000000"))


# md5_lanes: kernel, piece size, message count, then each message's length byte and bytes.
write("md5_lanes", "four", bytes([2, 3, 4, 0, 1, 2, 7]) + bytes(range(256)) * 2)
write("md5_lanes", "many", bytes([1, 200, 17]) + bytes(range(1, 18)) + bytes(4000))

# put_body: [id length, id, hash length, hash, length (8), then (chunk length, chunk)*].
shard_id = b"bucket/key.0.3"
write("put_body", "shard", bytes([len(shard_id)]) + shard_id + b"\x20" + bytes(range(32)) + u64(300)
      + b"\xff" + bytes(255) + b"\x2d" + bytes(45))
write("put_body", "empty-chunks", b"\x00\x00" + u64(0) + b"\x00\x00")
