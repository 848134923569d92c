//! The standalone loader: a multi-document YAML file holding the same kinds as the custom
//! resources, validated as a whole (each spec, names, and references between them).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml::Value;

use crate::validate::ValidationError;
use crate::{API_VERSION, ProviderPool, StorageGateway, StoragePlan, StorageSchedule};

const KINDS: &str = "ProviderPool, StoragePlan, StorageSchedule or StorageGateway";

/// Everything a standalone gateway runs from, each kind by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    /// ProviderPools by name.
    pub pools: BTreeMap<String, ProviderPool>,
    /// StoragePlans by name.
    pub plans: BTreeMap<String, StoragePlan>,
    /// StorageSchedules by name.
    pub schedules: BTreeMap<String, StorageSchedule>,
    /// StorageGateways by name.
    pub gateways: BTreeMap<String, StorageGateway>,
}

impl Config {
    /// The only gateway of the file, if there is exactly one.
    pub fn gateway(&self) -> Option<&StorageGateway> {
        match self.gateways.len() {
            1 => self.gateways.values().next(),
            _ => None,
        }
    }
}

/// One problem in a file, located by document (1-based), resource and field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    /// The file name as given to the loader.
    pub file: String,
    /// The document's position in the file, from 1; `None` for problems with the whole file.
    pub document: Option<usize>,
    /// The document's `kind`, when known.
    pub kind: Option<String>,
    /// The document's `metadata.name`, when known.
    pub name: Option<String>,
    /// The offending field, e.g. `spec.segmentSize`.
    pub field: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(document) = self.document {
            write!(f, ": document {document}")?;
            match (&self.kind, &self.name) {
                (Some(kind), Some(name)) => write!(f, " ({kind}/{name})")?,
                (Some(kind), None) => write!(f, " ({kind})")?,
                (None, _) => {}
            }
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a file; nothing is loaded while there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadErrors(pub Vec<LoadError>);

impl LoadErrors {
    /// The problems, in file order.
    pub fn errors(&self) -> &[LoadError] {
        &self.0
    }
}

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

/// Reads and checks a standalone configuration file.
pub fn load_file(path: impl AsRef<Path>) -> Result<Config, LoadErrors> {
    let path = path.as_ref();
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => load_str(&name, &text),
        Err(err) => Err(LoadErrors(vec![LoadError {
            file: name,
            document: None,
            kind: None,
            name: None,
            field: None,
            message: format!("cannot read the file: {err}"),
        }])),
    }
}

/// Checks a standalone configuration held in `text`; `file` names it in errors.
pub fn load_str(file: &str, text: &str) -> Result<Config, LoadErrors> {
    let mut loader = Loader {
        file,
        errors: Vec::new(),
        config: Config::default(),
        documents: Documents::default(),
    };
    loader.read(text);
    if loader.errors.is_empty() {
        loader.cross_check();
    }
    if loader.errors.is_empty() {
        Ok(loader.config)
    } else {
        Err(LoadErrors(loader.errors))
    }
}

/// Where each resource was defined, for error locations.
#[derive(Default)]
struct Documents {
    pools: BTreeMap<String, usize>,
    plans: BTreeMap<String, usize>,
    schedules: BTreeMap<String, usize>,
    gateways: BTreeMap<String, usize>,
}

/// The map of one kind in the config and the documents its resources came from.
type Slot<'x, T> = (&'x mut BTreeMap<String, T>, &'x mut BTreeMap<String, usize>);

/// What identifies a document before its spec is read.
struct Header {
    document: usize,
    kind: Option<String>,
    name: Option<String>,
}

struct Loader<'a> {
    file: &'a str,
    errors: Vec<LoadError>,
    config: Config,
    documents: Documents,
}

