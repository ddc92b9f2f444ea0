//! Where rule expressions are evaluated: a Prometheus-compatible HTTP API
//! (`strata alert`) or the PromQL engine in the same process (`strata single`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use strata_select::promql::{Engine, Point, QueryOptions, Sample, Series, Value};
use strata_select::source::Source;
use strata_storage::{Label, METRIC_NAME_LABEL, Matcher, STALE_NAN_BITS, Tenant, TimeRange};

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

/// The newest raw sample of one series: a staleness marker counts (its
/// value is the staleness NaN), unlike in query results.
#[derive(Clone, Debug, PartialEq)]
pub struct Newest {
    /// The series' labels without `__name__`.
    pub labels: Vec<Label>,
    pub t: i64,
    pub v: f64,
}

/// How far back the datasource's instant queries look for a sample (its
/// lookback delta; Prometheus' and Strata's default).
pub const DATASOURCE_LOOKBACK_MS: i64 = 5 * 60 * 1000;

/// Runs instant queries for one tenant at one time (ms).
pub trait Querier: Send + Sync {
    fn query<'a>(
        &'a self,
        tenant: Tenant,
        query: &'a str,
        time: i64,
    ) -> BoxFuture<'a, Result<Value, QueryError>>;

    /// The newest raw sample of every series matching `matchers` in
    /// `[end - window, end]`.
    ///
    /// Query results hide staleness markers, so this default works them out
    /// with two kinds of query: a range selector gives each series' newest
    /// non-stale sample at `t`; an instant selector at `min(end, t +
    /// lookback - 1ms)` shows the series again unless a staleness marker
    /// came after `t` (instant selectors stop at one), and the series is
    /// reported stale. A marker more than the datasource's lookback after
    /// the sample is not seen this way (only groups with an interval of 5m
    /// or more write one that late); a datasource with a shorter lookback
    /// reports series stale that are not (restore then errs towards waiting
    /// the full `for`). Queriers with raw access override it.
    fn newest_samples<'a>(
        &'a self,
        tenant: Tenant,
        matchers: &'a [Matcher],
        end: i64,
        window: Duration,
    ) -> BoxFuture<'a, Result<Vec<Newest>, QueryError>> {
        Box::pin(async move {
            let selector = selector(matchers);
            let range = format!("{selector}[{}ms]", window.as_millis().max(1));
            let newest: Vec<Newest> = match self.query(tenant, &range, end).await? {
                Value::Matrix(series) => series
                    .into_iter()
                    .filter_map(|s| {
                        let p = s.points.last()?;
                        Some(Newest {
                            labels: without_name(s.labels),
                            t: p.t,
                            v: p.v,
                        })
                    })
                    .collect(),
                other => {
                    return Err(QueryError::Failed {
                        query: range,
                        message: format!("answer is a {}, not a matrix", other.type_name()),
                    });
                }
            };
            let mut probes: Vec<i64> = newest
                .iter()
                .map(|n| end.min(n.t + DATASOURCE_LOOKBACK_MS - 1))
                .collect();
            probes.sort_unstable();
            probes.dedup();
            let mut visible: std::collections::HashSet<(i64, Vec<Label>)> = Default::default();
            for probe in probes {
                if let Value::Vector(samples) = self.query(tenant, &selector, probe).await? {
                    visible.extend(samples.into_iter().map(|s| (probe, without_name(s.labels))));
                }
            }
            Ok(newest
                .into_iter()
                .map(|mut n| {
                    let probe = end.min(n.t + DATASOURCE_LOOKBACK_MS - 1);
                    if !visible.contains(&(probe, n.labels.clone())) {
                        n.v = f64::from_bits(STALE_NAN_BITS);
                    }
                    n
                })
                .collect())
        })
    }
}

fn without_name(mut labels: Vec<Label>) -> Vec<Label> {
    labels.retain(|l| l.name != METRIC_NAME_LABEL);
    labels
}

/// `{name="value",...}` in PromQL, values quoted as PromQL reads them.
pub fn selector(matchers: &[Matcher]) -> String {
    let inner: Vec<String> = matchers
        .iter()
        .map(|m| format!("{}{}{}", m.name, m.op, promql_string(&m.value)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// `s` as a double-quoted PromQL string literal.
pub fn promql_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
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

    /// Reads the samples themselves, staleness markers included.
    fn newest_samples<'a>(
        &'a self,
        tenant: Tenant,
        matchers: &'a [Matcher],
        end: i64,
        window: Duration,
    ) -> BoxFuture<'a, Result<Vec<Newest>, QueryError>> {
        let source = (self.source_for)(tenant);
        let owned = matchers.to_vec();
        let start = end.saturating_sub(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
        // The same bound a query of this engine gets.
        let deadline = std::time::Instant::now() + self.engine.options.timeout;
        Box::pin(async move {
            let failed = |message: String| QueryError::Failed {
                query: selector(matchers),
                message,
            };
            tokio::task::spawn_blocking(move || {
                let selected = source
                    .select(&owned, TimeRange::new(start, end), deadline)
                    .map_err(|e| e.to_string())?;
                let mut out = Vec::new();
                for series in selected.series {
                    let series = series.map_err(|e| e.to_string())?;
                    if let (Some(&t), Some(&v)) = (series.timestamps.last(), series.values.last()) {
                        out.push(Newest {
                            labels: without_name(series.labels),
                            t,
                            v,
                        });
                    }
                }
                Ok(out)
            })
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(failed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A selector built from matchers reads back as the same matchers.
    #[test]
    fn selectors_round_trip() {
        use strata_storage::MatchOp;
        for value in [
            "A",
            "a\"b",
            "back\\slash",
            "new\nline\ttab",
            "\u{1}ctl",
            "ünï",
        ] {
            let matchers = vec![
                Matcher::new(MatchOp::Equal, "__name__", "ALERTS_FOR_STATE").expect("matcher"),
                Matcher::new(MatchOp::Equal, "alertname", value).expect("matcher"),
            ];
            let text = selector(&matchers);
            let parsed = strata_select::selector::parse_series_selector(&text)
                .unwrap_or_else(|e| panic!("{text}: {e}"));
            let got: Vec<(String, String)> = parsed[0]
                .iter()
                .map(|m| (m.name.clone(), m.value.clone()))
                .collect();
            let want: Vec<(String, String)> = matchers
                .iter()
                .map(|m| (m.name.clone(), m.value.clone()))
                .collect();
            assert_eq!(got, want, "{text}");
        }
    }

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
