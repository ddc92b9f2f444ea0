//! The whole reconcile decision ([`plan`]) step by step: creation, steady
//! state, each step of a rolling upgrade, a crashlooping pod and its
//! recovery, scale-out, refused scale-in, rules accepted and rejected,
//! removed pools, an invalid spec, a paused cluster.

mod common;

use common::*;
use strata_crds::StrataCluster;
use strata_crds::cluster::{ClusterPhase, UpgradeStep};
use strata_crds::status::{DEGRADED, PROGRESSING, READY, find};
use strata_operator::cluster::{Kind, Object, Plan, Settings, plan};
use strata_storage::cluster::topology::Topology;

fn run(world: &World, object: &StrataCluster, now: i64) -> Plan {
    plan(object, &world.observed, &Settings::default(), at(now)).expect("plan")
}

/// Plans, stores what was applied and the status into `object`.
fn step(world: &mut World, object: &mut StrataCluster, now: i64) -> Plan {
    let p = run(world, object, now);
    world.apply(&p);
    object.status = Some(p.status.clone());
    p
}

fn applied(plan: &Plan) -> Vec<(Kind, String)> {
    plan.apply
        .iter()
        .map(|o| (o.kind(), o.name().to_string()))
        .collect()
}

fn condition(plan: &Plan, type_: &str) -> (String, String, String) {
    let c = find(&plan.status.conditions, type_).unwrap_or_else(|| panic!("{type_} set"));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

fn topology(world: &World) -> Topology {
    let cm = world
        .config_map("demo-topology")
        .expect("topology ConfigMap");
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get("topology.yaml"))
        .expect("topology key");
    Topology::parse(text, std::path::Path::new("topology.yaml")).expect("topology parses")
}

/// A cluster of `storage` nodes at `version`, everything running.
fn settled(version: &str, storage: i32) -> (World, StrataCluster) {
    let mut world = World::default();
    let mut object = cluster(spec(version, storage), 1);
    step(&mut world, &mut object, 0);
    for i in 0..storage {
        world.storage_pod(i, "r1", true, 0);
    }
    world.sts_observed("r1");
    world.deployments_complete();
    let p = step(&mut world, &mut object, 10);
    assert_eq!(condition(&p, READY).0, "True", "{:?}", p.status);
    (world, object)
}

#[test]
fn creation_applies_everything_and_waits_for_pods() {
    let mut world = World::default();
    let mut object = cluster(spec("v1", 3), 1);
    let p = step(&mut world, &mut object, 0);
    let want: Vec<(Kind, String)> = [
        (Kind::ConfigMap, "demo-topology"),
        (Kind::Service, "demo-storage"),
        (Kind::StatefulSet, "demo-storage"),
        (Kind::PodDisruptionBudget, "demo-storage"),
        (Kind::Deployment, "demo-insert"),
        (Kind::Service, "demo-insert"),
        (Kind::PodDisruptionBudget, "demo-insert"),
        (Kind::Deployment, "demo-select-default"),
        (Kind::Service, "demo-select-default"),
        (Kind::PodDisruptionBudget, "demo-select-default"),
        (Kind::Deployment, "demo-select-alerting"),
        (Kind::Service, "demo-select-alerting"),
        (Kind::PodDisruptionBudget, "demo-select-alerting"),
        (Kind::ConfigMap, "demo-rules-0"),
        (Kind::Deployment, "demo-alert"),
        (Kind::Service, "demo-alert"),
        (Kind::PodDisruptionBudget, "demo-alert"),
    ]
    .into_iter()
    .map(|(k, n)| (k, n.to_string()))
    .collect();
    assert_eq!(applied(&p), want);
    assert!(p.delete.is_empty() && p.replace_pod.is_none());
    // Every initial node is in the first topology.
    let t = topology(&world);
    assert_eq!(t.version, 1);
    assert_eq!(t.nodes.len(), 3);
    assert_eq!(t.nodes[2].addr, "demo-storage-2.demo-storage.obs.svc:8400");
    assert_eq!(condition(&p, READY).0, "False");
    assert_eq!(condition(&p, PROGRESSING).0, "True");
    assert_eq!(condition(&p, DEGRADED).0, "False");
    assert_eq!(p.status.phase, Some(ClusterPhase::Pending));
    assert_eq!(p.status.observed_generation, Some(1));
    assert!(!p.settled);
    // One Created event per object.
    assert_eq!(
        p.notes.iter().filter(|n| n.reason == "Created").count(),
        want.len()
    );
}

