//! The evaluator's examples and properties.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;

fn parse(text: &str) -> Policy {
    Policy::parse(text, "photos").unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn refused(text: &str) -> String {
    Policy::parse(text, "photos").unwrap_err()
}

fn ask(p: &Policy, user: Option<&str>, action: &str, resource: &str, cx: &Context) -> Decision {
    p.evaluate(&Request {
        user,
        action,
        resource,
        context: cx,
    })
}

/// One request and what the policy should decide of it: (user, action, resource, decision).
type Row<'a> = (Option<&'a str>, &'a str, &'a str, Decision);

/// Asks `p` every row of `table` in context `cx`; fails naming every row decided otherwise.
#[track_caller]
fn expect_decisions(p: &Policy, cx: &Context, table: &[Row<'_>]) {
    let wrong: Vec<String> = table
        .iter()
        .enumerate()
        .filter_map(|(i, &(user, action, resource, expected))| {
            let got = ask(p, user, action, resource, cx);
            (got != expected).then(|| {
                format!("row {i}: {user:?} {action} {resource}: {got:?}, expected {expected:?}")
            })
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

const FAMILY: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {"Sid": "FamilyReads", "Effect": "Allow",
     "Principal": {"AWS": ["arn:aws:iam::000000000000:user/bob", "carol"]},
     "Action": ["s3:GetObject", "s3:ListBucket"],
     "Resource": ["arn:aws:s3:::photos", "arn:aws:s3:::photos/album/*"]},
    {"Sid": "NoPrivate", "Effect": "Deny", "Principal": "*",
     "Action": "s3:*", "Resource": "arn:aws:s3:::photos/album/private/*"},
    {"Sid": "PublicPrefix", "Effect": "Allow", "Principal": {"AWS": "*"},
     "Action": "s3:GetObject", "Resource": "arn:aws:s3:::photos/public/*"}
  ]
}"#;

#[test]
fn named_users_anyone_and_explicit_deny() {
    let p = parse(FAMILY);
    let get = "s3:GetObject";
    let list = "s3:ListBucket";
    let album = "arn:aws:s3:::photos/album/a.jpg";
    let private = "arn:aws:s3:::photos/album/private/x";
    let public = "arn:aws:s3:::photos/public/index.html";
    expect_decisions(
        &p,
        &Context::default(),
        &[
            (Some("bob"), get, album, Decision::Allow),
            (Some("carol"), list, "arn:aws:s3:::photos", Decision::Allow),
            (Some("mallory"), get, album, Decision::Silent),
            (Some("bob"), "s3:PutObject", album, Decision::Silent),
            (Some("bob"), get, private, Decision::Deny),
            (None, get, public, Decision::Allow),
            (None, get, album, Decision::Silent),
            // Actions compare without case, resources with.
            (None, "S3:GETOBJECT", public, Decision::Allow),
            (
                None,
                get,
                "arn:aws:s3:::photos/Public/index.html",
                Decision::Silent,
            ),
        ],
    );
    assert!(p.is_public());
}

#[test]
fn not_elements_invert_their_match() {
    let p = parse(
        r#"{"Statement": [
          {"Effect": "Deny", "NotPrincipal": {"AWS": "backup"}, "Action": "s3:PutObject",
           "Resource": "arn:aws:s3:::photos/*"},
          {"Effect": "Allow", "Principal": "*", "NotAction": "s3:Delete*",
           "NotResource": "arn:aws:s3:::photos/secret/*"}]}"#,
    );
    let a = "arn:aws:s3:::photos/a";
    let secret = "arn:aws:s3:::photos/secret/a";
    expect_decisions(
        &p,
        &Context::default(),
        &[
            (Some("alice"), "s3:PutObject", a, Decision::Deny),
            (Some("backup"), "s3:PutObject", a, Decision::Allow),
            (Some("backup"), "s3:DeleteObject", a, Decision::Silent),
            (Some("x"), "s3:GetObject", secret, Decision::Silent),
        ],
    );
}

