//! CORS: Put/Get/DeleteBucketCors, and the two places browsers meet the rules — preflight
//! `OPTIONS` requests, answered by [`answer_preflight`] before s3s (they carry no
//! signature), and the cross-origin requests themselves, whose answers (errors included)
//! get the `Access-Control-*` headers of the rule that covers them ([`add_headers`]).

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use s3s::dto;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::Gateway;
use crate::meta::cors::{self, CorsRule};
use crate::node::Node;

fn from_s3(rules: dto::CORSRules) -> Vec<CorsRule> {
    rules
        .into_iter()
        .map(|r| CorsRule {
            id: r.id,
            allowed_origins: r.allowed_origins,
            allowed_methods: r.allowed_methods,
            allowed_headers: r.allowed_headers.unwrap_or_default(),
            expose_headers: r.expose_headers.unwrap_or_default(),
            max_age_seconds: r.max_age_seconds,
        })
        .collect()
}

fn to_s3(rules: &[CorsRule]) -> dto::CORSRules {
    let some = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    rules
        .iter()
        .map(|r| dto::CORSRule {
            id: r.id.clone(),
            allowed_origins: r.allowed_origins.clone(),
            allowed_methods: r.allowed_methods.clone(),
            allowed_headers: some(&r.allowed_headers),
            expose_headers: some(&r.expose_headers),
            max_age_seconds: r.max_age_seconds,
        })
        .collect()
}

impl Gateway {
    pub(super) async fn do_put_bucket_cors(
        &self,
        req: S3Request<dto::PutBucketCorsInput>,
    ) -> S3Result<S3Response<dto::PutBucketCorsOutput>> {
        let input = req.input;
        let rules = from_s3(input.cors_configuration.cors_rules);
        let problems = cors::problems(&rules);
        if rules.is_empty() {
            return Err(S3Error::with_message(
                S3ErrorCode::MalformedXML,
                "The XML you provided was not well-formed or did not validate against our \
                 published schema (a CORSConfiguration needs at least one CORSRule)",
            ));
        }
        if !problems.is_empty() {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                problems.join("; "),
            ));
        }
        self.set_cors_rules(&input.bucket, Some(&rules)).await?;
        tracing::info!(bucket = %input.bucket, rules = rules.len(), "bucket CORS rules set");
        Ok(S3Response::new(dto::PutBucketCorsOutput::default()))
    }

    pub(super) async fn do_get_bucket_cors(
        &self,
        req: S3Request<dto::GetBucketCorsInput>,
    ) -> S3Result<S3Response<dto::GetBucketCorsOutput>> {
        let bucket = req.input.bucket;
        self.require_bucket(&bucket).await?;
        let b = bucket.clone();
        let stored = self.meta(move |m| m.bucket_cors(&b)).await?;
        let Some(json) = stored else {
            return Err(S3Error::with_message(
                S3ErrorCode::NoSuchCORSConfiguration,
                "The CORS configuration does not exist",
            ));
        };
        let rules: Vec<CorsRule> = serde_json::from_str(&json).map_err(|e| {
            S3Error::with_message(
                S3ErrorCode::InternalError,
                format!("bucket {bucket}: the stored CORS configuration does not parse: {e}"),
            )
        })?;
        Ok(S3Response::new(dto::GetBucketCorsOutput {
            cors_rules: Some(to_s3(&rules)),
        }))
    }

    pub(super) async fn do_delete_bucket_cors(
        &self,
        req: S3Request<dto::DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<dto::DeleteBucketCorsOutput>> {
        let bucket = req.input.bucket;
        self.set_cors_rules(&bucket, None).await?;
        tracing::info!(%bucket, "bucket CORS rules removed");
        Ok(S3Response::new(dto::DeleteBucketCorsOutput::default()))
    }
}

