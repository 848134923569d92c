//! Access control lists (S3's ACLs) and object ownership: what an ACL holds, the canned
//! ACLs, which permission an ACL gives a requester, and whether it is public. Kept beside
//! the records because buckets store theirs as a setting and versions theirs in their
//! attributes (so snapshots and the journal carry both). Pure: no I/O.

use serde::{Deserialize, Serialize};

/// The most grants one ACL may hold (S3's limit).
pub const MAX_GRANTS: usize = 100;

/// The group URI of everyone, signed or not.
pub const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
/// The group URI of every holder of a valid key of this installation.
pub const AUTHENTICATED_USERS: &str = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";
/// S3's log delivery group; sublet delivers no logs, so no request is ever in it.
pub const LOG_DELIVERY: &str = "http://acs.amazonaws.com/groups/s3/LogDelivery";

/// Who a grant is to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", content = "id")]
pub enum Grantee {
    /// A sublet user (the S3 canonical id).
    User(String),
    /// Everyone, unsigned requests included.
    AllUsers,
    /// Any valid key of this installation.
    AuthenticatedUsers,
    /// S3's log delivery group (nobody here).
    LogDelivery,
}

impl Grantee {
    /// The group of `uri`, if it is one S3 knows.
    pub fn group(uri: &str) -> Option<Self> {
        match uri {
            ALL_USERS => Some(Grantee::AllUsers),
            AUTHENTICATED_USERS => Some(Grantee::AuthenticatedUsers),
            LOG_DELIVERY => Some(Grantee::LogDelivery),
            _ => None,
        }
    }

    /// The group URI; `None` for a user.
    pub fn uri(&self) -> Option<&'static str> {
        match self {
            Grantee::User(_) => None,
            Grantee::AllUsers => Some(ALL_USERS),
            Grantee::AuthenticatedUsers => Some(AUTHENTICATED_USERS),
            Grantee::LogDelivery => Some(LOG_DELIVERY),
        }
    }

    /// A grant to it makes the resource public (S3: AllUsers and AuthenticatedUsers).
    pub fn is_public(&self) -> bool {
        matches!(self, Grantee::AllUsers | Grantee::AuthenticatedUsers)
    }
}

/// What a grant gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Permission {
    Read,
    Write,
    ReadAcp,
    WriteAcp,
    FullControl,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "READ",
            Permission::Write => "WRITE",
            Permission::ReadAcp => "READ_ACP",
            Permission::WriteAcp => "WRITE_ACP",
            Permission::FullControl => "FULL_CONTROL",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Permission::Read,
            Permission::Write,
            Permission::ReadAcp,
            Permission::WriteAcp,
            Permission::FullControl,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }

    /// Whether holding `self` gives `needed`.
    pub fn covers(self, needed: Permission) -> bool {
        self == Permission::FullControl || self == needed
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub grantee: Grantee,
    pub permission: Permission,
}

/// An ACL: its owner (a bucket's owner, an object's owner) and its grants. The owner's
/// own full control is one of the grants, as S3 shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acl {
    pub owner: String,
    pub grants: Vec<Grant>,
}

/// Who asks, as an ACL sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester<'a> {
    Anonymous,
    /// A valid key of this installation, of this user.
    User(&'a str),
}

impl Acl {
    /// `private`: the owner has full control, nobody else anything.
    pub fn private(owner: &str) -> Self {
        Acl {
            owner: owner.to_owned(),
            grants: vec![Grant {
                grantee: Grantee::User(owner.to_owned()),
                permission: Permission::FullControl,
            }],
        }
    }

    /// Whether the ACL gives `requester` the `needed` permission. `ignore_public`
    /// (PublicAccessBlock's IgnorePublicAcls) makes grants to AllUsers and
    /// AuthenticatedUsers count for nothing.
    pub fn allows(
        &self,
        requester: Requester<'_>,
        needed: Permission,
        ignore_public: bool,
    ) -> bool {
        self.grants.iter().any(|g| {
            g.permission.covers(needed)
                && !(ignore_public && g.grantee.is_public())
                && match (&g.grantee, requester) {
                    (Grantee::AllUsers, _) => true,
                    (Grantee::AuthenticatedUsers, Requester::User(_)) => true,
                    (Grantee::User(id), Requester::User(u)) => id == u,
                    _ => false,
                }
        })
    }

