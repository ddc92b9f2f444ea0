//! Spec to objects: the pure functions of `cluster::desired`, table-tested
//! (container arguments per role against docs/cluster.md, the StatefulSet's
//! update and volume policy, owner references, names, probes, mounts).

mod common;

use common::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use serde_json::{Value, json};
use strata_crds::StrataCluster;
use strata_operator::cluster::desired::{self, Cluster};

fn with<'a>(object: &'a StrataCluster) -> Cluster<'a> {
    Cluster {
        name: NAME,
        namespace: NS,
        spec: &object.spec,
        owner: object.controller_owner_ref(&()).expect("owner"),
        image: object.spec.image_ref("0.9.0"),
    }
}

fn check_args(spec: Value, want: [&[&str]; 4]) {
    let object = cluster(spec.clone(), 1);
    let c = with(&object);
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        desired::storage_args(&object.spec),
        strings(want[0]),
        "storage of {spec}"
    );
    assert_eq!(
        desired::insert_args(&object.spec),
        strings(want[1]),
        "insert of {spec}"
    );
    assert_eq!(
        desired::select_args(&object.spec, &object.spec.select.pools[0]),
        strings(want[2]),
        "select of {spec}"
    );
    match &object.spec.alert {
        Some(alert) => assert_eq!(
            desired::alert_args(&c, alert),
            strings(want[3]),
            "alert of {spec}"
        ),
        None => assert!(want[3].is_empty()),
    }
}

#[test]
fn role_arguments_follow_the_flag_contract() {
    check_args(
        json!({"storage": {"replicas": 1}}),
        [
            &[
                "--listen=0.0.0.0:8482",
                "--rpc.listen=0.0.0.0:8400",
                "--data-dir=/data",
                "--retention=31d",
            ],
            &[
                "--listen=0.0.0.0:8480",
                "--topology-file=/etc/strata/topology/topology.yaml",
                "--replication-factor=1",
                "--handoff.dir=/handoff",
            ],
            &[
                "--listen=0.0.0.0:8481",
                "--topology-file=/etc/strata/topology/topology.yaml",
                "--replication-factor=1",
            ],
            &[],
        ],
    );
    check_args(
        json!({
            "storage": {"replicas": 3, "replicationFactor": 2, "retention": "90d", "dedupMinScrapeInterval": "30s", "extraArgs": ["--sync=interval:1s"]},
            "insert": {"extraArgs": ["--insert.max-labels-per-series=60"]},
            "select": {"pools": [{"name": "dash", "extraArgs": ["--deny-partial-response"]}]},
            "alert": {"selectPool": "dash", "evaluationInterval": "30s",
                      "notifiers": [{"url": "http://am-0:9093"}, {"url": "http://am-1:9093"}], "extraArgs": ["--external-label=dc=eu"]},
        }),
        [
            &[
                "--listen=0.0.0.0:8482",
                "--rpc.listen=0.0.0.0:8400",
                "--data-dir=/data",
                "--retention=90d",
                "--dedup.min-scrape-interval=30s",
                "--sync=interval:1s",
            ],
            &[
                "--listen=0.0.0.0:8480",
                "--topology-file=/etc/strata/topology/topology.yaml",
                "--replication-factor=2",
                "--handoff.dir=/handoff",
                "--insert.max-labels-per-series=60",
            ],
            &[
                "--listen=0.0.0.0:8481",
                "--topology-file=/etc/strata/topology/topology.yaml",
                "--replication-factor=2",
                "--deny-partial-response",
            ],
            &[
                "--listen=0.0.0.0:8880",
                "--datasource.url=http://demo-select-dash.obs.svc:8481/select/{tenant}/prometheus",
                "--remote-write.url=http://demo-insert.obs.svc:8480/insert/{tenant}/prometheus/api/v1/write",
                "--rule=/etc/strata/rules/*.yaml",
                "--evaluation-interval=30s",
                "--notifier.url=http://am-0:9093",
                "--notifier.url=http://am-1:9093",
                "--external-label=dc=eu",
            ],
        ],
    );
}

