//! Reads in flight: a GET streams a version's shards for as long as the client takes, while
//! an overwrite or a delete may remove that version meanwhile. Its shards are then freed when
//! the last read of it in this process ends, not at once, so the GET delivers every byte it
//! announced. (Reads through another gateway replica are not seen here.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::datapath::layout::Layout;
use crate::meta::ObjectVersion;

type VersionKey = (String, String, String);

fn key_of(v: &ObjectVersion) -> VersionKey {
    (v.bucket.clone(), v.key.clone(), v.version_id.clone())
}

#[derive(Default)]
struct Entry {
    readers: usize,
    /// Layouts removed while read, freed by the last reader.
    deferred: Vec<Layout>,
}

/// Versions being read, and the layouts waiting for their readers.
#[derive(Clone, Default)]
pub struct InFlight {
    entries: Arc<Mutex<HashMap<VersionKey, Entry>>>,
}

/// Held by a streaming read; dropping it (the stream ended or the client left) hands the
/// layouts freed meanwhile to `free`.
pub struct ReadGuard {
    entries: Arc<Mutex<HashMap<VersionKey, Entry>>>,
    key: VersionKey,
    free: Box<dyn Fn(Vec<Layout>) + Send + Sync>,
}

impl InFlight {
    /// Registers a read of `v`.
    pub fn start(
        &self,
        v: &ObjectVersion,
        free: Box<dyn Fn(Vec<Layout>) + Send + Sync>,
    ) -> ReadGuard {
        let key = key_of(v);
        self.lock().entry(key.clone()).or_default().readers += 1;
        ReadGuard {
            entries: Arc::clone(&self.entries),
            key,
            free,
        }
    }

    /// Takes `layout` of the removed version `v` to be freed when its reads end: `None` when
    /// nobody reads it (free it now), `Some` back otherwise.
    pub fn defer(&self, v: &ObjectVersion, layout: &Layout) -> bool {
        match self.lock().get_mut(&key_of(v)) {
            Some(entry) if entry.readers > 0 => {
                entry.deferred.push(layout.clone());
                true
            }
            _ => false,
        }
    }

