//! The overlay: resources applied and deleted through the policy API, kept in
//! `policies.yaml` in the data directory and layered over the config file at every start.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sublet_crds::{Config, LoadError, LoadErrors};

/// The overlay's file name inside the data directory.
pub const OVERLAY_FILE: &str = "policies.yaml";

/// A kind the policy API manages, as it appears in URLs and manifests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    StoragePlan,
    StorageSchedule,
    ProviderPool,
}

impl Kind {
    /// From the URL segment (`plans`, `schedules`, `pools`).
    pub fn from_segment(segment: &str) -> Option<Self> {
        match segment {
            "plans" => Some(Kind::StoragePlan),
            "schedules" => Some(Kind::StorageSchedule),
            "pools" => Some(Kind::ProviderPool),
            _ => None,
        }
    }

    /// The URL segment.
    pub fn segment(self) -> &'static str {
        match self {
            Kind::StoragePlan => "plans",
            Kind::StorageSchedule => "schedules",
            Kind::ProviderPool => "pools",
        }
    }

    /// The manifest `kind`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::StoragePlan => "StoragePlan",
            Kind::StorageSchedule => "StorageSchedule",
            Kind::ProviderPool => "ProviderPool",
        }
    }
}

/// A deleted resource of the overlay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub kind: Kind,
    pub name: String,
}

/// What the API changed relative to the config file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Overlay {
    /// Resources applied through the API (whole manifests), replacing the file's of the same
    /// kind and name.
    #[serde(default)]
    pub applied: Vec<serde_yaml::Value>,
    /// Resources deleted through the API, hiding the file's.
    #[serde(default)]
    pub deleted: Vec<Deleted>,
}

pub(super) fn kind_and_name(doc: &serde_yaml::Value) -> (Option<&str>, Option<&str>) {
    (
        doc.get("kind").and_then(serde_yaml::Value::as_str),
        doc.get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(serde_yaml::Value::as_str),
    )
}

impl Overlay {
    /// Reads `path`; a missing file is an empty overlay.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_yaml::from_str(&text)
                .with_context(|| format!("{}: not a policy overlay", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Overlay::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes `path` atomically (a temporary file renamed over it, synced).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write;
        let text = format!(
            "# Written by the sublet admin API (sublet plan apply/delete); layered over the config\n\
             # file at start, winning for every name it mentions. Delete this file to go back to\n\
             # the config file alone.\n{}",
            serde_yaml::to_string(self)?
        );
        let tmp = path.with_extension("yaml.tmp");
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
        if let Some(dir) = path.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// This overlay with `doc` applied (replacing an earlier one of the same kind and name).
    pub(super) fn with_applied(&self, kind: Kind, name: &str, doc: serde_yaml::Value) -> Self {
        let mut next = self.without(kind, name);
        next.applied.push(doc);
        next
    }

    /// This overlay with `kind/name` deleted.
    pub(super) fn with_deleted(&self, kind: Kind, name: &str) -> Self {
        let mut next = self.without(kind, name);
        next.deleted.push(Deleted {
            kind,
            name: name.to_owned(),
        });
        next
    }

    fn without(&self, kind: Kind, name: &str) -> Self {
        Overlay {
            applied: self
                .applied
                .iter()
                .filter(|d| kind_and_name(d) != (Some(kind.name()), Some(name)))
                .cloned()
                .collect(),
            deleted: self
                .deleted
                .iter()
                .filter(|d| !(d.kind == kind && d.name == name))
                .cloned()
                .collect(),
        }
    }

    fn mentions(&self, kind: &str, name: &str) -> bool {
        self.applied
            .iter()
            .any(|d| kind_and_name(d) == (Some(kind), Some(name)))
            || self
                .deleted
                .iter()
                .any(|d| d.kind.name() == kind && d.name == name)
    }
}

/// `file` with `overlay` layered over it, checked as a whole by the loader; errors name
/// `label` as their file.
pub fn layer(file: &Config, overlay: &Overlay, label: &str) -> Result<Config, LoadErrors> {
    fn push<T: Serialize>(docs: &mut Vec<String>, resource: &T) -> Result<(), LoadErrors> {
        let text = serde_yaml::to_string(resource).map_err(|e| one_error(&e.to_string()))?;
        docs.push(text);
        Ok(())
    }
    let mut docs = Vec::new();
    for (name, r) in &file.pools {
        if !overlay.mentions(Kind::ProviderPool.name(), name) {
            push(&mut docs, r)?;
        }
    }
    for (name, r) in &file.plans {
        if !overlay.mentions(Kind::StoragePlan.name(), name) {
            push(&mut docs, r)?;
        }
    }
    for (name, r) in &file.schedules {
        if !overlay.mentions(Kind::StorageSchedule.name(), name) {
            push(&mut docs, r)?;
        }
    }
    for r in file.gateways.values() {
        push(&mut docs, r)?;
    }
    for d in &overlay.applied {
        push(&mut docs, d)?;
    }
    sublet_crds::load_str(label, &docs.join("---\n"))
}

fn one_error(message: &str) -> LoadErrors {
    LoadErrors(vec![LoadError {
        file: String::new(),
        document: None,
        kind: None,
        name: None,
        field: None,
        message: message.to_owned(),
    }])
}

/// The config file with the data directory's overlay layered over it: what `sublet serve`
/// runs. An overlay the file no longer fits (e.g. it names a schedule the file dropped) is
/// an error naming both.
pub fn load_layered(file: &Config, data_dir: &Path) -> anyhow::Result<Config> {
    let path = data_dir.join(OVERLAY_FILE);
    let overlay = Overlay::read(&path)?;
    if overlay == Overlay::default() {
        return Ok(file.clone());
    }
    layer(file, &overlay, &path.display().to_string()).map_err(|errors| {
        anyhow::anyhow!(
            "the policies applied through the admin API ({}) no longer fit the config file:\n{}\n\
             fix the config file, or remove {} to run from the file alone",
            path.display(),
            problems(&errors).join("\n"),
            path.display()
        )
    })
}

/// One line per problem: `StoragePlan/photos: spec.redundancy.erasure.dataShards: ...`.
pub(super) fn problems(errors: &LoadErrors) -> Vec<String> {
    errors.errors().iter().map(problem_line).collect()
}

fn problem_line(e: &LoadError) -> String {
    let mut line = String::new();
    match (&e.kind, &e.name) {
        (Some(k), Some(n)) => line.push_str(&format!("{k}/{n}: ")),
        (Some(k), None) => line.push_str(&format!("{k}: ")),
        _ => {}
    }
    if let Some(f) = &e.field {
        line.push_str(&format!("{f}: "));
    }
    // The loader counts lines of the layered text, which nobody wrote: leave them out.
    line.push_str(strip_line_number(&e.message));
    line
}

fn strip_line_number(message: &str) -> &str {
    match message.rsplit_once(" (line ") {
        Some((head, tail))
            if tail
                .strip_suffix(')')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
        {
            head
        }
        _ => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_numbers_of_the_layered_text_are_left_out() {
        assert_eq!(
            strip_line_number("\"12x\" is not a size (line 78)"),
            "\"12x\" is not a size"
        );
        assert_eq!(strip_line_number("see (line x)"), "see (line x)");
        assert_eq!(strip_line_number("plain"), "plain");
    }
}