#[test]
fn storage_statefulset_is_ondelete_with_retained_volumes() {
    let object = cluster(
        json!({"image": "registry.local/strata", "imagePullPolicy": "IfNotPresent", "storage": {"replicas": 3,
               "volume": {"size": "50Gi", "storageClassName": "fast"},
               "resources": {"requests": {"cpu": "2", "memory": "4Gi"}}}}),
        1,
    );
    let sts = desired::storage_statefulset(&with(&object), 3);
    let v = serde_json::to_value(&sts).expect("json");
    let check = |pointer: &str, want: Value| {
        assert_eq!(v.pointer(pointer), Some(&want), "{pointer} in {v:#}")
    };
    check("/metadata/name", json!("demo-storage"));
    check("/spec/replicas", json!(3));
    check("/spec/serviceName", json!("demo-storage"));
    check("/spec/updateStrategy/type", json!("OnDelete"));
    check("/spec/podManagementPolicy", json!("Parallel"));
    check(
        "/spec/persistentVolumeClaimRetentionPolicy",
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
    );
    check(
        "/spec/volumeClaimTemplates/0/spec/resources/requests/storage",
        json!("50Gi"),
    );
    check(
        "/spec/volumeClaimTemplates/0/spec/storageClassName",
        json!("fast"),
    );
    check(
        "/spec/template/spec/containers/0/image",
        json!("registry.local/strata:0.9.0"),
    );
    check(
        "/spec/template/spec/containers/0/imagePullPolicy",
        json!("IfNotPresent"),
    );
    check("/spec/template/spec/containers/0/args/0", json!("storage"));
    check(
        "/spec/template/spec/containers/0/resources/requests/cpu",
        json!("2"),
    );
    check(
        "/spec/template/spec/containers/0/readinessProbe/httpGet/path",
        json!("/ready"),
    );
    check(
        "/spec/template/spec/containers/0/livenessProbe/httpGet/path",
        json!("/health"),
    );
    check(
        "/spec/template/spec/containers/0/volumeMounts/0/mountPath",
        json!("/data"),
    );
    check(
        "/spec/template/metadata/labels/app.kubernetes.io~1version",
        json!("0.9.0"),
    );
    check(
        "/spec/selector/matchLabels",
        json!({"app.kubernetes.io/component": "storage", "app.kubernetes.io/instance": "demo", "app.kubernetes.io/name": "strata"}),
    );
    assert!(
        v.pointer("/metadata/annotations/strata.dev~1template-hash")
            .is_some()
    );
}

#[test]
fn template_hash_follows_the_pod_template_only() {
    let hash = |spec: Value, replicas: i32| {
        let object = cluster(spec, 1);
        let sts = desired::storage_statefulset(&with(&object), replicas);
        sts.metadata.annotations.expect("annotations")["strata.dev/template-hash"].clone()
    };
    let base = hash(json!({"version": "v1", "storage": {"replicas": 3}}), 3);
    assert_eq!(
        base,
        hash(json!({"version": "v1", "storage": {"replicas": 3}}), 5),
        "replicas are not the template"
    );
    assert_ne!(
        base,
        hash(json!({"version": "v2", "storage": {"replicas": 3}}), 3),
        "the image is"
    );
    assert_ne!(
        base,
        hash(
            json!({"version": "v1", "storage": {"replicas": 3, "extraArgs": ["--x"]}}),
            3
        ),
        "args are"
    );
    assert_ne!(
        base,
        hash(
            json!({"version": "v1", "storage": {"replicas": 3, "resources": {"limits": {"memory": "1Gi"}}}}),
            3
        ),
        "resources are"
    );
}

