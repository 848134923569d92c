//! The `Condition` element: operators (string, numeric, date, IP address, bool, null, with
//! `IfExists` and the `ForAnyValue:`/`ForAllValues:` set qualifiers), the condition keys
//! sublet supplies, and how a block is judged against a request's [`Context`].

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::variables::Template;
use super::wildcard;

/// The condition keys a request carries in sublet (lowercase; keys compare
/// case-insensitively). A policy naming another key is refused.
pub const KEYS: &[&str] = &[
    "aws:sourceip",
    "aws:securetransport",
    "aws:currenttime",
    "aws:epochtime",
    "aws:useragent",
    "aws:referer",
    "aws:username",
    "aws:userid",
    "aws:principaltype",
    "s3:prefix",
    "s3:delimiter",
    "s3:max-keys",
    "s3:versionid",
    "s3:x-amz-acl",
    "s3:x-amz-server-side-encryption",
    "s3:x-amz-copy-source",
    "s3:signatureversion",
    "s3:authtype",
];

/// The condition keys of one request and their values (absent keys are not there).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    values: BTreeMap<String, String>,
}

impl Context {
    /// Sets `key` (any case) to `value`.
    pub fn set(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.values.insert(key.to_ascii_lowercase(), value.into());
        self
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(&key.to_ascii_lowercase())
            .map(String::as_str)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    Numeric(Ordering),
    Date(Ordering),
    IpAddress,
    Bool,
    Null,
}

/// The comparison of a numeric or date operator: the request's value against the policy's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ordering {
    Equals,
    LessThan,
    LessThanEquals,
    GreaterThan,
    GreaterThanEquals,
}

impl Ordering {
    fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Ordering::Equals => ord == Equal,
            Ordering::LessThan => ord == Less,
            Ordering::LessThanEquals => ord != Greater,
            Ordering::GreaterThan => ord == Greater,
            Ordering::GreaterThanEquals => ord != Less,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Qualifier {
    None,
    ForAnyValue,
    ForAllValues,
}

/// One operator as written (`StringNotLikeIfExists`, `ForAnyValue:StringLike`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operator {
    kind: Kind,
    /// The `Not` forms: true when the request's value matches none of the policy's.
    negated: bool,
    if_exists: bool,
    qualifier: Qualifier,
}

impl Operator {
    /// The operator `name`, or why it is not one.
    pub fn parse(name: &str) -> Result<Self, String> {
        let (qualifier, rest) = if let Some(r) = name.strip_prefix("ForAnyValue:") {
            (Qualifier::ForAnyValue, r)
        } else if let Some(r) = name.strip_prefix("ForAllValues:") {
            (Qualifier::ForAllValues, r)
        } else {
            (Qualifier::None, name)
        };
        let (rest, if_exists) = match rest.strip_suffix("IfExists") {
            Some(r) => (r, true),
            None => (rest, false),
        };
        use Ordering::*;
        let (kind, negated) = match rest {
            "StringEquals" => (Kind::StringEquals, false),
            "StringNotEquals" => (Kind::StringEquals, true),
            "StringEqualsIgnoreCase" => (Kind::StringEqualsIgnoreCase, false),
            "StringNotEqualsIgnoreCase" => (Kind::StringEqualsIgnoreCase, true),
            "StringLike" => (Kind::StringLike, false),
            "StringNotLike" => (Kind::StringLike, true),
            "NumericEquals" => (Kind::Numeric(Equals), false),
            "NumericNotEquals" => (Kind::Numeric(Equals), true),
            "NumericLessThan" => (Kind::Numeric(LessThan), false),
            "NumericLessThanEquals" => (Kind::Numeric(LessThanEquals), false),
            "NumericGreaterThan" => (Kind::Numeric(GreaterThan), false),
            "NumericGreaterThanEquals" => (Kind::Numeric(GreaterThanEquals), false),
            "DateEquals" => (Kind::Date(Equals), false),
            "DateNotEquals" => (Kind::Date(Equals), true),
            "DateLessThan" => (Kind::Date(LessThan), false),
            "DateLessThanEquals" => (Kind::Date(LessThanEquals), false),
            "DateGreaterThan" => (Kind::Date(GreaterThan), false),
            "DateGreaterThanEquals" => (Kind::Date(GreaterThanEquals), false),
            "IpAddress" => (Kind::IpAddress, false),
            "NotIpAddress" => (Kind::IpAddress, true),
            "Bool" => (Kind::Bool, false),
            "Null" if !if_exists && qualifier == Qualifier::None => (Kind::Null, false),
            _ => return Err(format!("Policy has an invalid condition operator: {name}")),
        };
        Ok(Operator {
            kind,
            negated,
            if_exists,
            qualifier,
        })
    }
}

