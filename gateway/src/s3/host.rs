//! Virtual-host-style addressing: which requests name their bucket in the `Host` header.
//!
//! With domains configured (`spec.s3.domains`), a request to `<bucket>.<domain>` is for
//! that bucket, its path the key. A request to a domain itself, to an IP address, or to
//! any other host is path style (`/bucket/key`), so clients that address the gateway by
//! address or by a name outside the domains keep working. s3s's own `MultiDomain` would
//! take any other host name as a bucket (CNAME addressing), which turned `localhost` and
//! every in-cluster Service name into a bucket.

use std::borrow::Cow;

use s3s::S3Result;
use s3s::host::{S3Host, VirtualHost};

/// The domains served with virtual-host-style addressing.
#[derive(Debug, Clone)]
pub struct VirtualHostDomains {
    domains: Vec<String>,
}

impl VirtualHostDomains {
    /// `domains` as validated by `StorageGatewaySpec::validate` (lowercase host names,
    /// none under another); `None` when there are none (path style only).
    pub fn new(domains: &[String]) -> Option<Self> {
        (!domains.is_empty()).then(|| VirtualHostDomains {
            domains: domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
        })
    }

    /// The bucket a `Host` header names, if it is `<bucket>.<domain>` (any port).
    pub fn bucket_of<'a>(&self, host: &'a str) -> Option<Cow<'a, str>> {
        // Host names compare without case; an IPv6 literal has no domain.
        let name = match host.rsplit_once(':') {
            Some((name, port))
                if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                name
            }
            _ => host,
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        self.domains.iter().find_map(|domain| {
            let prefix = name
                .len()
                .checked_sub(domain.len() + 1)
                .filter(|&at| name.is_char_boundary(at))
                .map(|at| name.split_at(at))?;
            let (bucket, rest) = prefix;
            let matches = rest
                .strip_prefix('.')
                .is_some_and(|d| d.eq_ignore_ascii_case(domain));
            (matches && !bucket.is_empty()).then(|| {
                if bucket.bytes().any(|b| b.is_ascii_uppercase()) {
                    Cow::Owned(bucket.to_ascii_lowercase())
                } else {
                    Cow::Borrowed(bucket)
                }
            })
        })
    }
}

impl S3Host for VirtualHostDomains {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        Ok(match self.bucket_of(host) {
            Some(bucket) => VirtualHost::new(host).with_bucket(bucket),
            None => VirtualHost::new(host),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn domains() -> VirtualHostDomains {
        VirtualHostDomains::new(&["s3.example.org".into(), "s3.local".into()]).unwrap()
    }

    #[test]
    fn buckets_are_named_by_a_subdomain_of_a_configured_domain() {
        let d = domains();
        let bucket = |host: &str| d.bucket_of(host).map(Cow::into_owned);
        assert_eq!(bucket("photos.s3.example.org").as_deref(), Some("photos"));
        assert_eq!(
            bucket("photos.s3.example.org:9000").as_deref(),
            Some("photos")
        );
        assert_eq!(bucket("Photos.S3.Example.org").as_deref(), Some("photos"));
        assert_eq!(bucket("photos.s3.example.org.").as_deref(), Some("photos"));
        // Bucket names with dots.
        assert_eq!(bucket("my.photos.s3.local").as_deref(), Some("my.photos"));
        // The domain itself, other hosts and addresses: path style.
        for host in [
            "s3.example.org",
            "s3.example.org:9000",
            ".s3.example.org",
            "photos.s3.example.org.evil.com",
            "photoss3.example.org",
            "example.org",
            "localhost:9000",
            "sublet-gateway.default.svc",
            "127.0.0.1:9000",
            "[::1]:9000",
            "",
        ] {
            assert_eq!(bucket(host), None, "{host}");
        }
        // Not a bucket name: s3s refuses it (InvalidBucketName).
        assert_eq!(bucket("é.s3.local").as_deref(), Some("é"));
        assert!(VirtualHostDomains::new(&[]).is_none());
    }

    #[test]
    fn s3s_gets_the_bucket_only_for_virtual_hosts() {
        let d = domains();
        let vh = d.parse_host_header("photos.s3.local:9000").unwrap();
        assert_eq!(vh.bucket(), Some("photos"));
        let vh = d.parse_host_header("s3.local:9000").unwrap();
        assert_eq!(vh.bucket(), None);
        let vh = d.parse_host_header("gateway.internal").unwrap();
        assert_eq!(vh.bucket(), None);
    }
}