#[test]
fn steady_state_applies_nothing_and_is_ready() {
    let (world, object) = settled("v1", 3);
    let p = run(&world, &object, 20);
    assert!(p.apply.is_empty(), "{:?}", applied(&p));
    assert!(p.delete.is_empty() && p.replace_pod.is_none() && p.notes.is_empty());
    assert_eq!(condition(&p, READY).0, "True");
    assert_eq!(condition(&p, PROGRESSING).0, "False");
    assert_eq!(p.status.phase, Some(ClusterPhase::Ready));
    assert_eq!(p.status.storage.ready_replicas, 3);
    assert_eq!(p.status.insert.desired_replicas, 2);
    assert_eq!(p.status.select.len(), 2);
    assert_eq!(p.status.upgrade, None);
    assert!(p.settled);
    // The status is unchanged, so nothing would be written.
    assert_eq!(object.status.as_ref(), Some(&p.status));
}

#[test]
fn rolling_upgrade_goes_storage_one_pod_at_a_time_then_insert_select_alert() {
    let (mut world, mut object) = settled("v1", 3);
    object.spec.version = Some("v2".into());
    object.metadata.generation = Some(2);

    // 1. Only the StatefulSet changes; insert and the rest wait for storage.
    let p = step(&mut world, &mut object, 100);
    let names = applied(&p);
    assert!(
        names.contains(&(Kind::StatefulSet, "demo-storage".into())),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|(k, _)| *k == Kind::Deployment),
        "{names:?}"
    );
    assert_eq!(
        p.replace_pod, None,
        "no pod is deleted before the StatefulSet is observed"
    );
    let upgrade = p.status.upgrade.clone().expect("upgrade in progress");
    assert_eq!(
        (upgrade.step, upgrade.target_version.as_str()),
        (UpgradeStep::Storage, "v2")
    );
    assert_eq!(p.status.version.as_deref(), Some("v2"));
    assert_eq!(condition(&p, READY).0, "False");
    assert_eq!(condition(&p, PROGRESSING).1, "Upgrading");

    // 2. The StatefulSet controller computed revision r2: the highest
    // ordinal goes first.
    world.sts_observed("r2");
    let p = step(&mut world, &mut object, 110);
    assert_eq!(
        p.replace_pod,
        Some(("demo-storage-2".into(), "uid-demo-storage-2-r1".into()))
    );
    assert!(p.notes.iter().any(|n| n.reason == "ReplacingPod"));

    // 3. Its replacement is not ready yet: wait, delete nothing.
    world.storage_pod(2, "r2", false, 115);
    world.sts_observed("r2");
    let p = step(&mut world, &mut object, 120);
    assert_eq!(p.replace_pod, None);
    let upgrade = p.status.upgrade.clone().expect("upgrade");
    assert_eq!(upgrade.pod.as_deref(), Some("demo-storage-2"));
    assert_eq!(upgrade.message, "demo-storage-2 not ready");

    // 4. Ready, but its node does not answer /ready yet: still wait.
    world.storage_pod(2, "r2", true, 115);
    world.observed.healthy.remove("demo-storage-2");
    let p = step(&mut world, &mut object, 125);
    assert_eq!(p.replace_pod, None);
    assert!(
        p.status
            .upgrade
            .expect("upgrade")
            .message
            .contains("does not answer /ready")
    );

    // 5. Healthy: next pod.
    world.observed.healthy.insert("demo-storage-2".into());
    world.sts_observed("r2");
    let p = step(&mut world, &mut object, 130);
    assert_eq!(
        p.replace_pod.clone().map(|r| r.0).as_deref(),
        Some("demo-storage-1")
    );
    world.storage_pod(1, "r2", true, 131);
    world.sts_observed("r2");
    let p = step(&mut world, &mut object, 140);
    assert_eq!(
        p.replace_pod.clone().map(|r| r.0).as_deref(),
        Some("demo-storage-0")
    );
    assert!(world.deployment("demo-insert").is_some_and(|d| {
        d.spec.template.spec.as_ref().is_some_and(|s| {
            s.containers[0].image.as_deref() == Some("ghcr.io/strata-dev/strata:v1")
        })
    }));

    // 6. Storage done: insert's new template is applied, select still waits.
    world.storage_pod(0, "r2", true, 141);
    world.sts_observed("r2");
    let p = step(&mut world, &mut object, 150);
    let names = applied(&p);
    assert!(
        names.contains(&(Kind::Deployment, "demo-insert".into())),
        "{names:?}"
    );
    assert!(
        !names.contains(&(Kind::Deployment, "demo-select-default".into())),
        "{names:?}"
    );
    assert_eq!(
        p.status.upgrade.clone().map(|u| u.step),
        Some(UpgradeStep::Insert)
    );

    // 7. Insert rolled out: the select pools follow, alert still waits.
    world.deployments_complete();
    let p = step(&mut world, &mut object, 160);
    let names = applied(&p);
    assert!(
        names.contains(&(Kind::Deployment, "demo-select-default".into())),
        "{names:?}"
    );
    assert!(
        names.contains(&(Kind::Deployment, "demo-select-alerting".into())),
        "{names:?}"
    );
    assert!(
        !names.contains(&(Kind::Deployment, "demo-alert".into())),
        "{names:?}"
    );
    assert_eq!(
        p.status.upgrade.clone().map(|u| u.step),
        Some(UpgradeStep::Select)
    );

    // 8. Then alert.
    world.deployments_complete();
    let p = step(&mut world, &mut object, 170);
    assert_eq!(
        applied(&p),
        vec![(Kind::Deployment, "demo-alert".to_string())]
    );
    assert_eq!(
        p.status.upgrade.clone().map(|u| u.step),
        Some(UpgradeStep::Alert)
    );

    // 9. Done: Ready at v2, no upgrade.
    world.deployments_complete();
    let p = step(&mut world, &mut object, 180);
    assert!(p.apply.is_empty());
    assert_eq!(p.status.upgrade, None);
    assert_eq!(
        condition(&p, READY),
        (
            "True".into(),
            "Serving".into(),
            "every component serves ghcr.io/strata-dev/strata:v2".into()
        )
    );
    for d in &world.observed.deployments {
        let image = d
            .spec
            .template
            .spec
            .as_ref()
            .and_then(|s| s.containers[0].image.clone());
        assert_eq!(
            image.as_deref(),
            Some("ghcr.io/strata-dev/strata:v2"),
            "{:?}",
            d.metadata.name
        );
    }
}

