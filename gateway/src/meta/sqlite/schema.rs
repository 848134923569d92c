//! The SQLite store's tables.

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS buckets (
    name TEXT PRIMARY KEY,
    created INTEGER NOT NULL,
    default_plan TEXT,
    versioning TEXT NOT NULL,
    owner TEXT
);
CREATE TABLE IF NOT EXISTS versions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    bucket TEXT NOT NULL REFERENCES buckets(name),
    key TEXT NOT NULL,
    version_id TEXT NOT NULL,
    delete_marker INTEGER NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    content_type TEXT,
    user_metadata TEXT NOT NULL,
    last_modified INTEGER NOT NULL,
    plan TEXT NOT NULL,
    layout TEXT,
    attrs TEXT,
    UNIQUE (bucket, key, version_id)
);
CREATE INDEX IF NOT EXISTS versions_by_key ON versions (bucket, key, seq);
CREATE INDEX IF NOT EXISTS versions_by_plan ON versions (plan);
CREATE TABLE IF NOT EXISTS shards (
    version_seq INTEGER NOT NULL REFERENCES versions(seq) ON DELETE CASCADE,
    piece INTEGER NOT NULL,
    segment INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    provider TEXT NOT NULL,
    shard_id TEXT NOT NULL,
    hash TEXT NOT NULL,
    length INTEGER NOT NULL,
    width INTEGER NOT NULL,
    needed INTEGER NOT NULL,
    bad_since INTEGER,
    PRIMARY KEY (version_seq, piece, segment, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS shards_by_provider ON shards (provider);
CREATE TABLE IF NOT EXISTS providers (
    node_id TEXT PRIMARY KEY,
    last_seen INTEGER NOT NULL,
    down_since INTEGER,
    pool TEXT
);
CREATE TABLE IF NOT EXISTS uploads (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    upload_id TEXT NOT NULL UNIQUE,
    bucket TEXT NOT NULL REFERENCES buckets(name),
    key TEXT NOT NULL,
    plan TEXT NOT NULL,
    content_type TEXT,
    user_metadata TEXT NOT NULL,
    initiated INTEGER NOT NULL,
    attrs TEXT
);
CREATE INDEX IF NOT EXISTS uploads_by_key ON uploads (bucket, key, seq);
CREATE TABLE IF NOT EXISTS parts (
    upload_id TEXT NOT NULL REFERENCES uploads(upload_id),
    part_number INTEGER NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    last_modified INTEGER NOT NULL,
    layout TEXT NOT NULL,
    checksums TEXT,
    PRIMARY KEY (upload_id, part_number)
);
CREATE TABLE IF NOT EXISTS bucket_lifecycle (
    bucket TEXT PRIMARY KEY REFERENCES buckets(name) ON DELETE CASCADE,
    rules TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bucket_object_lock (
    bucket TEXT PRIMARY KEY REFERENCES buckets(name) ON DELETE CASCADE,
    config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bucket_tags (
    bucket TEXT PRIMARY KEY REFERENCES buckets(name) ON DELETE CASCADE,
    tags TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bucket_cors (
    bucket TEXT PRIMARY KEY REFERENCES buckets(name) ON DELETE CASCADE,
    rules TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bucket_policies (
    bucket TEXT PRIMARY KEY REFERENCES buckets(name) ON DELETE CASCADE,
    policy TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bucket_public_access (
    bucket TEXT PRIMARY KEY REFERENCES buckets(name) ON DELETE CASCADE,
    config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bucket_encryption (
    bucket TEXT PRIMARY KEY REFERENCES buckets(name) ON DELETE CASCADE,
    config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bucket_acl (
    bucket TEXT PRIMARY KEY REFERENCES buckets(name) ON DELETE CASCADE,
    acl TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bucket_ownership (
    bucket TEXT PRIMARY KEY REFERENCES buckets(name) ON DELETE CASCADE,
    ownership TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS policies (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL,
    overlay TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    max_bytes INTEGER,
    max_objects INTEGER,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS access_keys (
    access_key TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    sealed_secret TEXT NOT NULL,
    grants TEXT NOT NULL,
    active INTEGER NOT NULL,
    created INTEGER NOT NULL,
    rotated INTEGER NOT NULL
);
";
