//! The Kubernetes manifests this repository ships: the operator's Helm chart
//! (linted and rendered by the real `helm`, every rendered object parsed as
//! its Kubernetes type, the RBAC compared with `rbac-rules.yaml`) and the
//! examples (the `StrataRule` loaded by the alert component's rule loader).
//!
//! helm comes from `scripts/fetch-peers helm` (`.peers/helm/bin/helm`, or
//! `STRATA_HELM`); without it the chart tests fail unless
//! `STRATA_SKIP_PEER_TESTS=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::de::DeserializeOwned;
use serde_json::Value;
use strata_crds::{StrataCluster, StrataRule, crdgen, validate};

const NAMESPACE: &str = "ops";
const RELEASE: &str = "strata";
const FULLNAME: &str = "strata-strata-operator";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    root().join("charts/strata-operator")
}

/// The helm binary, or None when it is missing and peer tests are skipped.
fn helm() -> Option<PathBuf> {
    let path = std::env::var_os("STRATA_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".peers/helm/bin/helm"));
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("STRATA_SKIP_PEER_TESTS").as_deref() == Ok("1") {
        eprintln!(
            "SKIPPED: helm not found at {} and STRATA_SKIP_PEER_TESTS=1",
            path.display()
        );
        return None;
    }
    panic!(
        "helm not found at {}: run scripts/fetch-peers helm (or set STRATA_SKIP_PEER_TESTS=1 to skip)",
        path.display()
    );
}

fn run(helm: &Path, args: &[&str]) -> String {
    let out = Command::new(helm).args(args).output().expect("helm runs");
    assert!(
        out.status.success(),
        "helm {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("helm prints UTF-8")
}

/// `--set` arguments of the values combinations the tests render.
const DEFAULTS: &[&str] = &[];
const NAMESPACED_HA: &[&str] = &["replicas=2", "watchNamespaces={team-a,team-b}"];
const CUSTOMIZED: &[&str] = &[
    "leaderElection.enabled=true",
    "image.repository=registry.example/strata",
    "image.tag=1.2.3",
    "logLevel=debug",
    "port=9090",
    "serviceAccount.name=custom",
    "metricsService.enabled=false",
    "resources.limits.cpu=1500m",
    "imagePullSecrets[0].name=regcred",
    "nodeSelector.disk=ssd",
];

fn set_args(sets: &[&str]) -> Vec<String> {
    sets.iter()
        .flat_map(|s| ["--set".to_string(), s.to_string()])
        .collect()
}

#[test]
fn chart_lints() {
    let Some(helm) = helm() else { return };
    let chart = chart();
    for sets in [DEFAULTS, NAMESPACED_HA, CUSTOMIZED] {
        let mut args = vec!["lint", "--strict", chart.to_str().expect("UTF-8 path")];
        let sets = set_args(sets);
        args.extend(sets.iter().map(String::as_str));
        run(&helm, &args);
    }
}

/// The rendered objects, each parsed as its Kubernetes type.
#[derive(Default)]
struct Rendered {
    crds: Vec<CustomResourceDefinition>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
}

/// Parses `doc` as `T` and checks that nothing was lost on the way: a
/// misspelt or misplaced field in a template would be dropped by the typed
/// parse and show up as a difference here.
fn typed<T: DeserializeOwned + serde::Serialize>(doc: &Value) -> T {
    let object: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{} does not parse: {e}\n{doc:#}", doc["kind"]));
    let back = serde_json::to_value(&object).expect("serializes");
    assert_eq!(&back, doc, "{} changed in a typed round trip", doc["kind"]);
    object
}

fn render(helm: &Path, sets: &[&str]) -> Rendered {
    let chart = chart();
    let mut args = vec![
        "template",
        RELEASE,
        chart.to_str().expect("UTF-8 path"),
        "--namespace",
        NAMESPACE,
        "--include-crds",
    ];
    let sets = set_args(sets);
    args.extend(sets.iter().map(String::as_str));
    let text = run(helm, &args);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("helm output is YAML");
    let mut rendered = Rendered::default();
    for doc in docs.into_iter().filter(|d| !d.is_null()) {
        match doc["kind"].as_str().expect("object has a kind") {
            "CustomResourceDefinition" => rendered.crds.push(typed(&doc)),
            "ServiceAccount" => rendered.service_accounts.push(typed(&doc)),
            "ClusterRole" => rendered.cluster_roles.push(typed(&doc)),
            "ClusterRoleBinding" => rendered.cluster_role_bindings.push(typed(&doc)),
            "Role" => rendered.roles.push(typed(&doc)),
            "RoleBinding" => rendered.role_bindings.push(typed(&doc)),
            "Deployment" => rendered.deployments.push(typed(&doc)),
            "Service" => rendered.services.push(typed(&doc)),
            other => panic!("unexpected kind {other} in the chart"),
        }
    }
    rendered
}

type Permission = (String, String, String);

/// One section of rbac-rules.yaml as (apiGroup, resource, verb) triples.
fn rules_file(section: &str) -> BTreeSet<Permission> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Rule {
        api_group: String,
        resources: Vec<String>,
        verbs: Vec<String>,
    }
    let text = std::fs::read_to_string(chart().join("rbac-rules.yaml")).expect("readable");
    let file: BTreeMap<String, Vec<Rule>> = serde_saphyr::from_str(&text).expect("parses");
    let mut out = BTreeSet::new();
    for rule in &file[section] {
        for resource in &rule.resources {
            for verb in &rule.verbs {
                assert!(
                    out.insert((rule.api_group.clone(), resource.clone(), verb.clone())),
                    "{section}: {resource} {verb} listed twice"
                );
            }
        }
    }
    out
}

fn permissions(rules: &[PolicyRule]) -> BTreeSet<Permission> {
    let mut out = BTreeSet::new();
    for rule in rules {
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    assert_ne!(verb, "*", "wildcard verb");
                    assert_ne!(resource, "*", "wildcard resource");
                    out.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    out
}

fn name<
    T: k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
>(
    object: &T,
) -> (&str, &str) {
    let meta = object.metadata();
    (
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or(""),
    )
}

/// The operator container's arguments.
fn args(rendered: &Rendered) -> Vec<String> {
    assert_eq!(rendered.deployments.len(), 1);
    let pod = rendered.deployments[0]
        .spec
        .template
        .spec
        .as_ref()
        .expect("pod spec");
    assert_eq!(pod.containers.len(), 1);
    pod.containers[0].args.clone().unwrap_or_default()
}

/// Checks what every rendering shares: the CRDs are the generated ones,
/// bindings point at rendered roles and the rendered service account.
fn check_common(rendered: &Rendered, service_account: &str) {
    let mut want = crdgen::crds();
    let mut got = rendered.crds.clone();
    want.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    got.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    assert_eq!(
        got, want,
        "chart CRDs differ from the types; run `strata crdgen`"
    );

    let deployment = &rendered.deployments[0];
    assert_eq!(name(deployment), (NAMESPACE, FULLNAME));
    let pod = deployment.spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.service_account_name.as_deref(), Some(service_account));
    let container = &pod.containers[0];
    assert_eq!(args(rendered)[0], "operator");
    let probe_path = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
        probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(
        probe_path(&container.liveness_probe).as_deref(),
        Some("/health")
    );
    assert_eq!(
        probe_path(&container.readiness_probe).as_deref(),
        Some("/ready")
    );

    let subject_ok = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        let subjects = subjects.as_deref().unwrap_or_default();
        subjects.len() == 1
            && subjects[0].kind == "ServiceAccount"
            && subjects[0].name == service_account
            && subjects[0].namespace.as_deref() == Some(NAMESPACE)
    };
    for binding in &rendered.cluster_role_bindings {
        assert!(subject_ok(&binding.subjects), "{:?}", binding.subjects);
        assert_eq!(binding.role_ref.kind, "ClusterRole");
        assert!(
            rendered
                .cluster_roles
                .iter()
                .any(|r| name(r).1 == binding.role_ref.name)
        );
    }
    for binding in &rendered.role_bindings {
        assert!(subject_ok(&binding.subjects), "{:?}", binding.subjects);
        assert_eq!(binding.role_ref.kind, "Role");
        assert!(
            rendered
                .roles
                .iter()
                .any(|r| name(r) == (name(binding).0, binding.role_ref.name.as_str())),
            "binding {:?} points at a missing role",
            name(binding)
        );
    }
}

#[test]
fn chart_defaults_grant_cluster_wide_access_without_leader_election() {
    let Some(helm) = helm() else { return };
    let rendered = render(&helm, DEFAULTS);
    check_common(&rendered, FULLNAME);
    assert_eq!(rendered.service_accounts.len(), 1);
    assert_eq!(rendered.cluster_roles.len(), 1);
    assert_eq!(rendered.cluster_role_bindings.len(), 1);
    assert!(rendered.roles.is_empty() && rendered.role_bindings.is_empty());
    assert_eq!(
        permissions(&rendered.cluster_roles[0].rules.clone().unwrap_or_default()),
        rules_file("watched")
    );
    let args = args(&rendered);
    assert!(
        args.contains(&"--leader-election=false".to_string()),
        "{args:?}"
    );
    assert!(
        args.contains(&"--listen=0.0.0.0:8080".to_string()),
        "{args:?}"
    );
    assert!(args.contains(&"--log-level=info".to_string()), "{args:?}");
    assert!(
        !args.iter().any(|a| a.starts_with("--watch-namespaces")),
        "{args:?}"
    );
    assert_eq!(rendered.services.len(), 1);
    let deployment = &rendered.deployments[0].spec;
    assert_eq!(deployment.replicas, Some(1));
}

#[test]
fn chart_with_watch_namespaces_grants_roles_only_there() {
    let Some(helm) = helm() else { return };
    let rendered = render(&helm, NAMESPACED_HA);
    check_common(&rendered, FULLNAME);
    assert!(rendered.cluster_roles.is_empty() && rendered.cluster_role_bindings.is_empty());
    let mut seen = BTreeSet::new();
    for role in &rendered.roles {
        let rules = permissions(&role.rules.clone().unwrap_or_default());
        match name(role) {
            ("team-a" | "team-b", FULLNAME) => assert_eq!(rules, rules_file("watched")),
            (NAMESPACE, n) if n == format!("{FULLNAME}-leader-election") => {
                assert_eq!(rules, rules_file("own"))
            }
            other => panic!("unexpected role {other:?}"),
        }
        seen.insert(name(role).0.to_string());
    }
    assert_eq!(
        seen,
        BTreeSet::from(["team-a".into(), "team-b".into(), NAMESPACE.into()])
    );
    assert_eq!(rendered.role_bindings.len(), 3);
    let args = args(&rendered);
    for want in [
        "--leader-election=true",
        "--watch-namespaces=team-a,team-b",
        "--leader-election.namespace=ops",
        "--leader-election.lease-name=strata-strata-operator",
    ] {
        assert!(
            args.contains(&want.to_string()),
            "{want} missing from {args:?}"
        );
    }
    let deployment = &rendered.deployments[0].spec;
    assert_eq!(deployment.replicas, Some(2));
}

#[test]
fn chart_values_reach_the_objects() {
    let Some(helm) = helm() else { return };
    let rendered = render(&helm, CUSTOMIZED);
    check_common(&rendered, "custom");
    assert_eq!(
        rendered
            .service_accounts
            .iter()
            .map(name)
            .collect::<Vec<_>>(),
        [(NAMESPACE, "custom")]
    );
    assert!(rendered.services.is_empty());
    let args = args(&rendered);
    for want in [
        "--leader-election=true",
        "--log-level=debug",
        "--listen=0.0.0.0:9090",
    ] {
        assert!(
            args.contains(&want.to_string()),
            "{want} missing from {args:?}"
        );
    }
    let leader_roles: Vec<_> = rendered
        .roles
        .iter()
        .filter(|r| name(*r) == (NAMESPACE, "strata-strata-operator-leader-election"))
        .collect();
    assert_eq!(
        leader_roles.len(),
        1,
        "one replica with leaderElection.enabled still elects"
    );
    let pod = rendered.deployments[0]
        .spec
        .template
        .spec
        .as_ref()
        .expect("pod spec");
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("registry.example/strata:1.2.3")
    );
    assert_eq!(
        container.ports.as_ref().map(|p| p[0].container_port),
        Some(9090)
    );
    let cpu_limit = container
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("cpu"))
        .map(|q| q.0.clone());
    assert_eq!(cpu_limit.as_deref(), Some("1500m"));
    assert_eq!(
        pod.image_pull_secrets.as_ref().map(|s| s[0].name.clone()),
        Some("regcred".to_string())
    );
    assert_eq!(
        pod.node_selector
            .as_ref()
            .and_then(|n| n.get("disk"))
            .map(String::as_str),
        Some("ssd")
    );
}

