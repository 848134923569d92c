//! Bucket policies: the AWS JSON policy language parsed and checked ([`Policy::parse`],
//! refusals worded as S3's `MalformedPolicy`), evaluated against a request
//! ([`Policy::evaluate`]), judged public or not ([`Policy::is_public`]), and the bucket's
//! PublicAccessBlock ([`PublicAccessBlock`]). Pure: no I/O, the caller supplies the facts.
//!
//! Principals are sublet's users: `*` (everyone, unsigned requests included),
//! `{"AWS": "*"}`, `{"AWS": "arn:aws:iam::<any account>:user/<user id>"}` or the bare user id.

pub mod actions;
pub mod condition;
pub mod variables;
pub mod wildcard;

#[cfg(test)]
mod tests;

use serde_json::Value;

pub use condition::Context;
use condition::Test;
use variables::Template;

/// The largest policy S3 accepts, in bytes.
pub const MAX_POLICY_BYTES: usize = 20 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// Who a statement is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Who {
    /// Everyone, signed or not.
    Anyone,
    /// The user with this id.
    User(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    pub sid: Option<String>,
    pub effect: Effect,
    pub principals: Vec<Who>,
    /// `NotPrincipal`: the statement applies to everyone but `principals`.
    pub not_principal: bool,
    pub actions: Vec<String>,
    pub not_action: bool,
    /// With their policy variables (`arn:aws:s3:::bucket/home/${aws:username}/*`).
    pub resources: Vec<Template>,
    pub not_resource: bool,
    /// All must hold.
    pub conditions: Vec<Test>,
}

/// A parsed, checked bucket policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub statements: Vec<Statement>,
}

/// One request as a policy sees it.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// The signing user's id; `None` for an unsigned (anonymous) request.
    pub user: Option<&'a str>,
    /// `s3:GetObject`, ...
    pub action: &'a str,
    /// `arn:aws:s3:::bucket` or `arn:aws:s3:::bucket/key`.
    pub resource: &'a str,
    pub context: &'a Context,
}

/// What a policy says of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A statement denies it: nothing else can allow it.
    Deny,
    /// A statement allows it and none denies it.
    Allow,
    /// No statement applies.
    Silent,
}

fn malformed(message: impl Into<String>) -> String {
    message.into()
}

/// One string or an array of strings (`field` names it in errors).
fn strings(value: &Value, field: &str) -> Result<Vec<String>, String> {
    let one = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(malformed(format!(
            "{field} must be a string or an array of strings, not {other}"
        ))),
    };
    let out = match value {
        Value::Array(items) => items.iter().map(one).collect::<Result<Vec<_>, _>>()?,
        v => vec![one(v)?],
    };
    if out.is_empty() {
        return Err(malformed(format!("{field} is empty")));
    }
    Ok(out)
}

/// Condition values: strings, numbers or booleans, one or an array.
fn condition_values(value: &Value, field: &str) -> Result<Vec<String>, String> {
    let one = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(malformed(format!(
            "{field} must be a string, number or boolean (or an array of them), not {other}"
        ))),
    };
    match value {
        Value::Array(items) => items.iter().map(one).collect(),
        v => Ok(vec![one(v)?]),
    }
}