#[test]
fn crashlooping_pod_stops_the_rollout_and_a_fixed_spec_recovers_it() {
    let (mut world, mut object) = settled("v1", 3);
    object.spec.version = Some("broken".into());
    step(&mut world, &mut object, 100);
    world.sts_observed("r2");
    let p = step(&mut world, &mut object, 110);
    assert_eq!(
        p.replace_pod.clone().map(|r| r.0).as_deref(),
        Some("demo-storage-2")
    );
    world.storage_pod(2, "r2", false, 111);
    world.pod_failing(
        "demo-storage-2",
        "container storage: CrashLoopBackOff (4 restarts)",
    );
    world.sts_observed("r2");

    let p = step(&mut world, &mut object, 200);
    assert_eq!(p.replace_pod, None, "no further pod is touched");
    let (status, reason, message) = condition(&p, DEGRADED);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "StoragePodFailing")
    );
    assert!(
        message.contains("demo-storage-2") && message.contains("CrashLoopBackOff"),
        "{message}"
    );
    assert_eq!(condition(&p, PROGRESSING).1, "RolloutStopped");
    assert_eq!(p.status.phase, Some(ClusterPhase::Degraded));
    assert!(
        p.notes
            .iter()
            .any(|n| n.warning && n.reason == "StoragePodFailing")
    );
    // The warning is published once, not on every reconcile.
    let p = step(&mut world, &mut object, 210);
    assert!(!p.notes.iter().any(|n| n.warning), "{:?}", p.notes);

    // The user fixes the version: a new revision, and the crashlooping pod
    // (now at an old revision, not ready) is replaced first.
    object.spec.version = Some("v2".into());
    step(&mut world, &mut object, 300);
    world.sts_observed("r3");
    let p = step(&mut world, &mut object, 310);
    assert_eq!(
        p.replace_pod.clone().map(|r| r.0).as_deref(),
        Some("demo-storage-2")
    );
    assert_eq!(condition(&p, DEGRADED).0, "False");
    world.storage_pod(2, "r3", true, 311);
    world.sts_observed("r3");
    let p = step(&mut world, &mut object, 320);
    assert_eq!(
        p.replace_pod.clone().map(|r| r.0).as_deref(),
        Some("demo-storage-1")
    );
}

