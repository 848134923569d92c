//! ProviderPool → provider pods: a DaemonSet on the selected nodes (hostPath storage) or a
//! StatefulSet with one claim per pod (volumeClaimTemplate storage), and a headless Service.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    HostPathVolumeSource, KeyToPath, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use sublet_crds::{MarketOffer, PoolNodes, ProviderPool};

use super::{
    APP_PROVIDER, Images, LABEL_POOL, PROVIDER_GRPC_PORT, PROVIDER_HTTP_PORT,
    PROVIDER_TOKEN_SECRET, labels, owned_meta, selector,
};
use crate::Result;

/// Where the provider keeps its identity and shards inside the pod.
pub const DATA_DIR: &str = "/var/lib/sublet";
/// The node label holding a node's zone; passed to the provider as its failure domain.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Where a pool's `offer.marketCaSecretRef` is mounted in provider pods.
pub const MARKET_CA_DIR: &str = "/etc/sublet/market-ca";
/// The file the provider reads the market's CA certificates from, inside [`MARKET_CA_DIR`].
pub const MARKET_CA_FILE: &str = "/etc/sublet/market-ca/ca.pem";
/// Name of the init container that prints the provider's node id into its termination
/// message, where the operator reads it.
pub const IDENTITY_CONTAINER: &str = "identity";
pub use super::SUBLET_UID;

/// Non-root, no privileges, nothing written outside the data volume.
fn restricted() -> SecurityContext {
    super::container_security(true)
}

/// The workload running a pool's provider pods.
#[derive(Clone, Debug, PartialEq)]
pub enum ProviderWorkload {
    /// One pod per selected node, data on a host directory.
    DaemonSet(DaemonSet),
    /// One pod per selected node, each with its own claim.
    StatefulSet(StatefulSet),
}

/// Everything applied for a pool with in-cluster nodes.
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderObjects {
    /// The headless Service giving the pods DNS names.
    pub service: Service,
    /// The DaemonSet or StatefulSet.
    pub workload: ProviderWorkload,
}

/// The name of a pool's workload and Service.
pub fn workload_name(pool: &str) -> String {
    format!("{pool}-provider")
}

/// The objects for `pool`'s in-cluster providers; `None` when the pool only lists
/// endpoints. `matching_nodes` sizes the StatefulSet (one pod per selected node; a
/// DaemonSet sizes itself).
pub fn provider_objects(
    pool: &ProviderPool,
    images: &Images,
    matching_nodes: usize,
) -> Result<Option<ProviderObjects>> {
    let Some(nodes) = &pool.spec.nodes else {
        return Ok(None);
    };
    let name = pool.name_any();
    let object_name = workload_name(&name);
    let labels = labels(APP_PROVIDER, &name, &[(LABEL_POOL, &name)]);
    let service = Service {
        metadata: owned_meta(pool, object_name.clone(), labels.clone())?,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector(APP_PROVIDER, &name)),
            ports: Some(vec![
                service_port("grpc", PROVIDER_GRPC_PORT),
                service_port("http", PROVIDER_HTTP_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    let workload = match (
        &nodes.storage.host_path,
        &nodes.storage.volume_claim_template,
    ) {
        (_, Some(claim)) => {
            let template = pod_template(
                &name,
                nodes,
                images,
                &labels,
                claim.size.to_string(),
                None,
                pool.spec.offer.as_ref(),
            )?;
            let claim = PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".into()),
                    labels: Some(labels.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: claim.storage_class_name.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".into(),
                            Quantity(claim.size.to_string()),
                        )])),
                        ..VolumeResourceRequirements::default()
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                status: None,
            };
            ProviderWorkload::StatefulSet(StatefulSet {
                metadata: owned_meta(pool, object_name.clone(), labels.clone())?,
                spec: Some(StatefulSetSpec {
                    replicas: Some(i32::try_from(matching_nodes).unwrap_or(i32::MAX)),
                    service_name: Some(object_name),
                    // Providers are independent; start and replace them all at once.
                    pod_management_policy: Some("Parallel".into()),
                    selector: LabelSelector {
                        match_labels: Some(selector(APP_PROVIDER, &name)),
                        ..LabelSelector::default()
                    },
                    template,
                    volume_claim_templates: Some(vec![claim]),
                    ..StatefulSetSpec::default()
                }),
                status: None,
            })
        }
        (host_path, None) => {
            let capacity = nodes
                .storage
                .capacity
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "10Gi".into());
            let volume = Volume {
                name: "data".into(),
                host_path: Some(HostPathVolumeSource {
                    path: host_path.clone().unwrap_or_else(|| DATA_DIR.into()),
                    type_: Some("DirectoryOrCreate".into()),
                }),
                ..Volume::default()
            };
            let template = pod_template(
                &name,
                nodes,
                images,
                &labels,
                capacity,
                Some(volume),
                pool.spec.offer.as_ref(),
            )?;
            ProviderWorkload::DaemonSet(DaemonSet {
                metadata: owned_meta(pool, object_name, labels.clone())?,
                spec: Some(DaemonSetSpec {
                    selector: LabelSelector {
                        match_labels: Some(selector(APP_PROVIDER, &name)),
                        ..LabelSelector::default()
                    },
                    template,
                    ..DaemonSetSpec::default()
                }),
                status: None,
            })
        }
    };
    Ok(Some(ProviderObjects { service, workload }))
}

fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

fn health_probe(initial_delay: i32, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz".into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

fn pod_template(
    pool: &str,
    nodes: &PoolNodes,
    images: &Images,
    labels: &BTreeMap<String, String>,
    capacity: String,
    host_volume: Option<Volume>,
    offer: Option<&MarketOffer>,
) -> Result<PodTemplateSpec> {
    let data_mount = VolumeMount {
        name: "data".into(),
        mount_path: DATA_DIR.into(),
        ..VolumeMount::default()
    };
    let mut env = vec![
        EnvVar {
            // Set when the cluster copies node topology labels onto pods (Kubernetes 1.33+
            // with PodTopologyLabelsAdmission); empty otherwise. The gateway config carries
            // the zone read from the node either way.
            name: "SUBLET_PROVIDER_ZONE".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: format!("metadata.labels['{ZONE_LABEL}']"),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
        EnvVar {
            name: "SUBLET_PROVIDER_TOKEN".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: PROVIDER_TOKEN_SECRET.into(),
                    key: "token".into(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
    ];
    if let Some(offer) = offer {
        env.extend(offer_env(offer)?);
    }
    let market_ca = offer.and_then(market_ca_volume);
    let mut provider_mounts = vec![data_mount.clone()];
    if market_ca.is_some() {
        provider_mounts.push(VolumeMount {
            name: "market-ca".into(),
            mount_path: MARKET_CA_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    // A hostPath the kubelet creates belongs to root; hand it to the image's user (only
    // the directory: what is inside was written by that user already). A claim needs no
    // such step (fsGroup makes it the pod's), so claim pools meet the `restricted` Pod
    // Security Standard; hostPath pools cannot (hostPath volumes are outside `baseline`).
    let data_owner = host_volume.is_some().then(|| Container {
        name: "data-owner".into(),
        image: Some(images.provider.clone()),
        command: Some(vec![
            "chown".into(),
            format!("{SUBLET_UID}:{SUBLET_UID}"),
            DATA_DIR.into(),
        ]),
        volume_mounts: Some(vec![data_mount.clone()]),
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: Some(vec!["CHOWN".into()]),
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    });
    let identity = Container {
        name: IDENTITY_CONTAINER.into(),
        image: Some(images.provider.clone()),
        // The node id goes to the termination message, which the operator reads from the
        // pod status to pin the provider in the gateway config.
        command: Some(vec![
            "sh".into(),
            "-c".into(),
            format!("sublet-provider --data-dir {DATA_DIR} --print-node-id > /dev/termination-log"),
        ]),
        volume_mounts: Some(vec![data_mount.clone()]),
        security_context: Some(restricted()),
        ..Container::default()
    };
    let provider = Container {
        name: "provider".into(),
        image: Some(images.provider.clone()),
        command: Some(vec!["sublet-provider".into()]),
        args: Some(vec![
            "--data-dir".into(),
            DATA_DIR.into(),
            "--listen".into(),
            format!("0.0.0.0:{PROVIDER_GRPC_PORT}"),
            "--http-listen".into(),
            format!("0.0.0.0:{PROVIDER_HTTP_PORT}"),
            "--capacity".into(),
            capacity,
        ]),
        env: Some(env),
        ports: Some(vec![
            container_port("grpc", PROVIDER_GRPC_PORT),
            container_port("http", PROVIDER_HTTP_PORT),
        ]),
        readiness_probe: Some(health_probe(2, 10)),
        liveness_probe: Some(health_probe(10, 20)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity("100m".into())),
                ("memory".into(), Quantity("128Mi".into())),
            ])),
            limits: Some(BTreeMap::from([("memory".into(), Quantity("1Gi".into()))])),
            ..ResourceRequirements::default()
        }),
        volume_mounts: Some(provider_mounts),
        security_context: Some(restricted()),
        ..Container::default()
    };
    let volumes: Vec<Volume> = host_volume.into_iter().chain(market_ca).collect();
    Ok(PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            node_selector: Some(nodes.selector.match_labels.clone()),
            // One provider per node: a second pod of the pool never lands on the same node.
            affinity: Some(Affinity {
                pod_anti_affinity: Some(PodAntiAffinity {
                    required_during_scheduling_ignored_during_execution: Some(vec![
                        PodAffinityTerm {
                            label_selector: Some(LabelSelector {
                                match_labels: Some(selector(APP_PROVIDER, pool)),
                                ..LabelSelector::default()
                            }),
                            topology_key: "kubernetes.io/hostname".into(),
                            ..PodAffinityTerm::default()
                        },
                    ]),
                    ..PodAntiAffinity::default()
                }),
                ..Affinity::default()
            }),
            automount_service_account_token: Some(false),
            // The provider finishes in-flight writes for up to 30 s after SIGTERM.
            termination_grace_period_seconds: Some(40),
            // Claims are made writable for the group; hostPaths by the data-owner step, the
            // one container running as root, so the pod cannot insist on non-root.
            security_context: Some(PodSecurityContext {
                run_as_non_root: data_owner.is_none().then_some(true),
                ..super::pod_security()
            }),
            init_containers: Some(data_owner.into_iter().chain([identity]).collect()),
            containers: vec![provider],
            volumes: (!volumes.is_empty()).then_some(volumes),
            ..PodSpec::default()
        }),
    })
}