fn principal(value: &Value, sid: &str) -> Result<Vec<Who>, String> {
    let field = format!("Principal of statement {sid}");
    let aws = match value {
        Value::String(s) if s == "*" => return Ok(vec![Who::Anyone]),
        Value::Object(map) => {
            if let Some(k) = map.keys().find(|k| *k != "AWS") {
                return Err(malformed(format!(
                    "Invalid principal in policy: {field} has a {k} entry; sublet's principals \
                     are \"*\" and {{\"AWS\": [user ids or arn:aws:iam::<account>:user/<user id>]}}"
                )));
            }
            match map.get("AWS") {
                Some(v) => strings(v, &field)?,
                None => return Err(malformed(format!("{field} has no AWS entry"))),
            }
        }
        other => {
            return Err(malformed(format!(
                "Invalid principal in policy: {field} is {other}; use \"*\" or {{\"AWS\": ...}}"
            )));
        }
    };
    aws.iter()
        .map(|p| {
            if p == "*" {
                return Ok(Who::Anyone);
            }
            if let Some(rest) = p.strip_prefix("arn:aws:iam::") {
                if let Some((_account, user)) = rest.split_once(":user/")
                    && !user.is_empty()
                    && !wildcard::has_wildcard(user)
                {
                    return Ok(Who::User(user.to_owned()));
                }
                return Err(malformed(format!(
                    "Invalid principal in policy: {p} (sublet's principals are its users: \
                     arn:aws:iam::<account>:user/<user id>, or the bare user id)"
                )));
            }
            if p.is_empty() || p.contains([':', '/', '*', '?']) {
                return Err(malformed(format!(
                    "Invalid principal in policy: {p:?} is not a user id"
                )));
            }
            Ok(Who::User(p.clone()))
        })
        .collect()
}

/// The one of `name` and `Not<name>` the statement has, and whether it was the `Not` one.
fn one_of<'v>(
    st: &'v serde_json::Map<String, Value>,
    name: &str,
    sid: &str,
) -> Result<(&'v Value, bool), String> {
    let not = format!("Not{name}");
    match (st.get(name), st.get(&not)) {
        (Some(v), None) => Ok((v, false)),
        (None, Some(v)) => Ok((v, true)),
        (Some(_), Some(_)) => Err(malformed(format!(
            "statement {sid} has both {name} and {not}; give one"
        ))),
        (None, None) => Err(malformed(format!(
            "Missing required field {name} in statement {sid}"
        ))),
    }
}

/// `variables`: the policy's Version is 2012-10-17, the one with policy variables.
fn statement(
    value: &Value,
    index: usize,
    bucket: &str,
    variables: bool,
) -> Result<Statement, String> {
    let Value::Object(st) = value else {
        return Err(malformed(format!("statement {index} is not a JSON object")));
    };
    const FIELDS: &[&str] = &[
        "Sid",
        "Effect",
        "Principal",
        "NotPrincipal",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Condition",
    ];
    let sid = match st.get("Sid") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(malformed(format!(
                "Sid of statement {index} is {other}, not a string"
            )));
        }
    };
    let name = sid.clone().unwrap_or_else(|| index.to_string());
    if let Some(k) = st.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(malformed(format!("Unknown field {k} in statement {name}")));
    }
    let effect = match st.get("Effect") {
        Some(Value::String(e)) if e == "Allow" => Effect::Allow,
        Some(Value::String(e)) if e == "Deny" => Effect::Deny,
        Some(other) => {
            return Err(malformed(format!(
                "Invalid effect in statement {name}: {other} (Allow or Deny)"
            )));
        }
        None => {
            return Err(malformed(format!(
                "Missing required field Effect in statement {name}"
            )));
        }
    };
    let (p, not_principal) = one_of(st, "Principal", &name)?;
    let principals = principal(p, &name)?;
    let (a, not_action) = one_of(st, "Action", &name)?;
    let actions = strings(a, &format!("Action of statement {name}"))?;
    for action in &actions {
        let known = action == "*"
            || actions::ACTIONS
                .iter()
                .any(|known| wildcard::matches(action, known, true));
        if !known {
            return Err(malformed(format!(
                "Policy has invalid action: {action} (statement {name})"
            )));
        }
    }
    let (r, not_resource) = one_of(st, "Resource", &name)?;
    let resources = strings(r, &format!("Resource of statement {name}"))?
        .iter()
        .map(|resource| check_resource(resource, bucket, &name))
        .collect::<Result<Vec<_>, _>>()?;
    let mut conditions = Vec::new();
    match st.get("Condition") {
        None => {}
        Some(Value::Object(ops)) => {
            for (op, keys) in ops {
                let Value::Object(keys) = keys else {
                    return Err(malformed(format!(
                        "condition {op} of statement {name} must map condition keys to values"
                    )));
                };
                for (key, values) in keys {
                    let values = condition_values(values, &format!("condition {op} on {key}"))?;
                    conditions.push(Test::new(op, key, values, variables)?);
                }
            }
        }
        Some(other) => {
            return Err(malformed(format!(
                "Condition of statement {name} is {other}, not an object"
            )));
        }
    }
    // Older policies: AWS reads `${...}` in a condition value as text, and so does sublet
    // (such policies were stored before variables were read); in a resource it is refused,
    // as it always was here.
    if !variables && resources.iter().any(Template::has_dollar_braces) {
        return Err(malformed(format!(
            "statement {name} has a policy variable (${{...}}), and policy variables need \
             \"Version\": \"2012-10-17\" (older policies would take them literally)"
        )));
    }
    Ok(Statement {
        sid,
        effect,
        principals,
        not_principal,
        actions,
        not_action,
        resources,
        not_resource,
        conditions,
    })
}

