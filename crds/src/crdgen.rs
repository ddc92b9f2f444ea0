//! The CRD YAML generated from the Rust types, one file per CRD, written to
//! [`OUTPUT_DIRS`] (relative to the repository root) by `strata crdgen` and
//! checked in. [`check`] tells when the checked-in files no longer match the
//! types.

use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{StrataCluster, StrataRule};

/// Where the CRD files go: the plain YAML for `kubectl apply`, and the Helm
/// chart's `crds/` (installed before the chart's templates).
pub const OUTPUT_DIRS: [&str; 2] = ["crds/yaml", "charts/strata-operator/crds"];

const HEADER: &str = "# Generated from the Rust types in crds/ by `strata crdgen`; do not edit.\n";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot serialize CRD {name} to YAML: {source}")]
    Serialize {
        name: String,
        source: serde_saphyr::ser::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CRD YAML differs from the Rust types in {}; run `strata crdgen`", paths(.0))]
    Drift(Vec<PathBuf>),
}

fn paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every Strata CRD.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![StrataCluster::crd(), StrataRule::crd()]
}

/// File name and YAML text of every CRD, e.g. `strata.dev_strataclusters.yaml`.
pub fn files() -> Result<Vec<(String, String)>, Error> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let yaml = serde_saphyr::to_string(&crd).map_err(|source| Error::Serialize {
                name: name.clone(),
                source,
            })?;
            let (plural, group) = name.split_once('.').unwrap_or((&name, ""));
            Ok((format!("{group}_{plural}.yaml"), format!("{HEADER}{yaml}")))
        })
        .collect()
}

/// Writes every CRD file into each of [`OUTPUT_DIRS`] under `root`, returning
/// the paths written. Files of CRDs that no longer exist are left alone
/// ([`check`] reports them).
pub fn write(root: &Path) -> Result<Vec<PathBuf>, Error> {
    let files = files()?;
    let mut written = Vec::new();
    for dir in OUTPUT_DIRS {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Write {
            path: dir.clone(),
            source,
        })?;
        for (name, text) in &files {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|source| Error::Write {
                path: path.clone(),
                source,
            })?;
            written.push(path);
        }
    }
    Ok(written)
}

/// Fails with [`Error::Drift`] naming every file under `root` that is
/// missing, differs from what [`write`] would write, or is a leftover
/// `strata.dev_*.yaml` of a CRD that no longer exists.
pub fn check(root: &Path) -> Result<(), Error> {
    let files = files()?;
    let mut drifted = Vec::new();
    for dir in OUTPUT_DIRS {
        let dir = root.join(dir);
        for (name, text) in &files {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(on_disk) if on_disk == *text => {}
                Ok(_) => drifted.push(path),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => drifted.push(path),
                Err(source) => return Err(Error::Read { path, source }),
            }
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(Error::Read { path: dir, source }),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = name.starts_with(&format!("{}_", crate::GROUP)) && name.ends_with(".yaml");
            if ours && !files.iter().any(|(f, _)| *f == name) {
                drifted.push(entry.path());
            }
        }
    }
    if drifted.is_empty() {
        Ok(())
    } else {
        Err(Error::Drift(drifted))
    }
}
