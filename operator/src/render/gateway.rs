//! StorageGateway → gateway pods running `sublet serve`: a StatefulSet (SQLite on a claim)
//! or a Deployment (PostgreSQL), the S3 and admin Services, the config ConfigMap, and the
//! Secrets created once with fresh random keys.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource, ResourceRequirements, Secret,
    SecretKeySelector, SecretProjection, SecretVolumeSource, Service, ServicePort, ServiceSpec,
    Volume, VolumeMount, VolumeProjection, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use rand::Rng;
use rand::distr::Alphanumeric;
use sublet_crds::StorageGateway;

use super::config::{
    CONFIG_DIR, CONFIG_FILE, GATEWAY_DATA_DIR, KEYS_DIR, MARKET_CA_DIR, MASTER_KEY_FILE,
    RenderedConfig,
};
use super::{
    ANNOTATION_CONFIG_HASH, APP_GATEWAY, GATEWAY_ADMIN_PORT, Images, LABEL_GATEWAY,
    PROVIDER_TOKEN_SECRET, labels, namespace_of, owned_meta, selector,
};
use crate::Result;

/// Key of the S3 access key id in the credentials Secret.
pub const ACCESS_KEY: &str = "accessKey";
/// Key of the S3 secret key in the credentials Secret.
pub const SECRET_KEY: &str = "secretKey";

/// The workload running a gateway's pods.
#[derive(Clone, Debug, PartialEq)]
pub enum GatewayWorkload {
    /// SQLite metadata: one pod with its database on a claim.
    StatefulSet(StatefulSet),
    /// PostgreSQL metadata: any number of stateless pods.
    Deployment(Deployment),
}

/// Everything applied (server-side) for a gateway.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayObjects {
    /// The rendered standalone config.
    pub config_map: ConfigMap,
    /// The S3 Service, named like the gateway.
    pub service: Service,
    /// The admin API Service (ClusterIP only) the operator reads plan health from.
    pub admin_service: Service,
    /// The StatefulSet or Deployment.
    pub workload: GatewayWorkload,
}

/// The Secret holding S3 keys: `spec.credentialsSecret`, default `<gateway>-credentials`.
pub fn credentials_secret_name(gateway: &StorageGateway) -> String {
    gateway
        .spec
        .credentials_secret
        .clone()
        .unwrap_or_else(|| format!("{}-credentials", gateway.name_any()))
}

/// The Secret holding the master key.
pub fn master_key_secret_name(gateway: &StorageGateway) -> String {
    format!("{}-master-key", gateway.name_any())
}

/// The Secret holding the admin API token (key [`ADMIN_TOKEN_KEY`]): the gateway pods and
/// the rebuild Jobs get it as `SUBLET_ADMIN_TOKEN`.
pub fn admin_token_secret_name(gateway: &StorageGateway) -> String {
    format!("{}-admin", gateway.name_any())
}

/// Key of the token in the admin token Secret.
pub const ADMIN_TOKEN_KEY: &str = "token";

/// The ConfigMap holding the config.
pub fn config_map_name(gateway: &StorageGateway) -> String {
    format!("{}-config", gateway.name_any())
}

/// The admin API Service.
pub fn admin_service_name(gateway: &StorageGateway) -> String {
    format!("{}-admin", gateway.name_any())
}

/// The S3 URL inside the cluster, e.g. `http://s3.storage.svc:9000`.
pub fn endpoint(gateway: &StorageGateway) -> Result<String> {
    Ok(format!(
        "http://{}.{}.svc:{}",
        gateway.name_any(),
        namespace_of(gateway)?,
        gateway.spec.service.port
    ))
}

/// The admin API base URL inside the cluster, e.g. `http://s3-admin.storage.svc:9001`.
pub fn admin_url(gateway: &StorageGateway) -> Result<String> {
    Ok(format!(
        "http://{}.{}.svc:{GATEWAY_ADMIN_PORT}",
        admin_service_name(gateway),
        namespace_of(gateway)?
    ))
}