impl Loader<'_> {
    fn error(&mut self, header: &Header, field: Option<String>, message: impl Into<String>) {
        self.errors.push(LoadError {
            file: self.file.to_owned(),
            document: Some(header.document),
            kind: header.kind.clone(),
            name: header.name.clone(),
            field,
            message: message.into(),
        });
    }

    fn validation(&mut self, header: &Header, problems: Vec<ValidationError>) {
        for problem in problems {
            self.error(header, Some(problem.field), problem.message);
        }
    }

    fn read(&mut self, text: &str) {
        // Two passes over the text: the first finds each document's kind, the second reads
        // it as that kind so serde_yaml reports field paths and lines of the file.
        let mut values = Vec::new();
        for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            match Value::deserialize(document) {
                Ok(value) => values.push(value),
                Err(err) => {
                    let header = Header {
                        document: i + 1,
                        kind: None,
                        name: None,
                    };
                    self.error(&header, None, format!("malformed YAML: {err}"));
                    break;
                }
            }
        }
        let documents = serde_yaml::Deserializer::from_str(text);
        for ((i, value), document) in values.iter().enumerate().zip(documents) {
            if value.is_null() {
                continue;
            }
            let Some(header) = self.header(i + 1, value) else {
                continue;
            };
            match header.kind.as_deref() {
                Some("ProviderPool") => {
                    if let Some(pool) = self.typed::<ProviderPool>(&header, value, document) {
                        let problems = pool.spec.validate();
                        self.validation(&header, problems);
                        self.insert(&header, pool, |c, d| (&mut c.pools, &mut d.pools));
                    }
                }
                Some("StoragePlan") => {
                    if let Some(plan) = self.typed::<StoragePlan>(&header, value, document) {
                        let problems = plan.spec.validate();
                        self.validation(&header, problems);
                        self.insert(&header, plan, |c, d| (&mut c.plans, &mut d.plans));
                    }
                }
                Some("StorageSchedule") => {
                    if let Some(schedule) = self.typed::<StorageSchedule>(&header, value, document)
                    {
                        let problems = schedule.spec.validate();
                        self.validation(&header, problems);
                        self.insert(&header, schedule, |c, d| {
                            (&mut c.schedules, &mut d.schedules)
                        });
                    }
                }
                Some("StorageGateway") => {
                    if let Some(gateway) = self.typed::<StorageGateway>(&header, value, document) {
                        let problems = gateway.spec.validate();
                        self.validation(&header, problems);
                        self.insert(&header, gateway, |c, d| (&mut c.gateways, &mut d.gateways));
                    }
                }
                _ => {}
            }
        }
        if self.errors.is_empty() && values.iter().all(Value::is_null) {
            self.errors.push(LoadError {
                file: self.file.to_owned(),
                document: None,
                kind: None,
                name: None,
                field: None,
                message: format!(
                    "holds no resources; add documents of kind {KINDS} separated by ---"
                ),
            });
        }
    }

    /// Reads and checks `apiVersion`, `kind` and `metadata.name`. `None` when the document
    /// cannot be read further.
    fn header(&mut self, document: usize, value: &Value) -> Option<Header> {
        let mut header = Header {
            document,
            kind: None,
            name: None,
        };
        if !value.is_mapping() {
            self.error(
                &header,
                None,
                format!("is not a mapping; write a resource with apiVersion: {API_VERSION}, kind, metadata and spec"),
            );
            return None;
        }
        header.kind = value.get("kind").and_then(Value::as_str).map(str::to_owned);
        header.name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let mut readable = true;
        match header.kind.as_deref() {
            Some("ProviderPool" | "StoragePlan" | "StorageSchedule" | "StorageGateway") => {}
            Some(other) => {
                let message = format!("\"{other}\" is not a sublet kind; use {KINDS}");
                self.error(&header, Some("kind".into()), message);
                readable = false;
            }
            None => {
                self.error(
                    &header,
                    Some("kind".into()),
                    format!("is missing; set it to {KINDS}"),
                );
                readable = false;
            }
        }
        match value.get("apiVersion").and_then(Value::as_str) {
            Some(API_VERSION) => {}
            Some(other) => {
                let message = format!("\"{other}\" is not supported; use {API_VERSION}");
                self.error(&header, Some("apiVersion".into()), message);
                readable = false;
            }
            None => {
                self.error(
                    &header,
                    Some("apiVersion".into()),
                    format!("is missing; set it to {API_VERSION}"),
                );
                readable = false;
            }
        }
        match header.name.as_deref() {
            Some(name) if crate::validate::is_dns_label(name) => {}
            Some(name) => {
                let message = format!(
                    "\"{name}\" is not a valid name; use lowercase letters, digits and '-', \
                     starting and ending with a letter or digit (e.g. home-lab)"
                );
                self.error(&header, Some("metadata.name".into()), message);
                readable = false;
            }
            None => {
                self.error(
                    &header,
                    Some("metadata.name".into()),
                    "is missing; give the resource a name (e.g. metadata: {name: home-lab})",
                );
                readable = false;
            }
        }
        readable.then_some(header)
    }

    /// Reads a document as `T`, reporting type errors and fields `T` does not have.
    fn typed<T: DeserializeOwned + serde::Serialize>(
        &mut self,
        header: &Header,
        value: &Value,
        document: serde_yaml::Deserializer<'_>,
    ) -> Option<T> {
        match T::deserialize(document) {
            Ok(resource) => {
                // Kubernetes drops unknown fields; a config file should not silently ignore a
                // misspelt one, so compare what was written with what was understood.
                match serde_yaml::to_value(&resource) {
                    Ok(understood) => {
                        let mut unknown = Vec::new();
                        unknown_fields(value, &understood, "", &mut unknown);
                        for field in unknown {
                            self.error(
                                header,
                                Some(field),
                                "is not a known field; check its spelling and indentation",
                            );
                        }
                    }
                    Err(err) => self.error(header, None, format!("cannot be re-read: {err}")),
                }
                Some(resource)
            }
            Err(err) => {
                let (field, message) = split_yaml_error(&err);
                self.error(header, field, message);
                None
            }
        }
    }

    fn insert<T>(
        &mut self,
        header: &Header,
        resource: T,
        slot: for<'x> fn(&'x mut Config, &'x mut Documents) -> Slot<'x, T>,
    ) {
        let (Some(kind), Some(name)) = (header.kind.clone(), header.name.clone()) else {
            return;
        };
        let (resources, documents) = slot(&mut self.config, &mut self.documents);
        if let Some(first) = documents.get(&name).copied() {
            self.error(
                header,
                Some("metadata.name".into()),
                format!(
                    "\"{name}\" is already used by document {first}; give each {kind} its own name"
                ),
            );
            return;
        }
        documents.insert(name.clone(), header.document);
        resources.insert(name, resource);
    }

    /// References between resources: schedules, pools and plans named by others.
    fn cross_check(&mut self) {
        let mut problems: Vec<(Header, ValidationError)> = Vec::new();
        let known = |names: &BTreeMap<String, usize>| {
            let names: Vec<&str> = names.keys().map(String::as_str).collect();
            if names.is_empty() {
                "there are none".to_owned()
            } else {
                format!("known: {}", names.join(", "))
            }
        };
        let docs = &self.documents;
        for (name, plan) in &self.config.plans {
            let header = header(docs.plans.get(name), "StoragePlan", name);
            if let Some(schedule_name) = &plan.spec.schedule {
                match self.config.schedules.get(schedule_name) {
                    None => problems.push((
                        header(),
                        ValidationError::new(
                            "spec.schedule",
                            format!(
                                "no StorageSchedule named \"{schedule_name}\" in this file ({}); add it or fix the name",
                                known(&docs.schedules)
                            ),
                        ),
                    )),
                    Some(schedule) => {
                        let schedule_header =
                            self::header(docs.schedules.get(schedule_name), "StorageSchedule", schedule_name);
                        for problem in schedule.spec.validate_for_plan(
                            name,
                            plan.spec.data_shards(),
                            plan.spec.stripe_width(),
                        ) {
                            problems.push((schedule_header(), problem));
                        }
                    }
                }
            }
            for (i, pool) in plan.spec.placement.pools.iter().enumerate() {
                if !self.config.pools.contains_key(&pool.name) {
                    problems.push((
                        header(),
                        ValidationError::new(
                            format!("spec.placement.pools[{i}].name"),
                            format!(
                                "no ProviderPool named \"{}\" in this file ({}); add it or fix the name",
                                pool.name,
                                known(&docs.pools)
                            ),
                        ),
                    ));
                }
            }
        }
        for (name, schedule) in &self.config.schedules {
            let header = header(docs.schedules.get(name), "StorageSchedule", name);
            for (i, rule) in schedule.spec.lifecycle.iter().enumerate() {
                if let Some(plan) = &rule.transition_to
                    && !self.config.plans.contains_key(plan)
                {
                    problems.push((
                            header(),
                            ValidationError::new(
                                format!("spec.lifecycle[{i}].transitionTo"),
                                format!(
                                    "no StoragePlan named \"{plan}\" in this file ({}); add it or fix the name",
                                    known(&docs.plans)
                                ),
                            ),
                        ));
                }
            }
        }
        for (name, gateway) in &self.config.gateways {
            let plan = &gateway.spec.default_plan;
            if !self.config.plans.contains_key(plan) {
                problems.push((
                    header(docs.gateways.get(name), "StorageGateway", name)(),
                    ValidationError::new(
                        "spec.defaultPlan",
                        format!(
                            "no StoragePlan named \"{plan}\" in this file ({}); add it or fix the name",
                            known(&docs.plans)
                        ),
                    ),
                ));
            }
        }
        problems.sort_by_key(|(header, _)| header.document);
        for (header, problem) in problems {
            self.error(&header, Some(problem.field), problem.message);
        }
    }
}

