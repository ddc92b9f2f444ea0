//! Where rule expressions are evaluated: a Prometheus-compatible HTTP API
//! (`strata alert`) or the PromQL engine in the same process (`strata single`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use strata_select::promql::{Engine, Point, QueryOptions, Sample, Series, Value};
use strata_select::source::Source;
use strata_storage::{Label, Tenant};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("query {query:?} failed: {message}")]
    Failed { query: String, message: String },
    #[error("cannot reach {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("cannot parse the answer of {url}: {message}")]
    BadAnswer { url: String, message: String },
}

/// Runs instant queries for one tenant at one time (ms).
pub trait Querier: Send + Sync {
    fn query<'a>(
        &'a self,
        tenant: Tenant,
        query: &'a str,
        time: i64,
    ) -> BoxFuture<'a, Result<Value, QueryError>>;
}

/// Queries `{url}/api/v1/query`. A `{tenant}` in the URL is replaced by
/// `account:project`, for cluster URLs that carry the tenant in the path.
pub struct HttpQuerier {
    url: String,
    client: reqwest::Client,
}

impl HttpQuerier {
    pub fn new(url: &str, timeout: Duration) -> HttpQuerier {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        HttpQuerier {
            url: url.trim_end_matches('/').to_string(),
            client,
        }
    }
}

impl Querier for HttpQuerier {
    fn query<'a>(
        &'a self,
        tenant: Tenant,
        query: &'a str,
        time: i64,
    ) -> BoxFuture<'a, Result<Value, QueryError>> {
        Box::pin(async move {
            let base = self.url.replace(
                "{tenant}",
                &format!("{}:{}", tenant.account_id, tenant.project_id),
            );
            let url = format!("{base}/api/v1/query");
            let body = form_urlencoded::Serializer::new(String::new())
                .append_pair("query", query)
                .append_pair("time", &format!("{:.3}", time as f64 / 1000.0))
                .finish();
            let unreachable = |e: reqwest::Error| QueryError::Unreachable {
                url: url.clone(),
                message: e.to_string(),
            };
            let response = self
                .client
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .map_err(unreachable)?;
            let text = response.text().await.map_err(unreachable)?;
            parse_answer(&text).map_err(|e| match e {
                Answer::Error(message) => QueryError::Failed {
                    query: query.to_string(),
                    message,
                },
                Answer::Bad(message) => QueryError::BadAnswer {
                    url: url.clone(),
                    message,
                },
            })
        })
    }
}

enum Answer {
    Error(String),
    Bad(String),
}

/// Parses the JSON of `/api/v1/query`.
fn parse_answer(text: &str) -> Result<Value, Answer> {
    let bad = |m: &str| Answer::Bad(m.to_string());
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Answer::Bad(format!("{e}: {text:.200}")))?;
    if json["status"] != "success" {
        let message = json["error"].as_str().unwrap_or(text).to_string();
        return Err(Answer::Error(message));
    }
    let data = &json["data"];
    let result = &data["result"];
    let point = |p: &serde_json::Value| -> Result<Point, Answer> {
        let t = p[0]
            .as_f64()
            .ok_or_else(|| bad("timestamp is not a number"))?;
        let v = p[1].as_str().ok_or_else(|| bad("value is not a string"))?;
        Ok(Point {
            t: (t * 1000.0).round() as i64,
            v: parse_float(v).ok_or_else(|| Answer::Bad(format!("bad value {v:?}")))?,
        })
    };
    let labels = |m: &serde_json::Value| -> Vec<Label> {
        let mut out: Vec<Label> = m
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| Label::new(k.as_str(), v.as_str().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    };
    match data["resultType"].as_str() {
        Some("scalar") => {
            let p = point(result)?;
            Ok(Value::Scalar { t: p.t, v: p.v })
        }
        Some("string") => Ok(Value::String {
            t: 0,
            s: result[1].as_str().unwrap_or_default().to_string(),
        }),
        Some("vector") => {
            let mut out = Vec::new();
            for s in result.as_array().into_iter().flatten() {
                let p = point(&s["value"])?;
                out.push(Sample {
                    labels: labels(&s["metric"]),
                    t: p.t,
                    v: p.v,
                });
            }
            Ok(Value::Vector(out))
        }
        Some("matrix") => {
            let mut out = Vec::new();
            for s in result.as_array().into_iter().flatten() {
                let points = s["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(point)
                    .collect::<Result<Vec<_>, _>>()?;
                out.push(Series {
                    labels: labels(&s["metric"]),
                    points,
                });
            }
            Ok(Value::Matrix(out))
        }
        other => Err(Answer::Bad(format!("unknown resultType {other:?}"))),
    }
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Makes the [`Source`] of a tenant.
pub type SourceFor = Arc<dyn Fn(Tenant) -> Arc<dyn Source> + Send + Sync>;

/// Evaluates with the PromQL engine over a local source, on the blocking
/// pool so that evaluation never holds an async worker.
pub struct EngineQuerier {
    engine: Engine,
    source_for: SourceFor,
}

impl EngineQuerier {
    pub fn new(engine: Engine, source_for: SourceFor) -> EngineQuerier {
        EngineQuerier { engine, source_for }
    }
}

impl Querier for EngineQuerier {
    fn query<'a>(
        &'a self,
        tenant: Tenant,
        query: &'a str,
        time: i64,
    ) -> BoxFuture<'a, Result<Value, QueryError>> {
        let engine = self.engine.clone();
        let source = (self.source_for)(tenant);
        let owned = query.to_string();
        Box::pin(async move {
            let failed = |message: String| QueryError::Failed {
                query: query.to_string(),
                message,
            };
            tokio::task::spawn_blocking(move || {
                engine.instant(source.as_ref(), &owned, time, &QueryOptions::default())
            })
            .await
            .map_err(|e| failed(e.to_string()))?
            .map(|r| r.value)
            .map_err(|e| failed(e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_answers() {
        let check = |text: &str, want: Value| match parse_answer(text) {
            Ok(got) => assert_eq!(got, want, "{text}"),
            Err(_) => panic!("{text} did not parse"),
        };
        check(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"b":"2","a":"1"},"value":[10.5,"3"]}]}}"#,
            Value::Vector(vec![Sample {
                labels: vec![Label::new("a", "1"), Label::new("b", "2")],
                t: 10_500,
                v: 3.0,
            }]),
        );
        check(
            r#"{"status":"success","data":{"resultType":"scalar","result":[1,"+Inf"]}}"#,
            Value::Scalar {
                t: 1000,
                v: f64::INFINITY,
            },
        );
        check(
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"],[2,"2"]]}]}}"#,
            Value::Matrix(vec![Series {
                labels: vec![],
                points: vec![Point { t: 1000, v: 1.0 }, Point { t: 2000, v: 2.0 }],
            }]),
        );
        assert!(matches!(
            parse_answer(r#"{"status":"error","error":"bad query"}"#),
            Err(Answer::Error(m)) if m == "bad query"
        ));
    }
}
