//! Reconcile flows against a scripted API server (tower-test): every
//! request the reconcile makes must be the next one in the script, and must
//! be a permission in `client::ACCESS`. The script's list answers come from
//! a [`World`]; the writes expected are those of the [`plan`] of the same
//! world, and their bodies are compared with it. Covered: creation, an
//! update, each step of a rolling upgrade, crashloop recovery, scale-out,
//! refused scale-in, rule rejection (cluster and rule controller), deletion
//! of a removed pool and of a rule, an API error.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use strata_crds::status::{ACCEPTED, DEGRADED, READY};
use strata_crds::{StrataCluster, StrataRule};
use strata_operator::client::{Kube, allowed};
use strata_operator::cluster::reconcile::{Context, Probe, error_policy, reconcile};
use strata_operator::cluster::rollout::PodView;
use strata_operator::cluster::{Kind, Object, Plan, Settings, plan};
use strata_operator::metrics::{ErrorLabels, Metrics};
use strata_operator::rule::reconcile as rule_reconcile;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// One expected request and its answer.
struct Expect {
    method: &'static str,
    /// The path, without the query.
    path: String,
    reply: Reply,
}

enum Reply {
    Json(Value),
    /// The request body back (what an apply returns, near enough).
    Echo,
    Error(u16),
}

/// What the scripted server saw: every write with its body, and events.
#[derive(Default, Debug)]
struct Seen {
    writes: Vec<(String, String, Value)>,
    events: Vec<Value>,
    queries: Vec<String>,
}

/// (group, resource, verb) of a request, as RBAC sees it.
fn access_of(method: &str, path: &str, query: &str) -> (String, String, &'static str) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts[0] {
        "api" => (String::new(), &parts[2..]),
        _ => (parts[1].to_string(), &parts[3..]),
    };
    let rest: &[&str] = if rest.first() == Some(&"namespaces") && rest.len() > 2 {
        &rest[2..]
    } else {
        rest
    };
    let resource = match rest {
        [plural] => plural.to_string(),
        [plural, _name] => plural.to_string(),
        [plural, _name, sub] => format!("{plural}/{sub}"),
        _ => panic!("unexpected path {path}"),
    };
    let verb = match (method, rest.len()) {
        ("GET", 1) if query.contains("watch=true") => "watch",
        ("GET", 1) => "list",
        ("GET", _) => "get",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", _) => "delete",
        _ => panic!("unexpected method {method}"),
    };
    (group, resource, verb)
}

async fn serve(mut handle: Handle, script: Vec<Expect>, seen: Arc<Mutex<Seen>>) {
    let mut script = script.into_iter();
    while let Some((request, send)) = handle.next_request().await {
        let method = request.method().to_string();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        let bytes = request
            .into_body()
            .collect_bytes()
            .await
            .expect("request body");
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON request body")
        };
        let (group, resource, verb) = access_of(&method, &path, &query);
        assert!(
            allowed(&group, &resource, verb),
            "{verb} {group}/{resource} is not in client::ACCESS"
        );
        if path.starts_with("/apis/events.k8s.io/") {
            seen.lock().expect("lock").events.push(body.clone());
            send.send_response(
                Response::builder()
                    .status(201)
                    .body(Body::from(bytes.to_vec()))
                    .expect("response"),
            );
            continue;
        }
        let expect = script
            .next()
            .unwrap_or_else(|| panic!("unexpected request {method} {path}?{query}"));
        assert_eq!(
            (method.as_str(), path.as_str()),
            (expect.method, expect.path.as_str()),
            "request out of script"
        );
        {
            let mut seen = seen.lock().expect("lock");
            seen.queries.push(query);
            if method != "GET" {
                seen.writes
                    .push((method.clone(), path.clone(), body.clone()));
            }
        }
        let response = match expect.reply {
            Reply::Json(v) => Response::builder()
                .status(200)
                .body(Body::from(serde_json::to_vec(&v).expect("json"))),
            Reply::Echo => Response::builder()
                .status(200)
                .body(Body::from(bytes.to_vec())),
            Reply::Error(code) => {
                let reason = match code {
                    404 => "NotFound",
                    409 => "Conflict",
                    _ => "InternalError",
                };
                Response::builder().status(code).body(Body::from(
                    serde_json::to_vec(&json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "scripted failure", "reason": reason, "code": code}))
                        .expect("json"),
                ))
            }
        };
        send.send_response(response.expect("response"));
    }
    let left: Vec<String> = script.map(|e| format!("{} {}", e.method, e.path)).collect();
    assert!(left.is_empty(), "requests never made: {left:?}");
}

