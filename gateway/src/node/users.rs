//! Users and access keys made at runtime (the admin API), and their quotas: the rules over
//! the metadata store's `users` and `access_keys` tables, and the in-memory view the S3
//! authentication reads on every request.
//!
//! The view is rebuilt after every change made here and every [`REFRESH_INTERVAL`] (by
//! [`crate::upkeep::users`]), so a key disabled or deleted through another gateway on the
//! same PostgreSQL database is refused here within that bound. Keys from the configuration
//! file are not here: they belong to [`DEFAULT_USER`] and change only with the file.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::datapath::codec::MasterKey;
use crate::meta::{Bucket, KeyGrant, MetaError, MetadataStore, StoredKey, Usage, User, Versioning};

/// The user the configuration file's keys and buckets without an owner belong to.
pub const DEFAULT_USER: &str = "default";

/// How often the view is rebuilt from the store (changes made through another gateway
/// take effect here within this).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(2);

/// How often usage is recounted from the store; between counts this gateway adds what it
/// writes, so gateways sharing a database may overshoot a quota by what the others write
/// within this.
pub const USAGE_INTERVAL: Duration = Duration::from_secs(10);

/// Longest user id and access key id accepted.
const MAX_ID_LEN: usize = 64;
/// Shortest secret key accepted when one is given.
const MIN_SECRET_LEN: usize = 16;
const MAX_SECRET_LEN: usize = 128;
/// Grants one key may hold.
const MAX_GRANTS: usize = 100;
const MAX_DISPLAY_NAME_LEN: usize = 256;

/// Why a change was refused; each names the problem (the admin API's status by kind).
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// Another user's: refused whatever the state.
    #[error("{0}")]
    NotYours(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = UsersError> = std::result::Result<T, E>;

/// An active key as the S3 authentication sees it.
#[derive(Clone)]
pub struct ActiveKey {
    pub secret: String,
    pub user: String,
    pub grants: Vec<KeyGrant>,
}

impl std::fmt::Debug for ActiveKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveKey")
            .field("user", &self.user)
            .field("grants", &self.grants)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct View {
    users: BTreeMap<String, User>,
    /// Active keys only, secrets opened.
    active: HashMap<String, ActiveKey>,
    /// By bucket owner ([`DEFAULT_USER`] for buckets without one), as last counted plus
    /// what this gateway wrote since.
    usage: BTreeMap<String, Usage>,
}

/// A key as the admin API lists it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    pub access_key: String,
    pub user: String,
    /// `bucket:r`, `bucket:w` or `bucket:rw` (`*`: every bucket).
    pub grants: Vec<String>,
    /// `active` or `disabled`.
    pub state: String,
    /// `api` (made at runtime) or `config` (the configuration file's; not changed here).
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated: Option<i64>,
}

impl KeyInfo {
    fn of(k: &StoredKey) -> Self {
        KeyInfo {
            access_key: k.access_key.clone(),
            user: k.user.clone(),
            grants: k.grants.iter().map(grant_text).collect(),
            state: if k.active { "active" } else { "disabled" }.into(),
            source: "api".into(),
            created: Some(k.created),
            rotated: Some(k.rotated),
        }
    }
}

/// A key with its secret: the one answer that shows it (create, rotate).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedKey {
    #[serde(flatten)]
    pub key: KeyInfo,
    /// Absent when an idempotent create found the key already there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
}

/// A user with what its buckets hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInfo {
    pub id: String,
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_objects: Option<u64>,
    pub bytes: u64,
    pub objects: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
}

/// What creating a key asks for (`POST /admin/v1/keys`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyRequest {
    pub user: String,
    /// Given by the operator for an idempotent create; generated when absent.
    #[serde(default)]
    pub access_key: Option<String>,
    /// Given by the operator (a Secret it keeps); generated when absent.
    #[serde(default)]
    pub secret_key: Option<String>,
    /// `bucket:r|w|rw`, as the configuration file's grants (`*`: every bucket); at least one.
    #[serde(default)]
    pub grants: Vec<String>,
}

/// What creating or changing a user asks for (`PUT /admin/v1/users/{id}`). A field left out
/// keeps what the user has; a quota given as `null` is removed (JSON merge-patch's rule), which
/// is how a BucketClaim whose quota was taken away lifts it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserRequest {
    #[serde(default)]
    pub display_name: Option<String>,
    /// `None`: keep; `Some(None)`: no limit; `Some(Some(n))`: at most `n` bytes.
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_bytes: Option<Option<u64>>,
    /// `None`: keep; `Some(None)`: no limit; `Some(Some(n))`: at most `n` objects.
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_objects: Option<Option<u64>>,
}

/// A field that is present, `null` included: `Some(None)` for `null` (absent stays `None`
/// through `#[serde(default)]`).
fn given<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

/// `bucket:rw` from a grant.
pub fn grant_text(g: &KeyGrant) -> String {
    let access = match (g.read, g.write) {
        (true, true) => "rw",
        (true, false) => "r",
        (false, true) => "w",
        (false, false) => "-",
    };
    format!("{}:{access}", g.bucket)
}

