//! CORS: a bucket's rules (stored as JSON, `bucket_cors`), what makes a set of them valid,
//! and which rule, if any, lets a browser's cross-origin request through — the rules S3
//! applies to preflight `OPTIONS` requests and to the requests that follow them.

use serde::{Deserialize, Serialize};

/// S3's limit on the rules of one bucket.
pub const MAX_RULES: usize = 100;
/// S3's limit on a rule's `ID`.
pub const MAX_ID_LEN: usize = 255;
/// The methods a rule may allow (S3's list).
pub const METHODS: [&str; 5] = ["GET", "PUT", "HEAD", "POST", "DELETE"];

/// One `CORSRule`: which origins may send which methods with which headers, which response
/// headers their scripts may read, and how long a browser may keep a preflight answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CorsRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Origins, each with at most one `*` standing for any run of characters.
    pub allowed_origins: Vec<String>,
    /// Methods, among [`METHODS`].
    pub allowed_methods: Vec<String>,
    /// Request headers a preflight may ask for (case-insensitive, at most one `*` each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_headers: Vec<String>,
    /// Response headers the browser shows the page's scripts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<i32>,
}

/// Every problem of a CORS configuration, in S3's words (answered as `InvalidRequest`, or
/// `MalformedXML` for a configuration without rules, as S3 does).
pub fn problems(rules: &[CorsRule]) -> Vec<String> {
    let mut out = Vec::new();
    if rules.is_empty() {
        out.push("a CORS configuration needs at least one CORSRule".to_owned());
    }
    if rules.len() > MAX_RULES {
        out.push(format!(
            "the CORS configuration has {} rules; at most {MAX_RULES} are allowed",
            rules.len()
        ));
    }
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("CORSRule {}", i + 1);
        if rule.id.as_ref().is_some_and(|id| id.len() > MAX_ID_LEN) {
            out.push(format!(
                "{at}: the ID is longer than {MAX_ID_LEN} characters"
            ));
        }
        if rule.allowed_origins.is_empty() {
            out.push(format!("{at}: at least one AllowedOrigin is required"));
        }
        if rule.allowed_methods.is_empty() {
            out.push(format!("{at}: at least one AllowedMethod is required"));
        }
        for origin in &rule.allowed_origins {
            if origin.matches('*').count() > 1 {
                out.push(format!(
                    "{at}: AllowedOrigin \"{origin}\" can not have more than one wildcard."
                ));
            }
        }
        for header in &rule.allowed_headers {
            if header.matches('*').count() > 1 {
                out.push(format!(
                    "{at}: AllowedHeader \"{header}\" can not have more than one wildcard."
                ));
            }
        }
        for method in &rule.allowed_methods {
            if !METHODS.contains(&method.as_str()) {
                out.push(format!(
                    "{at}: Found unsupported HTTP method in CORS config. Unsupported method is {method}"
                ));
            }
        }
        if rule.max_age_seconds.is_some_and(|s| s < 0) {
            out.push(format!("{at}: MaxAgeSeconds may not be negative"));
        }
    }
    out
}

/// Whether `value` matches `pattern`, in which one `*` stands for any run of characters.
fn wildcard(pattern: &str, value: &str, fold_case: bool) -> bool {
    let eq = |a: &str, b: &str| {
        if fold_case {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    match pattern.split_once('*') {
        None => eq(pattern, value),
        Some((prefix, suffix)) => {
            value.len() >= prefix.len() + suffix.len()
                && value.is_char_boundary(prefix.len())
                && value.is_char_boundary(value.len() - suffix.len())
                && eq(&value[..prefix.len()], prefix)
                && eq(&value[value.len() - suffix.len()..], suffix)
        }
    }
}

impl CorsRule {
    fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|o| wildcard(o, origin, false))
    }

    fn allows_method(&self, method: &str) -> bool {
        self.allowed_methods.iter().any(|m| m == method)
    }

    fn allows_header(&self, header: &str) -> bool {
        self.allowed_headers
            .iter()
            .any(|h| wildcard(h, header, true))
    }

    /// The `Access-Control-Allow-Origin` this rule answers `origin` with: `*` when the rule
    /// allows every origin, else the origin itself (and then credentials are allowed).
    pub fn allow_origin<'a>(&self, origin: &'a str) -> &'a str {
        if self.allowed_origins.iter().any(|o| o == "*") {
            "*"
        } else {
            origin
        }
    }
}

