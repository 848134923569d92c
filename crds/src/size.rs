//! `ByteSize`: a byte count written in human form (`16Mi`, `500Gi`, `1G`, `1024`).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

const UNITS: &[(&str, u64)] = &[
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("Pi", 1 << 50),
    ("Ei", 1 << 60),
    ("k", 1_000),
    ("K", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("P", 1_000_000_000_000_000),
    ("E", 1_000_000_000_000_000_000),
];

/// What `ByteSize::parse` accepts, as a regular expression for the CRD schema (sizes too
/// large for 64 bits match it but are refused by the parser).
pub const PATTERN: &str = "^[0-9]+(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E)?$";

/// A number of bytes that remembers how it was written, so a manifest read and written back
/// keeps `16Mi` rather than `16777216`.
///
/// Accepts a plain number (`1024`), decimal units `k`/`K`, `M`, `G`, `T`, `P`, `E` (powers of
/// 1000) and binary units `Ki`, `Mi`, `Gi`, `Ti`, `Pi`, `Ei` (powers of 1024), as Kubernetes
/// quantities do. Equality and ordering compare the byte count only.
#[derive(Clone, Debug)]
pub struct ByteSize {
    bytes: u64,
    /// The text as written; `None` when read from a YAML/JSON integer.
    text: Option<String>,
}

impl ByteSize {
    /// A size of `bytes`, displayed in the largest binary unit that divides it exactly.
    pub fn from_bytes(bytes: u64) -> Self {
        let text = UNITS[..6]
            .iter()
            .rev()
            .find(|(_, factor)| bytes != 0 && bytes.is_multiple_of(*factor))
            .map(|(unit, factor)| format!("{}{unit}", bytes / factor))
            .unwrap_or_else(|| bytes.to_string());
        ByteSize {
            bytes,
            text: Some(text),
        }
    }

    /// Parses `16Mi`, `500Gi`, `1G`, `1024`, ...
    pub fn parse(input: &str) -> Result<Self> {
        let text = input.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        if number.is_empty() {
            return Err(Error::InvalidSize {
                input: input.to_owned(),
            });
        }
        let factor = if unit.is_empty() {
            1
        } else {
            UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .map(|(_, factor)| *factor)
                .ok_or_else(|| Error::InvalidSize {
                    input: input.to_owned(),
                })?
        };
        let too_large = || Error::SizeTooLarge {
            input: input.to_owned(),
        };
        let bytes = number
            .parse::<u64>()
            .map_err(|_| too_large())?
            .checked_mul(factor)
            .ok_or_else(too_large)?;
        Ok(ByteSize {
            bytes,
            text: Some(text.to_owned()),
        })
    }

    /// The number of bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl From<u64> for ByteSize {
    fn from(bytes: u64) -> Self {
        ByteSize::from_bytes(bytes)
    }
}

impl FromStr for ByteSize {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        ByteSize::parse(s)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.text {
            Some(text) => f.write_str(text),
            None => write!(f, "{}", self.bytes),
        }
    }
}

impl PartialEq for ByteSize {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for ByteSize {}

impl PartialOrd for ByteSize {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByteSize {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.bytes.cmp(&other.bytes)
    }
}

impl std::hash::Hash for ByteSize {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.bytes.hash(state);
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.text {
            Some(text) => serializer.serialize_str(text),
            None => serializer.serialize_u64(self.bytes),
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 16Mi, 500Gi or 1024")
            }