/// A grant from `bucket:r`, `bucket:w` or `bucket:rw` (`bucket` alone: read and write).
pub fn parse_grant(text: &str) -> Result<KeyGrant> {
    let (bucket, access) = text.rsplit_once(':').unwrap_or((text, "rw"));
    let (read, write) = match access {
        "r" | "read" => (true, false),
        "w" | "write" => (false, true),
        "rw" | "readwrite" | "wr" => (true, true),
        other => {
            return Err(UsersError::Invalid(format!(
                "grant {text:?}: access {other:?} is not r, w or rw"
            )));
        }
    };
    let valid_bucket = bucket == "*"
        || (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !valid_bucket {
        return Err(UsersError::Invalid(format!(
            "grant {text:?}: {bucket:?} is not a bucket name (3-63 of a-z 0-9 . -) or *"
        )));
    }
    Ok(KeyGrant {
        bucket: bucket.to_owned(),
        read,
        write,
    })
}

fn check_id(what: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(UsersError::Invalid(format!(
            "{what} {id:?}: use 1 to {MAX_ID_LEN} of A-Z a-z 0-9 . _ -"
        )))
    }
}

/// Random text of `len` characters from `alphabet`.
fn random_text(len: usize, alphabet: &[u8]) -> Result<String> {
    let rng = SystemRandom::new();
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        rng.fill(&mut buf)
            .map_err(|_| UsersError::Internal("the system random generator failed".into()))?;
        // Rejection sampling keeps every character equally likely.
        let limit = 256 - 256 % alphabet.len();
        for b in buf {
            if usize::from(b) < limit && out.len() < len {
                out.push(char::from(alphabet[usize::from(b) % alphabet.len()]));
            }
        }
    }
    Ok(out)
}

const UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const SECRET_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The record id a key's secret is sealed under: a sealed secret opens only as its own key's.
fn secret_record(access_key: &str) -> String {
    format!("sublet-access-key-secret-{access_key}")
}

/// Users, keys and usage; see the module documentation.
pub struct Accounts {
    meta: Arc<dyn MetadataStore>,
    master: Arc<MasterKey>,
    view: RwLock<Arc<View>>,
    /// Access keys of the configuration file (with their grants as `bucket:rw` text), which
    /// the API neither makes nor changes.
    config_keys: RwLock<BTreeMap<String, Vec<String>>>,
    /// Serializes this gateway's changes (read-check-write); gateways sharing a database
    /// rely on the stores' upserts being whole rows.
    changes: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts").finish_non_exhaustive()
    }
}

impl Accounts {
    pub fn new(meta: Arc<dyn MetadataStore>, master: Arc<MasterKey>) -> Self {
        Accounts {
            meta,
            master,
            view: RwLock::default(),
            config_keys: RwLock::default(),
            changes: std::sync::Mutex::new(()),
        }
    }

    /// Names the configuration file's access keys and their grants (keys the API lists but
    /// refuses to make or change).
    pub fn set_config_keys(&self, keys: impl IntoIterator<Item = (String, Vec<String>)>) {
        *self
            .config_keys
            .write()
            .unwrap_or_else(PoisonError::into_inner) = keys.into_iter().collect();
    }

    fn is_config_key(&self, access_key: &str) -> bool {
        self.config_keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(access_key)
    }