// ---- examples ----

fn example<T: DeserializeOwned>(file: &str) -> T {
    let text = std::fs::read_to_string(root().join("examples").join(file)).expect("readable");
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn example_cluster_is_valid() {
    let cluster: StrataCluster = example("stratacluster.yaml");
    assert_eq!(validate::cluster(&cluster.spec), []);
}

#[test]
fn example_rules_load_into_the_alert_evaluator() {
    let rule: StrataRule = example("stratarule.yaml");
    assert_eq!(validate::rule(&rule.spec), []);
    let file = rule.spec.to_rule_file().expect("serializes");
    let loaded = strata_alert::rules::parse_rule_file(Path::new("stratarule.yaml"), &file)
        .unwrap_or_else(|errors| panic!("rule file rejected: {errors:?}\n{file}"));
    assert_eq!(loaded.groups.len(), rule.spec.groups.len());
    for (loaded, spec) in loaded.groups.iter().zip(&rule.spec.groups) {
        assert_eq!(loaded.name, spec.name);
        assert_eq!(loaded.tenant.as_deref(), Some("0"));
        assert_eq!(loaded.rules.len(), spec.rules.len());
        for (loaded, spec) in loaded.rules.iter().zip(&spec.rules) {
            assert_eq!(Some(loaded.name()), spec.name());
            assert_eq!(loaded.expr, spec.expr_text());
        }
    }
}

#[test]
fn invalid_promql_is_reported_with_its_group_and_rule() {
    let text = r#"
apiVersion: strata.dev/v1alpha1
kind: StrataRule
metadata: {name: broken}
spec:
  groups:
    - name: g
      rules:
        - record: ok
          expr: sum(up)
        - alert: Broken
          expr: rate(up[5m]
"#;
    let rule: StrataRule = serde_saphyr::from_str(text).expect("parses");
    // The schema cannot see PromQL: only the loader rejects it.
    assert_eq!(validate::rule(&rule.spec), []);
    let file = rule.spec.to_rule_file().expect("serializes");
    let errors = strata_alert::rules::parse_rule_file(Path::new("broken"), &file)
        .expect_err("invalid PromQL is rejected");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].group.as_deref(), Some("g"));
    assert_eq!(errors[0].rule_index, Some(1));
    assert_eq!(errors[0].rule_name.as_deref(), Some("Broken"));
}