fn list(kind: &str, api_version: &str, items: Vec<Value>) -> Reply {
    Reply::Json(
        json!({"apiVersion": api_version, "kind": format!("{kind}List"), "metadata": {"resourceVersion": "1"}, "items": items}),
    )
}

fn values<T: serde::Serialize>(items: &[T], api_version: &str, kind: &str) -> Vec<Value> {
    items
        .iter()
        .map(|i| {
            let mut v = serde_json::to_value(i).expect("json");
            v["apiVersion"] = api_version.into();
            v["kind"] = kind.into();
            v
        })
        .collect()
}

fn get(path: String, reply: Reply) -> Expect {
    Expect {
        method: "GET",
        path,
        reply,
    }
}

/// The reads of one cluster reconcile, answered from `world`.
fn reads(
    world: &World,
    object: &StrataCluster,
    pods: &[k8s_openapi::api::core::v1::Pod],
) -> Vec<Expect> {
    let o = &world.observed;
    let mut script = vec![
        get(
            format!("/apis/apps/v1/namespaces/{NS}/statefulsets"),
            list(
                "StatefulSet",
                "apps/v1",
                values(&o.stateful_sets, "apps/v1", "StatefulSet"),
            ),
        ),
        get(
            format!("/apis/apps/v1/namespaces/{NS}/deployments"),
            list(
                "Deployment",
                "apps/v1",
                values(&o.deployments, "apps/v1", "Deployment"),
            ),
        ),
        get(
            format!("/api/v1/namespaces/{NS}/services"),
            list("Service", "v1", values(&o.services, "v1", "Service")),
        ),
        get(
            format!("/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets"),
            list(
                "PodDisruptionBudget",
                "policy/v1",
                values(&o.pdbs, "policy/v1", "PodDisruptionBudget"),
            ),
        ),
        get(
            format!("/api/v1/namespaces/{NS}/configmaps"),
            list("ConfigMap", "v1", values(&o.config_maps, "v1", "ConfigMap")),
        ),
        get(
            format!("/api/v1/namespaces/{NS}/pods"),
            list("Pod", "v1", values(pods, "v1", "Pod")),
        ),
    ];
    if object.spec.alert.is_some() {
        script.push(get(
            format!("/apis/strata.dev/v1alpha1/namespaces/{NS}/stratarules"),
            list(
                "StrataRule",
                "strata.dev/v1alpha1",
                values(&o.rules, "strata.dev/v1alpha1", "StrataRule"),
            ),
        ));
    }
    script
}

fn path_of(kind: Kind, name: &str) -> String {
    match kind {
        Kind::StatefulSet => format!("/apis/apps/v1/namespaces/{NS}/statefulsets/{name}"),
        Kind::Deployment => format!("/apis/apps/v1/namespaces/{NS}/deployments/{name}"),
        Kind::Service => format!("/api/v1/namespaces/{NS}/services/{name}"),
        Kind::ConfigMap => format!("/api/v1/namespaces/{NS}/configmaps/{name}"),
        Kind::PodDisruptionBudget => {
            format!("/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/{name}")
        }
    }
}