    fn view(&self) -> Arc<View> {
        Arc::clone(&self.view.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Rebuilds the view's users and active keys (secrets opened) from the store; usage
    /// stays as counted. A key whose secret does not open under the master key is left
    /// out and reported.
    pub fn reload(&self) -> Result<()> {
        let users = self.meta.users()?;
        let keys = self.meta.keys()?;
        let mut active = HashMap::new();
        for k in keys.into_iter().filter(|k| k.active) {
            match self.open_secret(&k) {
                Ok(secret) => {
                    active.insert(
                        k.access_key.clone(),
                        ActiveKey {
                            secret,
                            user: k.user,
                            grants: k.grants,
                        },
                    );
                }
                Err(e) => {
                    crate::metrics::count_forged_metadata("access_key");
                    tracing::warn!(access_key = %k.access_key, error = %e, "an access key's secret does not open under the master key; the key is refused");
                }
            }
        }
        let users = users.into_iter().map(|u| (u.id.clone(), u)).collect();
        self.swap(|v| View {
            users,
            active,
            usage: v.usage.clone(),
        });
        Ok(())
    }

    /// Counts what every user's buckets hold (an aggregate over the versions: run every
    /// [`USAGE_INTERVAL`], not per request).
    pub fn recount(&self) -> Result<()> {
        let mut usage = BTreeMap::new();
        for (owner, u) in self.meta.user_usage()? {
            let owner = if owner.is_empty() {
                DEFAULT_USER.to_owned()
            } else {
                owner
            };
            let entry: &mut Usage = usage.entry(owner).or_default();
            entry.objects += u.objects;
            entry.bytes += u.bytes;
        }
        self.swap(|v| View {
            users: v.users.clone(),
            active: v.active.clone(),
            usage,
        });
        Ok(())
    }

    /// Replaces the view with what `make` builds from the current one.
    fn swap(&self, make: impl FnOnce(&View) -> View) {
        let mut guard = self.view.write().unwrap_or_else(PoisonError::into_inner);
        *guard = Arc::new(make(&guard));
    }

    fn open_secret(&self, k: &StoredKey) -> Result<String> {
        let blob = hex::decode(&k.sealed_secret)
            .map_err(|e| UsersError::Internal(format!("sealed secret is not hex: {e}")))?;
        let plain = self
            .master
            .open_record(&secret_record(&k.access_key), &blob)
            .map_err(|e| UsersError::Internal(e.to_string()))?;
        String::from_utf8(plain).map_err(|_| UsersError::Internal("secret is not UTF-8".into()))
    }

    fn seal_secret(&self, access_key: &str, secret: &str) -> Result<String> {
        let sealed = self
            .master
            .seal_record(&secret_record(access_key), secret.as_bytes())
            .map_err(|e| UsersError::Internal(e.to_string()))?;
        Ok(hex::encode(sealed))
    }

    /// The active runtime key `access_key`, if there is one.
    pub fn lookup(&self, access_key: &str) -> Option<ActiveKey> {
        self.view().active.get(access_key).cloned()
    }

    /// Refuses a write of `bytes` more bytes and `objects` more objects into a bucket of
    /// `owner` (`None`: the default user) when it would pass the owner's quota. Usage is
    /// as last counted plus what this gateway wrote since, so gateways sharing a database
    /// may overshoot by what they write within one [`USAGE_INTERVAL`].
    pub fn check_quota(
        &self,
        owner: Option<&str>,
        bytes: u64,
        objects: u64,
    ) -> crate::error::Result<()> {
        let owner = owner.unwrap_or(DEFAULT_USER);
        let view = self.view();
        let Some(user) = view.users.get(owner) else {
            return Ok(());
        };
        let used = view.usage.get(owner).copied().unwrap_or_default();
        if let Some(max) = user.max_bytes
            && used.bytes.saturating_add(bytes) > max
        {
            return Err(crate::error::Error::QuotaExceeded(format!(
                "user {owner} is over its quota of {max} bytes: its buckets hold {} bytes and \
                 this write adds {bytes}; delete objects or raise the quota \
                 (sublet user create {owner} --max-bytes N)",
                used.bytes
            )));
        }
        if let Some(max) = user.max_objects
            && used.objects.saturating_add(objects) > max
        {
            return Err(crate::error::Error::QuotaExceeded(format!(
                "user {owner} is over its quota of {max} objects: its buckets hold {} objects; \
                 delete objects or raise the quota (sublet user create {owner} --max-objects N)",
                used.objects
            )));
        }
        Ok(())
    }

    /// Counts a committed write into `owner`'s usage until the next count.
    pub fn record_write(&self, owner: Option<&str>, bytes: u64, objects: u64) {
        let owner = owner.unwrap_or(DEFAULT_USER).to_owned();
        self.swap(|v| {
            let mut usage = v.usage.clone();
            let entry = usage.entry(owner).or_default();
            entry.bytes = entry.bytes.saturating_add(bytes);
            entry.objects = entry.objects.saturating_add(objects);
            View {
                users: v.users.clone(),
                active: v.active.clone(),
                usage,
            }
        });
    }

    /// Usage by owner, as last counted (plus this gateway's writes since).
    pub fn usage(&self) -> BTreeMap<String, Usage> {
        self.view().usage.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.changes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn user_info(view: &View, u: &User) -> UserInfo {
        let used = view.usage.get(&u.id).copied().unwrap_or_default();
        UserInfo {
            id: u.id.clone(),
            display_name: u.display_name.clone(),
            max_bytes: u.max_bytes,
            max_objects: u.max_objects,
            bytes: used.bytes,
            objects: used.objects,
            created: Some(u.created),
        }
    }

    /// The display name of user `id` as the in-memory view knows it (`None`: no such
    /// user); the default user is always known. For S3 answers naming owners and grantees.
    pub fn display_name(&self, id: &str) -> Option<String> {
        match self.view().users.get(id) {
            Some(u) => Some(u.display_name.clone()),
            None => (id == DEFAULT_USER).then(|| DEFAULT_USER.to_owned()),
        }
    }

    /// Every user with its usage; the default user first.
    pub fn users(&self) -> Result<Vec<UserInfo>> {
        self.reload()?;
        self.recount()?;
        let view = self.view();
        let mut out = Vec::new();
        if !view.users.contains_key(DEFAULT_USER) {
            let used = view.usage.get(DEFAULT_USER).copied().unwrap_or_default();
            out.push(UserInfo {
                id: DEFAULT_USER.into(),
                display_name: "the configuration file's keys".into(),
                max_bytes: None,
                max_objects: None,
                bytes: used.bytes,
                objects: used.objects,
                created: None,
            });
        }
        out.extend(view.users.values().map(|u| Self::user_info(&view, u)));
        Ok(out)
    }

    /// One user with its usage.
    pub fn user(&self, id: &str) -> Result<UserInfo> {
        self.users()?
            .into_iter()
            .find(|u| u.id == id)
            .ok_or_else(|| UsersError::NotFound(format!("user {id} does not exist")))
    }

    /// Creates or changes user `id` (what is not given stays); `true` when created.
    pub fn put_user(&self, id: &str, req: &UserRequest, now: i64) -> Result<(UserInfo, bool)> {
        check_id("user id", id)?;
        if let Some(name) = &req.display_name
            && name.len() > MAX_DISPLAY_NAME_LEN
        {
            return Err(UsersError::Invalid(format!(
                "displayName: at most {MAX_DISPLAY_NAME_LEN} bytes"
            )));
        }
        let _lock = self.lock();
        let existing = self.meta.users()?.into_iter().find(|u| u.id == id);
        let created = existing.is_none();
        let user = match existing {
            Some(u) => User {
                display_name: req.display_name.clone().unwrap_or(u.display_name),
                max_bytes: req.max_bytes.unwrap_or(u.max_bytes),
                max_objects: req.max_objects.unwrap_or(u.max_objects),
                ..u
            },
            None => User {
                id: id.to_owned(),
                display_name: req.display_name.clone().unwrap_or_else(|| id.to_owned()),
                max_bytes: req.max_bytes.flatten(),
                max_objects: req.max_objects.flatten(),
                created: now,
            },
        };
        self.meta.put_user(&user)?;
        self.reload()?;
        Ok((Self::user_info(&self.view(), &user), created))
    }

    /// Removes user `id`; refused while it has keys or owns buckets.
    pub fn delete_user(&self, id: &str) -> Result<()> {
        let _lock = self.lock();
        if !self.meta.users()?.iter().any(|u| u.id == id) {
            return Err(UsersError::NotFound(format!("user {id} does not exist")));
        }
        let keys: Vec<String> = self
            .meta
            .keys()?
            .into_iter()
            .filter(|k| k.user == id)
            .map(|k| k.access_key)
            .collect();
        if !keys.is_empty() {
            return Err(UsersError::Conflict(format!(
                "user {id} still has access keys ({}); delete them first",
                keys.join(", ")
            )));
        }
        let owned: Vec<String> = self
            .meta
            .buckets()?
            .into_iter()
            .filter(|b| b.owner.as_deref() == Some(id))
            .map(|b| b.name)
            .collect();
        if !owned.is_empty() {
            return Err(UsersError::Conflict(format!(
                "user {id} still owns buckets ({}); delete them first",
                owned.join(", ")
            )));
        }
        self.meta.delete_user(id)?;
        self.reload()
    }

    /// Every key, the configuration file's included (never a secret); only `user`'s if given.
    pub fn keys(&self, user: Option<&str>) -> Result<Vec<KeyInfo>> {
        let mut out: Vec<KeyInfo> = self
            .config_keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(access, grants)| KeyInfo {
                access_key: access.clone(),
                user: DEFAULT_USER.into(),
                grants: grants.clone(),
                state: "active".into(),
                source: "config".into(),
                created: None,
                rotated: None,
            })
            .collect();
        out.extend(self.meta.keys()?.iter().map(KeyInfo::of));
        out.retain(|k| user.is_none_or(|u| k.user == u));
        Ok(out)
    }

    fn stored_key(&self, access_key: &str) -> Result<StoredKey> {
        if self.is_config_key(access_key) {
            return Err(UsersError::Conflict(format!(
                "access key {access_key} comes from the configuration file: change it there \
                 (the file is read at every start, so a change made here would not last)"
            )));
        }
        self.meta
            .keys()?
            .into_iter()
            .find(|k| k.access_key == access_key)
            .ok_or_else(|| UsersError::NotFound(format!("access key {access_key} does not exist")))
    }

    /// Creates a key. With a given access key that exists already for the same user and
    /// grants (and secret, if given) it answers that key without a secret: creating twice
    /// is harmless (what the operator needs); otherwise it is refused.
    pub fn create_key(&self, req: &KeyRequest, now: i64) -> Result<(IssuedKey, bool)> {
        check_id("user", &req.user)?;
        if req.grants.len() > MAX_GRANTS {
            return Err(UsersError::Invalid(format!(
                "at most {MAX_GRANTS} grants per key"
            )));
        }
        // No implicit "every bucket": that would include other users' buckets.
        if req.grants.is_empty() {
            return Err(UsersError::Invalid(
                "grants: give at least one (bucket:r, bucket:w or bucket:rw; *:rw is every \
                 bucket, other users' included)"
                    .into(),
            ));
        }
        let grants = req
            .grants
            .iter()
            .map(|g| parse_grant(g))
            .collect::<Result<Vec<_>>>()?;
        if let Some(secret) = &req.secret_key
            && !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&secret.len())
        {
            return Err(UsersError::Invalid(format!(
                "secretKey: {MIN_SECRET_LEN} to {MAX_SECRET_LEN} characters"
            )));
        }
        let _lock = self.lock();
        if !self.meta.users()?.iter().any(|u| u.id == req.user) {
            return Err(UsersError::NotFound(format!(
                "user {} does not exist; create it first (sublet user create {})",
                req.user, req.user
            )));
        }
        let access_key = match &req.access_key {
            Some(a) => {
                check_id("access key", a)?;
                if a.len() < 3 {
                    return Err(UsersError::Invalid(format!(
                        "access key {a:?}: at least 3 characters"
                    )));
                }
                a.clone()
            }
            None => format!("SK{}", random_text(18, UPPER_DIGITS)?),
        };
        if self.is_config_key(&access_key) {
            return Err(UsersError::Conflict(format!(
                "access key {access_key} is one of the configuration file's"
            )));
        }
        if let Some(existing) = self
            .meta
            .keys()?
            .into_iter()
            .find(|k| k.access_key == access_key)
        {
            let same_secret = req
                .secret_key
                .as_ref()
                .is_none_or(|s| self.open_secret(&existing).is_ok_and(|e| &e == s));
            if existing.user == req.user && existing.grants == grants && same_secret {
                return Ok((
                    IssuedKey {
                        key: KeyInfo::of(&existing),
                        secret_key: None,
                    },
                    false,
                ));
            }
            return Err(UsersError::Conflict(format!(
                "access key {access_key} exists already with another user, grants or secret"
            )));
        }
        let secret = match &req.secret_key {
            Some(s) => s.clone(),
            None => random_text(40, SECRET_CHARS)?,
        };
        let key = StoredKey {
            sealed_secret: self.seal_secret(&access_key, &secret)?,
            access_key,
            user: req.user.clone(),
            grants,
            active: true,
            created: now,
            rotated: now,
        };
        self.meta.put_key(&key)?;
        self.reload()?;
        Ok((
            IssuedKey {
                key: KeyInfo::of(&key),
                secret_key: Some(secret),
            },
            true,
        ))
    }

    /// Gives `access_key` a new secret; the old one is refused from then on.
    pub fn rotate_key(&self, access_key: &str, now: i64) -> Result<IssuedKey> {
        let _lock = self.lock();
        let key = self.stored_key(access_key)?;
        let secret = random_text(40, SECRET_CHARS)?;
        let key = StoredKey {
            sealed_secret: self.seal_secret(access_key, &secret)?,
            rotated: now,
            ..key
        };
        self.meta.put_key(&key)?;
        self.reload()?;
        Ok(IssuedKey {
            key: KeyInfo::of(&key),
            secret_key: Some(secret),
        })
    }

    /// Enables or disables `access_key`.
    pub fn set_key_active(&self, access_key: &str, active: bool) -> Result<KeyInfo> {
        let _lock = self.lock();
        let key = StoredKey {
            active,
            ..self.stored_key(access_key)?
        };
        self.meta.put_key(&key)?;
        self.reload()?;
        Ok(KeyInfo::of(&key))
    }

    /// Removes `access_key`.
    pub fn delete_key(&self, access_key: &str) -> Result<()> {
        let _lock = self.lock();
        self.stored_key(access_key)?;
        self.meta.delete_key(access_key)?;
        self.reload()
    }

    /// Makes bucket `name` belong to user `owner` (what a Kubernetes BucketClaim asks):
    /// creates it with `default_plan` (`true`), or answers it when it exists already and is
    /// `owner`'s (`false`; a plan given is then set). A bucket of anyone else, the default
    /// user included, is refused and never taken over. The caller checks that the plan exists.
    pub fn claim_bucket(
        &self,
        name: &str,
        owner: &str,
        default_plan: Option<&str>,
        now: i64,
    ) -> Result<(Bucket, bool)> {
        check_bucket_name(name)?;
        check_id("owner", owner)?;
        let _lock = self.lock();
        if !self.meta.users()?.iter().any(|u| u.id == owner) {
            return Err(UsersError::NotFound(format!(
                "user {owner} does not exist; create it first"
            )));
        }
        if let Some(existing) = self.meta.bucket(name)? {
            return match existing.owner.as_deref() {
                Some(o) if o == owner => {
                    if default_plan.is_some() && existing.default_plan.as_deref() != default_plan {
                        self.meta.set_bucket_plan(name, default_plan)?;
                    }
                    Ok((
                        Bucket {
                            default_plan: default_plan.map(str::to_owned).or(existing.default_plan),
                            ..existing
                        },
                        false,
                    ))
                }
                other => Err(UsersError::Conflict(format!(
                    "bucket {name} exists and belongs to user {}; choose another name",
                    other.unwrap_or(DEFAULT_USER)
                ))),
            };
        }
        let bucket = Bucket {
            name: name.to_owned(),
            created: now,
            default_plan: default_plan.map(str::to_owned),
            versioning: Versioning::Unversioned,
            owner: Some(owner.to_owned()),
        };
        self.meta.create_bucket(&bucket)?;
        Ok((bucket, true))
    }

    /// Deletes bucket `name` if it belongs to `owner`: refused (conflict) while it holds
    /// objects, versions or uploads, as S3's DeleteBucket is, or when another user owns it.
    pub fn delete_owned_bucket(&self, name: &str, owner: &str) -> Result<()> {
        let _lock = self.lock();
        let Some(existing) = self.meta.bucket(name)? else {
            return Err(UsersError::NotFound(format!(
                "bucket {name} does not exist"
            )));
        };
        if existing.owner.as_deref() != Some(owner) {
            return Err(UsersError::NotYours(format!(
                "bucket {name} belongs to user {}, not {owner}; it was left alone",
                existing.owner.as_deref().unwrap_or(DEFAULT_USER)
            )));
        }
        match self.meta.delete_bucket(name) {
            Err(MetaError::BucketNotEmpty(_)) => Err(UsersError::Conflict(format!(
                "bucket {name} is not empty: delete its objects (every version) and uploads first"
            ))),
            other => Ok(other?),
        }
    }
}

/// S3's bucket name rule as far as the gateway keeps it: 3 to 63 of `a-z 0-9 . -`,
/// starting and ending with a letter or digit.
fn check_bucket_name(name: &str) -> Result<()> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(UsersError::Invalid(format!(
            "bucket name {name:?}: use 3 to 63 of a-z 0-9 . - starting and ending with a letter or digit"
        )))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::meta::SqliteStore;

