//! The objects a reconcile applies, by kind, with the spec-hash annotation
//! that tells whether the copy in the API server is already the same.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use std::collections::BTreeSet;

use super::Note;
use super::desired;
use super::plan::Observed;
use crate::labels;

/// An object to server-side apply.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    StatefulSet(Box<StatefulSet>),
    Deployment(Box<Deployment>),
    Service(Box<Service>),
    ConfigMap(Box<ConfigMap>),
    PodDisruptionBudget(Box<PodDisruptionBudget>),
}

/// Kinds the operator owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    StatefulSet,
    Deployment,
    Service,
    ConfigMap,
    PodDisruptionBudget,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::StatefulSet => "StatefulSet",
            Kind::Deployment => "Deployment",
            Kind::Service => "Service",
            Kind::ConfigMap => "ConfigMap",
            Kind::PodDisruptionBudget => "PodDisruptionBudget",
        }
    }
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::StatefulSet(_) => Kind::StatefulSet,
            Object::Deployment(_) => Kind::Deployment,
            Object::Service(_) => Kind::Service,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::PodDisruptionBudget(_) => Kind::PodDisruptionBudget,
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Object::StatefulSet(o) => &o.metadata,
            Object::Deployment(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::PodDisruptionBudget(o) => &o.metadata,
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::StatefulSet(o) => &mut o.metadata,
            Object::Deployment(o) => &mut o.metadata,
            Object::Service(o) => &mut o.metadata,
            Object::ConfigMap(o) => &mut o.metadata,
            Object::PodDisruptionBudget(o) => &mut o.metadata,
        }
    }

    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or_default()
    }

    fn digest(&self) -> String {
        match self {
            Object::StatefulSet(o) => desired::hash(o),
            Object::Deployment(o) => desired::hash(o),
            Object::Service(o) => desired::hash(o),
            Object::ConfigMap(o) => desired::hash(o),
            Object::PodDisruptionBudget(o) => desired::hash(o),
        }
    }

    /// Sets the spec-hash annotation from the object's content.
    pub(super) fn stamped(mut self) -> Object {
        let digest = self.digest();
        self.meta_mut()
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(labels::SPEC_HASH.to_string(), digest);
        self
    }
}

/// The value of annotation `key`.
pub(super) fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// The `app.kubernetes.io/component` label.
pub(super) fn component_of(meta: &ObjectMeta) -> Option<&str> {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(labels::COMPONENT))
        .map(String::as_str)
}

/// What to apply (wanted objects whose spec hash differs from the API's
/// copy, or that are missing) and what to delete (objects this operator
/// made for this cluster, owned by `owner_uid`, that are no longer wanted;
/// never the storage StatefulSet). `held_back` are Deployments kept at
/// their running template: wanted, not applied. Adds a note per change.
pub(super) fn changes(
    wanted: &[Object],
    held_back: &[String],
    observed: &Observed,
    owner_uid: &str,
    notes: &mut Vec<Note>,
) -> (Vec<Object>, Vec<(Kind, String)>) {
    let existing: BTreeMap<(Kind, &str), &ObjectMeta> = observed
        .stateful_sets
        .iter()
        .map(|o| (Kind::StatefulSet, &o.metadata))
        .chain(
            observed
                .deployments
                .iter()
                .map(|o| (Kind::Deployment, &o.metadata)),
        )
        .chain(
            observed
                .services
                .iter()
                .map(|o| (Kind::Service, &o.metadata)),
        )
        .chain(
            observed
                .config_maps
                .iter()
                .map(|o| (Kind::ConfigMap, &o.metadata)),
        )
        .chain(
            observed
                .pdbs
                .iter()
                .map(|o| (Kind::PodDisruptionBudget, &o.metadata)),
        )
        .filter_map(|(kind, meta)| Some(((kind, meta.name.as_deref()?), meta)))
        .collect();
    let mut apply = Vec::new();
    for object in wanted.iter() {
        let found = existing.get(&(object.kind(), object.name()));
        let same = found.is_some_and(|meta| {
            annotation(meta, labels::SPEC_HASH) == annotation(object.meta(), labels::SPEC_HASH)
        });
        if !same {
            let verb = if found.is_some() {
                "Updated"
            } else {
                "Created"
            };
            notes.push(Note::normal(
                verb,
                "Apply",
                format!("{verb} {} {}", object.kind().as_str(), object.name()),
            ));
            apply.push(object.clone());
        }
    }
    let wanted_names: BTreeSet<(Kind, &str)> = wanted
        .iter()
        .map(|o| (o.kind(), o.name()))
        .chain(held_back.iter().map(|n| (Kind::Deployment, n.as_str())))
        .collect();
    let delete: Vec<(Kind, String)> = existing
        .iter()
        .filter(|(key, meta)| {
            // Only what this operator made for this cluster.
            !wanted_names.contains(key)
                && key.0 != Kind::StatefulSet
                && meta
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(labels::MANAGED_BY))
                    .map(String::as_str)
                    == Some(crate::FIELD_MANAGER)
                && meta
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.uid == owner_uid)
        })
        .map(|((kind, name), _)| (*kind, name.to_string()))
        .collect();
    for (kind, name) in &delete {
        notes.push(Note::normal(
            "Deleted",
            "Delete",
            format!("Deleted {} {name}", kind.as_str()),
        ));
    }

    (apply, delete)
}