/// The writes `plan` implies, in the order the reconcile makes them.
fn writes(plan: &Plan, object: &StrataCluster, status_changes: bool) -> Vec<Expect> {
    let mut script: Vec<Expect> = plan
        .apply
        .iter()
        .map(|o| Expect {
            method: "PATCH",
            path: path_of(o.kind(), o.name()),
            reply: Reply::Echo,
        })
        .collect();
    for (kind, name) in &plan.delete {
        script.push(Expect {
            method: "DELETE",
            path: path_of(*kind, name),
            reply: Reply::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})),
        });
    }
    if let Some((pod, _)) = &plan.replace_pod {
        script.push(Expect {
            method: "DELETE",
            path: format!("/api/v1/namespaces/{NS}/pods/{pod}"),
            reply: Reply::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})),
        });
    }
    if status_changes {
        // The API answers a status patch with the whole object.
        let mut whole = serde_json::to_value(object).expect("json");
        whole["status"] = serde_json::to_value(&plan.status).expect("json");
        script.push(Expect {
            method: "PATCH",
            path: format!("/apis/strata.dev/v1alpha1/namespaces/{NS}/strataclusters/{NAME}/status"),
            reply: Reply::Json(whole),
        });
    }
    script
}

fn context(client: kube::Client, metrics: Metrics) -> Arc<Context> {
    Arc::new(Context {
        kube: Kube::new(client, Some("test".into())),
        settings: Settings::default(),
        probe: Probe::new(Duration::from_millis(200), false),
        metrics,
        requeue_progressing: Duration::from_secs(5),
        requeue_settled: Duration::from_secs(300),
        rule_namespaces: Vec::new(),
    })
}

/// `world` as the API would show it: pods through their objects, and (the
/// probe being off) every ready storage pod healthy.
fn normalized(world: &World) -> (World, Vec<k8s_openapi::api::core::v1::Pod>) {
    let pods: Vec<_> = world.observed.pods.iter().map(pod_from_view).collect();
    let mut w = world.clone();
    w.observed.pods = pods.iter().map(PodView::from_pod).collect();
    w.observed.healthy = w
        .observed
        .pods
        .iter()
        .filter(|p| p.component == "storage" && p.ready)
        .map(|p| p.name.clone())
        .collect();
    (w, pods)
}

fn strip_times(mut v: Value) -> Value {
    if let Some(conditions) = v
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    {
        for c in conditions {
            c.as_object_mut()
                .expect("condition")
                .remove("lastTransitionTime");
        }
    }
    v
}

/// Runs one cluster reconcile against the script the plan of `world`
/// implies; checks every write body; advances `world` and `object`.
async fn reconcile_step(world: &mut World, object: &mut StrataCluster) -> (Plan, Seen) {
    let (w, pods) = normalized(world);
    *world = w;
    let expected = plan(
        object,
        &world.observed,
        &Settings::default(),
        k8s_openapi::jiff::Timestamp::now(),
    )
    .expect("plan");
    let status_changes = object.status.as_ref() != Some(&expected.status);
    let mut script = reads(world, object, &pods);
    script.extend(writes(&expected, object, status_changes));
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let server = tokio::spawn(serve(handle, script, seen.clone()));
    let ctx = context(kube::Client::new(service, NS), Metrics::default());
    let action = reconcile(Arc::new(object.clone()), ctx.clone())
        .await
        .expect("reconcile");
    let want_requeue = if expected.settled {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(5)
    };
    assert_eq!(
        format!("{action:?}"),
        format!(
            "{:?}",
            kube::runtime::controller::Action::requeue(want_requeue)
        )
    );
    drop(ctx);
    server.await.expect("scripted server");
    let seen = Arc::into_inner(seen)
        .expect("one owner")
        .into_inner()
        .expect("lock");

    // The applied bodies are the planned objects, field for field.
    let patches: Vec<&Value> = seen
        .writes
        .iter()
        .filter(|(m, p, _)| m == "PATCH" && !p.ends_with("/status"))
        .map(|(_, _, b)| b)
        .collect();
    assert_eq!(patches.len(), expected.apply.len());
    for (body, object) in patches.iter().zip(&expected.apply) {
        let want = match object {
            Object::StatefulSet(o) => serde_json::to_value(o),
            Object::Deployment(o) => serde_json::to_value(o),
            Object::Service(o) => serde_json::to_value(o),
            Object::ConfigMap(o) => serde_json::to_value(o),
            Object::PodDisruptionBudget(o) => serde_json::to_value(o),
        }
        .expect("json");
        for (key, value) in want.as_object().expect("object") {
            assert_eq!(body.get(key), Some(value), "{key} of {}", object.name());
        }
        assert!(body["apiVersion"].is_string() && body["kind"].is_string());
    }
    if status_changes {
        let (_, _, body) = seen
            .writes
            .iter()
            .find(|(_, p, _)| p.ends_with("/status"))
            .expect("status write");
        let want = json!({"apiVersion": "strata.dev/v1alpha1", "kind": "StrataCluster", "status": expected.status});
        assert_eq!(strip_times(body.clone()), strip_times(want));
    }
    // One event per note.
    let reasons: Vec<&str> = seen
        .events
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or_default())
        .collect();
    let want_reasons: Vec<&str> = expected.notes.iter().map(|n| n.reason.as_str()).collect();
    assert_eq!(reasons, want_reasons);
    world.apply(&expected);
    object.status = Some(expected.status.clone());
    (expected, seen)
}

