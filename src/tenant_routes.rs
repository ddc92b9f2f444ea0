//! Tenant paths (DESIGN.md): `/insert/<tenant>/...` and
//! `/select/<tenant>/prometheus/...`, where `<tenant>` is
//! `<account_id>[:<project_id>]`.
//!
//! The tenant is read from the path; the rest of the path (without the
//! optional inner prefix, e.g. `/prometheus`) is served by the router built
//! for that tenant, with the query string kept. Routers are built on first
//! use and kept, up to `MAX_CACHED_TENANTS`; past that they are built per
//! request, so a client naming endless tenants cannot grow memory. Limits
//! that must hold across tenants (admission gates, query slots) are shared
//! by the routers `make` builds, not per tenant.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use strata_storage::Tenant;
use tower::ServiceExt;

/// Most tenants whose routers are kept.
const MAX_CACHED_TENANTS: usize = 10_000;

/// Builds the router of one tenant.
pub type MakeRouter = Arc<dyn Fn(Tenant) -> Router + Send + Sync>;

#[derive(Clone)]
struct Dispatch {
    prefix: &'static str,
    inner_prefix: &'static str,
    make: MakeRouter,
    routers: Arc<Mutex<HashMap<Tenant, Router>>>,
}

impl Dispatch {
    fn router(&self, tenant: Tenant) -> Router {
        let mut routers = self.routers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(router) = routers.get(&tenant) {
            return router.clone();
        }
        let router = (self.make)(tenant);
        if routers.len() < MAX_CACHED_TENANTS {
            routers.insert(tenant, router.clone());
        }
        router
    }
}

/// Routes `<prefix>/<tenant>/<inner_prefix>/<rest>` (the inner prefix is
/// optional in the request) to `/<rest>` of `make(tenant)`.
pub fn tenant_routes(prefix: &'static str, inner_prefix: &'static str, make: MakeRouter) -> Router {
    let dispatch = Dispatch {
        prefix,
        inner_prefix,
        make,
        routers: Arc::default(),
    };
    Router::new()
        .route(&format!("{prefix}/{{tenant}}/{{*rest}}"), any(serve))
        .with_state(dispatch)
}

async fn serve(State(dispatch): State<Dispatch>, request: Request) -> Response {
    let (tenant, rest) =
        match split_path(request.uri().path(), dispatch.prefix, dispatch.inner_prefix) {
            Ok(parts) => parts,
            Err(message) => return (StatusCode::BAD_REQUEST, message).into_response(),
        };
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest,
    };
    let uri = match path_and_query.parse::<Uri>() {
        Ok(uri) => uri,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("invalid path: {e}\n")).into_response();
        }
    };
    // A new request without the outer route's extensions: the inner router
    // would otherwise see this route's path parameters next to its own.
    let (parts, body) = request.into_parts();
    let mut inner = Request::new(body);
    *inner.method_mut() = parts.method;
    *inner.uri_mut() = uri;
    *inner.version_mut() = parts.version;
    *inner.headers_mut() = parts.headers;
    match dispatch.router(tenant).oneshot(inner).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// `/select/1:2/prometheus/api/v1/query` -> (1:2, `/api/v1/query`).
fn split_path(path: &str, prefix: &str, inner_prefix: &str) -> Result<(Tenant, String), String> {
    let after = path
        .strip_prefix(prefix)
        .and_then(|p| p.strip_prefix('/'))
        .ok_or_else(|| format!("path {path:?} does not start with {prefix}/<tenant>/\n"))?;
    let (tenant, rest) = after.split_once('/').unwrap_or((after, ""));
    let tenant: Tenant = tenant.parse().map_err(|e| format!("{e}\n"))?;
    let rest = format!("/{rest}");
    let rest = match rest.strip_prefix(inner_prefix) {
        Some(inner) if !inner_prefix.is_empty() && (inner.is_empty() || inner.starts_with('/')) => {
            inner.to_string()
        }
        _ => rest,
    };
    Ok((tenant, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_tenant_and_rest() {
        let check = |path: &str, want: Result<(Tenant, &str), &str>| {
            let got = split_path(path, "/select", "/prometheus");
            match want {
                Ok((tenant, rest)) => assert_eq!(got, Ok((tenant, rest.to_string())), "{path}"),
                Err(part) => {
                    let err = got.expect_err(path);
                    assert!(err.contains(part), "{path}: {err}");
                }
            }
        };
        check(
            "/select/1:2/prometheus/api/v1/query",
            Ok((Tenant::new(1, 2), "/api/v1/query")),
        );
        check(
            "/select/7/prometheus/api/v1/labels",
            Ok((Tenant::new(7, 0), "/api/v1/labels")),
        );
        check(
            "/select/7/api/v1/labels",
            Ok((Tenant::new(7, 0), "/api/v1/labels")),
        );
        check(
            "/select/7/prometheusx/a",
            Ok((Tenant::new(7, 0), "/prometheusx/a")),
        );
        check(
            "/select/x/prometheus/api/v1/query",
            Err("cannot parse tenant"),
        );
        check("/select/1:2:3/api", Err("cannot parse tenant"));
        check("/selectx/1/api", Err("does not start with"));
    }
}
