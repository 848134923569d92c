//! The PostgreSQL store's tables (the SQLite store's, in PostgreSQL's types).

/// Keys sort and compare bytewise (S3 order), whatever the database's default collation.
pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS buckets (
    name TEXT COLLATE "C" PRIMARY KEY,
    created BIGINT NOT NULL,
    default_plan TEXT,
    versioning TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    bucket TEXT COLLATE "C" NOT NULL REFERENCES buckets(name),
    key TEXT COLLATE "C" NOT NULL,
    version_id TEXT COLLATE "C" NOT NULL,
    delete_marker BOOLEAN NOT NULL,
    size BIGINT NOT NULL,
    etag TEXT NOT NULL,
    content_type TEXT,
    user_metadata TEXT NOT NULL,
    last_modified BIGINT NOT NULL,
    plan TEXT NOT NULL,
    layout TEXT,
    attrs TEXT,
    UNIQUE (bucket, key, version_id)
);
CREATE INDEX IF NOT EXISTS versions_by_key ON versions (bucket, key, seq);
CREATE INDEX IF NOT EXISTS versions_by_plan ON versions (plan);
CREATE TABLE IF NOT EXISTS shards (
    version_seq BIGINT NOT NULL REFERENCES versions(seq) ON DELETE CASCADE,
    piece BIGINT NOT NULL,
    segment BIGINT NOT NULL,
    idx BIGINT NOT NULL,
    provider TEXT NOT NULL,
    shard_id TEXT NOT NULL,
    hash TEXT NOT NULL,
    length BIGINT NOT NULL,
    width BIGINT NOT NULL,
    needed BIGINT NOT NULL,
    bad_since BIGINT,
    PRIMARY KEY (version_seq, piece, segment, idx)
);
CREATE INDEX IF NOT EXISTS shards_by_provider ON shards (provider);
CREATE TABLE IF NOT EXISTS providers (
    node_id TEXT PRIMARY KEY,
    last_seen BIGINT NOT NULL,
    down_since BIGINT,
    pool TEXT
);
CREATE TABLE IF NOT EXISTS uploads (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    upload_id TEXT COLLATE "C" NOT NULL UNIQUE,
    bucket TEXT COLLATE "C" NOT NULL REFERENCES buckets(name),
    key TEXT COLLATE "C" NOT NULL,
    plan TEXT NOT NULL,
    content_type TEXT,
    user_metadata TEXT NOT NULL,
    initiated BIGINT NOT NULL,
    attrs TEXT
);
CREATE INDEX IF NOT EXISTS uploads_by_key ON uploads (bucket, key, seq);
CREATE TABLE IF NOT EXISTS parts (
    upload_id TEXT COLLATE "C" NOT NULL REFERENCES uploads(upload_id),
    part_number INTEGER NOT NULL,
    size BIGINT NOT NULL,
    etag TEXT NOT NULL,
    last_modified BIGINT NOT NULL,
    layout TEXT NOT NULL,
    checksums TEXT,
    PRIMARY KEY (upload_id, part_number)
);
CREATE TABLE IF NOT EXISTS bucket_lifecycle (
    bucket TEXT COLLATE "C" PRIMARY KEY REFERENCES buckets(name) ON DELETE CASCADE,
    rules TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bucket_object_lock (
    bucket TEXT COLLATE "C" PRIMARY KEY REFERENCES buckets(name) ON DELETE CASCADE,
    config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bucket_tags (
    bucket TEXT COLLATE "C" PRIMARY KEY REFERENCES buckets(name) ON DELETE CASCADE,
    tags TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bucket_cors (
    bucket TEXT COLLATE "C" PRIMARY KEY REFERENCES buckets(name) ON DELETE CASCADE,
    rules TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bucket_policies (
    bucket TEXT COLLATE "C" PRIMARY KEY REFERENCES buckets(name) ON DELETE CASCADE,
    policy TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bucket_public_access (
    bucket TEXT COLLATE "C" PRIMARY KEY REFERENCES buckets(name) ON DELETE CASCADE,
    config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bucket_encryption (
    bucket TEXT COLLATE "C" PRIMARY KEY REFERENCES buckets(name) ON DELETE CASCADE,
    config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bucket_acl (
    bucket TEXT COLLATE "C" PRIMARY KEY REFERENCES buckets(name) ON DELETE CASCADE,
    acl TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bucket_ownership (
    bucket TEXT COLLATE "C" PRIMARY KEY REFERENCES buckets(name) ON DELETE CASCADE,
    ownership TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS repair_claims (
    seq BIGINT PRIMARY KEY,
    holder TEXT NOT NULL,
    until BIGINT NOT NULL
);
-- Writes in flight of the gateways sharing the database (their shards are no garbage).
CREATE TABLE IF NOT EXISTS writes_in_flight (
    holder TEXT NOT NULL,
    write_id TEXT NOT NULL,
    until BIGINT NOT NULL,
    PRIMARY KEY (holder, write_id)
);
CREATE TABLE IF NOT EXISTS policies (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL,
    overlay TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    id TEXT COLLATE "C" PRIMARY KEY,
    display_name TEXT NOT NULL,
    max_bytes BIGINT,
    max_objects BIGINT,
    created BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS access_keys (
    access_key TEXT COLLATE "C" PRIMARY KEY,
    user_id TEXT COLLATE "C" NOT NULL,
    sealed_secret TEXT NOT NULL,
    grants TEXT NOT NULL,
    active BOOLEAN NOT NULL,
    created BIGINT NOT NULL,
    rotated BIGINT NOT NULL
);
-- Added after the first release: a database made before it gains the columns.
ALTER TABLE versions ADD COLUMN IF NOT EXISTS attrs TEXT;
ALTER TABLE uploads ADD COLUMN IF NOT EXISTS attrs TEXT;
ALTER TABLE parts ADD COLUMN IF NOT EXISTS checksums TEXT;
ALTER TABLE buckets ADD COLUMN IF NOT EXISTS owner TEXT;
"#;

/// Serializes concurrent schema creation by several replicas starting at once.
pub(super) const SCHEMA_LOCK: i64 = 0x5375_626c_6574; // "Sublet"
