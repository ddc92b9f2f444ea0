//! The operator on a real Kubernetes cluster, driven with the real `helm`
//! and `kubectl`: install the chart, apply the examples (sized down for a
//! test cluster), wait for the workloads and `Ready=True`, change the image
//! tag and watch the storage pods be replaced one at a time (insert only
//! after them), scale storage out and see the new node in the topology,
//! apply an invalid StrataRule and see `Accepted=False`, delete the cluster
//! and see its children garbage-collected.
//!
//! Runs when `KUBECONFIG` names a kubeconfig file; otherwise it prints why
//! it skipped. With a cluster it needs:
//! - `STRATA_E2E_IMAGE`: image repository the cluster can pull (e.g. loaded
//!   into kind), holding the two tags below;
//! - `STRATA_E2E_VERSION` and `STRATA_E2E_UPGRADE_VERSION`: the tag to
//!   install and the tag to upgrade to (they may be the same image);
//! - helm and kubectl: `STRATA_HELM` / `STRATA_KUBECTL`, else
//!   `.peers/helm/bin/` (`scripts/fetch-peers helm`), else `PATH`.
//!
//! `STRATA_E2E_STORAGE_CLASS` picks the volumes' StorageClass (default: the
//! cluster's default). Everything lives in a namespace of its own, deleted
//! at the end.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_path_buf()
}

fn tool(env: &str, name: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env) {
        return PathBuf::from(path);
    }
    let peer = repo_root().join(".peers/helm/bin").join(name);
    if peer.exists() {
        return peer;
    }
    let found = std::env::var_os("PATH").map(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.exists())
    });
    found.flatten().unwrap_or_else(|| {
        panic!("{name} not found: set {env}, run `scripts/fetch-peers helm`, or put it on PATH")
    })
}

struct Kube {
    kubectl: PathBuf,
    helm: PathBuf,
    namespace: String,
}