/// The first rule that lets a preflight through: its origin, the method it announces
/// (`Access-Control-Request-Method`) and every header it announces
/// (`Access-Control-Request-Headers`, comma-separated).
pub fn preflight<'r>(
    rules: &'r [CorsRule],
    origin: &str,
    method: &str,
    request_headers: &[&str],
) -> Option<&'r CorsRule> {
    rules.iter().find(|r| {
        r.allows_origin(origin)
            && r.allows_method(method)
            && request_headers.iter().all(|h| r.allows_header(h))
    })
}

/// The first rule that covers an actual cross-origin request (its origin and method).
pub fn actual<'r>(rules: &'r [CorsRule], origin: &str, method: &str) -> Option<&'r CorsRule> {
    rules
        .iter()
        .find(|r| r.allows_origin(origin) && r.allows_method(method))
}

/// The headers of an `Access-Control-Request-Headers` value: trimmed, lower-cased, non-empty.
pub fn header_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origins: &[&str], methods: &[&str], headers: &[&str]) -> CorsRule {
        CorsRule {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allowed_methods: methods.iter().map(|s| s.to_string()).collect(),
            allowed_headers: headers.iter().map(|s| s.to_string()).collect(),
            ..CorsRule::default()
        }
    }

    #[test]
    fn origins_match_exactly_or_around_their_one_wildcard() {
        let r = rule(
            &["https://*.example.com", "http://localhost:8080"],
            &["GET"],
            &[],
        );
        assert!(r.allows_origin("https://app.example.com"));
        assert!(r.allows_origin("https://a.b.example.com"));
        assert!(r.allows_origin("http://localhost:8080"));
        assert!(!r.allows_origin("https://example.com"));
        assert!(!r.allows_origin("http://app.example.com"));
        assert!(!r.allows_origin("https://app.example.com.evil.net"));
        assert!(!r.allows_origin("http://localhost:8081"));
        // Origins are compared as sent: case matters.
        assert!(!r.allows_origin("HTTPS://APP.EXAMPLE.COM"));
        // A pattern whose prefix and suffix overlap in the value does not match.
        assert!(!wildcard("ab*ba", "aba", false));
        assert!(wildcard("*", "", false));
        assert!(wildcard("é*é", "éé", false));
        assert!(!wildcard("é*", "e", false));
    }

    #[test]
    fn a_preflight_needs_origin_method_and_every_header_in_one_rule() {
        let rules = vec![
            rule(&["https://a.example"], &["GET"], &[]),
            rule(
                &["https://a.example"],
                &["PUT", "POST"],
                &["content-type", "x-amz-*"],
            ),
        ];
        let o = "https://a.example";
        assert_eq!(preflight(&rules, o, "GET", &[]), Some(&rules[0]));
        assert_eq!(
            preflight(&rules, o, "PUT", &["Content-Type", "x-amz-meta-owner"]),
            Some(&rules[1])
        );
        // A header no rule allows, a method no rule allows, another origin.
        assert_eq!(preflight(&rules, o, "PUT", &["authorization"]), None);
        assert_eq!(preflight(&rules, o, "GET", &["content-type"]), None);
        assert_eq!(preflight(&rules, o, "DELETE", &[]), None);
        assert_eq!(preflight(&rules, "https://b.example", "GET", &[]), None);
        assert_eq!(actual(&rules, o, "POST"), Some(&rules[1]));
        assert_eq!(actual(&rules, o, "DELETE"), None);
    }

    #[test]
    fn allow_origin_is_a_star_only_for_a_rule_open_to_every_origin() {
        assert_eq!(rule(&["*"], &["GET"], &[]).allow_origin("https://x"), "*");
        assert_eq!(
            rule(&["https://*"], &["GET"], &[]).allow_origin("https://x"),
            "https://x"
        );
    }

    #[test]
    fn configurations_are_checked_as_s3_does() {
        assert!(problems(&[rule(&["*"], &["GET", "PUT"], &["*"])]).is_empty());
        assert_eq!(problems(&[]).len(), 1);
        let many = vec![rule(&["*"], &["GET"], &[]); MAX_RULES + 1];
        assert_eq!(problems(&many).len(), 1);
        assert!(problems(&many[..MAX_RULES]).is_empty());
        let bad = rule(&["https://*.*.example"], &["PATCH"], &["x-*-*"]);
        let found = problems(&[bad]);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].contains("can not have more than one wildcard"));
        assert!(found[2].contains("Unsupported method is PATCH"));
        let no_origin = rule(&[], &["GET"], &[]);
        assert_eq!(problems(&[no_origin]).len(), 1);
    }

    #[test]
    fn request_header_lists_are_split_and_lower_cased() {
        assert_eq!(
            header_list(" Content-Type, X-Amz-Date ,,"),
            vec!["content-type", "x-amz-date"]
        );
    }
}