    fn accounts() -> Accounts {
        let meta: Arc<dyn MetadataStore> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let master = Arc::new(MasterKey::from_bytes(&[7; 32]));
        Accounts::new(meta, master)
    }

    fn key_request(user: &str, grants: &[&str]) -> KeyRequest {
        KeyRequest {
            user: user.into(),
            grants: grants.iter().map(|g| g.to_string()).collect(),
            ..KeyRequest::default()
        }
    }

    #[test]
    fn a_claimed_bucket_is_created_once_and_never_taken_from_another_user() {
        let a = accounts();
        assert!(matches!(
            a.claim_bucket("photos", "alice", None, 1),
            Err(UsersError::NotFound(_))
        ));
        a.put_user("alice", &UserRequest::default(), 1).unwrap();
        a.put_user("bob", &UserRequest::default(), 1).unwrap();
        let (b, created) = a
            .claim_bucket("photos", "alice", Some("archive"), 5)
            .unwrap();
        assert!(created);
        assert_eq!(b.owner.as_deref(), Some("alice"));
        assert_eq!(b.default_plan.as_deref(), Some("archive"));
        // A second pass (a lost answer retried) finds it, unchanged.
        let (again, created) = a.claim_bucket("photos", "alice", None, 9).unwrap();
        assert!(!created);
        assert_eq!(again.created, 5);
        assert_eq!(again.default_plan.as_deref(), Some("archive"));
        let e = a.claim_bucket("photos", "bob", None, 9).unwrap_err();
        assert!(matches!(e, UsersError::Conflict(_)), "{e}");
        assert!(e.to_string().contains("belongs to user alice"), "{e}");
        // A bucket of the configuration file's keys (no owner) is the default user's.
        a.meta
            .create_bucket(&Bucket {
                name: "shared".into(),
                created: 1,
                default_plan: None,
                versioning: Versioning::Unversioned,
                owner: None,
            })
            .unwrap();
        let e = a.claim_bucket("shared", "alice", None, 9).unwrap_err();
        assert!(e.to_string().contains("belongs to user default"), "{e}");
        assert_eq!(a.meta.bucket("shared").unwrap().unwrap().owner, None);
        let e = a.claim_bucket("Bad_Name", "alice", None, 9).unwrap_err();
        assert!(matches!(e, UsersError::Invalid(_)), "{e}");
    }

