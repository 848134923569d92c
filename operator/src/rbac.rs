//! The roles the operator needs, least privilege, as installed by the Helm chart: a
//! ClusterRole for everything it reconciles and a Role in its own namespace for leader
//! election.

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};

/// `operator/rbac.yaml`: the operator's ClusterRole.
pub const CLUSTER_ROLE: &str = include_str!("../rbac.yaml");
/// `operator/leader-rbac.yaml`: the Role of leader election, in the operator's namespace.
pub const LEADER_ROLE: &str = include_str!("../leader-rbac.yaml");

/// The ClusterRole, parsed.
pub fn cluster_role() -> Result<ClusterRole, serde_yaml::Error> {
    serde_yaml::from_str(CLUSTER_ROLE)
}

/// The leader election Role, parsed.
pub fn leader_role() -> Result<Role, serde_yaml::Error> {
    serde_yaml::from_str(LEADER_ROLE)
}

/// Whether `role` lets the operator do `verb` on `resource` (`plural` or `plural/sub`) of
/// API group `group` (`""` for the core group).
pub fn allows(role: &ClusterRole, group: &str, resource: &str, verb: &str) -> bool {
    rules_allow(role.rules.as_deref(), group, resource, verb)
}

/// [`allows`] for any list of rules.
pub fn rules_allow(rules: Option<&[PolicyRule]>, group: &str, resource: &str, verb: &str) -> bool {
    rules.into_iter().flatten().any(|rule| {
        let has = |list: &Option<Vec<String>>, item: &str| {
            list.iter().flatten().any(|x| x == item || x == "*")
        };
        has(&rule.api_groups, group)
            && has(&rule.resources, resource)
            && rule.verbs.iter().any(|v| v == verb || v == "*")
    })
}

/// The RBAC check behind an API request: `(group, resource, verb)` from its method, path
/// and query, or `None` for a path that is not a resource.
pub fn request_attributes(
    method: &str,
    path: &str,
    query: &str,
) -> Option<(String, String, String)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] if !rest.is_empty() => rest,
        rest => rest,
    };
    let (resource, named) = match rest {
        [plural] => (plural.to_string(), false),
        [plural, _name] => (plural.to_string(), true),
        [plural, _name, sub] => (format!("{plural}/{sub}"), true),
        _ => return None,
    };
    let verb = match (method, named) {
        ("GET", _) if query.contains("watch=true") => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    };
    Some((group.to_owned(), resource, verb.to_owned()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn request_paths_map_to_rbac_attributes() {
        let a = |m, p, q| request_attributes(m, p, q).unwrap();
        assert_eq!(
            a("POST", "/api/v1/namespaces/s/secrets", ""),
            ("".into(), "secrets".into(), "create".into())
        );
        assert_eq!(
            a("GET", "/api/v1/nodes/n1", ""),
            ("".into(), "nodes".into(), "get".into())
        );
        assert_eq!(
            a(
                "PATCH",
                "/apis/sublet.dev/v1alpha1/namespaces/s/storageplans/p/status",
                ""
            ),
            (
                "sublet.dev".into(),
                "storageplans/status".into(),
                "patch".into()
            )
        );
        assert_eq!(
            a("GET", "/apis/apps/v1/daemonsets", "watch=true"),
            ("apps".into(), "daemonsets".into(), "watch".into())
        );
    }

    #[test]
    fn role_is_least_privilege() {
        let role = cluster_role().unwrap();
        assert_eq!(role.metadata.name.as_deref(), Some("sublet-operator"));
        // Secrets are read one by one, by name (a gateway's admin token, a claim's own
        // Secret), never listed, watched or changed; no wildcard anywhere.
        for verb in ["list", "watch", "patch", "update", "delete"] {
            assert!(!allows(&role, "", "secrets", verb), "{verb} secrets");
        }
        assert!(allows(&role, "", "secrets", "get"));
        assert!(!CLUSTER_ROLE.contains('*'));
        // The spec is the user's: the operator writes status only.
        assert!(!allows(&role, "sublet.dev", "storageplans", "patch"));
        assert!(!allows(&role, "", "pods", "delete"));
    }

    /// `leader::LeaseLock` gets, creates and replaces its Lease.
    #[test]
    fn leader_election_is_allowed_in_its_namespace_only() {
        let leader = leader_role().unwrap();
        for verb in ["get", "create", "update"] {
            assert!(
                rules_allow(
                    leader.rules.as_deref(),
                    "coordination.k8s.io",
                    "leases",
                    verb
                ),
                "{verb} leases"
            );
            assert!(
                !allows(
                    &cluster_role().unwrap(),
                    "coordination.k8s.io",
                    "leases",
                    verb
                ),
                "the ClusterRole grants {verb} on leases in every namespace"
            );
        }
        assert!(!LEADER_ROLE.contains('*'));
        assert_eq!(leader.rules.map(|r| r.len()), Some(1));
    }

    /// Owners of objects with `blockOwnerDeletion` must allow updating their finalizers.
    #[test]
    fn owners_allow_block_owner_deletion() {
        let role = cluster_role().unwrap();
        for owner in [
            "providerpools",
            "storageplans",
            "storagegateways",
            "bucketclaims",
        ] {
            assert!(
                allows(
                    &role,
                    "sublet.dev",
                    &format!("{owner}/finalizers"),
                    "update"
                ),
                "{owner}"
            );
        }
    }

    /// Every kind the controllers watch (see `controller::run`) may be listed and watched.
    #[test]
    fn watched_kinds_are_allowed() {
        let role = cluster_role().unwrap();
        for (group, plural) in crate::controller::watched() {
            for verb in ["list", "watch"] {
                assert!(
                    allows(&role, &group, &plural, verb),
                    "{verb} {group}/{plural}"
                );
            }
        }
    }
}
