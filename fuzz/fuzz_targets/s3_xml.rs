//! The XML bodies the gateway takes: s3s parses them (as `take_xml_body` does, to the end
//! of the body), the gateway reads the result. Every input is tried as each body; the root
//! element picks the one that can succeed. A lifecycle configuration goes on through the
//! gateway's own checks (`rules_from_s3`), and the rules it keeps must survive the JSON
//! they are stored as.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3s::dto;
use s3s::xml;
use sublet_gateway::node::rules::Rule;
use sublet_gateway::s3::rules_from_s3;

fn parse<T: for<'x> xml::Deserialize<'x>>(body: &[u8]) -> Option<T> {
    let mut d = xml::Deserializer::new(body);
    let value = T::deserialize(&mut d).ok()?;
    d.expect_eof().ok()?;
    Some(value)
}

fuzz_target!(|body: &[u8]| {
    if let Some(config) = parse::<dto::BucketLifecycleConfiguration>(body)
        && let Ok(rules) = rules_from_s3(config.rules, |class| class == "cold")
    {
        assert!(!rules.is_empty(), "a configuration kept with no rule");
        for rule in &rules {
            for days in [
                rule.expiration_days,
                rule.noncurrent_days,
                rule.abort_incomplete_days,
                rule.transition.as_ref().map(|t| t.0),
            ]
            .into_iter()
            .flatten()
            {
                assert!(days >= 1, "rule {} kept {days} days", rule.id);
            }
        }
        let json = serde_json::to_string(&rules).expect("rules serialize");
        let back: Vec<Rule> = serde_json::from_str(&json).expect("stored rules read back");
        assert_eq!(back, rules);
    }
    if let Some(delete) = parse::<dto::Delete>(body) {
        for object in &delete.objects {
            let _ = (object.key.len(), object.version_id.as_deref());
        }
    }
    if let Some(complete) = parse::<dto::CompletedMultipartUpload>(body) {
        for part in complete.parts.iter().flatten() {
            let _ = (part.part_number, part.e_tag.as_ref());
        }
    }
    let _ = parse::<dto::VersioningConfiguration>(body);
    let _ = parse::<dto::CreateBucketConfiguration>(body);
});