fn header<'a>(
    document: Option<&'a usize>,
    kind: &'a str,
    name: &'a str,
) -> impl Fn() -> Header + 'a {
    move || Header {
        document: document.copied().unwrap_or_default(),
        kind: Some(kind.to_owned()),
        name: Some(name.to_owned()),
    }
}

/// Splits serde_yaml's `path: message at line L column C` into the path and the rest.
fn split_yaml_error(err: &serde_yaml::Error) -> (Option<String>, String) {
    let text = err.to_string();
    let (body, location) = match err.location() {
        Some(loc) => {
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            match text.strip_suffix(&suffix) {
                Some(body) => (body.to_owned(), format!(" (line {})", loc.line())),
                None => (text.clone(), String::new()),
            }
        }
        None => (text.clone(), String::new()),
    };
    match body.split_once(": ") {
        Some((path, message)) if !path.is_empty() && !path.contains(char::is_whitespace) => {
            (Some(path.to_owned()), format!("{message}{location}"))
        }
        _ => (None, format!("{body}{location}")),
    }
}

/// Paths of mapping keys in `written` that do not survive a round trip through the typed
/// resource. Keys set to null or to an empty list or map carry nothing and are not reported.
fn unknown_fields(written: &Value, understood: &Value, path: &str, out: &mut Vec<String>) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match (written, understood) {
        (Value::Mapping(written), Value::Mapping(understood)) => {
            for (key, value) in written {
                let key_text = match key {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_owned(),
                };
                match understood.get(key) {
                    Some(inner) => unknown_fields(value, inner, &join(&key_text), out),
                    None if is_empty(value) => {}
                    None => out.push(join(&key_text)),
                }
            }
        }
        (Value::Sequence(written), Value::Sequence(understood)) => {
            for (i, (value, inner)) in written.iter().zip(understood).enumerate() {
                unknown_fields(value, inner, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Sequence(s) => s.is_empty(),
        Value::Mapping(m) => m.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const POOL: &str = "apiVersion: sublet.dev/v1alpha1
kind: ProviderPool
metadata: {name: home-lab}
spec:
  class: owned
  endpoints: [{name: nas, address: \"nas:7480\"}]
";
    const PLAN: &str = "apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {name: photos}
spec:
  redundancy: {erasure: {dataShards: 4, parityShards: 2}}
  placement: {pools: [{name: home-lab}]}
  schedule: nightly
";
    const SCHEDULE: &str = "apiVersion: sublet.dev/v1alpha1
kind: StorageSchedule
metadata: {name: nightly}
spec:
  rebuild: {minHealthyShards: 5}
";
    const GATEWAY: &str = "apiVersion: sublet.dev/v1alpha1
kind: StorageGateway
metadata: {name: s3}
spec: {defaultPlan: photos}
";

    fn join(docs: &[&str]) -> String {
        docs.join("---\n")
    }

    fn errors(text: &str) -> Vec<String> {
        load_str("sublet.yaml", text)
            .unwrap_err()
            .errors()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn loads_every_kind_by_name() {
        let config = load_str("sublet.yaml", &join(&[POOL, PLAN, SCHEDULE, GATEWAY])).unwrap();
        assert_eq!(config.pools["home-lab"].spec.endpoints[0].name, "nas");
        assert_eq!(config.plans["photos"].spec.stripe_width(), 6);
        assert_eq!(
            config.schedules["nightly"].spec.rebuild.min_healthy_shards,
            Some(5)
        );
        assert_eq!(config.gateway().unwrap().spec.default_plan, "photos");
        assert_eq!(
            config.plans["photos"].metadata.name.as_deref(),
            Some("photos")
        );
    }

    #[test]
    fn documents_are_numbered_from_one_and_name_the_resource() {
        let bad_plan = PLAN.replace("parityShards: 2", "parityShards: 0");
        assert_eq!(
            errors(&join(&[POOL, &bad_plan, SCHEDULE, GATEWAY])),
            [
                "sublet.yaml: document 2 (StoragePlan/photos): spec.redundancy.erasure.parityShards: must be at least 1; without parity use replicas: 1"
            ]
        );
    }

    #[test]
    fn type_errors_carry_field_path_and_line() {
        let bad_plan = PLAN.replace("  schedule: nightly\n", "  segmentSize: 16Mx\n");
        assert_eq!(
            errors(&join(&[POOL, &bad_plan])),
            [
                "sublet.yaml: document 2 (StoragePlan/photos): spec.segmentSize: \"16Mx\" is not a size; use a number with an optional unit Ki, Mi, Gi, Ti (e.g. 16Mi) (line 14)"
            ]
        );
    }

    #[test]
    fn every_document_is_checked() {
        let bad_pool = POOL.replace("class: owned", "class: borrowed");
        let bad_schedule = SCHEDULE.replace("minHealthyShards: 5", "gracePeriod: soon");
        let found = errors(&join(&[&bad_pool, PLAN, &bad_schedule, GATEWAY]));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("sublet.yaml: document 1 (ProviderPool/home-lab): spec.class: unknown variant `borrowed`"), "{}", found[0]);
        assert!(found[1].starts_with("sublet.yaml: document 3 (StorageSchedule/nightly): spec.rebuild.gracePeriod: \"soon\" is not a duration"), "{}", found[1]);
    }

    #[test]
    fn unknown_kind_and_bad_headers() {
        let text = "apiVersion: sublet.dev/v1alpha1\nkind: Bucket\nmetadata: {name: b}\n---\nkind: StoragePlan\nmetadata: {name: p}\n---\napiVersion: v1\nkind: StorageGateway\n---\n- a list\n---\napiVersion: sublet.dev/v1alpha1\nkind: StoragePlan\nmetadata: {name: My_Plan}\n";
        assert_eq!(
            errors(text),
            [
                "sublet.yaml: document 1 (Bucket/b): kind: \"Bucket\" is not a sublet kind; use ProviderPool, StoragePlan, StorageSchedule or StorageGateway",
                "sublet.yaml: document 2 (StoragePlan/p): apiVersion: is missing; set it to sublet.dev/v1alpha1",
                "sublet.yaml: document 3 (StorageGateway): apiVersion: \"v1\" is not supported; use sublet.dev/v1alpha1",
                "sublet.yaml: document 3 (StorageGateway): metadata.name: is missing; give the resource a name (e.g. metadata: {name: home-lab})",
                "sublet.yaml: document 4: is not a mapping; write a resource with apiVersion: sublet.dev/v1alpha1, kind, metadata and spec",
                "sublet.yaml: document 5 (StoragePlan/My_Plan): metadata.name: \"My_Plan\" is not a valid name; use lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. home-lab)",
            ]
        );
        assert_eq!(
            errors("metadata: {name: x}\n"),
            [
                "sublet.yaml: document 1: kind: is missing; set it to ProviderPool, StoragePlan, StorageSchedule or StorageGateway",
                "sublet.yaml: document 1: apiVersion: is missing; set it to sublet.dev/v1alpha1",
            ]
        );
    }

    #[test]
    fn malformed_yaml() {
        let found = errors(&format!("{POOL}---\nkind: [StoragePlan\n"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("sublet.yaml: document 2: malformed YAML: "),
            "{}",
            found[0]
        );
        assert!(found[0].contains("line 9"), "{}", found[0]);
    }

    #[test]
    fn empty_file() {
        assert_eq!(
            errors("# nothing here\n---\n"),
            [
                "sublet.yaml: holds no resources; add documents of kind ProviderPool, StoragePlan, StorageSchedule or StorageGateway separated by ---"
            ]
        );
    }

    #[test]
    fn unreadable_file() {
        let err = load_file("/nonexistent/sublet.yaml").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/sublet.yaml: cannot read the file: "),
            "{err}"
        );
    }

    #[test]
    fn duplicate_names_point_at_the_first() {
        let pool = POOL.replace("home-lab", "spare");
        let gateway2 = GATEWAY.replace("metadata: {name: s3}", "metadata: {name: photos}");
        assert_eq!(
            errors(&join(&[
                POOL, PLAN, SCHEDULE, GATEWAY, &pool, &pool, &gateway2
            ])),
            [
                "sublet.yaml: document 6 (ProviderPool/spare): metadata.name: \"spare\" is already used by document 5; give each ProviderPool its own name"
            ]
        );
    }

    #[test]
    fn references_must_resolve() {
        let plan = PLAN
            .replace("schedule: nightly", "schedule: weekly")
            .replace("name: home-lab", "name: cloud");
        let schedule = "apiVersion: sublet.dev/v1alpha1\nkind: StorageSchedule\nmetadata: {name: nightly}\nspec:\n  lifecycle: [{name: old, afterDays: 9, transitionTo: glacier}]\n";
        let gateway = GATEWAY.replace("defaultPlan: photos", "defaultPlan: default");
        assert_eq!(
            errors(&join(&[POOL, &plan, schedule, &gateway])),
            [
                "sublet.yaml: document 2 (StoragePlan/photos): spec.schedule: no StorageSchedule named \"weekly\" in this file (known: nightly); add it or fix the name",
                "sublet.yaml: document 2 (StoragePlan/photos): spec.placement.pools[0].name: no ProviderPool named \"cloud\" in this file (known: home-lab); add it or fix the name",
                "sublet.yaml: document 3 (StorageSchedule/nightly): spec.lifecycle[0].transitionTo: no StoragePlan named \"glacier\" in this file (known: photos); add it or fix the name",
                "sublet.yaml: document 4 (StorageGateway/s3): spec.defaultPlan: no StoragePlan named \"default\" in this file (known: photos); add it or fix the name",
            ]
        );
        assert_eq!(
            errors(GATEWAY),
            [
                "sublet.yaml: document 1 (StorageGateway/s3): spec.defaultPlan: no StoragePlan named \"photos\" in this file (there are none); add it or fix the name"
            ]
        );
    }

    #[test]
    fn min_healthy_shards_is_checked_against_each_plan_using_the_schedule() {
        let scratch = "apiVersion: sublet.dev/v1alpha1\nkind: StoragePlan\nmetadata: {name: scratch}\nspec:\n  redundancy: {erasure: {dataShards: 2, parityShards: 1}}\n  schedule: nightly\n";
        assert_eq!(
            errors(&join(&[POOL, PLAN, SCHEDULE, GATEWAY, scratch])),
            [
                "sublet.yaml: document 3 (StorageSchedule/nightly): spec.rebuild.minHealthyShards: 5 does not suit plan scratch (2 data shards of 3); use a number from 2 to 3"
            ]
        );
    }

    #[test]
    fn misspelt_fields_are_reported() {
        let plan = PLAN.replace(
            "  schedule: nightly\n",
            "  schedule: nightly\n  segmentsize: 4Mi\n  placement2: {}\n",
        );
        let pool = POOL.replace("address:", "adress: x, address:");
        assert_eq!(
            errors(&join(&[&pool, &plan, SCHEDULE, GATEWAY])),
            [
                "sublet.yaml: document 1 (ProviderPool/home-lab): spec.endpoints[0].adress: is not a known field; check its spelling and indentation",
                "sublet.yaml: document 2 (StoragePlan/photos): spec.segmentsize: is not a known field; check its spelling and indentation",
            ]
        );
    }

    #[test]
    fn metadata_and_status_are_kept() {
        let plan = PLAN.replace(
            "metadata: {name: photos}",
            "metadata: {name: photos, namespace: storage, labels: {team: family}}",
        ) + "status: {redundancy: EC 4+2, objects: 3}\n";
        let config = load_str("sublet.yaml", &join(&[POOL, &plan, SCHEDULE])).unwrap();
        let plan = &config.plans["photos"];
        assert_eq!(plan.metadata.namespace.as_deref(), Some("storage"));
        assert_eq!(plan.status.as_ref().unwrap().objects, 3);
    }

    #[test]
    fn loaded_config_round_trips() {
        let config = load_str("sublet.yaml", &join(&[POOL, PLAN, SCHEDULE, GATEWAY])).unwrap();
        let mut docs = Vec::new();
        docs.extend(
            config
                .pools
                .values()
                .map(|r| serde_yaml::to_string(r).unwrap()),
        );
        docs.extend(
            config
                .plans
                .values()
                .map(|r| serde_yaml::to_string(r).unwrap()),
        );
        docs.extend(
            config
                .schedules
                .values()
                .map(|r| serde_yaml::to_string(r).unwrap()),
        );
        docs.extend(
            config
                .gateways
                .values()
                .map(|r| serde_yaml::to_string(r).unwrap()),
        );
        let again = load_str("again.yaml", &docs.join("---\n")).unwrap();
        assert_eq!(again, config);
    }

    #[test]
    fn errors_print_one_per_line() {
        let err = load_str("x.yaml", "kind: Nope\n---\nkind: Nope\n").unwrap_err();
        // kind, apiVersion and metadata.name for each of the two documents
        assert_eq!(err.to_string().lines().count(), 6);
    }
}