/// The offer handed to each provider pod, which publishes it with its own node key. Unless
/// the pool names an endpoint, each pod advertises its own IP (the kubelet expands
/// `$(POD_IP)` from the variable defined just before).
fn offer_env(offer: &MarketOffer) -> Result<Vec<EnvVar>> {
    let mut offer = offer.clone();
    // The pod reads the CA from where its Secret is mounted (see `market_ca_volume`).
    if offer.market_ca_secret_ref.take().is_some() {
        offer.market_ca_file = Some(MARKET_CA_FILE.into());
    }
    if offer.endpoint.is_none() {
        offer.endpoint = Some(format!("https://$(POD_IP):{PROVIDER_GRPC_PORT}"));
    }
    let json = serde_json::to_string(&offer).map_err(|source| crate::Error::Serialize {
        what: "the offer of a ProviderPool".into(),
        source,
    })?;
    Ok(vec![
        EnvVar {
            name: "POD_IP".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "status.podIP".into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
        EnvVar {
            name: "SUBLET_PROVIDER_OFFER".into(),
            value: Some(json),
            ..EnvVar::default()
        },
    ])
}

/// The Secret of `offer.marketCaSecretRef`, its key as `ca.pem`: mounted read-only at
/// [`MARKET_CA_DIR`], so the provider checks the market's HTTPS against that CA.
fn market_ca_volume(offer: &MarketOffer) -> Option<Volume> {
    let secret = offer.market_ca_secret_ref.as_ref()?;
    Some(Volume {
        name: "market-ca".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.name.clone()),
            items: Some(vec![KeyToPath {
                key: offer.market_ca_key()?.to_owned(),
                path: "ca.pem".into(),
                mode: None,
            }]),
            default_mode: Some(0o444),
            optional: Some(false),
        }),
        ..Volume::default()
    })
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing::pool;

    fn workload_json(objects: &ProviderObjects) -> serde_json::Value {
        match &objects.workload {
            ProviderWorkload::DaemonSet(ds) => serde_json::to_value(ds).unwrap(),
            ProviderWorkload::StatefulSet(sts) => serde_json::to_value(sts).unwrap(),
        }
    }

    #[test]
    fn host_path_pool_is_a_daemon_set_on_the_selected_nodes() {
        let pool = pool(
            "home-lab",
            "class: owned\nnodes: {selector: {matchLabels: {sublet.dev/provider: \"true\"}}, storage: {hostPath: /srv/sublet, capacity: 500Gi}}",
        );
        let images = Images {
            provider: "example/provider:1".into(),
            gateway: "example/gateway:1".into(),
        };
        let objects = provider_objects(&pool, &images, 3).unwrap().unwrap();
        let ProviderWorkload::DaemonSet(ds) = &objects.workload else {
            panic!("expected a DaemonSet");
        };
        assert_eq!(ds.metadata.name.as_deref(), Some("home-lab-provider"));
        assert_eq!(ds.metadata.namespace.as_deref(), Some("storage"));
        let owner = &ds.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("ProviderPool", "home-lab", Some(true))
        );
        let json = workload_json(&objects);
        let pod = &json["spec"]["template"]["spec"];
        assert_eq!(
            pod["nodeSelector"],
            serde_json::json!({"sublet.dev/provider": "true"})
        );
        assert_eq!(
            pod["volumes"][0]["hostPath"],
            serde_json::json!({"path": "/srv/sublet", "type": "DirectoryOrCreate"})
        );
        let c = &pod["containers"][0];
        assert_eq!(c["image"], "example/provider:1");
        assert_eq!(
            c["args"],
            serde_json::json!([
                "--data-dir",
                "/var/lib/sublet",
                "--listen",
                "0.0.0.0:7480",
                "--http-listen",
                "0.0.0.0:7481",
                "--capacity",
                "500Gi"
            ])
        );
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(c["livenessProbe"]["httpGet"]["port"], "http");
        assert_eq!(c["env"][0]["name"], "SUBLET_PROVIDER_ZONE");
        assert_eq!(
            c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.labels['topology.kubernetes.io/zone']"
        );
        assert_eq!(
            c["env"][1]["valueFrom"]["secretKeyRef"]["name"],
            "sublet-provider-token"
        );
        assert_eq!(c["resources"]["requests"]["memory"], "128Mi");
        // The hostPath is handed to the image's user first; everything else runs non-root.
        assert_eq!(pod["initContainers"][0]["name"], "data-owner");
        assert_eq!(pod["initContainers"][0]["command"][1], "10001:10001");
        assert_eq!(pod["initContainers"][1]["name"], "identity");
        for c in [&pod["initContainers"][1], &pod["containers"][0]] {
            assert_eq!(c["securityContext"]["runAsNonRoot"], true);
            assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        }
        assert_eq!(pod["securityContext"]["fsGroup"], 10001);
        assert_eq!(
            json["spec"]["template"]["metadata"]["labels"]["sublet.dev/pool"],
            "home-lab"
        );
        // The selector must stay a subset of the pod labels, or the API server refuses it.
        let selector = json["spec"]["selector"]["matchLabels"].as_object().unwrap();
        for (k, v) in selector {
            assert_eq!(&json["spec"]["template"]["metadata"]["labels"][k], v, "{k}");
        }

        let service = serde_json::to_value(&objects.service).unwrap();
        assert_eq!(service["metadata"]["name"], "home-lab-provider");
        assert_eq!(service["spec"]["clusterIP"], "None");
        assert_eq!(service["spec"]["ports"][0]["port"], 7480);
        assert_eq!(service["spec"]["ports"][1]["port"], 7481);
    }

    #[test]
    fn pool_offer_reaches_every_provider_pod() {
        let pool = pool(
            "lent",
            "class: rented\nnodes: {selector: {}, storage: {hostPath: /srv/sublet, capacity: 500Gi}}\noffer: {marketUrl: \"https://market:8480\", pricePerGibMonth: 4000, region: eu-west, promisedUptime: \"99.5%\"}",
        );
        let objects = provider_objects(&pool, &Images::default(), 1)
            .unwrap()
            .unwrap();
        let json = workload_json(&objects);
        let env = json["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .clone();
        let names: Vec<&str> = env.iter().map(|e| e["name"].as_str().unwrap()).collect();
        // POD_IP must come first: the kubelet expands $(POD_IP) only from earlier variables.
        assert_eq!(
            names,
            [
                "SUBLET_PROVIDER_ZONE",
                "SUBLET_PROVIDER_TOKEN",
                "POD_IP",
                "SUBLET_PROVIDER_OFFER"
            ]
        );
        assert_eq!(env[2]["valueFrom"]["fieldRef"]["fieldPath"], "status.podIP");
        // What the provider pod reads back is the pool's offer, endpoint filled in.
        let offer: MarketOffer = serde_yaml::from_str(env[3]["value"].as_str().unwrap()).unwrap();
        assert_eq!(offer.market_url.as_deref(), Some("https://market:8480"));
        assert_eq!(offer.endpoint.as_deref(), Some("https://$(POD_IP):7480"));
        assert_eq!(offer.promised_uptime_bps(), Some(9950));
        assert_eq!(offer.price_per_gib_month, 4000);

        // A pool without an offer hands none.
        let plain = pool_without_offer();
        let json = workload_json(
            &provider_objects(&plain, &Images::default(), 1)
                .unwrap()
                .unwrap(),
        );
        let env = json["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
        assert!(!env.contains("SUBLET_PROVIDER_OFFER"), "{env}");
    }

    #[test]
    fn the_markets_ca_secret_is_mounted_and_named_in_the_offer() {
        let lent = pool(
            "lent",
            "class: rented\nnodes: {selector: {}, storage: {volumeClaimTemplate: {size: 10Gi}}}\noffer: {marketUrl: \"https://market:8480\", marketCaSecretRef: {name: market-ca, key: ca.pem}, pricePerGibMonth: 4000, region: eu-west, promisedUptime: \"99.5%\"}",
        );
        let json = workload_json(
            &provider_objects(&lent, &Images::default(), 1)
                .unwrap()
                .unwrap(),
        );
        let spec = &json["spec"]["template"]["spec"];
        assert_eq!(
            spec["volumes"],
            serde_json::json!([{"name": "market-ca", "secret": {
                "secretName": "market-ca", "items": [{"key": "ca.pem", "path": "ca.pem"}],
                "defaultMode": 0o444, "optional": false}}])
        );
        let provider = &spec["containers"][0];
        assert_eq!(
            provider["volumeMounts"][1],
            serde_json::json!({"name": "market-ca", "mountPath": "/etc/sublet/market-ca", "readOnly": true})
        );
        // Only the provider container reads it.
        for init in spec["initContainers"].as_array().unwrap() {
            assert_eq!(init["volumeMounts"].as_array().unwrap().len(), 1, "{init}");
        }
        // The offer the pod reads names the mounted file, not the Secret.
        let env = provider["env"].as_array().unwrap();
        let offer = env
            .iter()
            .find(|e| e["name"] == "SUBLET_PROVIDER_OFFER")
            .unwrap();
        let offer: MarketOffer = serde_yaml::from_str(offer["value"].as_str().unwrap()).unwrap();
        assert_eq!(offer.market_ca_file.as_deref(), Some(MARKET_CA_FILE));
        assert_eq!(offer.market_ca_secret_ref, None);

        // A hostPath pool keeps its data volume first, the CA beside it.
        let host = pool(
            "lent",
            "class: rented\nnodes: {selector: {}, storage: {hostPath: /srv/sublet, capacity: 5Gi}}\noffer: {marketUrl: \"https://market:8480\", marketCaSecretRef: {name: market-ca}, pricePerGibMonth: 4000, region: eu-west, promisedUptime: \"99.5%\"}",
        );
        let json = workload_json(
            &provider_objects(&host, &Images::default(), 1)
                .unwrap()
                .unwrap(),
        );
        let volumes = &json["spec"]["template"]["spec"]["volumes"];
        assert_eq!(volumes[0]["name"], "data");
        assert_eq!(volumes[1]["secret"]["items"][0]["key"], "ca.crt");
    }

    fn pool_without_offer() -> ProviderPool {
        pool(
            "plain",
            "class: owned\nnodes: {selector: {}, storage: {hostPath: /srv/sublet, capacity: 1Gi}}",
        )
    }

    #[test]
    fn claim_pool_is_a_stateful_set_sized_by_the_matching_nodes() {
        let pool = pool(
            "rented",
            "class: rented\nnodes: {selector: {matchLabels: {sublet.dev/pool: rented}}, storage: {volumeClaimTemplate: {storageClassName: fast, size: 200Gi}}}",
        );
        let objects = provider_objects(&pool, &Images::default(), 2)
            .unwrap()
            .unwrap();
        let json = workload_json(&objects);
        assert!(matches!(objects.workload, ProviderWorkload::StatefulSet(_)));
        assert_eq!(json["spec"]["replicas"], 2);
        assert_eq!(json["spec"]["serviceName"], "rented-provider");
        let claim = &json["spec"]["volumeClaimTemplates"][0];
        assert_eq!(claim["metadata"]["name"], "data");
        assert_eq!(claim["spec"]["storageClassName"], "fast");
        assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "200Gi");
        let pod = &json["spec"]["template"]["spec"];
        assert!(pod.get("volumes").is_none(), "{pod}");
        assert_eq!(pod["containers"][0]["args"][7], "200Gi");
        assert_eq!(
            pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
                ["topologyKey"],
            "kubernetes.io/hostname"
        );
        assert_eq!(
            pod["containers"][0]["image"],
            format!("ghcr.io/sublet-dev/sublet:{}", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn endpoint_only_pool_runs_nothing() {
        let pool = pool(
            "friends",
            "class: owned\nendpoints: [{name: nas, address: \"nas:7480\"}]",
        );
        assert_eq!(
            provider_objects(&pool, &Images::default(), 0).unwrap(),
            None
        );
    }

    #[test]
    fn pool_without_uid_is_refused() {
        let mut pool = pool(
            "home-lab",
            "class: owned\nnodes: {selector: {}, storage: {hostPath: /x, capacity: 1Gi}}",
        );
        pool.metadata.uid = None;
        let err = provider_objects(&pool, &Images::default(), 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ProviderPool/home-lab has no metadata.uid; it was not read from the API server"
        );
    }
}
