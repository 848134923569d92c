//! TLS to the metadata database: the connector is `sublet_pg::tls` (through the pool,
//! shared with the market: libpq-style `sslmode` and `sslrootcert` in the URL); this holds
//! the store's test of it.

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn the_store_speaks_tls_only_to_a_server_it_can_verify() {
        use crate::meta::{Bucket, MetadataStore, PostgresStore, Versioning};
        let Some((url, ca)) = crate::meta::test_postgres::tls_database() else {
            return;
        };
        // The server refuses plain TCP; without sslmode the store does not try TLS.
        let plain = PostgresStore::open(&url).unwrap_err().to_string();
        assert!(plain.contains("no encryption"), "{plain}");
        // TLS to a server whose CA is not trusted (not among the system's roots) fails.
        let untrusted = PostgresStore::open(&format!("{url}?sslmode=require"))
            .unwrap_err()
            .to_string();
        assert!(
            untrusted.contains("TLS handshake") && untrusted.contains("certificate"),
            "{untrusted}"
        );
        // Trusting its CA: connected, the tables made, a bucket written and read back.
        let store = PostgresStore::open(&format!(
            "{url}?sslmode=verify-full&sslrootcert={}",
            ca.display()
        ))
        .unwrap();
        assert!(format!("{store:?}").contains("tls: true"), "{store:?}");
        let bucket = Bucket {
            name: "over-tls".into(),
            created: 1,
            default_plan: None,
            versioning: Versioning::Unversioned,
            owner: None,
        };
        store.create_bucket(&bucket).unwrap();
        assert_eq!(store.bucket("over-tls").unwrap(), Some(bucket));
    }
}