fn check_resource(resource: &str, bucket: &str, sid: &str) -> Result<Template, String> {
    let template = Template::parse(resource)
        .map_err(|e| format!("Policy has invalid resource: {resource} (statement {sid}): {e}"))?;
    if resource == "*" {
        return Ok(template);
    }
    let named = resource
        .strip_prefix("arn:aws:s3:::")
        .map(|rest| rest.split('/').next().unwrap_or(rest));
    if named.is_some_and(|b| b.contains("${")) {
        return Err(malformed(format!(
            "Policy has invalid resource: {resource} (statement {sid}); a policy variable may \
             stand in the key part only (arn:aws:s3:::{bucket}/home/${{aws:username}}/*)"
        )));
    }
    if !named.is_some_and(|b| wildcard::matches(b, bucket, false)) {
        return Err(malformed(format!(
            "Policy has invalid resource: {resource} (statement {sid}); a policy of bucket \
             {bucket} names arn:aws:s3:::{bucket} or arn:aws:s3:::{bucket}/<key pattern>"
        )));
    }
    Ok(template)
}

impl Policy {
    /// Parses and checks the policy of `bucket`. The error is the `MalformedPolicy` message:
    /// it names the problem.
    pub fn parse(text: &str, bucket: &str) -> Result<Self, String> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(malformed(format!(
                "Policies must be no more than {MAX_POLICY_BYTES} bytes; this one is {}",
                text.len()
            )));
        }
        let doc: Value = serde_json::from_str(text)
            .map_err(|e| malformed(format!("Policies must be valid JSON: {e}")))?;
        let Value::Object(doc) = doc else {
            return Err(malformed("Policies must be a JSON object"));
        };
        if let Some(k) = doc
            .keys()
            .find(|k| !matches!(k.as_str(), "Version" | "Id" | "Statement"))
        {
            return Err(malformed(format!("Unknown field {k} in the policy")));
        }
        let variables = match doc.get("Version") {
            None => false,
            Some(Value::String(v)) if v == "2012-10-17" => true,
            Some(Value::String(v)) if v == "2008-10-17" => false,
            Some(other) => {
                return Err(malformed(format!(
                    "The policy Version {other} is not supported; use \"2012-10-17\""
                )));
            }
        };
        let statements = match doc.get("Statement") {
            Some(Value::Array(items)) => items.iter().collect::<Vec<_>>(),
            Some(one @ Value::Object(_)) => vec![one],
            Some(other) => {
                return Err(malformed(format!(
                    "Statement must be an object or an array of objects, not {other}"
                )));
            }
            None => return Err(malformed("Missing required field Statement")),
        };
        if statements.is_empty() {
            return Err(malformed("Statement is empty: a policy needs at least one"));
        }
        let statements = statements
            .into_iter()
            .enumerate()
            .map(|(i, s)| statement(s, i, bucket, variables))
            .collect::<Result<Vec<_>, _>>()?;
        let mut sids: Vec<&str> = statements.iter().filter_map(|s| s.sid.as_deref()).collect();
        sids.sort_unstable();
        if let Some(w) = sids.windows(2).find(|w| w[0] == w[1]) {
            return Err(malformed(format!(
                "Statement IDs (SID) in a single policy must be unique: {} is given twice",
                w[0]
            )));
        }
        Ok(Policy { statements })
    }

    /// What this policy says of `req`: explicit deny first, then allow.
    pub fn evaluate(&self, req: &Request<'_>) -> Decision {
        let mut allowed = false;
        for st in &self.statements {
            if st.applies(req) {
                match st.effect {
                    Effect::Deny => return Decision::Deny,
                    Effect::Allow => allowed = true,
                }
            }
        }
        if allowed {
            Decision::Allow
        } else {
            Decision::Silent
        }
    }

    /// Whether S3 would call this policy public: some statement allows everyone (or all
    /// but some, with `NotPrincipal`) without a condition pinning the request to fixed
    /// addresses or users.
    pub fn is_public(&self) -> bool {
        self.statements.iter().any(|st| {
            st.effect == Effect::Allow
                && (st.not_principal || st.principals.contains(&Who::Anyone))
                && !st.conditions.iter().any(Test::restricts)
        })
    }
}