fn assert_apply_params(seen: &Seen) {
    let applies: Vec<&String> = seen
        .queries
        .iter()
        .filter(|q| q.contains("fieldManager"))
        .collect();
    assert!(!applies.is_empty());
    for q in applies {
        assert!(
            q.contains("fieldManager=strata-operator") && q.contains("force=true"),
            "{q}"
        );
    }
}

fn condition(plan: &Plan, type_: &str) -> (String, String) {
    let c = strata_crds::status::find(&plan.status.conditions, type_).expect("condition");
    (c.status.clone(), c.reason.clone())
}

async fn settled(version: &str, storage: i32) -> (World, StrataCluster) {
    let mut world = World::default();
    let mut object = cluster(spec(version, storage), 1);
    reconcile_step(&mut world, &mut object).await;
    for i in 0..storage {
        world.storage_pod(i, "r1", true, 0);
    }
    world.sts_observed("r1");
    world.deployments_complete();
    let (p, _) = reconcile_step(&mut world, &mut object).await;
    assert_eq!(condition(&p, READY).0, "True");
    (world, object)
}

#[tokio::test]
async fn create_applies_every_object_with_one_field_manager() {
    let mut world = World::default();
    let mut object = cluster(spec("v1", 3), 1);
    let (p, seen) = reconcile_step(&mut world, &mut object).await;
    assert_eq!(p.apply.len(), 17);
    assert_apply_params(&seen);
    // Owner references on everything.
    for (_, path, body) in &seen.writes {
        if path.ends_with("/status") {
            continue;
        }
        let owner = &body["metadata"]["ownerReferences"][0];
        assert_eq!(
            (
                owner["kind"].as_str(),
                owner["uid"].as_str(),
                owner["controller"].as_bool()
            ),
            (Some("StrataCluster"), Some(UID), Some(true)),
            "{path}"
        );
    }
    // The spec is never written: only /status of the cluster.
    assert!(
        !seen
            .writes
            .iter()
            .any(|(_, p, _)| p.ends_with(&format!("strataclusters/{NAME}")))
    );
    assert_eq!(seen.events.len(), 17);
}

#[tokio::test]
async fn steady_state_makes_no_write() {
    let (mut world, mut object) = settled("v1", 3).await;
    let (p, seen) = reconcile_step(&mut world, &mut object).await;
    assert!(p.apply.is_empty());
    assert!(seen.writes.is_empty(), "{:?}", seen.writes);
    assert!(seen.events.is_empty());
}

#[tokio::test]
async fn update_of_insert_args_applies_insert_only() {
    let (mut world, mut object) = settled("v1", 3).await;
    object.spec.insert.extra_args = vec!["--insert.max-labels-per-series=60".into()];
    object.metadata.generation = Some(2);
    let (p, seen) = reconcile_step(&mut world, &mut object).await;
    let paths: Vec<&str> = seen.writes.iter().map(|(_, p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            format!("/apis/apps/v1/namespaces/{NS}/deployments/demo-insert").as_str(),
            &format!("/apis/strata.dev/v1alpha1/namespaces/{NS}/strataclusters/{NAME}/status")
        ]
    );
    let args = &seen.writes[0].2["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(
        args.as_array()
            .expect("args")
            .iter()
            .any(|a| a == "--insert.max-labels-per-series=60"),
        "{args}"
    );
    assert_eq!(p.status.observed_generation, Some(2));
}