    /// Versions read right now (for tests and debugging).
    pub fn reading(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<VersionKey, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        let due = {
            let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(entry) = entries.get_mut(&self.key) else {
                return;
            };
            entry.readers = entry.readers.saturating_sub(1);
            if entry.readers > 0 {
                return;
            }
            entries
                .remove(&self.key)
                .map(|e| e.deferred)
                .unwrap_or_default()
        };
        if !due.is_empty() {
            (self.free)(due);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::datapath::layout::{Encryption, Scheme};

    fn version(id: &str) -> ObjectVersion {
        ObjectVersion {
            bucket: "b".into(),
            key: "k".into(),
            version_id: id.into(),
            delete_marker: false,
            size: 0,
            etag: String::new(),
            content_type: None,
            user_metadata: Default::default(),
            last_modified: 0,
            plan: "p".into(),
            layout: None,
            attrs: Default::default(),
        }
    }

    fn layout() -> Layout {
        Layout {
            scheme: Scheme::Replicas { copies: 1 },
            encryption: Encryption::None,
            segment_size: 1,
            segments: Vec::new(),
            inline: None,
            parts: Vec::new(),
        }
    }

    #[test]
    fn removed_layouts_wait_for_the_last_reader() {
        let inflight = InFlight::default();
        let freed = Arc::new(Mutex::new(0));
        let counter = |freed: &Arc<Mutex<usize>>| {
            let freed = Arc::clone(freed);
            Box::new(move |l: Vec<Layout>| *freed.lock().unwrap() += l.len())
                as Box<dyn Fn(Vec<Layout>) + Send + Sync>
        };
        assert!(
            !inflight.defer(&version("v1"), &layout()),
            "nobody reads it"
        );
        let a = inflight.start(&version("v1"), counter(&freed));
        let b = inflight.start(&version("v1"), counter(&freed));
        assert!(inflight.defer(&version("v1"), &layout()));
        assert!(
            !inflight.defer(&version("v2"), &layout()),
            "another version"
        );
        drop(a);
        assert_eq!(*freed.lock().unwrap(), 0, "one reader left");
        drop(b);
        assert_eq!(*freed.lock().unwrap(), 1);
        assert_eq!(inflight.reading(), 0);
    }
}

/// Writes in flight in this process: shards stored on providers that no committed metadata
/// names yet (a PUT still streaming, a part or copy not yet recorded, a transition or
/// re-encode not yet switched in, a repair's rebuilt shards before the swap). Garbage
/// collection keeps every shard of them whatever its age: a write may take longer than any
/// fixed delay. Gateways sharing a metadata store also hold them there (`Node::start_write`,
/// `upkeep::audit::hold_writes_in_flight`), so each one's garbage collection keeps the
/// others' too.
#[derive(Clone)]
pub struct Writes {
    ids: Arc<Mutex<HashMap<String, usize>>>,
    /// This registry's name on the writes it holds in a shared store.
    holder: Arc<str>,
}

impl Default for Writes {
    fn default() -> Self {
        use rand::Rng;
        Writes {
            ids: Arc::default(),
            holder: format!(
                "{}-{:016x}",
                std::process::id(),
                rand::rng().random::<u64>()
            )
            .into(),
        }
    }
}

/// Held for as long as a write's shards may be unreferenced; dropping it ends the write.
pub struct WriteGuard {
    ids: Arc<Mutex<HashMap<String, usize>>>,
    id: String,
}

impl Writes {
    /// Registers the write whose shard ids start with `write_id` and a `.` (an object
    /// write's `<installation>_<uid>`), or end with `write_id` (a repair's `-r<suffix>`).
    pub fn start(&self, write_id: &str) -> WriteGuard {
        *self.lock().entry(write_id.to_owned()).or_default() += 1;
        WriteGuard {
            ids: Arc::clone(&self.ids),
            id: write_id.to_owned(),
        }
    }

    /// Whether `shard_id` belongs to a write in flight.
    pub fn holds(&self, shard_id: &str) -> bool {
        let ids = self.lock();
        let write = shard_id.split('.').next().unwrap_or(shard_id);
        let repair = shard_id
            .rfind("-r")
            .map_or("", |at| shard_id.get(at..).unwrap_or(""));
        ids.contains_key(write) || (!repair.is_empty() && ids.contains_key(repair))
    }

    /// The writes in flight now, detached from later starts and ends: garbage collection
    /// takes it before it reads which shards metadata references, so a write that ends
    /// in between is either still held here or committed (and referenced) by then.
    pub fn frozen(&self) -> Writes {
        Writes {
            ids: Arc::new(Mutex::new(self.lock().clone())),
            holder: Arc::clone(&self.holder),
        }
    }

    /// A frozen copy that also holds the writes `others` (those other gateways hold in a
    /// shared store).
    pub fn frozen_with(&self, others: impl IntoIterator<Item = String>) -> Writes {
        let frozen = self.frozen();
        {
            let mut ids = frozen.lock();
            for id in others {
                *ids.entry(id).or_default() += 1;
            }
        }
        frozen
    }

    /// The write ids in flight now.
    pub fn ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// This registry's name on the writes it holds in a shared store (unique per process and
    /// node).
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Writes in flight now.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.ids.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = ids.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                ids.remove(&self.id);
            }
        }
    }
}

impl std::fmt::Debug for WriteGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WriteGuard").field(&self.id).finish()
    }
}

#[cfg(test)]
mod write_tests {
    use super::*;

    #[test]
    fn a_write_holds_its_shards_until_its_guard_drops() {
        let writes = Writes::default();
        let put = writes.start("0123456789ab_u1");
        let repair = writes.start("-rq7");
        assert!(writes.holds("0123456789ab_u1.0.3"));
        assert!(writes.holds("0123456789ab_u0.2.1-rq7"));
        assert!(!writes.holds("0123456789ab_u2.0.3"));
        assert!(!writes.holds("0123456789ab_u0.2.1-rq8"));
        let again = writes.start("0123456789ab_u1");
        drop(put);
        assert!(
            writes.holds("0123456789ab_u1.0.0"),
            "one of two guards left"
        );
        let frozen = writes.frozen();
        drop((again, repair));
        assert!(frozen.holds("0123456789ab_u1.0.0"), "as it was when frozen");
        assert!(!writes.holds("0123456789ab_u1.0.0"));
        assert!(!writes.holds("0123456789ab_u0.2.1-rq7"));
        assert_eq!(writes.count(), 0);
    }

    #[test]
    fn another_gateways_writes_are_held_alongside_ours() {
        let writes = Writes::default();
        let _put = writes.start("0123456789ab_u1");
        let with = writes.frozen_with(["0123456789ab_u9".to_owned(), "-rq3".to_owned()]);
        assert!(with.holds("0123456789ab_u1.0.0"));
        assert!(with.holds("0123456789ab_u9.1.2"));
        assert!(with.holds("0123456789ab_u0.0.0-rq3"));
        assert!(!writes.holds("0123456789ab_u9.1.2"), "ours are ours only");
        assert_eq!(writes.ids(), vec!["0123456789ab_u1".to_owned()]);
        assert_ne!(writes.holder(), Writes::default().holder());
        assert_eq!(with.holder(), writes.holder());
    }
}
