//! Status conditions in the Kubernetes shape, shared by every kind's status.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Whether a condition holds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet.
    #[default]
    Unknown,
}

impl From<bool> for ConditionStatus {
    fn from(value: bool) -> Self {
        if value {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

/// One observation about a resource, e.g. `Ready=True` or `Feasible=False`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The kind of condition, e.g. `Ready`, `Feasible`, `Degraded`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// A CamelCase word a program can match on, e.g. `NotEnoughProviders`.
    #[serde(default)]
    pub reason: String,
    /// What a person should know, including how to fix a problem.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// The `metadata.generation` the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    /// A condition without a transition time; [`set_condition`] fills it.
    pub fn new(
        type_: impl Into<String>,
        status: impl Into<ConditionStatus>,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: None,
            observed_generation: None,
        }
    }
}

/// The condition of type `type_`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Adds or replaces the condition of the same type. The transition time moves to `now` only
/// when the status changes, so `kubectl describe` shows how long a state has lasted.
pub fn set_condition(conditions: &mut Vec<Condition>, mut condition: Condition, now: &str) {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => {
            condition.last_transition_time = if existing.status == condition.status {
                existing.last_transition_time.clone()
            } else {
                Some(now.to_owned())
            };
            *existing = condition;
        }
        None => {
            condition.last_transition_time = Some(now.to_owned());
            conditions.push(condition);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            Condition::new("Ready", false, "Starting", ""),
            "t1",
        );
        set_condition(
            &mut conditions,
            Condition::new("Ready", false, "Starting", "still"),
            "t2",
        );
        assert_eq!(conditions[0].last_transition_time.as_deref(), Some("t1"));
        assert_eq!(conditions[0].message, "still");
        set_condition(
            &mut conditions,
            Condition::new("Ready", true, "Up", ""),
            "t3",
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time.as_deref(), Some("t3"));
        assert_eq!(
            find_condition(&conditions, "Ready").unwrap().status,
            ConditionStatus::True
        );
    }

    #[test]
    fn serializes_in_kubernetes_shape() {
        let mut c = Condition::new("Feasible", false, "TooFewPools", "add a pool");
        c.last_transition_time = Some("2026-01-01T00:00:00Z".into());
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "Feasible", "status": "False", "reason": "TooFewPools",
                "message": "add a pool", "lastTransitionTime": "2026-01-01T00:00:00Z"})
        );
    }
}