            fn visit_u64<E: serde::de::Error>(self, bytes: u64) -> Result<ByteSize, E> {
                Ok(ByteSize { bytes, text: None })
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<ByteSize, E> {
                u64::try_from(value)
                    .map(|bytes| ByteSize { bytes, text: None })
                    .map_err(|_| {
                        E::custom(Error::InvalidSize {
                            input: value.to_string(),
                        })
                    })
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ByteSize, E> {
                ByteSize::parse(text).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // Like Kubernetes quantities: a string with an optional unit, or a plain integer.
        // The API server refuses what `ByteSize::parse` would (a pattern only checks
        // strings, a minimum only numbers), so no object an operator cannot read is stored.
        json_schema!({
            "x-kubernetes-int-or-string": true,
            "pattern": PATTERN,
            "minimum": 0,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_binary_and_decimal_units() {
        assert_eq!(ByteSize::parse("16Mi").unwrap().bytes(), 16 * 1024 * 1024);
        assert_eq!(ByteSize::parse("500Gi").unwrap().bytes(), 500 << 30);
        assert_eq!(ByteSize::parse("4Ki").unwrap().bytes(), 4096);
        assert_eq!(ByteSize::parse("2Ti").unwrap().bytes(), 2 << 40);
        assert_eq!(ByteSize::parse("1G").unwrap().bytes(), 1_000_000_000);
        assert_eq!(ByteSize::parse("3k").unwrap().bytes(), 3_000);
        assert_eq!(ByteSize::parse("3K").unwrap().bytes(), 3_000);
        assert_eq!(ByteSize::parse("7M").unwrap().bytes(), 7_000_000);
        assert_eq!(ByteSize::parse("1T").unwrap().bytes(), 1_000_000_000_000);
        assert_eq!(ByteSize::parse("1024").unwrap().bytes(), 1024);
        assert_eq!(ByteSize::parse("0").unwrap().bytes(), 0);
    }

    #[test]
    fn rejects_bad_sizes_with_a_hint() {
        for bad in ["16Mx", "", "Mi", "-1", "1.5Gi", "16 Mi", "16mi", "ten"] {
            let err = ByteSize::parse(bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "\"{bad}\" is not a size; use a number with an optional unit Ki, Mi, Gi, Ti (e.g. 16Mi)"
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            ByteSize::parse("16Ei").unwrap_err(),
            Error::SizeTooLarge { .. }
        ));
        assert!(matches!(
            ByteSize::parse("99999999999999999999").unwrap_err(),
            Error::SizeTooLarge { .. }
        ));
    }

    #[test]
    fn keeps_the_written_form() {
        let size: ByteSize = serde_yaml::from_str("16Mi").unwrap();
        assert_eq!(serde_yaml::to_string(&size).unwrap().trim(), "16Mi");
        let size: ByteSize = serde_yaml::from_str("1024").unwrap();
        assert_eq!(size.bytes(), 1024);
        assert_eq!(serde_yaml::to_string(&size).unwrap().trim(), "1024");
        let size: ByteSize = serde_json::from_str("\"1G\"").unwrap();
        assert_eq!(serde_json::to_string(&size).unwrap(), "\"1G\"");
    }

    #[test]
    fn from_bytes_picks_a_human_unit() {
        assert_eq!(ByteSize::from_bytes(16 << 20).to_string(), "16Mi");
        assert_eq!(ByteSize::from_bytes(3 << 30).to_string(), "3Gi");
        assert_eq!(ByteSize::from_bytes(1536).to_string(), "1536");
        assert_eq!(ByteSize::from_bytes(4096).to_string(), "4Ki");
        assert_eq!(ByteSize::from_bytes(1000).to_string(), "1000");
        assert_eq!(ByteSize::from_bytes(0).to_string(), "0");
    }

    #[test]
    fn deserialize_error_explains_the_fix() {
        let err = serde_yaml::from_str::<ByteSize>("16Mx").unwrap_err();
        assert!(err.to_string().contains("\"16Mx\" is not a size"), "{err}");
        assert!(serde_yaml::from_str::<ByteSize>("-5").is_err());
    }

    #[test]
    fn equality_ignores_spelling() {
        assert_eq!(
            ByteSize::parse("1Ki").unwrap(),
            ByteSize::parse("1024").unwrap()
        );
        assert!(ByteSize::parse("1Mi").unwrap() > ByteSize::parse("1M").unwrap());
    }

    proptest! {
        #[test]
        fn from_bytes_round_trips(bytes in any::<u64>()) {
            let size = ByteSize::from_bytes(bytes);
            prop_assert_eq!(ByteSize::parse(&size.to_string()).unwrap().bytes(), bytes);
        }

        #[test]
        fn what_the_schema_pattern_admits_parses(text in &PATTERN[1..PATTERN.len() - 1]) {
            match ByteSize::parse(&text) {
                Ok(_) | Err(Error::SizeTooLarge { .. }) => {}
                Err(err) => prop_assert!(false, "{text}: {err}"),
            }
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,12}") {
            let _ = ByteSize::parse(&text);
        }
    }
}
