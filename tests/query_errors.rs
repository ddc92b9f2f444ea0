//! Errors of malformed queries against the real thing: each query of the
//! table goes to Prometheus and to `strata single`, as an instant and as a
//! range query, and the answers must have the same HTTP status and
//! `errorType` and, unless the table says why not, the same message, which
//! starts with the `line:column` of the fault (`invalid parameter "query":
//! 1:4: parse error: unexpected <op:+>`).
//!
//! Needs `prometheus` (installed by `scripts/fetch-peers prometheus`, which
//! the test command runs); `STRATA_SKIP_PEER_TESTS=1` skips it with a
//! message.

use serde_json::Value;
use strata_e2e::peers::{self, Peer};
use strata_e2e::{Single, encode_params};

/// How much of Prometheus' message Strata's must repeat.
enum Same {
    /// The whole message.
    Message,
    /// The `line:column:` prefix, not the words after it; the reason.
    Position(&'static str),
    /// Neither; the reason. Status and `errorType` still must agree.
    Neither(&'static str),
}

const CASES: &[(&str, Same)] = &[
    ("foo(up)", Same::Message),
    ("sum(rate(up[5m])", Same::Message),
    ("up)", Same::Message),
    ("rate(up[5x])", Same::Message),
    ("1 +", Same::Message),
    ("sum(", Same::Message),
    ("up $ 1", Same::Message),
    ("", Same::Message),
    // Errors on a later line: the line counts, the column restarts.
    ("up\n  + foo(up)", Same::Message),
    ("rate(up[5m])\n  / on(job) group_left\n  (", Same::Message),
    ("sum(\n  rate(up[5m])\n  + \n)", Same::Message),
    ("rate(up[5m], 1)", Same::Message),
    ("histogram_quantile(0.9)", Same::Message),
    ("rate(up)", Same::Message),
    ("abs(\"x\")", Same::Message),
    ("\"abc\" + 1", Same::Message),
    ("up @ foo", Same::Message),
    ("up offset", Same::Message),
    ("up[5m 1]", Same::Message),
    // A range without a unit, which the parser library takes as seconds.
    ("rate(up[1])", Same::Message),
    ("up[ 10 ]", Same::Message),
    ("sum by (a) (up) without (b)", Same::Message),
    ("up{a=\"b\" c=\"d\"}", Same::Message),
    ("sum(up[5m])", Same::Message),
    ("topk(up)", Same::Message),
    ("(up)[5m]", Same::Message),
    ("1 < 2", Same::Message),
    ("\"unterminated", Same::Message),
    (
        "{a=~\"(\"}",
        Same::Position("regex errors are worded by Rust's regex library, not Go's"),
    ),
    (
        "{a=\"\\xff\"} $",
        Same::Neither(
            "a label value that is not UTF-8 stops the search for the error's place, and \
             the parser's own message has no place",
        ),
    ),
];

/// Status and JSON body of a GET.
fn ask(base_url: &str, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
    let url = format!("{base_url}{path}?{}", encode_params(params));
    let (status, body) = peers::http_get(&url);
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("GET {url}: body is not JSON ({e}): {body}"));
    (status, json)
}

const PARAMETER: &str = "invalid parameter \"query\": ";

/// The message without the parameter's name. Prometheus 2.42 names it in
/// `query`'s parse errors but not yet in `query_range`'s; later releases
/// (2.53, which Strata follows) name it in both.
fn without_parameter(error: &str) -> &str {
    error.strip_prefix(PARAMETER).unwrap_or(error)
}

/// `1:4` of `[invalid parameter "query": ]1:4: parse error: ...`.
fn position(error: &str) -> Option<&str> {
    let (position, _) = without_parameter(error).split_once(": parse error: ")?;
    Some(position)
}

#[test]
fn query_errors_equal_prometheus() {
    if !peers::present_or_skip("query_errors_equal_prometheus", &["prometheus"]) {
        return;
    }
    let strata = Single::start(env!("CARGO_BIN_EXE_strata"));
    let prometheus: Peer = peers::prometheus("scrape_configs: []\n", &[]);
    let endpoints: [(&str, &[(&str, &str)]); 2] = [
        ("/api/v1/query", &[("time", "1000")]),
        (
            "/api/v1/query_range",
            &[("start", "1000"), ("end", "1060"), ("step", "15")],
        ),
    ];
    let mut differences = Vec::new();
    let mut placed = 0;
    for (query, same) in CASES {
        for (path, extra) in endpoints {
            let mut params = vec![("query", *query)];
            params.extend_from_slice(extra);
            let (want_status, want) = ask(&prometheus.base_url(), path, &params);
            let (got_status, got) = ask(&strata.base_url(), path, &params);
            assert_eq!(
                want_status, 400,
                "Prometheus must refuse {query:?} for the table to mean anything: {want}"
            );
            let mut want_error = want["error"].as_str().unwrap_or_default();
            let got_error = got["error"].as_str().unwrap_or_default();
            assert!(
                got_error.starts_with(PARAMETER),
                "{path} {query:?}: Strata must name the parameter: {got_error}"
            );
            if !want_error.starts_with(PARAMETER) {
                want_error = without_parameter(want_error);
            }
            let got_error = if want_error.starts_with(PARAMETER) {
                got_error
            } else {
                without_parameter(got_error)
            };
            let agrees = want_status == got_status
                && want["errorType"] == got["errorType"]
                && match same {
                    Same::Message => want_error == got_error,
                    Same::Position(_) => {
                        position(want_error).is_some()
                            && position(want_error) == position(got_error)
                    }
                    Same::Neither(_) => true,
                };
            if position(got_error).is_some() {
                placed += 1;
            }
            if !agrees {
                differences.push(format!(
                    "{path} {query:?}\n  prometheus: {want_status} {want}\n  strata:     \
                     {got_status} {got}"
                ));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "{} answers differ:\n{}",
        differences.len(),
        differences.join("\n")
    );
    eprintln!(
        "{} refusals agree with Prometheus'; {placed} of them placed",
        CASES.len() * endpoints.len()
    );
    for (query, same) in CASES {
        match same {
            Same::Message => {}
            Same::Position(why) => eprintln!("{query:?}: same place, other words: {why}"),
            Same::Neither(why) => eprintln!("{query:?}: not placed: {why}"),
        }
    }
}
