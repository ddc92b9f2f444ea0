//! The operator's errors, each with the `reason` label it is counted under in
//! `strata_operator_reconcile_errors_total`.

/// What went wrong in a reconcile or while running the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes api call {verb} {resource} failed: {source}")]
    Kube {
        verb: &'static str,
        resource: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error("cannot serialize {what}: {detail}")]
    Serialize { what: String, detail: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error("leadership of lease {0} was lost")]
    LeadershipLost(String),
}

impl Error {
    /// The `reason` label of the error counter: a small fixed set.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { source, .. } => match source {
                kube::Error::Api(status) if status.is_conflict() => "conflict",
                kube::Error::Api(status) if status.is_not_found() => "not_found",
                kube::Error::Api(status) if status.code == 403 => "forbidden",
                kube::Error::Api(status) if status.code == 422 => "invalid",
                kube::Error::Api(_) => "api",
                _ => "transport",
            },
            Error::MissingField(_) => "missing_field",
            Error::Serialize { .. } => "serialize",
            Error::Listen { .. } => "listen",
            Error::Client(_) => "client",
            Error::LeadershipLost(_) => "leadership_lost",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
