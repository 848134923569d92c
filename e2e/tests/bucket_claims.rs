//! The calls the operator makes for a BucketClaim (`sublet_operator::admin::HttpAdmin`)
//! against a real `sublet serve`: user, bucket and key made and made again harmlessly, the
//! user's quota changed and lifted as the claim's is, a bucket of another user refused, a
//! key with another secret told apart, a bucket holding an object kept on deletion and
//! deleted once empty, the user kept while it owns a bucket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sublet_e2e::bench::client::BenchBody;
use sublet_e2e::cluster::{ADMIN_TOKEN, Cluster, test_objects};
use sublet_operator::admin::{
    AdminAccess, AdminApi, BucketAnswer, BucketRemoval, ClaimUser, HttpAdmin, KeyAnswer,
};

const PLAN: &str = r#"
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {name: standard}
spec:
  redundancy: {erasure: {dataShards: 2, parityShards: 1}}
  segmentSize: 64Ki
  placement: {spreadBy: node, maxPerDomain: 1}
"#;

#[test]
fn the_operators_claim_calls_hold_on_a_real_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), 3, PLAN, "standard");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin = HttpAdmin::default();
    let access = AdminAccess {
        url: format!("http://{}", c.admin),
        token: ADMIN_TOKEN.into(),
    };
    let user = ClaimUser {
        id: "bc-0f1e2d3c".into(),
        display_name: "BucketClaim apps/photos".into(),
        max_bytes: Some(1 << 30),
        max_objects: None,
    };
    rt.block_on(admin.put_user(&access, &user)).unwrap();
    rt.block_on(admin.put_user(&access, &user)).unwrap();
    let quota = |c: &Cluster| {
        let u = c.admin_get("/admin/v1/users/bc-0f1e2d3c");
        (u["maxBytes"].as_u64(), u["maxObjects"].as_u64())
    };
    assert_eq!(quota(&c), (Some(1 << 30), None));
    // The claim's quota changed, then removed: the gateway user's follows, and is lifted.
    let changed = ClaimUser {
        max_bytes: Some(1 << 20),
        max_objects: Some(10),
        ..user.clone()
    };
    rt.block_on(admin.put_user(&access, &changed)).unwrap();
    assert_eq!(quota(&c), (Some(1 << 20), Some(10)));
    let lifted = ClaimUser {
        max_bytes: None,
        max_objects: None,
        ..user.clone()
    };
    rt.block_on(admin.put_user(&access, &lifted)).unwrap();
    assert_eq!(quota(&c), (None, None));
    for _ in 0..2 {
        assert_eq!(
            rt.block_on(admin.claim_bucket(&access, "claimed", &user.id, Some("standard")))
                .unwrap(),
            BucketAnswer::Bound
        );
    }
    let bucket = c.admin_get("/admin/v1/buckets/claimed");
    assert_eq!(bucket["owner"], "bc-0f1e2d3c");
    assert_eq!(bucket["defaultPlan"], "standard");

    // A bucket of the configuration file's key (the default user) is never taken.
    c.create_bucket("mine");
    let taken = rt
        .block_on(admin.claim_bucket(&access, "mine", &user.id, None))
        .unwrap();
    let BucketAnswer::Refused { reason, message } = taken else {
        panic!("{taken:?}");
    };
    assert_eq!(reason, "BucketTaken");
    assert!(message.contains("belongs to user default"), "{message}");
    let unknown_plan = rt
        .block_on(admin.claim_bucket(&access, "other", &user.id, Some("nope")))
        .unwrap();
    assert!(
        matches!(
            unknown_plan,
            BucketAnswer::Refused {
                reason: "UnknownPlan",
                ..
            }
        ),
        "{unknown_plan:?}"
    );

    // The key: made, made again as asked, told apart with another secret.
    let secret = "s".repeat(40);
    let key = "BC0F1E2D3C";
    for _ in 0..2 {
        assert_eq!(
            rt.block_on(admin.put_key(&access, &user.id, key, &secret, "claimed"))
                .unwrap(),
            KeyAnswer::Ready
        );
    }
    assert_eq!(
        rt.block_on(admin.put_key(&access, &user.id, key, &"t".repeat(40), "claimed"))
            .unwrap(),
        KeyAnswer::Differs
    );

    // Delete policy: refused while an object is there, done once it is gone.
    let object = &test_objects("claim", 1, 1000)[0];
    c.put("claimed", object);
    let kept = rt
        .block_on(admin.delete_bucket(&access, "claimed", &user.id))
        .unwrap();
    assert!(
        matches!(&kept, BucketRemoval::NotEmpty(m) if m.contains("not empty")),
        "{kept:?}"
    );
    assert_eq!(
        rt.block_on(admin.delete_bucket(&access, "mine", &user.id))
            .unwrap(),
        BucketRemoval::NotOwned(
            "bucket mine belongs to user default, not bc-0f1e2d3c; it was left alone".into()
        )
    );
    // The user owns a bucket and a key: kept.
    rt.block_on(admin.delete_key(&access, key)).unwrap();
    rt.block_on(admin.delete_key(&access, key)).unwrap();
    assert!(!rt.block_on(admin.delete_user(&access, &user.id)).unwrap());
    c.request(
        http::Method::DELETE,
        "claimed",
        Some(&object.key),
        &[],
        BenchBody::empty(),
    )
    .unwrap();
    assert_eq!(
        rt.block_on(admin.delete_bucket(&access, "claimed", &user.id))
            .unwrap(),
        BucketRemoval::Gone
    );
    assert!(rt.block_on(admin.delete_user(&access, &user.id)).unwrap());

    // A wrong token is an error naming the gateway, not a silent refusal.
    let wrong = AdminAccess {
        token: "wrong".into(),
        ..access
    };
    let err = rt.block_on(admin.put_user(&wrong, &user)).unwrap_err();
    assert!(err.to_string().contains("admin token was refused"), "{err}");
}
