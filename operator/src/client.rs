//! The one layer every Kubernetes API call of the operator goes through.
//! Each call names the (API group, resource, verb) it needs, and that triple
//! must be in [`ACCESS`]: the table is what the operator's RBAC role must
//! grant, compared in a test with the list kept beside the Helm chart, and
//! checked at run time in debug builds so that a new call cannot be added
//! without it.

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// One permission: a verb on a resource (`plural` or `plural/subresource`)
/// of an API group (`""` is the core group).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Access {
    pub group: &'static str,
    pub resource: &'static str,
    pub verb: &'static str,
}

const fn access(group: &'static str, resource: &'static str, verb: &'static str) -> Access {
    Access {
        group,
        resource,
        verb,
    }
}

/// Every permission the operator uses. Server-side apply needs both
/// `create` (for objects that do not exist yet) and `patch`; the
/// controllers' watches need `list` and `watch`.
pub const ACCESS: &[Access] = &[
    access("strata.dev", "strataclusters", "list"),
    access("strata.dev", "strataclusters", "watch"),
    access("strata.dev", "strataclusters/status", "patch"),
    // Owner references with blockOwnerDeletion need it (no call makes it).
    access("strata.dev", "strataclusters/finalizers", "update"),
    access("strata.dev", "stratarules", "list"),
    access("strata.dev", "stratarules", "watch"),
    access("strata.dev", "stratarules/status", "patch"),
    access("apps", "statefulsets", "list"),
    access("apps", "statefulsets", "watch"),
    access("apps", "statefulsets", "create"),
    access("apps", "statefulsets", "patch"),
    access("apps", "deployments", "list"),
    access("apps", "deployments", "watch"),
    access("apps", "deployments", "create"),
    access("apps", "deployments", "patch"),
    access("apps", "deployments", "delete"),
    access("", "services", "list"),
    access("", "services", "watch"),
    access("", "services", "create"),
    access("", "services", "patch"),
    access("", "services", "delete"),
    access("", "configmaps", "list"),
    access("", "configmaps", "watch"),
    access("", "configmaps", "create"),
    access("", "configmaps", "patch"),
    access("", "configmaps", "delete"),
    access("policy", "poddisruptionbudgets", "list"),
    access("policy", "poddisruptionbudgets", "watch"),
    access("policy", "poddisruptionbudgets", "create"),
    access("policy", "poddisruptionbudgets", "patch"),
    access("policy", "poddisruptionbudgets", "delete"),
    access("", "pods", "list"),
    access("", "pods", "watch"),
    access("", "pods", "delete"),
    access("", "namespaces", "list"),
    access("coordination.k8s.io", "leases", "get"),
    access("coordination.k8s.io", "leases", "create"),
    access("coordination.k8s.io", "leases", "update"),
    access("events.k8s.io", "events", "create"),
    access("events.k8s.io", "events", "patch"),
];

/// Whether `ACCESS` grants `verb` on `resource` of `group`.
pub fn allowed(group: &str, resource: &str, verb: &str) -> bool {
    ACCESS
        .iter()
        .any(|a| a.group == group && a.resource == resource && a.verb == verb)
}

/// Panics in debug builds (tests) when a call is not in [`ACCESS`].
fn require<K: Resource<DynamicType = ()>>(subresource: Option<&str>, verbs: &[&'static str]) {
    let group = K::group(&());
    let mut resource = K::plural(&()).into_owned();
    if let Some(sub) = subresource {
        resource = format!("{resource}/{sub}");
    }
    for verb in verbs {
        debug_assert!(
            allowed(&group, &resource, verb),
            "{verb} on {group}/{resource} is not in client::ACCESS"
        );
    }
}

fn kube_error(verb: &'static str, resource: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube {
        verb,
        resource,
        source,
    }
}

fn plural<K: Resource<DynamicType = ()>>() -> &'static str {
    // Static names for error messages without allocating per call; the set
    // of kinds is small and fixed.
    match K::plural(&()).as_ref() {
        "strataclusters" => "strataclusters",
        "stratarules" => "stratarules",
        "statefulsets" => "statefulsets",
        "deployments" => "deployments",
        "services" => "services",
        "configmaps" => "configmaps",
        "poddisruptionbudgets" => "poddisruptionbudgets",
        "pods" => "pods",
        "namespaces" => "namespaces",
        "leases" => "leases",
        _ => "other",
    }
}

/// The API client with the operator's field manager and event reporter.
#[derive(Clone)]
pub struct Kube {
    client: Client,
    recorder: Arc<Recorder>,
}