#[tokio::test]
async fn rolling_upgrade_replaces_one_storage_pod_per_step() {
    let (mut world, mut object) = settled("v1", 3).await;
    object.spec.version = Some("v2".into());
    object.metadata.generation = Some(2);
    let (p, _) = reconcile_step(&mut world, &mut object).await;
    assert!(p.replace_pod.is_none());
    world.sts_observed("r2");
    let mut replaced = Vec::new();
    for ordinal in [2, 1, 0] {
        // The next old pod is deleted, with its uid as a precondition.
        let (p, seen) = reconcile_step(&mut world, &mut object).await;
        let (method, path, body) = seen
            .writes
            .iter()
            .find(|(m, _, _)| m == "DELETE")
            .expect("pod deleted");
        assert_eq!(
            (method.as_str(), path.as_str()),
            (
                "DELETE",
                format!("/api/v1/namespaces/{NS}/pods/demo-storage-{ordinal}").as_str()
            )
        );
        assert_eq!(
            body["preconditions"]["uid"],
            format!("uid-demo-storage-{ordinal}-r1")
        );
        replaced.push(p.replace_pod.expect("replace").0);
        // While the new pod starts, nothing else is deleted.
        world.storage_pod(ordinal, "r2", false, 0);
        world.observed.pods.last_mut().expect("pod").created =
            Some(k8s_openapi::jiff::Timestamp::now());
        world.sts_observed("r2");
        let (p, seen) = reconcile_step(&mut world, &mut object).await;
        assert!(p.replace_pod.is_none() && !seen.writes.iter().any(|(m, _, _)| m == "DELETE"));
        assert_eq!(
            p.status.upgrade.as_ref().and_then(|u| u.pod.clone()),
            Some(format!("demo-storage-{ordinal}"))
        );
        world.storage_pod(ordinal, "r2", true, 0);
        world.sts_observed("r2");
    }
    assert_eq!(
        replaced,
        ["demo-storage-2", "demo-storage-1", "demo-storage-0"]
    );
    // Then insert, select, alert, each after the one before is rolled out.
    for want in [
        vec!["demo-insert"],
        vec!["demo-select-default", "demo-select-alerting"],
        vec!["demo-alert"],
    ] {
        let (p, _) = reconcile_step(&mut world, &mut object).await;
        let deployments: Vec<&str> = p
            .apply
            .iter()
            .filter(|o| o.kind() == Kind::Deployment)
            .map(|o| o.name())
            .collect();
        assert_eq!(deployments, want);
        world.deployments_complete();
    }
    let (p, _) = reconcile_step(&mut world, &mut object).await;
    assert_eq!(condition(&p, READY).0, "True");
    assert_eq!(p.status.upgrade, None);
}

#[tokio::test]
async fn crashlooping_pod_is_degraded_and_recovers_when_the_spec_is_fixed() {
    let (mut world, mut object) = settled("v1", 3).await;
    object.spec.version = Some("bad".into());
    reconcile_step(&mut world, &mut object).await;
    world.sts_observed("r2");
    reconcile_step(&mut world, &mut object).await;
    world.storage_pod(2, "r2", false, 0);
    world.pod_failing("demo-storage-2", "CrashLoopBackOff");
    world.sts_observed("r2");
    let (p, seen) = reconcile_step(&mut world, &mut object).await;
    assert_eq!(
        condition(&p, DEGRADED),
        ("True".into(), "StoragePodFailing".into())
    );
    assert!(!seen.writes.iter().any(|(m, _, _)| m == "DELETE"));
    assert!(
        seen.events
            .iter()
            .any(|e| e["type"] == "Warning" && e["reason"] == "StoragePodFailing")
    );

    object.spec.version = Some("v2".into());
    reconcile_step(&mut world, &mut object).await;
    world.sts_observed("r3");
    let (p, seen) = reconcile_step(&mut world, &mut object).await;
    assert_eq!(
        p.replace_pod.clone().map(|r| r.0).as_deref(),
        Some("demo-storage-2")
    );
    assert!(
        seen.writes
            .iter()
            .any(|(m, path, _)| m == "DELETE" && path.ends_with("/pods/demo-storage-2"))
    );
    assert_eq!(condition(&p, DEGRADED).0, "False");
}