#[test]
fn every_object_is_owned_by_the_cluster() {
    let object = cluster(spec("v1", 3), 1);
    let c = with(&object);
    let alert = object.spec.alert.as_ref().expect("alert");
    let pool = &object.spec.select.pools[0];
    let topology = strata_storage::cluster::topology::Topology::from_addrs(&["a:8400".into()])
        .expect("topology");
    let objects: Vec<(String, Option<Vec<OwnerReference>>)> = vec![
        (
            "sts".into(),
            desired::storage_statefulset(&c, 3)
                .metadata
                .owner_references,
        ),
        (
            "storage svc".into(),
            desired::storage_service(&c).metadata.owner_references,
        ),
        (
            "insert".into(),
            desired::insert_deployment(&c).metadata.owner_references,
        ),
        (
            "insert svc".into(),
            desired::insert_service(&c).metadata.owner_references,
        ),
        (
            "select".into(),
            desired::select_deployment(&c, pool)
                .metadata
                .owner_references,
        ),
        (
            "select svc".into(),
            desired::select_service(&c, pool).metadata.owner_references,
        ),
        (
            "alert".into(),
            desired::alert_deployment(&c, alert, &["demo-rules-0".into()])
                .metadata
                .owner_references,
        ),
        (
            "alert svc".into(),
            desired::alert_service(&c).metadata.owner_references,
        ),
        (
            "pdb".into(),
            desired::pdb(&c, "demo-insert".into(), "insert", None)
                .metadata
                .owner_references,
        ),
        (
            "topology".into(),
            desired::topology_config_map(&c, &topology)
                .expect("yaml")
                .metadata
                .owner_references,
        ),
        (
            "rules".into(),
            desired::rule_config_map(&c, 0, Default::default())
                .metadata
                .owner_references,
        ),
    ];
    for (what, owners) in objects {
        let owners = owners.unwrap_or_default();
        assert_eq!(owners.len(), 1, "{what}");
        assert_eq!(
            (
                owners[0].kind.as_str(),
                owners[0].name.as_str(),
                owners[0].uid.as_str(),
                owners[0].controller
            ),
            ("StrataCluster", NAME, UID, Some(true)),
            "{what}"
        );
    }
}

#[test]
fn services_and_mounts() {
    let object = cluster(spec("v1", 3), 1);
    let c = with(&object);
    let svc = serde_json::to_value(desired::storage_service(&c)).expect("json");
    assert_eq!(svc["spec"]["clusterIP"], "None");
    assert_eq!(svc["spec"]["publishNotReadyAddresses"], true);
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "http", "port": 8482, "protocol": "TCP", "targetPort": "http"}, {"name": "rpc", "port": 8400, "protocol": "TCP", "targetPort": "rpc"}])
    );
    let select = serde_json::to_value(desired::select_deployment(&c, &object.spec.select.pools[1]))
        .expect("json");
    assert_eq!(select["metadata"]["name"], "demo-select-alerting");
    assert_eq!(
        select["spec"]["selector"]["matchLabels"]["strata.dev/pool"],
        "alerting"
    );
    assert_eq!(
        select["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"],
        "demo-topology"
    );
    let alert = serde_json::to_value(desired::alert_deployment(
        &c,
        object.spec.alert.as_ref().expect("alert"),
        &["demo-rules-0".into(), "demo-rules-1".into()],
    ))
    .expect("json");
    let sources = &alert["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"];
    assert_eq!(
        sources,
        &json!([{"configMap": {"name": "demo-rules-0", "optional": true}}, {"configMap": {"name": "demo-rules-1", "optional": true}}])
    );
    assert_eq!(
        alert["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
        "/etc/strata/rules"
    );
    let pdb = serde_json::to_value(desired::pdb(&c, "demo-storage".into(), "storage", None))
        .expect("json");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
}

#[test]
fn topology_config_map_is_the_documented_format() {
    let object = cluster(spec("v1", 3), 1);
    let c = with(&object);
    let addrs: Vec<String> = (0..2).map(|i| c.storage_addr(i)).collect();
    let topology =
        strata_storage::cluster::topology::Topology::from_addrs(&addrs).expect("topology");
    let cm = desired::topology_config_map(&c, &topology).expect("yaml");
    let text = &cm.data.expect("data")["topology.yaml"];
    let parsed =
        strata_storage::cluster::topology::Topology::parse(text, std::path::Path::new("t"))
            .expect("parses");
    assert_eq!(parsed, topology);
    assert!(
        text.contains("addr: demo-storage-1.demo-storage.obs.svc:8400"),
        "{text}"
    );
    assert!(text.contains("state: active"), "{text}");
}