    #[test]
    fn an_owned_bucket_is_deleted_only_by_its_owner_and_only_when_empty() {
        let a = accounts();
        a.put_user("alice", &UserRequest::default(), 1).unwrap();
        a.claim_bucket("photos", "alice", None, 1).unwrap();
        let e = a.delete_owned_bucket("photos", "bob").unwrap_err();
        assert!(matches!(e, UsersError::NotYours(_)), "{e}");
        assert!(e.to_string().contains("belongs to user alice"), "{e}");
        // A delete marker is enough: S3 refuses to delete a bucket with any version.
        a.meta
            .put_version(&crate::meta::ObjectVersion {
                bucket: "photos".into(),
                key: "k".into(),
                version_id: "v1".into(),
                delete_marker: true,
                size: 0,
                etag: String::new(),
                content_type: None,
                user_metadata: BTreeMap::new(),
                last_modified: 1,
                plan: "p".into(),
                layout: None,
                attrs: Default::default(),
            })
            .unwrap();
        let e = a.delete_owned_bucket("photos", "alice").unwrap_err();
        assert!(matches!(e, UsersError::Conflict(_)), "{e}");
        assert!(e.to_string().contains("is not empty"), "{e}");
        assert!(a.meta.bucket("photos").unwrap().is_some());
        a.claim_bucket("empty", "alice", None, 1).unwrap();
        a.delete_owned_bucket("empty", "alice").unwrap();
        assert!(a.meta.bucket("empty").unwrap().is_none());
        assert!(matches!(
            a.delete_owned_bucket("empty", "alice"),
            Err(UsersError::NotFound(_))
        ));
    }