    /// Whether any grant is to AllUsers or AuthenticatedUsers.
    pub fn is_public(&self) -> bool {
        self.grants.iter().any(|g| g.grantee.is_public())
    }

    /// Only the owner's full control (what `private` and `bucket-owner-full-control` by the
    /// bucket owner give): the one ACL a bucket with ACLs disabled accepts.
    pub fn is_owner_only(&self) -> bool {
        self.grants.iter().all(|g| {
            g.grantee == Grantee::User(self.owner.clone())
                && g.permission == Permission::FullControl
        })
    }
}

/// S3's canned ACLs (`x-amz-acl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canned {
    Private,
    PublicRead,
    PublicReadWrite,
    AuthenticatedRead,
    AwsExecRead,
    BucketOwnerRead,
    BucketOwnerFullControl,
    LogDeliveryWrite,
}

/// Every canned ACL, by its S3 name.
const CANNED: [(&str, Canned); 8] = [
    ("private", Canned::Private),
    ("public-read", Canned::PublicRead),
    ("public-read-write", Canned::PublicReadWrite),
    ("authenticated-read", Canned::AuthenticatedRead),
    ("aws-exec-read", Canned::AwsExecRead),
    ("bucket-owner-read", Canned::BucketOwnerRead),
    ("bucket-owner-full-control", Canned::BucketOwnerFullControl),
    ("log-delivery-write", Canned::LogDeliveryWrite),
];

impl Canned {
    pub fn parse(s: &str) -> Option<Self> {
        CANNED.iter().find(|(n, _)| *n == s).map(|(_, c)| *c)
    }

    pub fn as_str(self) -> &'static str {
        CANNED
            .iter()
            .find(|(_, c)| *c == self)
            .map_or("private", |(n, _)| n)
    }

    /// The ACL this canned ACL gives an object owned by `owner` in a bucket owned by
    /// `bucket_owner`; `None` for `log-delivery-write`, which S3 takes on buckets only.
    /// `aws-exec-read` grants EC2 reads at S3; there is no EC2 here, so only the owner.
    pub fn object_acl(self, owner: &str, bucket_owner: &str) -> Option<Acl> {
        let mut acl = Acl::private(owner);
        let mut add = |grantee, permission| {
            acl.grants.push(Grant {
                grantee,
                permission,
            })
        };
        match self {
            Canned::Private | Canned::AwsExecRead => {}
            Canned::PublicRead => add(Grantee::AllUsers, Permission::Read),
            Canned::PublicReadWrite => {
                add(Grantee::AllUsers, Permission::Read);
                add(Grantee::AllUsers, Permission::Write);
            }
            Canned::AuthenticatedRead => add(Grantee::AuthenticatedUsers, Permission::Read),
            Canned::BucketOwnerRead if bucket_owner != owner => {
                add(Grantee::User(bucket_owner.to_owned()), Permission::Read);
            }
            Canned::BucketOwnerFullControl if bucket_owner != owner => {
                add(
                    Grantee::User(bucket_owner.to_owned()),
                    Permission::FullControl,
                );
            }
            Canned::BucketOwnerRead | Canned::BucketOwnerFullControl => {}
            Canned::LogDeliveryWrite => return None,
        }
        Some(acl)
    }

    /// The ACL this canned ACL gives a bucket owned by `owner` (S3 ignores the
    /// bucket-owner-* ones on buckets: they are `private` there).
    pub fn bucket_acl(self, owner: &str) -> Acl {
        let mut acl = Acl::private(owner);
        match self {
            Canned::LogDeliveryWrite => {
                for permission in [Permission::Write, Permission::ReadAcp] {
                    acl.grants.push(Grant {
                        grantee: Grantee::LogDelivery,
                        permission,
                    });
                }
                acl
            }
            other => other.object_acl(owner, owner).unwrap_or(acl),
        }
    }
}