#[test]
fn pod_that_never_becomes_ready_is_stuck_after_the_timeout() {
    let (mut world, mut object) = settled("v1", 3);
    object.spec.version = Some("v2".into());
    step(&mut world, &mut object, 100);
    world.sts_observed("r2");
    step(&mut world, &mut object, 110);
    world.storage_pod(2, "r2", false, 111);
    world.sts_observed("r2");
    let p = step(&mut world, &mut object, 111 + 599);
    assert_eq!(condition(&p, DEGRADED).0, "False");
    let p = step(&mut world, &mut object, 111 + 601);
    let (status, reason, message) = condition(&p, DEGRADED);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "StoragePodNotReady")
    );
    assert!(
        message.contains("demo-storage-2 has been not ready for more than 600s"),
        "{message}"
    );
}

#[test]
fn scale_out_adds_nodes_to_the_topology_once_ready() {
    let (mut world, mut object) = settled("v1", 3);
    object.spec.storage.replicas = 5;
    let p = step(&mut world, &mut object, 100);
    let sts = world.sts();
    assert_eq!(sts.spec.replicas, Some(5));
    assert!(applied(&p).contains(&(Kind::StatefulSet, "demo-storage".into())));
    assert_eq!(
        topology(&world).nodes.len(),
        3,
        "new pods join only when ready"
    );
    assert_eq!(p.status.upgrade, None, "scaling is not an upgrade");

    world.storage_pod(3, "r1", false, 101);
    world.storage_pod(4, "r1", true, 101);
    world.sts_observed("r1");
    let p = step(&mut world, &mut object, 110);
    let t = topology(&world);
    assert_eq!((t.version, t.nodes.len()), (2, 4));
    assert_eq!(t.nodes[3].addr, "demo-storage-4.demo-storage.obs.svc:8400");
    assert!(p.notes.iter().any(|n| n.reason == "NodeJoined"));
    assert_eq!(condition(&p, READY).0, "False");

    world.storage_pod(3, "r1", true, 101);
    world.sts_observed("r1");
    step(&mut world, &mut object, 120);
    let t = topology(&world);
    assert_eq!((t.version, t.nodes.len()), (3, 5));
    let p = step(&mut world, &mut object, 130);
    assert_eq!(condition(&p, READY).0, "True", "{:?}", p.status.conditions);
}

#[test]
fn scale_in_is_refused_with_a_condition() {
    let (mut world, mut object) = settled("v1", 3);
    object.spec.storage.replicas = 2;
    let p = step(&mut world, &mut object, 100);
    assert_eq!(
        world.sts().spec.replicas,
        Some(3),
        "the StatefulSet keeps its 3 pods"
    );
    let (status, reason, message) = condition(&p, DEGRADED);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "ScaleInRefused")
    );
    assert!(
        message.contains("set spec.storage.replicas back to 3"),
        "{message}"
    );
    assert_eq!(topology(&world).nodes.len(), 3);
    assert_eq!(p.status.storage.desired_replicas, 2);
    assert!(
        p.notes
            .iter()
            .any(|n| n.warning && n.reason == "ScaleInRefused")
    );
    // Back to 3: the condition clears.
    object.spec.storage.replicas = 3;
    let p = step(&mut world, &mut object, 110);
    assert_eq!(condition(&p, DEGRADED).0, "False");
}