    #[test]
    fn grants_parse_like_the_configuration_files() {
        let g = parse_grant("photos:r").unwrap();
        assert!(g.read && !g.write && g.bucket == "photos");
        assert!(parse_grant("photos:rw").unwrap().write);
        assert!(parse_grant("*:w").unwrap().write);
        assert_eq!(grant_text(&parse_grant("photos").unwrap()), "photos:rw");
        let e = parse_grant("photos:x").unwrap_err().to_string();
        assert!(e.contains("access \"x\" is not r, w or rw"), "{e}");
        let e = parse_grant("Bad_Bucket:r").unwrap_err().to_string();
        assert!(e.contains("is not a bucket name"), "{e}");
    }

    #[test]
    fn keys_are_issued_looked_up_rotated_disabled_and_deleted() {
        let a = accounts();
        assert!(matches!(
            a.create_key(&key_request("alice", &["*:rw"]), 1),
            Err(UsersError::NotFound(_))
        ));
        a.put_user("alice", &UserRequest::default(), 1).unwrap();
        let (issued, created) = a
            .create_key(&key_request("alice", &["photos:r"]), 2)
            .unwrap();
        assert!(created);
        let access = issued.key.access_key.clone();
        let secret = issued.secret_key.clone().unwrap();
        assert_eq!(access.len(), 20);
        assert_eq!(secret.len(), 40);
        let found = a.lookup(&access).unwrap();
        assert_eq!(found.secret, secret);
        assert_eq!(found.user, "alice");
        // The store holds the secret sealed, never in the clear.
        let stored = a.meta.keys().unwrap();
        assert!(!stored[0].sealed_secret.contains(&hex::encode(&secret)));
        assert!(!stored[0].sealed_secret.contains(&secret));

        let rotated = a.rotate_key(&access, 3).unwrap();
        let new_secret = rotated.secret_key.unwrap();
        assert_ne!(new_secret, secret);
        assert_eq!(a.lookup(&access).unwrap().secret, new_secret);

        a.set_key_active(&access, false).unwrap();
        assert!(a.lookup(&access).is_none(), "a disabled key is refused");
        assert_eq!(a.keys(None).unwrap()[0].state, "disabled");
        a.set_key_active(&access, true).unwrap();
        assert!(a.lookup(&access).is_some());

        assert!(matches!(
            a.delete_user("alice"),
            Err(UsersError::Conflict(_))
        ));
        a.delete_key(&access).unwrap();
        assert!(a.lookup(&access).is_none());
        assert!(matches!(
            a.delete_key(&access),
            Err(UsersError::NotFound(_))
        ));
        a.delete_user("alice").unwrap();
    }