/// The bucket a path-style request names (`/bucket/...`), if any.
pub fn bucket_of(path: &str) -> Option<&str> {
    let bucket = path.trim_start_matches('/').split('/').next()?;
    (!bucket.is_empty()).then_some(bucket)
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// How a preflight is answered: 200 with the headers of the rule that allows it, or an
/// error S3 would give.
#[derive(Debug, PartialEq, Eq)]
pub enum Preflight {
    Allowed(Vec<(&'static str, String)>),
    Refused(StatusCode, &'static str, String),
}

const NOT_ALLOWED: &str = "CORSResponse: This CORS request is not allowed. This is usually \
    because the evalution of Origin, request method / Access-Control-Request-Method or \
    Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.";

/// Decides a preflight from its headers and the rules of its bucket (`None`: no
/// configuration, or no such bucket — both answered alike, so unsigned preflights do not
/// tell which buckets exist).
pub fn decide_preflight(headers: &HeaderMap, rules: Option<&[CorsRule]>) -> Preflight {
    let Some(origin) = header(headers, "origin") else {
        return Preflight::Refused(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Insufficient information. Origin request header needed.".to_owned(),
        );
    };
    let Some(method) = header(headers, "access-control-request-method") else {
        return Preflight::Refused(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Invalid Access-Control-Request-Method: null".to_owned(),
        );
    };
    let requested = header(headers, "access-control-request-headers")
        .map(cors::header_list)
        .unwrap_or_default();
    let asked: Vec<&str> = requested.iter().map(String::as_str).collect();
    let Some(rule) = rules.and_then(|r| cors::preflight(r, origin, method, &asked)) else {
        return Preflight::Refused(
            StatusCode::FORBIDDEN,
            "AccessForbidden",
            NOT_ALLOWED.to_owned(),
        );
    };
    let mut out = origin_headers(rule, origin);
    out.push((
        "access-control-allow-methods",
        rule.allowed_methods.join(", "),
    ));
    if !requested.is_empty() {
        out.push(("access-control-allow-headers", requested.join(", ")));
    }
    if let Some(age) = rule.max_age_seconds {
        out.push(("access-control-max-age", age.to_string()));
    }
    out.push((
        "vary",
        "Origin, Access-Control-Request-Headers, Access-Control-Request-Method".to_owned(),
    ));
    Preflight::Allowed(out)
}

/// The headers every answer under `rule` carries for `origin`.
fn origin_headers(rule: &CorsRule, origin: &str) -> Vec<(&'static str, String)> {
    let allow = rule.allow_origin(origin);
    let mut out = vec![("access-control-allow-origin", allow.to_owned())];
    if allow != "*" {
        out.push(("access-control-allow-credentials", "true".to_owned()));
    }
    if !rule.expose_headers.is_empty() {
        out.push((
            "access-control-expose-headers",
            rule.expose_headers.join(", "),
        ));
    }
    out
}

/// Answers an `OPTIONS` request from the rules of its bucket.
pub async fn answer_preflight(
    node: &Node,
    path: &str,
    headers: &HeaderMap,
) -> Result<Preflight, crate::error::Error> {
    let rules = match bucket_of(path) {
        Some(bucket) => node.cors_rules(bucket).await?,
        None => None,
    };
    Ok(decide_preflight(
        headers,
        rules.as_deref().map(Vec::as_slice),
    ))
}

/// Adds to the answer of a cross-origin request (one with an `Origin` header) the headers
/// of the bucket's rule that covers its origin and method, if one does; `Vary: Origin`
/// whenever the bucket has rules, as caches must not serve one origin's answer to another.
pub async fn add_headers(
    node: &Node,
    method: &Method,
    path: &str,
    origin: &str,
    answer: &mut HeaderMap,
) {
    let Some(bucket) = bucket_of(path) else {
        return;
    };
    let rules = match node.cors_rules(bucket).await {
        Ok(Some(rules)) => rules,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(bucket, error = %e, "reading CORS rules failed; answering without CORS headers");
            return;
        }
    };
    answer.append(http::header::VARY, HeaderValue::from_static("Origin"));
    let Some(rule) = cors::actual(&rules, origin, method.as_str()) else {
        return;
    };
    for (name, value) in origin_headers(rule, origin) {
        if let Ok(value) = HeaderValue::from_str(&value) {
            answer.insert(name, value);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn rules() -> Vec<CorsRule> {
        vec![CorsRule {
            id: Some("web".into()),
            allowed_origins: vec!["https://*.example.com".into()],
            allowed_methods: vec!["GET".into(), "POST".into()],
            allowed_headers: vec!["*".into()],
            expose_headers: vec!["ETag".into(), "x-amz-request-id".into()],
            max_age_seconds: Some(600),
        }]
    }

    #[test]
    fn an_allowed_preflight_gets_the_rules_headers() {
        let h = headers(&[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "Content-Type, X-Requested-With",
            ),
        ]);
        let Preflight::Allowed(out) = decide_preflight(&h, Some(&rules())) else {
            panic!("refused");
        };
        let get = |n: &str| out.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(
            get("access-control-allow-origin"),
            Some("https://app.example.com")
        );
        assert_eq!(get("access-control-allow-credentials"), Some("true"));
        assert_eq!(get("access-control-allow-methods"), Some("GET, POST"));
        assert_eq!(
            get("access-control-allow-headers"),
            Some("content-type, x-requested-with")
        );
        assert_eq!(get("access-control-max-age"), Some("600"));
        assert_eq!(
            get("access-control-expose-headers"),
            Some("ETag, x-amz-request-id")
        );
        assert!(get("vary").unwrap().starts_with("Origin"));
    }

    #[test]
    fn preflights_are_refused_as_s3_refuses_them() {
        let refused = |h: &[(&str, &str)], rules: Option<&[CorsRule]>| match decide_preflight(
            &headers(h),
            rules,
        ) {
            Preflight::Refused(status, code, _) => (status.as_u16(), code),
            Preflight::Allowed(_) => (200, "allowed"),
        };
        let r = rules();
        let origin = ("origin", "https://app.example.com");
        let put = ("access-control-request-method", "PUT");
        let get = ("access-control-request-method", "GET");
        assert_eq!(refused(&[get], Some(&r)), (400, "BadRequest"));
        assert_eq!(refused(&[origin], Some(&r)), (400, "BadRequest"));
        assert_eq!(refused(&[origin, put], Some(&r)), (403, "AccessForbidden"));
        assert_eq!(refused(&[origin, get], None), (403, "AccessForbidden"));
        assert_eq!(
            refused(&[("origin", "https://evil.net"), get], Some(&r)),
            (403, "AccessForbidden")
        );
        assert_eq!(refused(&[origin, get], Some(&r)), (200, "allowed"));
    }

    #[test]
    fn buckets_are_read_from_path_style_paths() {
        assert_eq!(bucket_of("/photos/a/b.jpg"), Some("photos"));
        assert_eq!(bucket_of("/photos"), Some("photos"));
        assert_eq!(bucket_of("/"), None);
    }
}
