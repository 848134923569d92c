//! A bucket's CORS rules as every cross-origin request reads them (preflights are not
//! signed, so anyone can send them): parsed once and kept for [`CORS_TTL`], dropped at once
//! when this gateway changes them. Another gateway on the same PostgreSQL store sees a
//! change within [`CORS_TTL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::meta::cors::CorsRule;

use super::Node;

/// How long a bucket's rules (or their absence) are kept before the store is asked again.
pub const CORS_TTL: Duration = Duration::from_secs(10);
/// Buckets whose rules are kept at most; past it the cache starts over (unsigned
/// preflights naming made-up buckets must not grow it without bound).
pub const CORS_CACHE_BUCKETS: usize = 10_000;

/// The rules of one bucket; `None`: no CORS configuration (or no such bucket).
pub type BucketCors = Option<Arc<Vec<CorsRule>>>;

#[derive(Default)]
pub struct CorsCache {
    entries: Mutex<HashMap<String, (Instant, BucketCors)>>,
}

impl CorsCache {
    fn get(&self, bucket: &str) -> Option<BucketCors> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(bucket)
            .filter(|(at, _)| at.elapsed() < CORS_TTL)
            .map(|(_, rules)| rules.clone())
    }

    fn put(&self, bucket: &str, rules: BucketCors) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CORS_CACHE_BUCKETS && !entries.contains_key(bucket) {
            entries.clear();
        }
        entries.insert(bucket.to_owned(), (Instant::now(), rules));
    }

    fn forget(&self, bucket: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(bucket);
    }
}

/// Parses stored rules; rules that no longer parse are a store fault, named.
fn parse(bucket: &str, json: &str) -> Result<Vec<CorsRule>> {
    serde_json::from_str(json).map_err(|e| {
        Error::internal(format!(
            "the stored CORS configuration of bucket {bucket} does not parse: {e}"
        ))
    })
}

impl Node {
    /// The CORS rules of `bucket`, from the cache when fresh.
    pub async fn cors_rules(&self, bucket: &str) -> Result<BucketCors> {
        if let Some(rules) = self.cors.get(bucket) {
            return Ok(rules);
        }
        let b = bucket.to_owned();
        let stored = match self.meta(move |m| m.bucket_cors(&b)).await {
            Ok(stored) => stored,
            Err(Error::Meta(crate::meta::MetaError::NoSuchBucket(_))) => None,
            Err(e) => return Err(e),
        };
        let rules = match stored {
            Some(json) => Some(Arc::new(parse(bucket, &json)?)),
            None => None,
        };
        self.cors.put(bucket, rules.clone());
        Ok(rules)
    }

    /// Stores (`Some`) or removes (`None`) the CORS rules of `bucket` (checked by the
    /// caller); fails with NoSuchBucket.
    pub async fn set_cors_rules(&self, bucket: &str, rules: Option<&[CorsRule]>) -> Result<()> {
        let json = rules
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| Error::internal(format!("encoding CORS rules: {e}")))?;
        let b = bucket.to_owned();
        let result = self
            .meta(move |m| m.set_bucket_cors(&b, json.as_deref()))
            .await;
        self.cors.forget(bucket);
        result
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_forgets_on_change_and_starts_over_when_full() {
        let cache = CorsCache::default();
        assert!(cache.get("b").is_none());
        cache.put("b", None);
        assert_eq!(cache.get("b"), Some(None));
        cache.forget("b");
        assert!(cache.get("b").is_none());
        for i in 0..CORS_CACHE_BUCKETS {
            cache.put(&format!("b{i}"), None);
        }
        assert!(cache.get("b0").is_some());
        cache.put("one-more", None);
        assert!(cache.get("b0").is_none());
        assert!(cache.get("one-more").is_some());
    }
}