    #[test]
    fn a_key_without_grants_is_refused_rather_than_given_every_bucket() {
        let a = accounts();
        a.put_user("alice", &UserRequest::default(), 1).unwrap();
        let e = a.create_key(&key_request("alice", &[]), 1).unwrap_err();
        assert!(matches!(e, UsersError::Invalid(_)), "{e}");
        assert!(e.to_string().contains("give at least one"), "{e}");
        assert!(a.meta.keys().unwrap().is_empty());
    }

    #[test]
    fn creating_a_given_key_twice_is_harmless_and_a_different_one_is_refused() {
        let a = accounts();
        a.put_user("alice", &UserRequest::default(), 1).unwrap();
        a.put_user("bob", &UserRequest::default(), 1).unwrap();
        let req = KeyRequest {
            access_key: Some("OPERATORKEY1".into()),
            secret_key: Some("a-secret-of-enough-length".into()),
            ..key_request("alice", &["photos:rw"])
        };
        assert!(a.create_key(&req, 1).unwrap().1);
        let (again, created) = a.create_key(&req, 2).unwrap();
        assert!(!created);
        assert!(again.secret_key.is_none());
        let other_user = KeyRequest {
            user: "bob".into(),
            ..req.clone()
        };
        assert!(matches!(
            a.create_key(&other_user, 3),
            Err(UsersError::Conflict(_))
        ));
        let other_secret = KeyRequest {
            secret_key: Some("another-secret-of-length".into()),
            ..req
        };
        assert!(matches!(
            a.create_key(&other_secret, 3),
            Err(UsersError::Conflict(_))
        ));
    }