impl Statement {
    fn applies(&self, req: &Request<'_>) -> bool {
        let named = self.principals.iter().any(|p| match p {
            Who::Anyone => true,
            Who::User(id) => req.user == Some(id.as_str()),
        });
        if named == self.not_principal {
            return false;
        }
        let action = self
            .actions
            .iter()
            .any(|a| wildcard::matches(a, req.action, true));
        if action == self.not_action {
            return false;
        }
        // A policy variable the request has no value for: the statement does not apply.
        let mut resource = false;
        for r in &self.resources {
            let Some(pattern) = r.resolve(req.context) else {
                return false;
            };
            resource |= wildcard::matches_tokens(&pattern, req.resource, false);
        }
        if resource == self.not_resource {
            return false;
        }
        self.conditions.iter().all(|c| c.holds(req.context))
    }
}

/// A bucket's PublicAccessBlock. The ACL settings are kept (and answered) for when ACLs
/// exist; the policy settings are honoured now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicAccessBlock {
    #[serde(default)]
    pub block_public_acls: bool,
    #[serde(default)]
    pub ignore_public_acls: bool,
    /// A public policy is refused by PutBucketPolicy.
    #[serde(default)]
    pub block_public_policy: bool,
    /// A public policy allows only the bucket owner's own users: anonymous and other users
    /// get nothing from it.
    #[serde(default)]
    pub restrict_public_buckets: bool,
}

/// The facts of one request the access decision weighs, beyond the policy's own verdict.
#[derive(Clone, Copy, Debug)]
pub struct Facts {
    /// The key's grants (the configuration's or its runtime key's) allow the operation.
    /// Always false for an unsigned request.
    pub grants_allow: bool,
    /// The requester is the bucket's owner (one of its keys).
    pub owner: bool,
    /// The operation manages the bucket's policy or public access block.
    pub policy_management: bool,
    /// The bucket's policy is public and its PublicAccessBlock restricts public buckets.
    pub restricted_public: bool,
    /// An ACL (the bucket's, or the object's for object reads and ACL changes) grants the
    /// requester what the operation needs; public grants already dropped under
    /// IgnorePublicAcls.
    pub acl_allows: bool,
}

/// Why a request is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The bucket policy denies it explicitly.
    DeniedByPolicy,
    /// Neither the grants nor the policy allow it.
    NotAllowed,
}

/// The access decision: an explicit deny wins (except over the owner managing the policy:
/// S3's owner override), then an allow from the grants, the policy or an ACL.
pub fn decide(policy: Decision, facts: Facts) -> Result<(), Refusal> {
    if policy == Decision::Deny && !(facts.owner && facts.policy_management) {
        return Err(Refusal::DeniedByPolicy);
    }
    if facts.grants_allow {
        return Ok(());
    }
    let policy_allows = policy == Decision::Allow && (!facts.restricted_public || facts.owner);
    if policy_allows || facts.acl_allows {
        return Ok(());
    }
    Err(Refusal::NotAllowed)
}