impl Kube {
    fn run(&self, program: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        if let Some(input) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin piped")
                .write_all(input.as_bytes())
                .map_err(|e| e.to_string())?;
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{} {} failed: {}{}",
                program.display(),
                args.join(" "),
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            ))
        }
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.namespace.as_str()];
        all.extend_from_slice(args);
        self.run(&self.kubectl, &all, None)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn apply(&self, object: &Value) {
        let text = serde_json::to_string(object).expect("json");
        self.run(
            &self.kubectl,
            &["-n", &self.namespace, "apply", "-f", "-"],
            Some(&text),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&all)).expect("kubectl -o json")
    }

    /// The example file as JSON, in the test namespace.
    fn example(&self, file: &str) -> Value {
        let path = repo_root().join("examples").join(file);
        let out = self
            .run(
                &self.kubectl,
                &[
                    "create",
                    "--dry-run=client",
                    "-o",
                    "json",
                    "-f",
                    &path.display().to_string(),
                ],
                None,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let mut object: Value = serde_json::from_str(&out).expect("example as json");
        object["metadata"]["namespace"] = self.namespace.clone().into();
        object
    }

    fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut() -> Option<String>,
    ) -> String {
        let start = Instant::now();
        loop {
            if let Some(result) = done() {
                return result;
            }
            if start.elapsed() > timeout {
                let status = self.kubectl(&[
                    "get",
                    "strataclusters,statefulsets,deployments,pods",
                    "-o",
                    "wide",
                ]);
                panic!("timed out after {timeout:?} waiting for {what}\n{status}");
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

impl Drop for Kube {
    fn drop(&mut self) {
        let _ = self.run(
            &self.helm,
            &[
                "uninstall",
                "strata-operator",
                "-n",
                &self.namespace,
                "--wait",
            ],
            None,
        );
        let _ = self.run(
            &self.kubectl,
            &["delete", "namespace", &self.namespace, "--wait=false"],
            None,
        );
    }
}

fn condition(object: &Value, type_: &str) -> Option<(String, String)> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
}

/// Storage pods: (name, revision, ready, terminating).
fn storage_pods(kube: &Kube) -> Vec<(String, String, bool, bool)> {
    let pods = kube.json(&[
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/instance=metrics,app.kubernetes.io/component=storage",
    ]);
    let mut out: Vec<_> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let ready = p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["metadata"]["labels"]["controller-revision-hash"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                ready,
                p["metadata"]["deletionTimestamp"].is_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn operator_installs_upgrades_scales_rejects_rules_and_deletes() {
    let Some(kubeconfig) = std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty()) else {
        eprintln!(
            "SKIPPED operator_installs_upgrades_scales_rejects_rules_and_deletes: KUBECONFIG is not set, so there is no Kubernetes cluster to test against"
        );
        return;
    };
    assert!(
        Path::new(&kubeconfig).exists(),
        "KUBECONFIG {kubeconfig:?} does not exist"
    );
    let env = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} must be set when KUBECONFIG is (see the module doc)")
        })
    };
    let image = env("STRATA_E2E_IMAGE");
    let version = env("STRATA_E2E_VERSION");
    let upgrade = env("STRATA_E2E_UPGRADE_VERSION");
    let kube = Kube {
        kubectl: tool("STRATA_KUBECTL", "kubectl"),
        helm: tool("STRATA_HELM", "helm"),
        namespace: format!("strata-e2e-{}", std::process::id()),
    };

    // The chart, with the operator image under test.
    let chart = repo_root().join("charts/strata-operator");
    kube.run(
        &kube.helm,
        &[
            "install",
            "strata-operator",
            &chart.display().to_string(),
            "-n",
            &kube.namespace,
            "--create-namespace",
            "--set",
            &format!("image.repository={image}"),
            "--set",
            &format!("image.tag={version}"),
            "--set",
            "replicas=2",
            "--wait",
            "--timeout",
            "5m",
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    kube.kubectl(&[
        "label",
        "namespace",
        &kube.namespace,
        "strata.dev/rules=enabled",
    ]);

    // The examples, sized for a test cluster.
    let mut cluster = kube.example("stratacluster.yaml");
    let spec = &mut cluster["spec"];
    spec["image"] = image.clone().into();
    spec["version"] = version.clone().into();
    spec["storage"]["volume"] = match std::env::var("STRATA_E2E_STORAGE_CLASS") {
        Ok(class) => json!({"size": "1Gi", "storageClassName": class}),
        Err(_) => json!({"size": "1Gi"}),
    };
    for component in ["storage", "insert", "alert"] {
        spec[component]["resources"] = json!({"requests": {"cpu": "10m", "memory": "64Mi"}});
    }
    for pool in spec["select"]["pools"].as_array_mut().expect("pools") {
        pool["resources"] = json!({"requests": {"cpu": "10m", "memory": "64Mi"}});
    }
    kube.apply(&cluster);
    kube.apply(&kube.example("stratarule.yaml"));

    kube.wait_until("the cluster to be Ready", Duration::from_secs(600), || {
        let c = kube.json(&["get", "stratacluster", "metrics"]);
        (condition(&c, "Ready").map(|r| r.0).as_deref() == Some("True")).then(String::new)
    });
    let sts = kube.json(&["get", "statefulset", "metrics-storage"]);
    assert_eq!(sts["status"]["readyReplicas"], 3);
    assert_eq!(sts["spec"]["updateStrategy"]["type"], "OnDelete");
    for name in [
        "metrics-insert",
        "metrics-select-dashboards",
        "metrics-select-alerting",
        "metrics-alert",
    ] {
        let d = kube.json(&["get", "deployment", name]);
        assert_eq!(
            d["status"]["availableReplicas"], d["spec"]["replicas"],
            "{name}"
        );
    }
    let rule = kube.json(&["get", "stratarule", "node"]);
    assert_eq!(
        condition(&rule, "Accepted").map(|c| c.0).as_deref(),
        Some("True"),
        "{rule}"
    );

    // Upgrade: storage pods go one at a time, highest ordinal first.
    let before: Vec<String> = storage_pods(&kube).into_iter().map(|p| p.1).collect();
    kube.kubectl(&[
        "patch",
        "stratacluster",
        "metrics",
        "--type",
        "merge",
        "-p",
        &json!({"spec": {"version": upgrade}}).to_string(),
    ]);
    let mut order: Vec<String> = Vec::new();
    let mut most_unavailable = 0;
    let mut insert_before_storage = false;
    kube.wait_until(
        "storage pods to be replaced",
        Duration::from_secs(900),
        || {
            let pods = storage_pods(&kube);
            let unavailable = 3 - pods.iter().filter(|p| p.2 && !p.3).count();
            most_unavailable = most_unavailable.max(unavailable);
            for (name, revision, _, _) in &pods {
                if !before.contains(revision) && !order.contains(name) {
                    order.push(name.clone());
                }
            }
            if order.len() < 3 && insert_image(&kube) == format!("{image}:{upgrade}") {
                insert_before_storage = true;
            }
            let c = kube.json(&["get", "stratacluster", "metrics"]);
            let ready = condition(&c, "Ready").map(|r| r.0).as_deref() == Some("True");
            (order.len() == 3 && ready && c["status"]["version"] == upgrade.as_str())
                .then(String::new)
        },
    );
    assert_eq!(
        order,
        [
            "metrics-storage-2",
            "metrics-storage-1",
            "metrics-storage-0"
        ]
    );
    assert!(
        most_unavailable <= 1,
        "{most_unavailable} storage pods were down at once"
    );
    assert!(
        !insert_before_storage,
        "insert got the new image before every storage pod was replaced"
    );
    assert_eq!(insert_image(&kube), format!("{image}:{upgrade}"));

    // Scale-out: the fourth node joins the topology once it is Ready.
    kube.kubectl(&[
        "patch",
        "stratacluster",
        "metrics",
        "--type",
        "merge",
        "-p",
        &json!({"spec": {"storage": {"replicas": 4}}}).to_string(),
    ]);
    kube.wait_until(
        "the fourth storage node in the topology",
        Duration::from_secs(600),
        || {
            let topology = kube.json(&["get", "configmap", "metrics-topology"]);
            let text = topology["data"]["topology.yaml"]
                .as_str()
                .unwrap_or_default();
            let c = kube.json(&["get", "stratacluster", "metrics"]);
            let ready = condition(&c, "Ready").map(|r| r.0).as_deref() == Some("True");
            (text.contains("metrics-storage-3.") && ready).then(String::new)
        },
    );
    assert_eq!(
        kube.json(&["get", "statefulset", "metrics-storage"])["status"]["readyReplicas"],
        4
    );

    // An invalid rule is rejected in its status.
    let mut bad = kube.example("stratarule.yaml");
    bad["metadata"]["name"] = "broken".into();
    bad["spec"]["groups"] =
        json!([{"name": "broken", "rules": [{"alert": "Oops", "expr": "rate(x[5m]"}]}]);
    kube.apply(&bad);
    let message = kube.wait_until(
        "the invalid rule to be rejected",
        Duration::from_secs(120),
        || {
            let r = kube.json(&["get", "stratarule", "broken"]);
            condition(&r, "Accepted")
                .filter(|c| c.0 == "False")
                .map(|c| c.1)
        },
    );
    assert!(
        message.contains("group \"broken\", rule 0 (\"Oops\"): cannot parse expression"),
        "{message}"
    );
    let rules = kube.json(&["get", "configmap", "metrics-rules-0"]);
    let files = rules["data"]
        .as_object()
        .map(|d| d.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default();
    assert!(!files.iter().any(|f| f.contains("broken")), "{files:?}");

    // Deleting the cluster leaves nothing of it behind (owner references).
    kube.kubectl(&["delete", "stratacluster", "metrics", "--wait=true"]);
    kube.wait_until(
        "the cluster's objects to be garbage-collected",
        Duration::from_secs(300),
        || {
            let left = kube.json(&[
                "get",
                "statefulsets,deployments,services,configmaps,poddisruptionbudgets",
                "-l",
                "app.kubernetes.io/instance=metrics",
            ]);
            left["items"]
                .as_array()
                .is_none_or(|items| items.is_empty())
                .then(String::new)
        },
    );
}

/// The image of the insert Deployment's pod template.
fn insert_image(kube: &Kube) -> String {
    let d = kube.json(&["get", "deployment", "metrics-insert"]);
    d["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