impl Kube {
    pub fn new(client: Client, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: crate::FIELD_MANAGER.to_string(),
            instance,
        };
        let recorder = Arc::new(Recorder::new(client.clone(), reporter));
        Kube { client, recorder }
    }

    /// The underlying client, for the controllers' watches (whose verbs,
    /// `list` and `watch`, are in [`ACCESS`]).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Objects of kind `K` in `namespace` matching `selector` (`a=b,c=d`).
    pub async fn list<K>(&self, namespace: &str, selector: Option<&str>) -> Result<Vec<K>>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        require::<K>(None, &["list"]);
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        list(api, selector).await
    }

    /// Objects of kind `K` in every namespace (or of a cluster-scoped kind).
    pub async fn list_all<K>(&self, selector: Option<&str>) -> Result<Vec<K>>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    {
        require::<K>(None, &["list"]);
        let api: Api<K> = Api::all(self.client.clone());
        list(api, selector).await
    }

    /// Server-side apply of `object` (which names itself and its namespace)
    /// with the operator's field manager, taking over conflicting fields.
    pub async fn apply<K>(&self, object: &K) -> Result<K>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + Serialize
            + DeserializeOwned
            + Debug,
    {
        require::<K>(None, &["create", "patch"]);
        let name = object
            .meta()
            .name
            .clone()
            .ok_or(Error::MissingField("metadata.name"))?;
        let namespace = object
            .meta()
            .namespace
            .clone()
            .ok_or(Error::MissingField("metadata.namespace"))?;
        let api: Api<K> = Api::namespaced(self.client.clone(), &namespace);
        let params = PatchParams::apply(crate::FIELD_MANAGER).force();
        api.patch(&name, &params, &Patch::Apply(object))
            .await
            .map_err(kube_error("apply", plural::<K>()))
    }

    /// Server-side apply of the `status` subresource; `status` is the whole
    /// patch body (apiVersion, kind and `status`).
    pub async fn apply_status<K>(
        &self,
        namespace: &str,
        name: &str,
        status: &serde_json::Value,
    ) -> Result<()>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        require::<K>(Some("status"), &["patch"]);
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let params = PatchParams::apply(crate::FIELD_MANAGER).force();
        api.patch_status(name, &params, &Patch::Apply(status))
            .await
            .map_err(kube_error("patch status", plural::<K>()))?;
        Ok(())
    }

    /// Deletes object `name` of kind `K`; absent already is success.
    pub async fn delete<K>(&self, namespace: &str, name: &str) -> Result<()>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        require::<K>(None, &["delete"]);
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
            Err(e) => Err(kube_error("delete", plural::<K>())(e)),
        }
    }

    /// Deletes pod `name` only if it is still the pod with `uid` (not a
    /// replacement created in the meantime).
    pub async fn delete_pod(&self, namespace: &str, name: &str, uid: &str) -> Result<()> {
        require::<Pod>(None, &["delete"]);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
            Err(e) => Err(kube_error("delete", "pods")(e)),
        }
    }

    /// Object `name` of kind `K`, or `None` when it does not exist.
    pub async fn get<K>(&self, namespace: &str, name: &str) -> Result<Option<K>>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        require::<K>(None, &["get"]);
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        api.get_opt(name)
            .await
            .map_err(kube_error("get", plural::<K>()))
    }

    /// Creates `object` in `namespace`.
    pub async fn create<K>(&self, namespace: &str, object: &K) -> Result<K>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + Serialize
            + DeserializeOwned
            + Debug,
    {
        require::<K>(None, &["create"]);
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        api.create(&PostParams::default(), object)
            .await
            .map_err(kube_error("create", plural::<K>()))
    }

    /// Replaces `object` (its `resourceVersion` makes this a compare-and-swap).
    pub async fn replace<K>(&self, namespace: &str, object: &K) -> Result<K>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + Serialize
            + DeserializeOwned
            + Debug,
    {
        require::<K>(None, &["update"]);
        let name = object
            .meta()
            .name
            .clone()
            .ok_or(Error::MissingField("metadata.name"))?;
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        api.replace(&name, &PostParams::default(), object)
            .await
            .map_err(kube_error("update", plural::<K>()))
    }

    /// Publishes an event about `regarding`. A failure is logged, not
    /// returned: an event is never worth failing a reconcile for.
    pub async fn event(&self, regarding: &ObjectReference, event: &crate::cluster::Note) {
        debug_assert!(allowed("events.k8s.io", "events", "create"));
        let ev = Event {
            type_: if event.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: event.reason.clone(),
            note: Some(event.message.clone()),
            action: event.action.clone(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&ev, regarding).await {
            tracing::warn!(
                object = ?regarding.name,
                reason = %event.reason,
                %error,
                "Cannot publish event."
            );
        }
    }
}

async fn list<K>(api: Api<K>, selector: Option<&str>) -> Result<Vec<K>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let mut params = ListParams::default();
    if let Some(selector) = selector {
        params = params.labels(selector);
    }
    let list = api
        .list(&params)
        .await
        .map_err(kube_error("list", plural::<K>()))?;
    Ok(list.items)
}
