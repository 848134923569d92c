//! Custom resources read one by one: watched and listed as untyped objects and parsed each
//! on its own, so one the operator cannot read (a size too large for 64 bits, a field of a
//! newer version) is reported on itself and never stops the reconciles of the others. A
//! typed watch fails its whole list on one such object, in every namespace.

use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::warn;

use super::{Context, INVALID_RESYNC, instrumented};
use crate::render::config::Excluded;
use crate::render::kind_of;
use crate::{Error, Result};

/// The API resource of `K`, for untyped access.
pub fn resource<K: Resource<DynamicType = ()>>() -> ApiResource {
    ApiResource::erase::<K>(&())
}

/// Untyped access to the objects of kind `K` in `namespace`, or in every namespace.
pub fn api<K: Resource<DynamicType = ()>>(
    client: &Client,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource::<K>()),
        None => Api::all_with(client.clone(), &resource::<K>()),
    }
}

/// `obj` as a `K`, or what is wrong with it: `spec.segmentSize: "99999Ei" is too large ...`.
pub fn parse<K: DeserializeOwned>(obj: &DynamicObject) -> Result<K, String> {
    let value = serde_json::to_value(obj).map_err(|e| e.to_string())?;
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner().to_string();
        if path == "." {
            inner
        } else {
            format!("{path}: {inner}")
        }
    })
}

/// Every object of kind `K` in `ns` the operator can read; those it cannot are left out
/// (their own controller reports them on themselves).
pub async fn list_all<K>(client: &Client, ns: &str) -> Result<Vec<K>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + DeserializeOwned,
{
    Ok(list_reporting(client, ns).await?.0)
}

/// [`list_all`], and the objects it left out with why, as a gateway's config reports them.
pub async fn list_reporting<K>(client: &Client, ns: &str) -> Result<(Vec<K>, Vec<Excluded>)>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + DeserializeOwned,
{
    let listed = api::<K>(client, Some(ns))
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list", kind_of::<K>(), format!("* in {ns}")))?;
    let mut read = Vec::new();
    let mut left_out = Vec::new();
    for obj in &listed.items {
        match parse::<K>(obj) {
            Ok(typed) => read.push(typed),
            Err(problem) => left_out.push(Excluded {
                kind: kind_of::<K>().to_owned(),
                name: obj.name_any(),
                reason: format!("the operator cannot read it: {problem}"),
            }),
        }
    }
    Ok((read, left_out))
}

/// Parses `obj` and runs `reconcile` on it, or reports on the object why it cannot be read.
pub async fn reconcile<K, F, Fut>(
    obj: Arc<DynamicObject>,
    ctx: Arc<Context>,
    reconcile: F,
) -> Result<Action>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action>>,
{
    match parse::<K>(&obj) {
        Ok(typed) => {
            let typed = Arc::new(typed);
            instrumented(typed.clone(), ctx.clone(), reconcile(typed, ctx)).await
        }
        Err(problem) => unreadable::<K>(&obj, &ctx, &problem).await,
    }
}

/// `Ready=False, reason Unreadable` on an object that does not parse, and one Warning Event
/// per new problem.
async fn unreadable<K: Resource<DynamicType = ()>>(
    obj: &DynamicObject,
    ctx: &Context,
    problem: &str,
) -> Result<Action> {
    let kind = kind_of::<K>();
    let name = obj.name_any();
    let ns = obj.namespace().unwrap_or_default();
    let message = format!(
        "the operator cannot read this {kind}: {problem}; fix it with kubectl edit {} {name} -n {ns}",
        K::plural(&())
    );
    warn!(kind, %name, namespace = %ns, %problem, "cannot read the object; reported on it, the others go on");
    ctx.metrics
        .failures
        .with_label_values(&[kind, "unreadable"])
        .inc();
    let said_already = obj.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["reason"] == "Unreadable" && c["message"] == message);
    if said_already {
        return Ok(Action::requeue(INVALID_RESYNC));
    }
    let condition = serde_json::json!({
        "type": "Ready",
        "status": "False",
        "reason": "Unreadable",
        "message": message,
        "lastTransitionTime": ctx.now_text(),
        "observedGeneration": obj.metadata.generation,
    });
    let patch = serde_json::json!({ "status": { "conditions": [condition] } });
    api::<K>(&ctx.client, Some(&ns))
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::kube("update status of", kind, name.clone()))?;
    ctx.event_on(
        obj.object_ref(&resource::<K>()),
        EventType::Warning,
        "Unreadable",
        message,
        "Read",
    )
    .await;
    Ok(Action::requeue(INVALID_RESYNC))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use sublet_crds::StoragePlan;

    fn object(spec: serde_json::Value) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "sublet.dev/v1alpha1",
            "kind": "StoragePlan",
            "metadata": {"name": "huge", "namespace": "storage"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn an_object_that_does_not_parse_is_named_with_its_field() {
        let bad = object(serde_json::json!({
            "redundancy": {"replicas": 1},
            "segmentSize": "99999999Ei",
        }));
        let err = parse::<StoragePlan>(&bad).unwrap_err();
        assert!(err.starts_with("spec.segmentSize: "), "{err}");
        assert!(err.contains("99999999Ei"), "{err}");
        let good = object(serde_json::json!({"redundancy": {"replicas": 1}}));
        let plan = parse::<StoragePlan>(&good).unwrap();
        assert_eq!(plan.name_any(), "huge");
    }
}