#[tokio::test]
async fn scale_out_writes_the_topology_when_nodes_are_ready() {
    let (mut world, mut object) = settled("v1", 3).await;
    object.spec.storage.replicas = 4;
    let (_, seen) = reconcile_step(&mut world, &mut object).await;
    let sts = seen
        .writes
        .iter()
        .find(|(_, p, _)| p.ends_with("/statefulsets/demo-storage"))
        .expect("sts applied");
    assert_eq!(sts.2["spec"]["replicas"], 4);
    assert!(
        !seen
            .writes
            .iter()
            .any(|(_, p, _)| p.ends_with("/configmaps/demo-topology"))
    );
    world.storage_pod(3, "r1", true, 0);
    world.sts_observed("r1");
    let (_, seen) = reconcile_step(&mut world, &mut object).await;
    let (_, _, body) = seen
        .writes
        .iter()
        .find(|(_, p, _)| p.ends_with("/configmaps/demo-topology"))
        .expect("topology written");
    let text = body["data"]["topology.yaml"].as_str().expect("topology");
    assert!(
        text.contains("version: 2") && text.contains("demo-storage-3.demo-storage.obs.svc:8400"),
        "{text}"
    );
}

#[tokio::test]
async fn scale_in_is_refused_in_status() {
    let (mut world, mut object) = settled("v1", 3).await;
    object.spec.storage.replicas = 2;
    let (p, seen) = reconcile_step(&mut world, &mut object).await;
    assert!(
        !seen
            .writes
            .iter()
            .any(|(_, p, _)| p.contains("/statefulsets/"))
    );
    assert_eq!(
        condition(&p, DEGRADED),
        ("True".into(), "ScaleInRefused".into())
    );
}

#[tokio::test]
async fn rejected_rule_keeps_the_last_good_files_and_removed_things_are_deleted() {
    let (mut world, mut object) = settled("v1", 3).await;
    world.observed.rules = vec![rule(NS, "api", good_groups(), 1)];
    let (_, seen) = reconcile_step(&mut world, &mut object).await;
    let rules = seen
        .writes
        .iter()
        .find(|(_, p, _)| p.ends_with("/configmaps/demo-rules-0"))
        .expect("rules written");
    let good = rules.2["data"]["obs_api.yaml"]
        .as_str()
        .expect("file")
        .to_string();

    world.observed.rules = vec![rule(NS, "api", bad_groups(), 2)];
    let (p, seen) = reconcile_step(&mut world, &mut object).await;
    assert!(
        p.apply.is_empty() && seen.writes.is_empty(),
        "nothing changes: {:?}",
        seen.writes
    );
    assert_eq!(world.rule_files()["obs_api.yaml"], good);

    // The rule is deleted and a pool removed.
    world.observed.rules.clear();
    object.spec.select.pools.retain(|p| p.name != "default");
    let (_, seen) = reconcile_step(&mut world, &mut object).await;
    let deleted: Vec<&str> = seen
        .writes
        .iter()
        .filter(|(m, _, _)| m == "DELETE")
        .map(|(_, p, _)| p.as_str())
        .collect();
    assert_eq!(deleted.len(), 3, "{deleted:?}");
    assert!(deleted.iter().all(|p| p.ends_with("/demo-select-default")));
    let rules = seen
        .writes
        .iter()
        .find(|(_, p, _)| p.ends_with("/configmaps/demo-rules-0"))
        .expect("rules rewritten");
    assert!(
        rules.2["data"].as_object().is_none_or(|d| d.is_empty()),
        "{}",
        rules.2
    );
}