    #[test]
    fn configuration_keys_cannot_be_made_or_changed_through_the_api() {
        let a = accounts();
        a.set_config_keys([("admin".to_string(), vec!["*:rw".to_string()])]);
        a.put_user("alice", &UserRequest::default(), 1).unwrap();
        let req = KeyRequest {
            access_key: Some("admin".into()),
            ..key_request("alice", &["*:rw"])
        };
        let e = a.create_key(&req, 1).unwrap_err().to_string();
        assert!(e.contains("configuration file"), "{e}");
        for e in [
            a.delete_key("admin").unwrap_err(),
            a.set_key_active("admin", false).unwrap_err(),
            a.rotate_key("admin", 1).map(|_| ()).unwrap_err(),
        ] {
            assert!(matches!(e, UsersError::Conflict(_)), "{e}");
            assert!(e.to_string().contains("would not last"), "{e}");
        }
        let keys = a.keys(None).unwrap();
        assert_eq!(keys[0].access_key, "admin");
        assert_eq!(keys[0].source, "config");
        assert_eq!(keys[0].grants, ["*:rw"]);
    }

    #[test]
    fn a_secret_sealed_for_one_key_does_not_open_as_another() {
        let a = accounts();
        a.put_user("alice", &UserRequest::default(), 1).unwrap();
        let (issued, _) = a.create_key(&key_request("alice", &["*:rw"]), 1).unwrap();
        let mut stolen = a.meta.keys().unwrap()[0].clone();
        stolen.access_key = "THIEF".into();
        a.meta.put_key(&stolen).unwrap();
        a.reload().unwrap();
        assert!(a.lookup(&issued.key.access_key).is_some());
        assert!(a.lookup("THIEF").is_none());
    }

    #[test]
    fn quotas_refuse_writes_past_the_limit_naming_the_user_and_limit() {
        let a = accounts();
        let req = UserRequest {
            max_bytes: Some(Some(100)),
            max_objects: Some(Some(2)),
            ..UserRequest::default()
        };
        a.put_user("alice", &req, 1).unwrap();
        a.meta
            .create_bucket(&Bucket {
                name: "b".into(),
                created: 1,
                default_plan: None,
                versioning: Versioning::Unversioned,
                owner: Some("alice".into()),
            })
            .unwrap();
        a.check_quota(Some("alice"), 100, 1).unwrap();
        let e = a.check_quota(Some("alice"), 101, 1).unwrap_err();
        assert_eq!(
            e.s3_code(),
            s3s::S3ErrorCode::Custom("QuotaExceeded".into())
        );
        assert!(
            e.message()
                .contains("user alice is over its quota of 100 bytes"),
            "{}",
            e.message()
        );
        a.record_write(Some("alice"), 60, 1);
        a.record_write(Some("alice"), 10, 1);
        let e = a.check_quota(Some("alice"), 1, 1).unwrap_err();
        assert!(
            e.message().contains("quota of 2 objects"),
            "{}",
            e.message()
        );
        // Overwrites add no object.
        a.check_quota(Some("alice"), 30, 0).unwrap();
        // Users without a quota, and the default user, are not limited.
        a.check_quota(None, u64::MAX, 1).unwrap();
        a.check_quota(Some("nobody"), u64::MAX, 1).unwrap();
        // A recount counts what the store holds (nothing was committed here).
        a.recount().unwrap();
        a.check_quota(Some("alice"), 100, 2).unwrap();
    }

    #[test]
    fn a_quota_left_out_stays_and_a_null_quota_is_lifted() {
        let a = accounts();
        let body = |json: &str| serde_json::from_str::<UserRequest>(json).unwrap();
        a.put_user("alice", &body(r#"{"maxBytes": 100, "maxObjects": 2}"#), 1)
            .unwrap();
        // Left out: kept (the CLI changes one field at a time).
        let (user, created) = a
            .put_user("alice", &body(r#"{"displayName": "A"}"#), 2)
            .unwrap();
        assert!(!created);
        assert_eq!((user.max_bytes, user.max_objects), (Some(100), Some(2)));
        // Given: changed; null: removed, and writes are no longer limited.
        let (user, _) = a
            .put_user("alice", &body(r#"{"maxBytes": 50, "maxObjects": null}"#), 3)
            .unwrap();
        assert_eq!((user.max_bytes, user.max_objects), (Some(50), None));
        let (user, _) = a
            .put_user("alice", &body(r#"{"maxBytes": null}"#), 4)
            .unwrap();
        assert_eq!((user.max_bytes, user.max_objects), (None, None));
        a.check_quota(Some("alice"), u64::MAX, 1_000_000).unwrap();
        // A new user given null has no quota.
        let (user, created) = a
            .put_user("bob", &body(r#"{"maxBytes": null}"#), 5)
            .unwrap();
        assert!(created);
        assert_eq!(user.max_bytes, None);
        assert!(serde_json::from_str::<UserRequest>(r#"{"maxBytes": "lots"}"#).is_err());
    }
}