#[test]
fn scale_back_of_nodes_that_never_joined_is_allowed() {
    let (mut world, mut object) = settled("v1", 3);
    object.spec.storage.replicas = 5;
    step(&mut world, &mut object, 100);
    object.spec.storage.replicas = 3;
    let p = step(&mut world, &mut object, 110);
    assert_eq!(world.sts().spec.replicas, Some(3));
    assert_eq!(condition(&p, DEGRADED).0, "False");
}

#[test]
fn invalid_rule_keeps_its_last_good_files_and_never_reaches_the_evaluator() {
    let (mut world, mut object) = settled("v1", 3);
    world.observed.rules = vec![
        rule(NS, "api", good_groups(), 1),
        rule(NS, "db", good_groups(), 1),
    ];
    step(&mut world, &mut object, 100);
    let files = world.rule_files();
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["obs_api.yaml", "obs_db.yaml"]
    );
    let good = files["obs_db.yaml"].clone();
    assert!(good.contains("HighLatency"), "{good}");

    // db becomes invalid; a new invalid rule appears; api changes validly.
    let mut api_groups = good_groups();
    api_groups[0]["name"] = "renamed".into();
    world.observed.rules = vec![
        rule(NS, "api", api_groups, 2),
        rule(NS, "db", bad_groups(), 2),
        rule(NS, "new", bad_groups(), 1),
    ];
    step(&mut world, &mut object, 110);
    let files = world.rule_files();
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["obs_api.yaml", "obs_db.yaml"]
    );
    assert_eq!(
        files["obs_db.yaml"], good,
        "the last good version keeps running"
    );
    assert!(files["obs_api.yaml"].contains("renamed"));
    assert!(!files.values().any(|t| t.contains("Oops")));

    // A rule in another namespace is not selected without a namespace selector.
    world
        .observed
        .rules
        .push(rule("other", "x", good_groups(), 1));
    step(&mut world, &mut object, 120);
    assert!(!world.rule_files().contains_key("other_x.yaml"));

    // Deleted: its files go.
    world
        .observed
        .rules
        .retain(|r| r.metadata.name.as_deref() != Some("db"));
    step(&mut world, &mut object, 130);
    assert_eq!(
        world.rule_files().keys().collect::<Vec<_>>(),
        ["obs_api.yaml"]
    );
}

#[test]
fn rule_selector_and_namespace_selector() {
    let (mut world, mut object) = settled("v1", 3);
    let alert = object.spec.alert.as_mut().expect("alert");
    alert.rule_selector = Some(
        serde_json::from_value(serde_json::json!({"matchLabels": {"team": "db"}}))
            .expect("selector"),
    );
    alert.rule_namespace_selector = Some(
        serde_json::from_value(serde_json::json!({"matchLabels": {"rules": "on"}}))
            .expect("selector"),
    );
    let mut labelled = rule("other", "a", good_groups(), 1);
    labelled.metadata.labels = Some([("team".to_string(), "db".to_string())].into());
    let mut wrong_ns = rule("off", "b", good_groups(), 1);
    wrong_ns.metadata.labels = labelled.metadata.labels.clone();
    world.observed.rules = vec![labelled, wrong_ns, rule("other", "c", good_groups(), 1)];
    world.observed.namespaces = [
        (
            "other".to_string(),
            [("rules".to_string(), "on".to_string())].into(),
        ),
        ("off".to_string(), Default::default()),
    ]
    .into();
    step(&mut world, &mut object, 100);
    assert_eq!(
        world.rule_files().keys().collect::<Vec<_>>(),
        ["other_a.yaml"]
    );
}