fn random_text(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A credentials Secret with a fresh key pair. Created only when missing, never applied over
/// an existing one, so keys handed out stay valid.
pub fn credentials_secret(gateway: &StorageGateway) -> Result<Secret> {
    let name = gateway.name_any();
    Ok(Secret {
        metadata: owned_meta(
            gateway,
            credentials_secret_name(gateway),
            labels(APP_GATEWAY, &name, &[(LABEL_GATEWAY, &name)]),
        )?,
        string_data: Some(BTreeMap::from([
            (ACCESS_KEY.into(), random_text(20).to_uppercase()),
            (SECRET_KEY.into(), random_text(40)),
        ])),
        type_: Some("Opaque".into()),
        ..Secret::default()
    })
}

/// An admin token Secret with a fresh token. Created only when missing, never applied over
/// an existing one (an operator restart must not lock out Jobs holding the old token).
/// Owned by the gateway: the token means nothing without it.
pub fn admin_token_secret(gateway: &StorageGateway) -> Result<Secret> {
    let name = gateway.name_any();
    Ok(Secret {
        metadata: owned_meta(
            gateway,
            admin_token_secret_name(gateway),
            labels(APP_GATEWAY, &name, &[(LABEL_GATEWAY, &name)]),
        )?,
        string_data: Some(BTreeMap::from([(ADMIN_TOKEN_KEY.into(), random_text(40))])),
        type_: Some("Opaque".into()),
        ..Secret::default()
    })
}

/// A master key Secret with a fresh 256-bit key in hex, as `sublet` writes `master.key`.
/// Deliberately without an owner reference: deleting the gateway must not delete the one
/// key that makes stored objects readable.
pub fn master_key_secret(gateway: &StorageGateway) -> Result<Secret> {
    let name = gateway.name_any();
    let key: [u8; 32] = rand::random();
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(master_key_secret_name(gateway)),
            namespace: Some(namespace_of(gateway)?),
            labels: Some(labels(APP_GATEWAY, &name, &[(LABEL_GATEWAY, &name)])),
            annotations: Some(BTreeMap::from([(
                "sublet.dev/backup".into(),
                "back this Secret up: without it no object stored through the gateway can be read"
                    .into(),
            )])),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([(MASTER_KEY_FILE.into(), hex::encode(key))])),
        type_: Some("Opaque".into()),
        ..Secret::default()
    })
}

/// The namespace's provider token Secret, with a fresh token. Shared by all pools and
/// gateways of the namespace, so it has no owner.
pub fn provider_token_secret(namespace: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(PROVIDER_TOKEN_SECRET.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".into(),
                crate::FIELD_MANAGER.into(),
            )])),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([("token".into(), random_text(48))])),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

