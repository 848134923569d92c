//! Validation problems and the small checks several kinds share.

use std::collections::HashSet;
use std::fmt;

/// One problem with a spec: where it is and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationError {
    /// Path of the offending field, e.g. `spec.redundancy.erasure.parityShards`.
    pub field: String,
    /// What is wrong and what to write instead.
    pub message: String,
}

impl ValidationError {
    /// A problem at `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ValidationError {}

/// Collects problems while a spec is walked.
#[derive(Default)]
pub(crate) struct Problems(pub(crate) Vec<ValidationError>);

impl Problems {
    pub(crate) fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(ValidationError::new(field, message));
    }

    /// Reports `field` when `value` is below `min`.
    pub(crate) fn at_least(&mut self, field: impl Into<String>, value: u32, min: u32) {
        if value < min {
            self.add(field, format!("must be at least {min} (got {value})"));
        }
    }

    /// Reports a name that is empty or not a valid Kubernetes object name.
    pub(crate) fn name(&mut self, field: impl Into<String>, name: &str) {
        if !is_dns_label(name) {
            self.add(
                field,
                format!(
                    "\"{name}\" is not a valid name; use lowercase letters, digits and '-', \
                     starting and ending with a letter or digit (e.g. home-lab)"
                ),
            );
        }
    }

    /// Reports every name that appears more than once in `names`.
    pub(crate) fn unique_names<'a>(
        &mut self,
        list_field: &str,
        names: impl IntoIterator<Item = &'a str>,
    ) {
        let mut seen = HashSet::new();
        for (i, name) in names.into_iter().enumerate() {
            if !seen.insert(name) {
                self.add(
                    format!("{list_field}[{i}].name"),
                    format!("\"{name}\" is used twice; give each entry its own name"),
                );
            }
        }
    }
}

/// A DNS-1123 label: what Kubernetes accepts as an object name, which keeps names usable
/// as S3 storage classes and in labels.
pub(crate) fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// A DNS-1123 subdomain: what Kubernetes accepts as the name of a cluster-wide object such
/// as a StorageClass (labels joined by dots, at most 253 characters).
pub(crate) fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

/// `HH:MM` on a 24-hour clock.
pub(crate) fn is_clock_time(text: &str) -> bool {
    let Some((hours, minutes)) = text.split_once(':') else {
        return false;
    };
    let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    two_digits(hours)
        && two_digits(minutes)
        && hours.parse::<u8>().is_ok_and(|h| h < 24)
        && minutes.parse::<u8>().is_ok_and(|m| m < 60)
}

/// `https://host:port`, `http://host:port` or `host:port`, with a non-empty host and a port
/// in 1..=65535. IPv6 hosts are written in brackets: `[::1]:7480`.
pub(crate) fn is_endpoint_address(text: &str) -> bool {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .unwrap_or(text);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let Some((host, port)) = rest.rsplit_once(':') else {
        return false;
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p != 0)
}

/// `unix:/path` or `unix:///path`: an absolute socket path the kernel takes (at most 107
/// bytes, no NUL, not ending in `/`), for a provider on the gateway's own machine.
pub(crate) fn is_unix_socket_address(text: &str) -> bool {
    let Some(rest) = text.strip_prefix("unix:") else {
        return false;
    };
    let path = rest.strip_prefix("//").unwrap_or(rest);
    path.starts_with('/') && !path.ends_with('/') && path.len() <= 107 && !path.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_socket_addresses() {
        for good in ["unix:/run/sublet/p.sock", "unix:///run/sublet/p.sock"] {
            assert!(is_unix_socket_address(good), "{good}");
        }
        let long = format!("unix:/{}", "x".repeat(107));
        for bad in [
            "unix:",
            "unix:p.sock",
            "unix://nas/p.sock",
            "unix:/run/sublet/",
            long.as_str(),
            "/run/sublet/p.sock",
        ] {
            assert!(!is_unix_socket_address(bad), "{bad}");
        }
    }

    #[test]
    fn clock_times() {
        for good in ["00:00", "01:00", "23:59", "06:30"] {
            assert!(is_clock_time(good), "{good}");
        }
        for bad in ["24:00", "1:00", "01:60", "0100", "", "aa:bb", "01:00:00"] {
            assert!(!is_clock_time(bad), "{bad}");
        }
    }

    #[test]
    fn endpoint_addresses() {
        for good in [
            "https://bob-nas.example:7480",
            "bob-nas.example:7480",
            "10.0.0.5:7480",
            "http://localhost:7480",
            "[::1]:7480",
            "https://[fd00::1]:7480/",
        ] {
            assert!(is_endpoint_address(good), "{good}");
        }
        for bad in [
            "bob-nas.example",
            "https://bob-nas.example",
            "ftp://x:1",
            ":7480",
            "host:0",
            "host:99999",
            "host name:80",
            "https://host:80/path",
        ] {
            assert!(!is_endpoint_address(bad), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert!(is_dns_label("home-lab"));
        assert!(is_dns_label("s3"));
        for bad in ["", "Home", "-a", "a-", "a_b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }
}