#[test]
fn conditions_come_from_the_request() {
    let p = parse(
        r#"{"Version": "2012-10-17", "Statement": [
          {"Sid": "HttpsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
           "Resource": ["arn:aws:s3:::photos", "arn:aws:s3:::photos/*"],
           "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
          {"Sid": "HomeList", "Effect": "Allow", "Principal": {"AWS": "bob"},
           "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::photos",
           "Condition": {"StringLike": {"s3:prefix": ["home/bob/*", ""]}}},
          {"Sid": "Office", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
           "Resource": "arn:aws:s3:::photos/*",
           "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"},
                         "DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}}}]}"#,
    );
    let mut cx = Context::default();
    cx.set("aws:SecureTransport", "true")
        .set("s3:prefix", "home/bob/2024/")
        .set("aws:SourceIp", "10.2.3.4")
        .set("aws:CurrentTime", "1767225600");
    assert_eq!(
        ask(&p, Some("bob"), "s3:ListBucket", "arn:aws:s3:::photos", &cx),
        Decision::Allow
    );
    assert_eq!(
        ask(&p, None, "s3:GetObject", "arn:aws:s3:::photos/a", &cx),
        Decision::Allow
    );
    let mut other = cx.clone();
    other.set("s3:prefix", "home/alice/");
    assert_eq!(
        ask(
            &p,
            Some("bob"),
            "s3:ListBucket",
            "arn:aws:s3:::photos",
            &other
        ),
        Decision::Silent
    );
    let mut outside = cx.clone();
    outside.set("aws:SourceIp", "192.0.2.1");
    assert_eq!(
        ask(&p, None, "s3:GetObject", "arn:aws:s3:::photos/a", &outside),
        Decision::Silent
    );
    let mut late = cx.clone();
    late.set("aws:CurrentTime", "1893456000"); // 2030-01-01
    assert_eq!(
        ask(&p, None, "s3:GetObject", "arn:aws:s3:::photos/a", &late),
        Decision::Silent
    );
    let mut plain = cx.clone();
    plain.set("aws:SecureTransport", "false");
    assert_eq!(
        ask(
            &p,
            Some("bob"),
            "s3:ListBucket",
            "arn:aws:s3:::photos",
            &plain
        ),
        Decision::Deny
    );
    // Public: the Office statement is pinned to addresses, but nothing else allows anyone.
    assert!(!p.is_public());
}

#[test]
fn public_means_anyone_without_a_pinning_condition() {
    let stmt = |principal: &str, condition: &str| {
        format!(
            r#"{{"Statement": {{"Effect": "Allow", "Principal": {principal}, "Action": "s3:GetObject",
               "Resource": "arn:aws:s3:::photos/*"{condition}}}}}"#
        )
    };
    assert!(parse(&stmt(r#""*""#, "")).is_public());
    assert!(parse(&stmt(r#"{"AWS": "*"}"#, "")).is_public());
    assert!(!parse(&stmt(r#"{"AWS": "bob"}"#, "")).is_public());
    let ip = r#", "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}"#;
    assert!(!parse(&stmt(r#""*""#, ip)).is_public());
    let all = r#", "Condition": {"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}}"#;
    assert!(parse(&stmt(r#""*""#, all)).is_public());
    let tls = r#", "Condition": {"Bool": {"aws:SecureTransport": "true"}}"#;
    assert!(parse(&stmt(r#""*""#, tls)).is_public());
    let deny =
        r#"{"Statement": {"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": "*"}}"#;
    assert!(!parse(deny).is_public());
}

#[test]
fn malformed_policies_name_the_problem() {
    let cases: &[(&str, &str)] = &[
        ("not json", "Policies must be valid JSON"),
        ("[]", "Policies must be a JSON object"),
        (
            r#"{"Version": "2012-10-17"}"#,
            "Missing required field Statement",
        ),
        (r#"{"Statement": []}"#, "Statement is empty"),
        (
            r#"{"Version": "2020-01-01", "Statement": []}"#,
            "The policy Version \"2020-01-01\" is not supported",
        ),
        (
            r#"{"Statement": [{"Principal": "*", "Action": "s3:GetObject", "Resource": "*"}]}"#,
            "Missing required field Effect in statement 0",
        ),
        (
            r#"{"Statement": [{"Sid": "A", "Effect": "Permit", "Principal": "*", "Action": "s3:GetObject", "Resource": "*"}]}"#,
            "Invalid effect in statement A: \"Permit\"",
        ),
        (
            r#"{"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}"#,
            "Missing required field Principal in statement 0",
        ),
        (
            r#"{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObjet", "Resource": "*"}]}"#,
            "Policy has invalid action: s3:GetObjet",
        ),
        (
            r#"{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::other/*"}]}"#,
            "Policy has invalid resource: arn:aws:s3:::other/*",
        ),
        (
            r#"{"Statement": [{"Effect": "Allow", "Principal": {"CanonicalUser": "abc"}, "Action": "s3:GetObject", "Resource": "*"}]}"#,
            "Invalid principal in policy: Principal of statement 0 has a CanonicalUser entry",
        ),
        (
            r#"{"Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123:root"}, "Action": "s3:GetObject", "Resource": "*"}]}"#,
            "Invalid principal in policy: arn:aws:iam::123:root",
        ),
        (
            r#"{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "*", "Condition": {"StringEquals": {"aws:SourceVpc": "x"}}}]}"#,
            "Policy has an invalid condition key: aws:SourceVpc",
        ),
        (
            r#"{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "*", "Conditions": {}}]}"#,
            "Unknown field Conditions in statement 0",
        ),
        (
            r#"{"Statement": [{"Sid": "A", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "*"},
                           {"Sid": "A", "Effect": "Deny", "Principal": "*", "Action": "s3:GetObject", "Resource": "*"}]}"#,
            "Statement IDs (SID) in a single policy must be unique: A is given twice",
        ),
        (
            r#"{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "NotAction": "s3:PutObject", "Resource": "*"}]}"#,
            "statement 0 has both Action and NotAction",
        ),
        (
            r#"{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::photos/${aws:username}/*"}]}"#,
            "policy variables need \"Version\": \"2012-10-17\"",
        ),
        (
            r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::${aws:username}/*"}]}"#,
            "a policy variable may stand in the key part only",
        ),
        (
            r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::photos/${aws:username/*"}]}"#,
            "unterminated policy variable",
        ),
        (
            r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::photos/${aws:groups}/*"}]}"#,
            "invalid policy variable ${aws:groups}",
        ),
        (
            r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "*", "Condition": {"IpAddress": {"aws:SourceIp": "${aws:SourceIp}"}}}]}"#,
            "work in Resource and in the values of String operators only",
        ),
    ];
    for (text, expected) in cases {
        let e = refused(text);
        assert!(
            e.contains(expected),
            "{text}\n  gave {e:?}\n  wanted {expected:?}"
        );
    }
    let big = format!(
        r#"{{"Statement": [{{"Sid": "{}", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "*"}}]}}"#,
        "x".repeat(MAX_POLICY_BYTES)
    );
    assert!(refused(&big).starts_with("Policies must be no more than 20480 bytes"));
}

#[test]
fn deny_wins_over_grants_except_the_owner_managing_the_policy() {
    let facts = |grants_allow, owner, policy_management, restricted_public| Facts {
        grants_allow,
        owner,
        policy_management,
        restricted_public,
        acl_allows: false,
    };
    assert_eq!(
        decide(Decision::Deny, facts(true, true, false, false)),
        Err(Refusal::DeniedByPolicy)
    );
    assert_eq!(
        decide(Decision::Deny, facts(true, true, true, false)),
        Ok(())
    );
    assert_eq!(
        decide(Decision::Deny, facts(true, false, true, false)),
        Err(Refusal::DeniedByPolicy)
    );
    assert_eq!(
        decide(Decision::Allow, facts(false, false, false, false)),
        Ok(())
    );
    // RestrictPublicBuckets: a public policy allows only the owner.
    assert_eq!(
        decide(Decision::Allow, facts(false, false, false, true)),
        Err(Refusal::NotAllowed)
    );
    assert_eq!(
        decide(Decision::Allow, facts(false, true, false, true)),
        Ok(())
    );
    assert_eq!(
        decide(Decision::Silent, facts(false, true, false, false)),
        Err(Refusal::NotAllowed)
    );
}

// ---- properties ----

fn arb_action() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("s3:GetObject".to_owned()),
        Just("s3:PutObject".to_owned()),
        Just("s3:ListBucket".to_owned()),
        Just("s3:DeleteObject".to_owned()),
        Just("s3:Get*".to_owned()),
        Just("s3:*".to_owned()),
        Just("*".to_owned()),
    ]
}

fn arb_resource() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_owned()),
        Just("arn:aws:s3:::photos".to_owned()),
        "[ab/*]{0,4}".prop_map(|k| format!("arn:aws:s3:::photos/{k}")),
    ]
}

fn arb_principal() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#""*""#.to_owned()),
        Just(r#"{"AWS": "*"}"#.to_owned()),
        Just(r#"{"AWS": "alice"}"#.to_owned()),
        Just(r#"{"AWS": ["bob", "arn:aws:iam::1:user/alice"]}"#.to_owned()),
    ]
}

fn arb_statement() -> impl Strategy<Value = String> {
    (
        prop::bool::ANY,
        prop::bool::ANY,
        arb_principal(),
        arb_action(),
        arb_resource(),
        prop::option::of("[ab]{0,2}"),
    )
        .prop_map(|(deny, not_resource, principal, action, resource, prefix)| {
            let effect = if deny { "Deny" } else { "Allow" };
            let res = if not_resource { "NotResource" } else { "Resource" };
            let cond = prefix.map_or(String::new(), |p| {
                format!(r#", "Condition": {{"StringLike": {{"s3:prefix": "{p}*"}}}}"#)
            });
            format!(
                r#"{{"Effect": "{effect}", "Principal": {principal}, "Action": "{action}", "{res}": "{resource}"{cond}}}"#
            )
        })
}

fn arb_policy() -> impl Strategy<Value = String> {
    prop::collection::vec(arb_statement(), 1..5).prop_map(|sts| {
        format!(
            r#"{{"Version": "2012-10-17", "Statement": [{}]}}"#,
            sts.join(",")
        )
    })
}

fn arb_request() -> impl Strategy<Value = (Option<String>, String, String, Option<String>)> {
    (
        prop::option::of(prop_oneof![
            Just("alice".to_owned()),
            Just("bob".to_owned()),
            Just("eve".to_owned())
        ]),
        prop_oneof![
            Just("s3:GetObject".to_owned()),
            Just("s3:PutObject".to_owned()),
            Just("s3:ListBucket".to_owned()),
            Just("s3:DeleteObject".to_owned()),
        ],
        prop_oneof![
            Just("arn:aws:s3:::photos".to_owned()),
            "[ab/]{0,4}".prop_map(|k| format!("arn:aws:s3:::photos/{k}")),
        ],
        prop::option::of("[ab]{0,3}"),
    )
}

proptest! {
    /// Whatever else a policy says, a statement that denies the request decides it.
    #[test]
    fn an_applicable_deny_always_wins(policy in arb_policy(), (user, action, resource, prefix) in arb_request()) {
        let p = parse(&policy);
        let mut cx = Context::default();
        if let Some(prefix) = &prefix { cx.set("s3:prefix", prefix.clone()); }
        let req = Request { user: user.as_deref(), action: &action, resource: &resource, context: &cx };
        let any_deny = p.statements.iter().any(|s| s.effect == Effect::Deny && s.applies(&req));
        let any_allow = p.statements.iter().any(|s| s.effect == Effect::Allow && s.applies(&req));
        let expected = if any_deny { Decision::Deny } else if any_allow { Decision::Allow } else { Decision::Silent };
        prop_assert_eq!(p.evaluate(&req), expected);
        // And no grant, ownership or public-block setting turns a deny into access
        // (other than the owner managing the policy itself).
        if any_deny {
            for grants_allow in [false, true] {
                for owner in [false, true] {
                    for restricted_public in [false, true] {
                        let f = Facts { grants_allow, owner, policy_management: false, restricted_public, acl_allows: true };
                        prop_assert_eq!(decide(p.evaluate(&req), f), Err(Refusal::DeniedByPolicy));
                    }
                }
            }
        }
    }

    /// Without a policy (a silent one), the grants decide alone, as before policies.
    #[test]
    fn no_policy_leaves_grants_unchanged(grants_allow in prop::bool::ANY, owner in prop::bool::ANY, pm in prop::bool::ANY, rp in prop::bool::ANY) {
        let f = Facts { grants_allow, owner, policy_management: pm, restricted_public: rp, acl_allows: false };
        prop_assert_eq!(decide(Decision::Silent, f).is_ok(), grants_allow);
    }

    /// Anonymous requests get only what a statement naming everyone allows.
    #[test]
    fn anonymous_access_needs_a_statement_for_anyone(policy in arb_policy(), (_, action, resource, _) in arb_request()) {
        let p = parse(&policy);
        let cx = Context::default();
        let req = Request { user: None, action: &action, resource: &resource, context: &cx };
        if p.evaluate(&req) == Decision::Allow {
            prop_assert!(p.statements.iter().any(|s| s.effect == Effect::Allow
                && (s.not_principal || s.principals.contains(&Who::Anyone)) && s.applies(&req)));
        }
    }

    /// The parser answers every input with a policy or a message, never a panic.
    #[test]
    fn the_parser_never_panics_on_text(text in "\\PC{0,200}") {
        let _ = Policy::parse(&text, "photos");
    }

    /// ... nor on JSON-shaped input close to a policy.
    #[test]
    fn the_parser_never_panics_on_near_policies(policy in arb_policy(), cut in 0usize..400, junk in "[\\[\\]{}\":,a-zA-Z*0-9 ]{0,20}") {
        let mut text = policy.clone();
        let at = text.char_indices().map(|(i, _)| i).find(|&i| i >= cut.min(text.len())).unwrap_or(text.len());
        text.insert_str(at, &junk);
        let _ = Policy::parse(&text, "photos");
        let _ = Policy::parse(&policy.replace("Allow", &junk), "photos");
    }
}

/// The per-user home prefix of AWS's examples: each user lists and touches only
/// `home/<their name>/`.
const HOMES: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {"Sid": "ListOwnHome", "Effect": "Allow", "Principal": {"AWS": ["alice", "bob"]},
     "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::photos",
     "Condition": {"StringLike": {"s3:prefix": ["home/${aws:username}/*", "home/${aws:username}/"]}}},
    {"Sid": "TouchOwnHome", "Effect": "Allow", "Principal": {"AWS": ["alice", "bob"]},
     "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
     "Resource": "arn:aws:s3:::photos/home/${aws:username}/*"}
  ]
}"#;

fn user_cx(user: Option<&str>, prefix: Option<&str>) -> Context {
    let mut cx = Context::default();
    if let Some(u) = user {
        cx.set("aws:username", u).set("aws:userid", u);
    }
    if let Some(p) = prefix {
        cx.set("s3:prefix", p);
    }
    cx
}

#[test]
fn policy_variables_give_each_user_their_own_home() {
    let p = parse(HOMES);
    let (get, put) = ("s3:GetObject", "s3:PutObject");
    let (alices, bobs) = (
        "arn:aws:s3:::photos/home/alice/a.txt",
        "arn:aws:s3:::photos/home/bob/a.txt",
    );
    expect_decisions(
        &p,
        &user_cx(Some("alice"), None),
        &[
            (Some("alice"), get, alices, Decision::Allow),
            (Some("alice"), get, bobs, Decision::Silent),
        ],
    );
    expect_decisions(
        &p,
        &user_cx(Some("bob"), None),
        &[(Some("bob"), put, bobs, Decision::Allow)],
    );
    let list = |user: &str, prefix: &str| {
        ask(
            &p,
            Some(user),
            "s3:ListBucket",
            "arn:aws:s3:::photos",
            &user_cx(Some(user), Some(prefix)),
        )
    };
    assert_eq!(list("alice", "home/alice/"), Decision::Allow);
    assert_eq!(list("alice", "home/alice/2026/"), Decision::Allow);
    assert_eq!(list("alice", "home/bob/"), Decision::Silent);
    assert_eq!(list("alice", "home/"), Decision::Silent);
}

#[test]
fn an_undefined_variable_makes_its_statement_not_apply() {
    // Anonymous requests have no aws:username: the statement matches nothing, not the
    // literal text `${aws:username}`, allow or deny alike.
    let p = parse(
        r#"{"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
             "Resource": "arn:aws:s3:::photos/home/${aws:username}/*"}]}"#,
    );
    let nobody = user_cx(None, None);
    for key in ["home/${aws:username}/a", "home//a", "home/alice/a"] {
        let resource = format!("arn:aws:s3:::photos/{key}");
        assert_eq!(
            ask(&p, None, "s3:GetObject", &resource, &nobody),
            Decision::Silent,
            "{key}"
        );
    }
    // In a NotResource and in a negated condition alike.
    let p = parse(
        r#"{"Version": "2012-10-17", "Statement": [
            {"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
             "NotResource": "arn:aws:s3:::photos/home/${aws:username}/*"},
            {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject", "Resource": "*",
             "Condition": {"StringNotEquals": {"s3:x-amz-acl": "${aws:username}-acl"}}}]}"#,
    );
    assert_eq!(
        ask(&p, None, "s3:GetObject", "arn:aws:s3:::photos/x", &nobody),
        Decision::Silent
    );
    assert_eq!(
        ask(&p, None, "s3:PutObject", "arn:aws:s3:::photos/x", &nobody),
        Decision::Silent
    );
    // With a value, the same statements apply.
    let alice = user_cx(Some("alice"), None);
    assert_eq!(
        ask(
            &p,
            Some("alice"),
            "s3:GetObject",
            "arn:aws:s3:::photos/x",
            &alice
        ),
        Decision::Deny
    );
    // A default stands in for the missing value.
    let p = parse(
        r#"{"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
             "Resource": "arn:aws:s3:::photos/home/${aws:username, 'guest'}/*"}]}"#,
    );
    assert_eq!(
        ask(
            &p,
            None,
            "s3:GetObject",
            "arn:aws:s3:::photos/home/guest/a",
            &nobody
        ),
        Decision::Allow
    );
}

#[test]
fn policies_before_2012_read_condition_values_as_text() {
    // As AWS: no variables before 2012-10-17; such a condition (sublet accepted it before
    // it read variables) keeps meaning the text.
    let p = parse(
        r#"{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:PutObject",
            "Resource": "arn:aws:s3:::photos/*",
            "Condition": {"StringEquals": {"s3:x-amz-acl": "${aws:username}"}}}]}"#,
    );
    let acl = |value: &str| {
        let mut cx = user_cx(Some("alice"), None);
        cx.set("s3:x-amz-acl", value);
        ask(
            &p,
            Some("alice"),
            "s3:PutObject",
            "arn:aws:s3:::photos/k",
            &cx,
        )
    };
    assert_eq!(acl("${aws:username}"), Decision::Allow);
    assert_eq!(acl("alice"), Decision::Silent);
}

#[test]
fn escaped_wildcards_match_only_themselves() {
    let p = parse(
        r#"{"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
             "Resource": "arn:aws:s3:::photos/${*}${?}${$}/*"},
            {"Effect": "Allow", "Principal": "*", "Action": "s3:PutObject", "Resource": "*",
             "Condition": {"StringLike": {"s3:x-amz-acl": "a${*}"}}}]}"#,
    );
    let cx = Context::default();
    let get = |key: &str| {
        ask(
            &p,
            None,
            "s3:GetObject",
            &format!("arn:aws:s3:::photos/{key}"),
            &cx,
        )
    };
    assert_eq!(get("*?$/x"), Decision::Allow);
    assert_eq!(get("ab$/x"), Decision::Silent);
    assert_eq!(get("a?$/x"), Decision::Silent);
    let put = |acl: &str| {
        let mut cx = Context::default();
        cx.set("s3:x-amz-acl", acl);
        ask(&p, None, "s3:PutObject", "arn:aws:s3:::photos/k", &cx)
    };
    assert_eq!(put("a*"), Decision::Allow);
    assert_eq!(put("ab"), Decision::Silent);
}

#[test]
fn a_condition_pinned_to_the_requests_own_user_is_not_a_restriction() {
    // `aws:username == ${aws:username}` holds for every signed request: still public.
    let p = parse(
        r#"{"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "*",
             "Condition": {"StringEquals": {"aws:username": "${aws:username}"}}}]}"#,
    );
    assert!(p.is_public());
}

proptest! {
    /// Whatever names users have, a home policy gives each exactly the keys under their
    /// own home: never another user's, never one outside `home/`.
    #[test]
    fn home_policies_never_leak(
        user in "[a-z*?$]{1,5}",
        owner in "[a-z*?$]{1,5}",
        rest in "[a-z/*]{0,6}",
    ) {
        let p = parse(HOMES.replace(r#"["alice", "bob"]"#, "\"*\"").as_str());
        let cx = user_cx(Some(&user), None);
        let resource = format!("arn:aws:s3:::photos/home/{owner}/{rest}");
        let decision = ask(&p, Some(&user), "s3:GetObject", &resource, &cx);
        prop_assert_eq!(decision == Decision::Allow, owner == user);
    }
}
