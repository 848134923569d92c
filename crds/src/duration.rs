//! `Duration`: a span of time written in human form (`90s`, `15m`, `6h`, `1h30m`, `30d`).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// A whole number of seconds that remembers how it was written.
///
/// Written as one or more `<number><unit>` parts with units `s`, `m`, `h` and `d`, largest
/// first or not: `1h30m` and `90m` are the same duration. Equality compares the length only.
#[derive(Clone, Debug)]
pub struct Duration {
    secs: u64,
    text: String,
}

impl Duration {
    /// A duration of `secs` seconds, displayed in the units that write it most shortly.
    pub fn from_secs(secs: u64) -> Self {
        let mut text = String::new();
        let mut rest = secs;
        for (unit, factor) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
            if rest >= factor {
                text.push_str(&format!("{}{unit}", rest / factor));
                rest %= factor;
            }
        }
        if text.is_empty() {
            text.push_str("0s");
        }
        Duration { secs, text }
    }

    /// Parses `15m`, `6h`, `30d`, `90s`, `1h30m`, ...
    pub fn parse(input: &str) -> Result<Self> {
        let text = input.trim();
        let invalid = || Error::InvalidDuration {
            input: input.to_owned(),
        };
        if text.is_empty() {
            return Err(invalid());
        }
        let mut secs: u64 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let split = rest
                .find(|c: char| !c.is_ascii_digit())
                .ok_or_else(invalid)?;
            if split == 0 {
                return Err(invalid());
            }
            let (number, after) = rest.split_at(split);
            let mut chars = after.chars();
            let factor: u64 = match chars.next() {
                Some('s') => 1,
                Some('m') => 60,
                Some('h') => 3_600,
                Some('d') => 86_400,
                _ => return Err(invalid()),
            };
            let too_long = || Error::DurationTooLong {
                input: input.to_owned(),
            };
            let part = number
                .parse::<u64>()
                .map_err(|_| too_long())?
                .checked_mul(factor)
                .ok_or_else(too_long)?;
            secs = secs.checked_add(part).ok_or_else(too_long)?;
            rest = chars.as_str();
        }
        Ok(Duration {
            secs,
            text: text.to_owned(),
        })
    }

    /// The length in seconds.
    pub fn as_secs(&self) -> u64 {
        self.secs
    }

    /// The length as a `std::time::Duration`.
    pub fn as_std(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.secs)
    }
}

impl FromStr for Duration {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Duration::parse(s)
    }
}

impl From<std::time::Duration> for Duration {
    fn from(duration: std::time::Duration) -> Self {
        Duration::from_secs(duration.as_secs())
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for Duration {
    fn eq(&self, other: &Self) -> bool {
        self.secs == other.secs
    }
}

impl Eq for Duration {}

impl PartialOrd for Duration {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Duration {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.secs.cmp(&other.secs)
    }
}

impl std::hash::Hash for Duration {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.secs.hash(state);
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 15m, 6h or 1h30m")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
                Duration::parse(text).map_err(E::custom)
            }

            // A bare number has no unit; say so rather than "invalid type: integer".
            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Duration, E> {
                Err(E::custom(Error::InvalidDuration {
                    input: value.to_string(),
                }))
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Duration, E> {
                Err(E::custom(Error::InvalidDuration {
                    input: value.to_string(),
                }))
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^([0-9]+[smhd])+$",
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_single_and_compound_units() {
        assert_eq!(Duration::parse("90s").unwrap().as_secs(), 90);
        assert_eq!(Duration::parse("15m").unwrap().as_secs(), 900);
        assert_eq!(Duration::parse("6h").unwrap().as_secs(), 21_600);
        assert_eq!(Duration::parse("30d").unwrap().as_secs(), 2_592_000);
        assert_eq!(Duration::parse("1h30m").unwrap().as_secs(), 5_400);
        assert_eq!(Duration::parse("1d2h3m4s").unwrap().as_secs(), 93_784);
        assert_eq!(
            Duration::parse("15m").unwrap().as_std(),
            std::time::Duration::from_secs(900)
        );
    }

    #[test]
    fn rejects_bad_durations_with_a_hint() {
        for bad in ["", "15", "m", "15x", "1h30", "-5m", "1.5h", "15 m", "h1"] {
            let err = Duration::parse(bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "\"{bad}\" is not a duration; use numbers with a unit s, m, h or d (e.g. 90s, 15m, 6h, 1h30m, 30d)"
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            Duration::parse("999999999999999999d").unwrap_err(),
            Error::DurationTooLong { .. }
        ));
    }

    #[test]
    fn keeps_the_written_form() {
        let d: Duration = serde_yaml::from_str("90m").unwrap();
        assert_eq!(d, Duration::parse("1h30m").unwrap());
        assert_eq!(serde_yaml::to_string(&d).unwrap().trim(), "90m");
    }

    #[test]
    fn bare_numbers_are_rejected_when_deserializing() {
        let err = serde_yaml::from_str::<Duration>("15").unwrap_err();
        assert!(
            err.to_string().contains("\"15\" is not a duration"),
            "{err}"
        );
    }

    #[test]
    fn from_secs_writes_compact_text() {
        assert_eq!(Duration::from_secs(5_400).to_string(), "1h30m");
        assert_eq!(Duration::from_secs(0).to_string(), "0s");
        assert_eq!(Duration::from_secs(86_401).to_string(), "1d1s");
    }

    proptest! {
        #[test]
        fn from_secs_round_trips(secs in 0u64..10_000_000_000) {
            let d = Duration::from_secs(secs);
            prop_assert_eq!(Duration::parse(&d.to_string()).unwrap().as_secs(), secs);
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,12}") {
            let _ = Duration::parse(&text);
        }
    }
}