#[test]
fn many_rules_split_over_config_maps_all_mounted_by_alert() {
    let (mut world, mut object) = settled("v1", 3);
    world.observed.rules = (0..5)
        .map(|i| rule(NS, &format!("r{i}"), good_groups(), 1))
        .collect();
    // Room for one file per ConfigMap, not two.
    let one = strata_operator::rule::compile(&world.observed.rules[0], 1 << 20)
        .expect("valid")
        .files;
    let max = one[0].0.len() + one[0].1.len() + 20;
    let settings = Settings {
        rule_config_map_max_bytes: max,
        ..Settings::default()
    };
    let p = plan(&object, &world.observed, &settings, at(100)).expect("plan");
    world.apply(&p);
    object.status = Some(p.status.clone());
    let maps: Vec<&str> = p
        .apply
        .iter()
        .filter(|o| o.kind() == Kind::ConfigMap && o.name().starts_with("demo-rules-"))
        .map(|o| o.name())
        .collect();
    assert_eq!(maps.len(), 5, "{maps:?}");
    assert_eq!(world.rule_files().len(), 5);
    for o in &p.apply {
        if let Object::ConfigMap(cm) = o {
            let size: usize = cm
                .data
                .iter()
                .flatten()
                .map(|(k, v)| k.len() + v.len())
                .sum();
            assert!(size <= max, "{} has {size} bytes", o.name());
        }
    }
    // The alert Deployment's template changes (it mounts the new maps);
    // a template change waits behind nothing here, as storage is settled.
    let alert = world.deployment("demo-alert").expect("alert");
    let sources = alert
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .and_then(|v| v[0].projected.as_ref())
        .and_then(|p| p.sources.as_ref())
        .map(Vec::len);
    assert_eq!(sources, Some(maps.len()));
    // Back to few rules: the extra maps are deleted.
    world.observed.rules.truncate(1);
    let p = plan(&object, &world.observed, &settings, at(110)).expect("plan");
    let deleted: Vec<&str> = p.delete.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(deleted.len(), maps.len() - 1, "{deleted:?}");
}

#[test]
fn removed_pool_and_alert_are_deleted() {
    let (mut world, mut object) = settled("v1", 3);
    object.spec.select.pools.retain(|p| p.name == "default");
    object.spec.alert = None;
    let p = step(&mut world, &mut object, 100);
    let mut deleted: Vec<(Kind, String)> = p.delete.clone();
    deleted.sort();
    let want: Vec<(Kind, String)> = [
        (Kind::Deployment, "demo-alert"),
        (Kind::Deployment, "demo-select-alerting"),
        (Kind::Service, "demo-alert"),
        (Kind::Service, "demo-select-alerting"),
        (Kind::ConfigMap, "demo-rules-0"),
        (Kind::PodDisruptionBudget, "demo-alert"),
        (Kind::PodDisruptionBudget, "demo-select-alerting"),
    ]
    .into_iter()
    .map(|(k, n)| (k, n.to_string()))
    .collect::<std::collections::BTreeSet<_>>()
    .into_iter()
    .collect();
    assert_eq!(deleted, want);
    assert!(p.notes.iter().filter(|n| n.reason == "Deleted").count() == 7);
    assert_eq!(p.status.alert, None);
}

#[test]
fn objects_of_others_are_never_deleted() {
    let (mut world, object) = settled("v1", 3);
    let mut foreign = world.observed.services[0].clone();
    foreign.metadata.name = Some("someone-elses".into());
    foreign.metadata.owner_references = None;
    world.observed.services.push(foreign);
    let p = run(&world, &object, 100);
    assert!(p.delete.is_empty(), "{:?}", p.delete);
}

#[test]
fn invalid_spec_changes_nothing() {
    let (world, mut object) = settled("v1", 3);
    object.spec.storage.replication_factor = 5;
    let p = run(&world, &object, 100);
    assert!(p.apply.is_empty() && p.delete.is_empty());
    let (status, reason, message) = condition(&p, DEGRADED);
    assert_eq!((status.as_str(), reason.as_str()), ("True", "InvalidSpec"));
    assert!(message.contains("replicationFactor 5"), "{message}");
}

#[test]
fn paused_cluster_changes_nothing() {
    let (world, mut object) = settled("v1", 3);
    object.spec.paused = true;
    object.spec.version = Some("v2".into());
    let p = run(&world, &object, 100);
    assert!(p.apply.is_empty() && p.delete.is_empty() && p.replace_pod.is_none());
    assert_eq!(p.status.phase, Some(ClusterPhase::Paused));
    assert_eq!(condition(&p, PROGRESSING).1, "Paused");
}