#[tokio::test]
async fn api_error_fails_the_reconcile_and_is_counted_by_reason() {
    let world = World::default();
    let object = cluster(spec("v1", 3), 1);
    let (_, pods) = normalized(&world);
    let mut script = reads(&world, &object, &pods);
    script.push(Expect {
        method: "PATCH",
        path: path_of(Kind::ConfigMap, "demo-topology"),
        reply: Reply::Error(500),
    });
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(serve(handle, script, Arc::default()));
    let metrics = Metrics::default();
    let ctx = context(kube::Client::new(service, NS), metrics.clone());
    let object = Arc::new(object);
    let error = reconcile(object.clone(), ctx.clone())
        .await
        .expect_err("apply fails");
    assert_eq!(error.metric_label(), "api");
    error_policy(object, &error, ctx.clone());
    drop(ctx);
    server.await.expect("server");
    let count = metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            controller: "cluster",
            reason: "api",
        })
        .get();
    assert_eq!(count, 1);
}

async fn rule_reconcile_once(rule: StrataRule) -> Seen {
    let status_path = format!(
        "/apis/strata.dev/v1alpha1/namespaces/{NS}/stratarules/{}/status",
        rule.metadata.name.clone().unwrap_or_default()
    );
    let whole = serde_json::to_value(&rule).expect("json");
    let script = vec![Expect {
        method: "PATCH",
        path: status_path,
        reply: Reply::Json(whole),
    }];
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let server = tokio::spawn(serve(handle, script, seen.clone()));
    let ctx = Arc::new(rule_reconcile::Context {
        kube: Kube::new(kube::Client::new(service, NS), None),
        metrics: Metrics::default(),
        rule_config_map_max_bytes: 900_000,
        requeue_error: Duration::from_secs(5),
    });
    rule_reconcile::reconcile(Arc::new(rule), ctx.clone())
        .await
        .expect("reconcile");
    drop(ctx);
    server.await.expect("server");
    Arc::into_inner(seen)
        .expect("one owner")
        .into_inner()
        .expect("lock")
}

#[tokio::test]
async fn rule_controller_rejects_invalid_promql_in_status() {
    let seen = rule_reconcile_once(rule(NS, "db", bad_groups(), 3)).await;
    let (_, _, body) = &seen.writes[0];
    let status = &body["status"];
    assert_eq!(status["observedGeneration"], 3);
    let accepted = status["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == ACCEPTED)
        .expect("Accepted");
    assert_eq!(accepted["status"], "False");
    let message = accepted["message"].as_str().expect("message");
    assert!(
        message.starts_with("group \"broken\", rule 1 (\"Oops\"): cannot parse expression"),
        "{message}"
    );
    assert_eq!(status["rejectedRules"][0]["index"], 1);
    assert_eq!(status["rejectedRules"][0]["name"], "Oops");
    assert_eq!(seen.events[0]["type"], "Warning");
    assert_eq!(seen.events[0]["reason"], "RuleRejected");

    let seen = rule_reconcile_once(rule(NS, "api", good_groups(), 1)).await;
    let status = &seen.writes[0].2["status"];
    let accepted = status["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == ACCEPTED)
        .expect("Accepted");
    assert_eq!(accepted["status"], "True");
    assert!(status.get("rejectedRules").is_none());
    assert_eq!(seen.events[0]["reason"], "RuleAccepted");
}

fn lease(holder: &str, renewed_secs_ago: i64, resource_version: &str) -> Value {
    let renewed = k8s_openapi::jiff::Timestamp::now()
        - k8s_openapi::jiff::SignedDuration::from_secs(renewed_secs_ago);
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "strata-operator", "namespace": NS, "resourceVersion": resource_version},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed.to_string(), "leaseTransitions": 3},
    })
}

async fn elect(script: Vec<Expect>) -> (bool, Seen) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let server = tokio::spawn(serve(handle, script, seen.clone()));
    let elector = strata_operator::leader::Elector::new(
        Kube::new(kube::Client::new(service, NS), None),
        NS.into(),
        "strata-operator".into(),
        "me".into(),
        Duration::from_secs(15),
        Duration::from_secs(5),
    );
    let held = elector.try_hold().await.expect("try_hold");
    drop(elector);
    server.await.expect("server");
    (
        held,
        Arc::into_inner(seen)
            .expect("one owner")
            .into_inner()
            .expect("lock"),
    )
}