/// A bucket's object ownership setting (S3's ownership controls).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ownership {
    /// The writer owns what it writes; ACLs work.
    ObjectWriter,
    /// As ObjectWriter, but an object written with `bucket-owner-full-control` is the
    /// bucket owner's.
    BucketOwnerPreferred,
    /// The bucket owner owns every object and ACLs are disabled: they grant nothing and
    /// only `private` / `bucket-owner-full-control` (or none) are accepted.
    BucketOwnerEnforced,
}

impl Ownership {
    pub fn as_str(self) -> &'static str {
        match self {
            Ownership::ObjectWriter => "ObjectWriter",
            Ownership::BucketOwnerPreferred => "BucketOwnerPreferred",
            Ownership::BucketOwnerEnforced => "BucketOwnerEnforced",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Ownership::ObjectWriter,
            Ownership::BucketOwnerPreferred,
            Ownership::BucketOwnerEnforced,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }

    /// Whether ACLs count (all but BucketOwnerEnforced).
    pub fn acls_enabled(self) -> bool {
        self != Ownership::BucketOwnerEnforced
    }

    /// Who owns an object `writer` writes with `canned` into a bucket of `bucket_owner`.
    pub fn object_owner<'a>(
        self,
        writer: &'a str,
        bucket_owner: &'a str,
        canned: Option<Canned>,
    ) -> &'a str {
        match self {
            Ownership::BucketOwnerEnforced => bucket_owner,
            Ownership::BucketOwnerPreferred if canned == Some(Canned::BucketOwnerFullControl) => {
                bucket_owner
            }
            _ => writer,
        }
    }
}