/// `name` from `key` of Secret `secret`, which must exist.
pub fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The ConfigMap, Services and workload for `gateway` running `config`.
pub fn gateway_objects(
    gateway: &StorageGateway,
    images: &Images,
    config: &RenderedConfig,
) -> Result<GatewayObjects> {
    let name = gateway.name_any();
    let labels = labels(APP_GATEWAY, &name, &[(LABEL_GATEWAY, &name)]);
    let spec = &gateway.spec;
    let port = i32::from(spec.service.port);

    let config_map = ConfigMap {
        metadata: owned_meta(gateway, config_map_name(gateway), labels.clone())?,
        data: Some(BTreeMap::from([(CONFIG_FILE.into(), config.yaml.clone())])),
        ..ConfigMap::default()
    };
    let service = Service {
        metadata: owned_meta(gateway, name.clone(), labels.clone())?,
        spec: Some(ServiceSpec {
            type_: Some(format!("{:?}", spec.service.type_)),
            selector: Some(selector(APP_GATEWAY, &name)),
            ports: Some(vec![ServicePort {
                name: Some("s3".into()),
                port,
                target_port: Some(IntOrString::String("s3".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    let admin_service = Service {
        metadata: owned_meta(gateway, admin_service_name(gateway), labels.clone())?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector(APP_GATEWAY, &name)),
            ports: Some(vec![ServicePort {
                name: Some("admin".into()),
                port: GATEWAY_ADMIN_PORT,
                target_port: Some(IntOrString::String("admin".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    };

    let mut env = vec![
        secret_env(
            "SUBLET_ACCESS_KEY",
            &credentials_secret_name(gateway),
            ACCESS_KEY,
        ),
        secret_env(
            "SUBLET_SECRET_KEY",
            &credentials_secret_name(gateway),
            SECRET_KEY,
        ),
        secret_env("SUBLET_PROVIDER_TOKEN", PROVIDER_TOKEN_SECRET, "token"),
        secret_env(
            "SUBLET_ADMIN_TOKEN",
            &admin_token_secret_name(gateway),
            ADMIN_TOKEN_KEY,
        ),
    ];
    env.extend(
        config
            .secret_env
            .iter()
            .map(|(var, secret, key)| secret_env(var, secret, key)),
    );
    if let Some(postgres) = &spec.metadata.postgres
        && let Some(secret) = &postgres.secret_ref
    {
        env.push(secret_env(
            postgres.url_env(),
            &secret.name,
            secret.key.as_deref().unwrap_or("url"),
        ));
    }
    // The custom resources are the policies' source of truth: the gateway's policy API
    // answers writes with a pointer to kubectl apply.
    env.push(EnvVar {
        name: "SUBLET_READ_ONLY_POLICIES".into(),
        value: Some("true".into()),
        ..EnvVar::default()
    });
    let probe = |initial_delay, period| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz".into()),
            port: IntOrString::String("admin".into()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Probe::default()
    };
    let mut mounts = vec![
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "keys".into(),
            mount_path: KEYS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "data".into(),
            mount_path: GATEWAY_DATA_DIR.into(),
            ..VolumeMount::default()
        },
    ];
    let market_ca = market_ca_volume(config);
    if market_ca.is_some() {
        mounts.push(VolumeMount {
            name: "market-ca".into(),
            mount_path: MARKET_CA_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    let container = Container {
        name: "gateway".into(),
        image: Some(images.gateway.clone()),
        command: Some(vec!["sublet".into()]),
        args: Some(vec![
            "serve".into(),
            "--config".into(),
            format!("{CONFIG_DIR}/{CONFIG_FILE}"),
        ]),
        env: Some(env),
        ports: Some(vec![
            ContainerPort {
                name: Some("s3".into()),
                container_port: port,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("admin".into()),
                container_port: GATEWAY_ADMIN_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(probe(2, 10)),
        liveness_probe: Some(probe(15, 20)),
        // Not a read-only root: SQLite puts its temporary files in /tmp.
        security_context: Some(super::container_security(false)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity("250m".into())),
                ("memory".into(), Quantity("256Mi".into())),
            ])),
            limits: Some(BTreeMap::from([("memory".into(), Quantity("2Gi".into()))])),
            ..ResourceRequirements::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(gateway),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "keys".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(master_key_secret_name(gateway)),
                default_mode: Some(0o400),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    volumes.extend(market_ca);
    let sqlite = spec.metadata.sqlite.as_ref();
    if sqlite.is_none() {
        volumes.push(Volume {
            name: "data".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
    }
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels.clone()),
            annotations: Some(BTreeMap::from([(
                ANNOTATION_CONFIG_HASH.into(),
                config.hash.clone(),
            )])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            automount_service_account_token: Some(false),
            // The master key Secret is mounted 0400: readable by the image's user only
            // through fsGroup.
            security_context: Some(super::pod_security()),
            containers: vec![container],
            volumes: Some(volumes),
            ..PodSpec::default()
        }),
    };
    let pod_selector = LabelSelector {
        match_labels: Some(selector(APP_GATEWAY, &name)),
        ..LabelSelector::default()
    };
    let replicas = i32::try_from(spec.replicas).unwrap_or(i32::MAX);
    let workload = match sqlite {
        Some(sqlite) => {
            let size = sqlite
                .storage
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_else(|| "10Gi".into());
            GatewayWorkload::StatefulSet(StatefulSet {
                metadata: owned_meta(gateway, name.clone(), labels.clone())?,
                spec: Some(StatefulSetSpec {
                    replicas: Some(replicas),
                    service_name: Some(name.clone()),
                    selector: pod_selector,
                    template,
                    volume_claim_templates: Some(vec![PersistentVolumeClaim {
                        metadata: ObjectMeta {
                            name: Some("data".into()),
                            labels: Some(labels.clone()),
                            ..ObjectMeta::default()
                        },
                        spec: Some(PersistentVolumeClaimSpec {
                            access_modes: Some(vec!["ReadWriteOnce".into()]),
                            storage_class_name: sqlite.storage_class_name.clone(),
                            resources: Some(VolumeResourceRequirements {
                                requests: Some(BTreeMap::from([(
                                    "storage".into(),
                                    Quantity(size),
                                )])),
                                ..VolumeResourceRequirements::default()
                            }),
                            ..PersistentVolumeClaimSpec::default()
                        }),
                        status: None,
                    }]),
                    ..StatefulSetSpec::default()
                }),
                status: None,
            })
        }
        None => GatewayWorkload::Deployment(Deployment {
            metadata: owned_meta(gateway, name.clone(), labels.clone())?,
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                selector: pod_selector,
                template,
                ..DeploymentSpec::default()
            }),
            status: None,
        }),
    };
    Ok(GatewayObjects {
        config_map,
        service,
        admin_service,
        workload,
    })
}

/// The Secrets of market pools' `caSecretRef`, each one's key as `<pool>/ca.pem`, in one
/// read-only volume mounted at [`MARKET_CA_DIR`]: the gateway checks each market's HTTPS
/// against the CA its pool names.
fn market_ca_volume(config: &RenderedConfig) -> Option<Volume> {
    if config.market_ca.is_empty() {
        return None;
    }
    let sources = config
        .market_ca
        .iter()
        .map(|(pool, secret, key)| VolumeProjection {
            secret: Some(SecretProjection {
                name: secret.clone(),
                items: Some(vec![KeyToPath {
                    key: key.clone(),
                    path: format!("{pool}/ca.pem"),
                    mode: None,
                }]),
                optional: Some(false),
            }),
            ..VolumeProjection::default()
        })
        .collect();
    Some(Volume {
        name: "market-ca".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(sources),
            default_mode: Some(0o444),
        }),
        ..Volume::default()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing::gateway;

    fn config(hash: &str) -> RenderedConfig {
        RenderedConfig {
            yaml: "kind: StorageGateway\n".into(),
            hash: hash.into(),
            excluded: Vec::new(),
            secret_env: Vec::new(),
            market_ca: Vec::new(),
        }
    }

    #[test]
    fn a_market_pools_ca_secret_is_mounted_where_its_config_names_it() {
        use crate::render::config::{Inventory, market_ca_file, render_config};
        use crate::testing::{plan, pool};
        let pools = [
            pool(
                "rented",
                "class: rented\nmarket: {url: \"https://market:8480\", caSecretRef: {name: market-ca, key: root.pem}, providers: 2, reserve: 10Gi}",
            ),
            pool(
                "plain",
                "class: rented\nmarket: {url: \"https://market:8480\", providers: 2, reserve: 10Gi}",
            ),
        ];
        let plans = [plan(
            "photos",
            "redundancy: {replicas: 2}\nplacement: {pools: [{name: rented}, {name: plain}]}",
        )];
        let gw = gateway("s3", "defaultPlan: photos");
        let inventory = Inventory {
            pools: &pools,
            plans: &plans,
            schedules: &[],
        };
        let rendered = render_config(&gw, inventory).unwrap();
        assert_eq!(
            rendered.market_ca,
            [("rented".into(), "market-ca".into(), "root.pem".into())]
        );
        // The gateway's own loader takes the file: caFile at the mount, no Secret reference.
        let loaded = sublet_crds::load_str("rendered", &rendered.yaml).unwrap();
        let market = loaded.pools["rented"].spec.market.clone().unwrap();
        assert_eq!(
            market.ca_file.as_deref(),
            Some("/etc/sublet-market-ca/rented/ca.pem")
        );
        assert_eq!(market.ca_file, Some(market_ca_file("rented")));
        assert_eq!(market.ca_secret_ref, None);
        assert_eq!(
            loaded.pools["plain"].spec.market.clone().unwrap().ca_file,
            None
        );

        let objects = gateway_objects(&gw, &Images::default(), &rendered).unwrap();
        let pod = &workload_json(&objects)["spec"]["template"]["spec"];
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "market-ca")
            .unwrap();
        assert_eq!(
            volume["projected"]["sources"],
            serde_json::json!([{"secret": {
                "name": "market-ca",
                "items": [{"key": "root.pem", "path": "rented/ca.pem"}],
                "optional": false,
            }}])
        );
        let mount = pod["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "market-ca")
            .unwrap();
        assert_eq!(mount["mountPath"], "/etc/sublet-market-ca");
        assert_eq!(mount["readOnly"], true);
        // Without a caSecretRef, no such volume.
        let objects = gateway_objects(&gw, &Images::default(), &config("abc")).unwrap();
        let json = workload_json(&objects);
        let volumes = json["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap();
        assert!(volumes.iter().all(|v| v["name"] != "market-ca"));
    }

    fn workload_json(objects: &GatewayObjects) -> serde_json::Value {
        match &objects.workload {
            GatewayWorkload::StatefulSet(s) => serde_json::to_value(s).unwrap(),
            GatewayWorkload::Deployment(d) => serde_json::to_value(d).unwrap(),
        }
    }

    #[test]
    fn sqlite_gateway_is_a_stateful_set_with_its_database_on_a_claim() {
        let gw = gateway(
            "s3",
            "defaultPlan: photos\nmetadata: {sqlite: {storage: 20Gi}}\nservice: {type: LoadBalancer, port: 9000}",
        );
        let objects = gateway_objects(&gw, &Images::default(), &config("abc")).unwrap();
        let json = workload_json(&objects);
        assert!(matches!(objects.workload, GatewayWorkload::StatefulSet(_)));
        assert_eq!(json["metadata"]["name"], "s3");
        assert_eq!(json["spec"]["replicas"], 1);
        assert_eq!(
            json["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
            "20Gi"
        );
        // No class named: the claim leaves the field out and gets the cluster's default.
        assert!(json["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"].is_null());
        let named = gateway(
            "s3",
            "defaultPlan: photos\nmetadata: {sqlite: {storage: 20Gi, storageClassName: local-path}}",
        );
        let named = gateway_objects(&named, &Images::default(), &config("abc")).unwrap();
        assert_eq!(
            workload_json(&named)["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"],
            "local-path"
        );
        let template = &json["spec"]["template"];
        assert_eq!(
            template["metadata"]["annotations"]["sublet.dev/config-hash"],
            "abc"
        );
        let c = &template["spec"]["containers"][0];
        assert_eq!(c["command"], serde_json::json!(["sublet"]));
        assert_eq!(
            c["args"],
            serde_json::json!(["serve", "--config", "/etc/sublet/sublet.yaml"])
        );
        assert_eq!(
            c["env"][0]["valueFrom"]["secretKeyRef"]["name"],
            "s3-credentials"
        );
        assert_eq!(
            c["env"][2]["valueFrom"]["secretKeyRef"]["name"],
            "sublet-provider-token"
        );
        // Every replica gets the same admin token, from the Secret the operator made.
        assert_eq!(c["env"][3]["name"], "SUBLET_ADMIN_TOKEN");
        assert_eq!(c["env"][3]["valueFrom"]["secretKeyRef"]["name"], "s3-admin");
        assert_eq!(c["env"][3]["valueFrom"]["secretKeyRef"]["key"], "token");
        let env = c["env"].as_array().unwrap();
        let read_only = env
            .iter()
            .find(|e| e["name"] == "SUBLET_READ_ONLY_POLICIES")
            .expect("the gateway is told its policies are the operator's");
        assert_eq!(read_only["value"], "true");
        // The image's user reads the 0400 master key through the pod's group, and the pod
        // meets the `restricted` Pod Security Standard.
        let pod = &template["spec"];
        assert_eq!(pod["securityContext"]["fsGroup"], 10001);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(
            c["securityContext"]["capabilities"]["drop"],
            serde_json::json!(["ALL"])
        );
        let volumes = &template["spec"]["volumes"];
        assert_eq!(volumes[0]["configMap"]["name"], "s3-config");
        assert_eq!(volumes[1]["secret"]["secretName"], "s3-master-key");
        assert_eq!(
            volumes.as_array().unwrap().len(),
            2,
            "data comes from the claim"
        );

        let service = serde_json::to_value(&objects.service).unwrap();
        assert_eq!(service["spec"]["type"], "LoadBalancer");
        assert_eq!(service["spec"]["ports"][0]["port"], 9000);
        let admin = serde_json::to_value(&objects.admin_service).unwrap();
        assert_eq!(admin["metadata"]["name"], "s3-admin");
        assert_eq!(admin["spec"]["type"], "ClusterIP");
        assert_eq!(
            objects.config_map.data.as_ref().unwrap()["sublet.yaml"],
            "kind: StorageGateway\n"
        );
        assert_eq!(endpoint(&gw).unwrap(), "http://s3.storage.svc:9000");
        assert_eq!(admin_url(&gw).unwrap(), "http://s3-admin.storage.svc:9001");
    }

    #[test]
    fn config_change_changes_the_pod_template() {
        let gw = gateway("s3", "defaultPlan: photos");
        let a = workload_json(&gateway_objects(&gw, &Images::default(), &config("one")).unwrap());
        let b = workload_json(&gateway_objects(&gw, &Images::default(), &config("two")).unwrap());
        assert_ne!(a["spec"]["template"], b["spec"]["template"]);
    }

    #[test]
    fn postgres_gateway_is_a_deployment() {
        let gw = gateway(
            "s3",
            "defaultPlan: photos\nreplicas: 3\nmetadata: {postgres: {secretRef: {name: db}}}",
        );
        let objects = gateway_objects(&gw, &Images::default(), &config("abc")).unwrap();
        let json = workload_json(&objects);
        assert!(matches!(objects.workload, GatewayWorkload::Deployment(_)));
        assert_eq!(json["spec"]["replicas"], 3);
        let c = &json["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["env"][4]["name"], "SUBLET_METADATA_URL");
        assert_eq!(c["env"][4]["valueFrom"]["secretKeyRef"]["key"], "url");
        assert!(json["spec"]["template"]["spec"]["volumes"][2]["emptyDir"].is_object());

        // The variable the gateway reads (urlEnv) is the one the Secret fills.
        let gw = gateway(
            "s3",
            "defaultPlan: photos\nreplicas: 2\nmetadata: {postgres: {secretRef: {name: db, key: dsn}, urlEnv: DB_URL}}",
        );
        let json =
            workload_json(&gateway_objects(&gw, &Images::default(), &config("abc")).unwrap());
        let c = &json["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["env"][4]["name"], "DB_URL");
        assert_eq!(c["env"][4]["valueFrom"]["secretKeyRef"]["name"], "db");
        assert_eq!(c["env"][4]["valueFrom"]["secretKeyRef"]["key"], "dsn");
    }

    #[test]
    fn secrets_get_fresh_keys() {
        let gw = gateway("s3", "defaultPlan: photos\ncredentialsSecret: sublet-s3");
        let a = credentials_secret(&gw).unwrap();
        let b = credentials_secret(&gw).unwrap();
        assert_eq!(a.metadata.name.as_deref(), Some("sublet-s3"));
        let (da, db) = (a.string_data.unwrap(), b.string_data.unwrap());
        assert_eq!(da[ACCESS_KEY].len(), 20);
        assert_eq!(da[SECRET_KEY].len(), 40);
        assert_ne!(da[SECRET_KEY], db[SECRET_KEY]);
        let master = master_key_secret(&gw).unwrap();
        assert!(
            master.metadata.owner_references.is_none(),
            "the master key outlives the gateway"
        );
        let key = &master.string_data.unwrap()[MASTER_KEY_FILE];
        assert_eq!(hex::decode(key).unwrap().len(), 32);
        assert_eq!(
            provider_token_secret("storage").string_data.unwrap()["token"].len(),
            48
        );
    }
}