#[tokio::test]
async fn leader_election_on_a_lease() {
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases");
    let named = format!("{path}/strata-operator");
    let not_found = Reply::Error(404);
    // No Lease: created, held.
    let (held, seen) = elect(vec![
        Expect {
            method: "GET",
            path: named.clone(),
            reply: not_found,
        },
        Expect {
            method: "POST",
            path: path.clone(),
            reply: Reply::Echo,
        },
    ])
    .await;
    assert!(held);
    assert_eq!(seen.writes[0].2["spec"]["holderIdentity"], "me");
    // Held by another, fresh: wait, write nothing.
    let (held, seen) = elect(vec![Expect {
        method: "GET",
        path: named.clone(),
        reply: Reply::Json(lease("other", 2, "7")),
    }])
    .await;
    assert!(!held && seen.writes.is_empty());
    // Held by another, expired: taken over with a compare-and-swap.
    let (held, seen) = elect(vec![
        Expect {
            method: "GET",
            path: named.clone(),
            reply: Reply::Json(lease("other", 60, "7")),
        },
        Expect {
            method: "PUT",
            path: named.clone(),
            reply: Reply::Echo,
        },
    ])
    .await;
    assert!(held);
    let body = &seen.writes[0].2;
    assert_eq!(
        (
            body["spec"]["holderIdentity"].as_str(),
            body["spec"]["leaseTransitions"].as_i64()
        ),
        (Some("me"), Some(4))
    );
    assert_eq!(body["metadata"]["resourceVersion"], "7");
    // Someone else wrote first: not held.
    let (held, _) = elect(vec![
        Expect {
            method: "GET",
            path: named.clone(),
            reply: Reply::Json(lease("other", 60, "7")),
        },
        Expect {
            method: "PUT",
            path: named.clone(),
            reply: Reply::Error(409),
        },
    ])
    .await;
    assert!(!held);
    // Ours: renewed.
    let (held, seen) = elect(vec![
        Expect {
            method: "GET",
            path: named.clone(),
            reply: Reply::Json(lease("me", 4, "9")),
        },
        Expect {
            method: "PUT",
            path: named,
            reply: Reply::Echo,
        },
    ])
    .await;
    assert!(held);
    assert_eq!(seen.writes[0].2["spec"]["leaseTransitions"], 3);
}

#[tokio::test]
async fn deleted_cluster_gets_no_write() {
    let (mut world, mut object) = settled("v1", 3).await;
    object.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    world.observed.deployments.clear();
    let (_, seen) = reconcile_step(&mut world, &mut object).await;
    assert!(
        seen.writes.is_empty() && seen.events.is_empty(),
        "{:?}",
        seen.writes
    );
}

/// A storage node's HTTP port on a loopback address of its own, answering
/// `/ready` with `status`.
async fn node(ip: &str, port: u16, status: u16) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind((ip, port))
        .await
        .expect("bind loopback address");
    let reply = http_reply(status);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let reply = reply.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    })
}

fn http_reply(status: u16) -> String {
    format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
}

#[tokio::test]
async fn probe_asks_each_ready_storage_node() {
    // A free port, then one listener per loopback address on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let servers = [
        node("127.0.0.2", port, 200).await,
        node("127.0.0.3", port, 503).await,
    ];
    let mut probe = Probe::new(Duration::from_millis(500), true);
    probe.port = port;
    let pod = |name: &str, ip: &str, ready: bool| PodView {
        name: name.into(),
        component: "storage".into(),
        ready,
        ip: Some(ip.into()),
        ..PodView::default()
    };
    let pods = [
        pod("serving", "127.0.0.2", true),
        pod("refusing", "127.0.0.3", true),
        pod("nobody-home", "127.0.0.4", true),
        pod("not-ready", "127.0.0.2", false),
    ];
    let healthy = probe.healthy(&pods).await;
    assert_eq!(healthy.into_iter().collect::<Vec<_>>(), ["serving"]);
    // Without probing, readiness alone counts.
    let healthy = Probe::new(Duration::from_millis(500), false)
        .healthy(&pods)
        .await;
    assert_eq!(healthy.len(), 3);
    for s in servers {
        s.abort();
    }
}