/// What a bucket without an ownership setting does: ACLs work (ObjectWriter), as they did
/// before ownership controls existed, for every bucket made before this setting and for
/// clients that expect ACLs (docs/sharing.md says why).
pub const DEFAULT_OWNERSHIP: Ownership = Ownership::ObjectWriter;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ALL: [Permission; 5] = [
        Permission::Read,
        Permission::Write,
        Permission::ReadAcp,
        Permission::WriteAcp,
        Permission::FullControl,
    ];

    fn requesters() -> Vec<Requester<'static>> {
        vec![
            Requester::Anonymous,
            Requester::User("alice"),
            Requester::User("bob"),
            Requester::User("carol"),
        ]
    }

    #[test]
    fn a_private_acl_grants_nobody_but_the_owner() {
        for canned in [
            Canned::Private,
            Canned::AwsExecRead,
            Canned::BucketOwnerRead,
            Canned::BucketOwnerFullControl,
        ] {
            let acl = canned.bucket_acl("alice");
            for who in requesters() {
                for p in ALL {
                    assert_eq!(
                        acl.allows(who, p, false),
                        who == Requester::User("alice"),
                        "{canned:?} {who:?} {p:?}"
                    );
                }
            }
            assert!(!acl.is_public());
            assert!(acl.is_owner_only());
        }
    }

    #[test]
    fn canned_acls_give_what_s3_says() {
        let acl = Canned::PublicRead.object_acl("bob", "alice").unwrap();
        assert!(acl.allows(Requester::Anonymous, Permission::Read, false));
        assert!(!acl.allows(Requester::Anonymous, Permission::Write, false));
        assert!(!acl.allows(Requester::Anonymous, Permission::ReadAcp, false));
        assert!(acl.allows(Requester::User("bob"), Permission::WriteAcp, false));
        assert!(!acl.allows(Requester::User("alice"), Permission::WriteAcp, false));
        let acl = Canned::AuthenticatedRead.bucket_acl("alice");
        assert!(!acl.allows(Requester::Anonymous, Permission::Read, false));
        assert!(acl.allows(Requester::User("carol"), Permission::Read, false));
        let acl = Canned::BucketOwnerFullControl
            .object_acl("bob", "alice")
            .unwrap();
        assert!(acl.allows(Requester::User("alice"), Permission::WriteAcp, false));
        assert!(!acl.is_owner_only());
        let acl = Canned::BucketOwnerRead.object_acl("bob", "alice").unwrap();
        assert!(acl.allows(Requester::User("alice"), Permission::Read, false));
        assert!(!acl.allows(Requester::User("alice"), Permission::Write, false));
        assert!(
            Canned::LogDeliveryWrite
                .object_acl("bob", "alice")
                .is_none()
        );
        let logs = Canned::LogDeliveryWrite.bucket_acl("alice");
        for who in requesters()
            .into_iter()
            .filter(|w| *w != Requester::User("alice"))
        {
            assert!(!logs.allows(who, Permission::Write, false));
        }
        let rw = Canned::PublicReadWrite.bucket_acl("alice");
        assert!(rw.allows(Requester::Anonymous, Permission::Write, false));
        assert!(!rw.allows(Requester::Anonymous, Permission::WriteAcp, false));
        for (name, c) in CANNED {
            assert_eq!(Canned::parse(name), Some(c));
            assert_eq!(c.as_str(), name);
        }
        assert_eq!(Canned::parse("public"), None);
    }

    /// Every ACL built of random grants: under IgnorePublicAcls it gives exactly what its
    /// grants to users give, so no public grant ever counts; and anonymous requests get
    /// nothing at all.
    #[test]
    fn ignore_public_acls_makes_every_public_grant_inert() {
        let grantees = [
            Grantee::AllUsers,
            Grantee::AuthenticatedUsers,
            Grantee::LogDelivery,
            Grantee::User("bob".into()),
            Grantee::User("carol".into()),
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let n = (next() % 6) as usize;
            let grants: Vec<Grant> = (0..n)
                .map(|_| Grant {
                    grantee: grantees[(next() % 5) as usize].clone(),
                    permission: ALL[(next() % 5) as usize],
                })
                .collect();
            let acl = Acl {
                owner: "alice".into(),
                grants,
            };
            let users_only = Acl {
                owner: "alice".into(),
                grants: acl
                    .grants
                    .iter()
                    .filter(|g| matches!(g.grantee, Grantee::User(_)))
                    .cloned()
                    .collect(),
            };
            for who in requesters() {
                for p in ALL {
                    assert_eq!(
                        acl.allows(who, p, true),
                        users_only.allows(who, p, false),
                        "{acl:?} {who:?} {p:?}"
                    );
                    if who == Requester::Anonymous {
                        assert!(!acl.allows(who, p, true));
                    }
                }
            }
            assert_eq!(
                acl.is_public(),
                acl.grants.iter().any(|g| g.grantee.is_public())
            );
        }
    }

    #[test]
    fn ownership_decides_who_owns_a_written_object() {
        let full = Some(Canned::BucketOwnerFullControl);
        assert_eq!(
            Ownership::ObjectWriter.object_owner("bob", "alice", full),
            "bob"
        );
        assert_eq!(
            Ownership::BucketOwnerPreferred.object_owner("bob", "alice", full),
            "alice"
        );
        assert_eq!(
            Ownership::BucketOwnerPreferred.object_owner("bob", "alice", None),
            "bob"
        );
        assert_eq!(
            Ownership::BucketOwnerEnforced.object_owner("bob", "alice", None),
            "alice"
        );
        assert!(!Ownership::BucketOwnerEnforced.acls_enabled());
        assert_eq!(
            Ownership::parse("BucketOwnerEnforced"),
            Some(Ownership::BucketOwnerEnforced)
        );
        assert_eq!(Ownership::parse("bucketownerenforced"), None);
    }

    #[test]
    fn acls_round_trip_through_json() {
        let acl = Canned::PublicReadWrite.bucket_acl("alice");
        let text = serde_json::to_string(&acl).unwrap();
        assert_eq!(serde_json::from_str::<Acl>(&text).unwrap(), acl);
        assert!(text.contains("\"FULL_CONTROL\""), "{text}");
    }
}