#[test]
fn failing_insert_pod_is_degraded() {
    let (mut world, object) = settled("v1", 3);
    let pod = pod_object(
        "demo-insert-abc",
        "insert",
        None,
        false,
        Some("ImagePullBackOff"),
    );
    world
        .observed
        .pods
        .push(strata_operator::cluster::rollout::PodView::from_pod(&pod));
    let p = run(&world, &object, 100);
    let (status, reason, message) = condition(&p, DEGRADED);
    assert_eq!((status.as_str(), reason.as_str()), ("True", "PodFailing"));
    assert!(
        message.contains("demo-insert-abc") && message.contains("ImagePullBackOff"),
        "{message}"
    );
}

#[test]
fn pod_failure_text_is_stable_and_names_the_container() {
    use strata_operator::cluster::rollout::PodView;
    let check = |waiting: Option<&str>, want: Option<&str>| {
        let pod = pod_object("demo-storage-0", "storage", Some("r1"), false, waiting);
        assert_eq!(
            PodView::from_pod(&pod).failure.as_deref(),
            want,
            "{waiting:?}"
        );
    };
    check(None, None);
    check(Some("ContainerCreating"), None);
    check(
        Some("CrashLoopBackOff"),
        Some("container storage: CrashLoopBackOff"),
    );
    check(
        Some("ImagePullBackOff"),
        Some("container storage: ImagePullBackOff: back-off 1m20s restarting failed container"),
    );
    let mut pod = pod_object(
        "demo-storage-0",
        "storage",
        Some("r1"),
        false,
        Some("CrashLoopBackOff"),
    );
    let status = pod
        .status
        .as_mut()
        .and_then(|s| s.container_statuses.as_mut())
        .expect("statuses");
    status[0].last_state = Some(k8s_openapi::api::core::v1::ContainerState {
        terminated: Some(k8s_openapi::api::core::v1::ContainerStateTerminated {
            exit_code: 2,
            reason: Some("Error".into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    let view = PodView::from_pod(&pod);
    assert_eq!(
        view.failure.as_deref(),
        Some("container storage: CrashLoopBackOff, last exit code 2 (Error)")
    );
    assert_eq!(
        (view.ordinal, view.revision.as_deref(), view.ready),
        (Some(0), Some("r1"), false)
    );
}

#[test]
fn cluster_being_deleted_is_left_to_the_garbage_collector() {
    let (mut world, mut object) = settled("v1", 3);
    // Foreground deletion: children go first, the cluster waits.
    world.observed.deployments.clear();
    world.observed.services.clear();
    object.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(100)),
    );
    object.spec.version = Some("v2".into());
    let p = run(&world, &object, 100);
    assert!(
        p.apply.is_empty() && p.delete.is_empty() && p.replace_pod.is_none() && p.notes.is_empty()
    );
    assert_eq!(object.status.as_ref(), Some(&p.status), "no status write");
}

#[test]
fn long_running_pod_turning_unready_gets_the_full_timeout() {
    let (mut world, object) = settled("v1", 3);
    world.storage_pod(1, "r1", false, 0);
    world.observed.pods.iter_mut().for_each(|p| {
        if p.name == "demo-storage-1" {
            p.ready_changed = Some(at(5000));
        }
    });
    world.sts_observed("r1");
    let p = run(&world, &object, 5300);
    assert_eq!(condition(&p, DEGRADED).0, "False");
    assert_eq!(condition(&p, READY).1, "StorageNotReady");
    let p = run(&world, &object, 5601);
    assert_eq!(condition(&p, DEGRADED).1, "StoragePodNotReady");
}

#[test]
fn unparsable_topology_is_rewritten_above_its_version() {
    let (mut world, mut object) = settled("v1", 3);
    let cm = world
        .observed
        .config_maps
        .iter_mut()
        .find(|c| c.metadata.name.as_deref() == Some("demo-topology"))
        .expect("topology");
    cm.data = Some(
        [(
            "topology.yaml".to_string(),
            "version: 9\nnodes: [broken".to_string(),
        )]
        .into(),
    );
    cm.metadata.annotations = None;
    let p = step(&mut world, &mut object, 100);
    assert!(applied(&p).contains(&(Kind::ConfigMap, "demo-topology".into())));
    let t = topology(&world);
    assert_eq!((t.version, t.nodes.len()), (10, 3));
}