/// One `operator: {key: [values]}` entry, its values checked for the operator.
#[derive(Clone, Debug, PartialEq)]
pub struct Test {
    pub operator: Operator,
    /// Lowercase.
    pub key: String,
    pub values: Vec<String>,
    /// The values of a string operator, with their policy variables; empty for the other
    /// operators (whose values cannot have variables).
    patterns: Vec<Template>,
}

impl Kind {
    /// The string operators: the ones whose values may hold policy variables.
    fn is_string(self) -> bool {
        matches!(
            self,
            Kind::StringEquals | Kind::StringEqualsIgnoreCase | Kind::StringLike
        )
    }
}

impl Test {
    /// Checks the key is one sublet knows and every value suits the operator. `variables`:
    /// the values of string operators may hold policy variables (a 2012-10-17 policy);
    /// otherwise `${...}` in them is text, as AWS reads older policies.
    pub fn new(
        operator_name: &str,
        key: &str,
        values: Vec<String>,
        variables: bool,
    ) -> Result<Self, String> {
        let operator = Operator::parse(operator_name)?;
        let lower = key.to_ascii_lowercase();
        if !KEYS.contains(&lower.as_str()) {
            return Err(format!(
                "Policy has an invalid condition key: {key} (sublet knows {})",
                KEYS.join(", ")
            ));
        }
        if values.is_empty() {
            return Err(format!("condition {operator_name} on {key} has no value"));
        }
        for v in &values {
            let bad =
                |what: &str| format!("condition {operator_name} on {key}: {v:?} is not {what}");
            if variables && !operator.kind.is_string() && v.contains("${") {
                return Err(format!(
                    "condition {operator_name} on {key}: {v:?} has a policy variable; they \
                     work in Resource and in the values of String operators only"
                ));
            }
            match operator.kind {
                Kind::Numeric(_) if number(v).is_none() => return Err(bad("a number")),
                Kind::Date(_) if date(v).is_none() => {
                    return Err(bad("a date (ISO 8601 or seconds since 1970)"));
                }
                Kind::IpAddress if Cidr::parse(v).is_none() => {
                    return Err(bad("an IP address or CIDR range"));
                }
                Kind::Bool | Kind::Null if boolean(v).is_none() => {
                    return Err(bad("true or false"));
                }
                _ => {}
            }
        }
        let patterns = if operator.kind.is_string() {
            values
                .iter()
                .map(|v| {
                    if !variables {
                        return Ok(Template::literal(v));
                    }
                    Template::parse(v)
                        .map_err(|e| format!("condition {operator_name} on {key}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        Ok(Test {
            operator,
            key: lower,
            values,
            patterns,
        })
    }

    /// Whether the request's context passes this test. A value whose policy variable the
    /// request has no value for fails the test, whatever the operator.
    pub fn holds(&self, cx: &Context) -> bool {
        let op = self.operator;
        let actual = cx.get(&self.key);
        let resolved: Vec<String> = if op.kind.is_string() {
            match self
                .patterns
                .iter()
                .map(|p| p.resolve_text(cx))
                .collect::<Option<Vec<_>>>()
            {
                Some(values) => values,
                None => return false,
            }
        } else {
            Vec::new()
        };
        if op.kind == Kind::Null {
            // `Null: true` holds when the key is absent.
            let want_absent = self.values.iter().any(|v| boolean(v) == Some(true));
            return actual.is_none() == want_absent;
        }
        let Some(actual) = actual else {
            // An absent key matches no value: positive operators fail, negated ones hold;
            // IfExists and ForAllValues hold (nothing to check).
            return op.if_exists || op.negated || op.qualifier == Qualifier::ForAllValues;
        };
        // Every key sublet supplies is single-valued: ForAnyValue and ForAllValues both
        // come down to testing that one value.
        let any = if op.kind == Kind::StringLike {
            self.patterns.iter().any(|p| {
                p.resolve(cx)
                    .is_some_and(|tokens| wildcard::matches_tokens(&tokens, actual, false))
            })
        } else if op.kind.is_string() {
            resolved.iter().any(|v| matches_one(op.kind, actual, v))
        } else {
            self.values.iter().any(|v| matches_one(op.kind, actual, v))
        };
        any != op.negated
    }

    /// Whether this test pins the request to fixed values S3 counts as "not public":
    /// `aws:SourceIp` within given ranges (none of them all addresses), or the user id
    /// or name equal to given ones.
    pub fn restricts(&self) -> bool {
        let op = self.operator;
        if op.negated || op.if_exists || self.patterns.iter().any(Template::has_variables) {
            return false;
        }
        match (self.key.as_str(), op.kind) {
            ("aws:sourceip", Kind::IpAddress) => self
                .values
                .iter()
                .all(|v| Cidr::parse(v).is_some_and(|c| c.prefix > 0)),
            ("aws:userid" | "aws:username", Kind::StringEquals) => true,
            ("aws:userid" | "aws:username", Kind::StringLike) => {
                !self.values.iter().any(|v| wildcard::has_wildcard(v))
            }
            _ => false,
        }
    }
}

fn matches_one(kind: Kind, actual: &str, expected: &str) -> bool {
    match kind {
        Kind::StringEquals => actual == expected,
        Kind::StringEqualsIgnoreCase => actual.to_lowercase() == expected.to_lowercase(),
        // `Test::holds` matches StringLike on its values' resolved tokens (so `${*}` stays a
        // literal `*`); this is the same match for a plain value.
        Kind::StringLike => wildcard::matches(expected, actual, false),
        Kind::Numeric(ord) => match (number(actual), number(expected)) {
            (Some(a), Some(e)) => a.partial_cmp(&e).is_some_and(|o| ord.holds(o)),
            _ => false,
        },
        Kind::Date(ord) => match (date(actual), date(expected)) {
            (Some(a), Some(e)) => ord.holds(a.cmp(&e)),
            _ => false,
        },
        Kind::IpAddress => match (actual.parse::<IpAddr>(), Cidr::parse(expected)) {
            (Ok(ip), Some(range)) => range.contains(ip),
            _ => false,
        },
        Kind::Bool => boolean(actual).is_some() && boolean(actual) == boolean(expected),
        Kind::Null => false,
    }
}

fn number(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

fn boolean(text: &str) -> Option<bool> {
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// A date as milliseconds since 1970: ISO 8601 (`2026-01-01T00:00:00Z`, `2026-01-01`) or
/// whole seconds since 1970.
pub fn date(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<i64>() {
        return secs.checked_mul(1000);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis());
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

/// An address range: an address and how many leading bits of it count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `2001:db8::/32` or a single address.
    pub fn parse(text: &str) -> Option<Self> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (text.trim().parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn test(op: &str, key: &str, values: &[&str]) -> Test {
        Test::new(
            op,
            key,
            values.iter().map(|v| v.to_string()).collect(),
            true,
        )
        .unwrap()
    }

    fn cx(pairs: &[(&str, &str)]) -> Context {
        let mut c = Context::default();
        for (k, v) in pairs {
            c.set(k, *v);
        }
        c
    }

    #[test]
    fn string_operators() {
        let c = cx(&[("s3:prefix", "home/alice/")]);
        assert!(test("StringEquals", "s3:prefix", &["x", "home/alice/"]).holds(&c));
        assert!(!test("StringNotEquals", "s3:prefix", &["x", "home/alice/"]).holds(&c));
        assert!(test("StringLike", "S3:Prefix", &["home/*"]).holds(&c));
        assert!(test("StringNotLike", "s3:prefix", &["tmp/*"]).holds(&c));
        assert!(test("StringEqualsIgnoreCase", "s3:prefix", &["HOME/ALICE/"]).holds(&c));
        // Absent keys: positive operators fail, negated and IfExists hold.
        let empty = Context::default();
        assert!(!test("StringEquals", "s3:prefix", &["a"]).holds(&empty));
        assert!(test("StringNotEquals", "s3:prefix", &["a"]).holds(&empty));
        assert!(test("StringEqualsIfExists", "s3:prefix", &["a"]).holds(&empty));
        assert!(test("Null", "s3:prefix", &["true"]).holds(&empty));
        assert!(!test("Null", "s3:prefix", &["false"]).holds(&empty));
        assert!(test("Null", "s3:prefix", &["false"]).holds(&c));
    }

    #[test]
    fn numeric_date_bool_and_ip_operators() {
        let c = cx(&[
            ("s3:max-keys", "10"),
            ("aws:CurrentTime", "1767225600"), // 2026-01-01T00:00:00Z
            ("aws:SecureTransport", "false"),
            ("aws:SourceIp", "192.168.1.7"),
        ]);
        assert!(test("NumericLessThanEquals", "s3:max-keys", &["10"]).holds(&c));
        assert!(!test("NumericLessThan", "s3:max-keys", &["10"]).holds(&c));
        assert!(test("NumericNotEquals", "s3:max-keys", &["11"]).holds(&c));
        assert!(test("DateLessThan", "aws:CurrentTime", &["2026-06-01T00:00:00Z"]).holds(&c));
        assert!(test("DateEquals", "aws:CurrentTime", &["2026-01-01"]).holds(&c));
        assert!(
            !test(
                "DateGreaterThan",
                "aws:CurrentTime",
                &["2026-01-01T00:00:01Z"]
            )
            .holds(&c)
        );
        assert!(test("Bool", "aws:SecureTransport", &["false"]).holds(&c));
        assert!(!test("Bool", "aws:SecureTransport", &["true"]).holds(&c));
        assert!(test("IpAddress", "aws:SourceIp", &["192.168.0.0/16"]).holds(&c));
        assert!(test("NotIpAddress", "aws:SourceIp", &["10.0.0.0/8"]).holds(&c));
        assert!(test("IpAddress", "aws:SourceIp", &["0.0.0.0/0"]).holds(&c));
        let v6 = cx(&[("aws:SourceIp", "::ffff:10.1.2.3")]);
        assert!(test("IpAddress", "aws:SourceIp", &["10.0.0.0/8"]).holds(&v6));
        assert!(!test("IpAddress", "aws:SourceIp", &["2001:db8::/32"]).holds(&v6));
    }

    #[test]
    fn bad_operators_keys_and_values_are_named() {
        let err =
            |op: &str, key: &str, v: &str| Test::new(op, key, vec![v.into()], true).unwrap_err();
        assert_eq!(
            err("StringSortOf", "s3:prefix", "a"),
            "Policy has an invalid condition operator: StringSortOf"
        );
        assert!(
            err("StringEquals", "aws:SourceVpc", "a")
                .starts_with("Policy has an invalid condition key: aws:SourceVpc")
        );
        assert_eq!(
            err("IpAddress", "aws:SourceIp", "10.0.0.0/33"),
            "condition IpAddress on aws:SourceIp: \"10.0.0.0/33\" is not an IP address or CIDR range"
        );
        assert!(err("NumericLessThan", "s3:max-keys", "ten").contains("is not a number"));
        assert!(err("DateLessThan", "aws:CurrentTime", "soon").contains("is not a date"));
        assert!(err("Bool", "aws:SecureTransport", "yes").contains("true or false"));
        assert!(err("NullIfExists", "s3:prefix", "true").contains("invalid condition operator"));
    }

    proptest::proptest! {
        #[test]
        fn negated_operators_are_the_complement(value in "[a-c]{0,3}", expected in proptest::collection::vec("[a-c*]{0,3}", 1..3)) {
            let c = cx(&[("s3:prefix", value.as_str())]);
            let exp: Vec<&str> = expected.iter().map(String::as_str).collect();
            for (pos, neg) in [("StringEquals", "StringNotEquals"), ("StringLike", "StringNotLike")] {
                proptest::prop_assert_ne!(test(pos, "s3:prefix", &exp).holds(&c), test(neg, "s3:prefix", &exp).holds(&c));
            }
        }

        #[test]
        fn cidr_contains_agrees_with_masking(a in proptest::num::u32::ANY, b in proptest::num::u32::ANY, prefix in 0u8..=32) {
            let net = Cidr::parse(&format!("{}/{prefix}", std::net::Ipv4Addr::from(a))).unwrap();
            let shift = 32 - u32::from(prefix);
            let same = u64::from(a) >> shift == u64::from(b) >> shift;
            proptest::prop_assert_eq!(net.contains(IpAddr::V4(b.into())), same);
        }
    }
}
