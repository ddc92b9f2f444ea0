//! Guards the byte layout documented in the `rpc` module: fixed inputs,
//! fixed bytes. A failure here means the wire format changed: update the
//! module doc and raise `PROTOCOL_VERSION` along with these bytes.

use super::frame::{FLAG_ZSTD, Hello, Kind, encode_frame};
use super::messages::{self, Method, Request};
use crate::cluster::{KeyedSeries, NodeError, NodeStatus, SeriesQuery};
use crate::{
    AddOutcome, Cardinality, Label, MatchOp, Matcher, RejectReason, Rejection, Sample, SeriesData,
    SeriesSamples, Tenant, TimeRange,
};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn check(what: &str, bytes: &[u8], want: &str) {
    assert_eq!(
        hex(bytes),
        want.replace(' ', ""),
        "layout of {what} changed"
    );
}

fn query() -> SeriesQuery {
    SeriesQuery {
        tenant: Tenant::new(3, 1),
        matchers: vec![
            Matcher::eq("__name__", "up"),
            Matcher::new(MatchOp::RegexNoMatch, "job", "a.*").expect("regex"),
        ],
        range: TimeRange::new(-2, 1000),
        limit: 5,
    }
}

fn request(req: Request, timeout_ms: u32) -> Vec<u8> {
    let mut body = messages::encode_request(&req);
    messages::set_timeout(&mut body, timeout_ms);
    body
}

#[test]
fn handshake_and_frame_header() {
    let hello = Hello {
        version: 1,
        max_frame_bytes: 65536,
        max_in_flight: 64,
    };
    check("hello", &hello.encode(), "53525043 0001 00010000 0040");
    let frame =
        encode_frame(Kind::Request(Method::Status), 7, &[0, 0, 0, 100], 1 << 20).expect("frame");
    check("frame", &frame, "0000000a 09 00 00000007 00000064");
    let kinds: Vec<u8> = Method::ALL
        .into_iter()
        .map(|m| Kind::Request(m).to_u8())
        .chain(
            [
                Kind::Credit,
                Kind::Cancel,
                Kind::Reply,
                Kind::Batch,
                Kind::Error,
                Kind::GoAway,
            ]
            .map(Kind::to_u8),
        )
        .collect();
    check("kinds", &kinds, "010203040506070809 0a 2021 40414243");
    let compressed = encode_frame(Kind::Batch, 1, &[7u8; 4096], 1 << 20).expect("frame");
    assert_eq!(compressed[4..10], [0x41, FLAG_ZSTD, 0, 0, 0, 1]);
    // A zstd frame: its magic number, little-endian.
    assert_eq!(compressed[10..14], [0x28, 0xb5, 0x2f, 0xfd]);
}

#[test]
fn request_bodies() {
    check(
        "search",
        &request(
            Request::Search {
                query: query(),
                credit: 4,
                ordered: false,
            },
            1500,
        ),
        "000005dc 03 01 02 00 085f5f6e616d655f5f 027570 03 036a6f62 03612e2a 03 d00f 05 04",
    );
    let ordered = Request::Search {
        query: query(),
        credit: 4,
        ordered: true,
    };
    assert_eq!(ordered.method(), Method::SearchOrdered);
    check(
        "search_ordered",
        &request(ordered, 1500),
        "000005dc 03 01 02 00 085f5f6e616d655f5f 027570 03 036a6f62 03612e2a 03 d00f 05 04",
    );
    check(
        "series",
        &request(Request::Series(query()), 1),
        "00000001 0301 02 00085f5f6e616d655f5f027570 03036a6f6203612e2a 03d00f 05",
    );
    check(
        "label_values",
        &request(
            Request::LabelValues {
                name: "job".into(),
                query: query(),
            },
            1,
        ),
        "00000001 0301 02 00085f5f6e616d655f5f027570 03036a6f6203612e2a 03d00f 05 036a6f62",
    );
    check(
        "cardinality",
        &request(
            Request::Cardinality {
                tenant: Tenant::new(200, 0),
                range: TimeRange::new(0, 1),
                limit: 10,
            },
            1,
        ),
        "00000001 c801 00 00 02 0a",
    );
    check(
        "delete_series",
        &request(
            Request::DeleteSeries {
                tenant: Tenant::new(1, 2),
                matchers: vec![Matcher::eq("a", "b")],
            },
            1,
        ),
        "00000001 01 02 01 00 0161 0162",
    );
    check(
        "tenants",
        &request(
            Request::Tenants {
                range: TimeRange::new(-1, 1),
            },
            1,
        ),
        "00000001 01 02",
    );
    check("status", &request(Request::Status, 2), "00000002");
    let rows = vec![SeriesSamples {
        labels: vec![Label::new("__name__", "up")],
        samples: vec![
            Sample::new(1000, 1.0),
            Sample::new(16_000, 1.0),
            Sample::new(31_000, 0.5),
        ],
    }];
    let (bodies, largest) = messages::encode_write(Tenant::new(1, 0), &rows, 1 << 20);
    let mut body = bodies.into_iter().next().expect("one body");
    messages::set_timeout(&mut body, 1);
    check(
        "write",
        &body,
        // tenant | 1 series | labels | 3 samples: t0 1000, +15000, dod 0 |
        // values: 1.0, same, 1.0^0.5 (bit-reversed varints)
        "00000001 01 00 01 01 085f5f6e616d655f5f 027570 03 d00f b0ea01 00 fc1f 00 8010",
    );
    assert_eq!(largest, 25);
}

#[test]
fn reply_bodies() {
    let outcome = AddOutcome {
        accepted: 300,
        rejected: 2,
        rejected_by_reason: vec![(RejectReason::TooOld, 1), (RejectReason::EmptyLabels, 1)],
        first_rejection: Some(Rejection {
            reason: RejectReason::TooOld,
            series: "x{}".into(),
            timestamp: -5,
        }),
    };
    check(
        "write reply",
        &messages::encode_outcome(&outcome),
        "ac02 02 02 0101 0301 01 03787b7d 09",
    );
    check(
        "write reply without rejection",
        &messages::encode_outcome(&AddOutcome {
            accepted: 1,
            ..AddOutcome::default()
        }),
        "01 00 00 00",
    );
    check(
        "series reply",
        &messages::encode_label_sets(&[vec![Label::new("a", "b")], vec![]]),
        "02 01 0161 0162 00",
    );
    check(
        "strings reply",
        &messages::encode_strings(&["a".into(), "".into()]),
        "02 0161 00",
    );
    let cardinality = Cardinality {
        total_series: 3,
        series_by_metric_name: vec![("up".into(), 3)],
        values_by_label_name: vec![],
        series_by_label_pair: vec![("a=b".into(), 2)],
    };
    check(
        "cardinality reply",
        &messages::encode_cardinality(&cardinality),
        "03 01 02757003 00 01 03613d6202",
    );
    check("delete reply", &messages::encode_count(130), "8201");
    check(
        "tenants reply",
        &messages::encode_tenants(&[Tenant::new(1, 0), Tenant::new(2, 3)]),
        "02 0100 0203",
    );
    let status = NodeStatus {
        read_only: true,
        read_only_reason: "low".into(),
        series: 10,
        free_disk_bytes: 1,
        version: "0.1".into(),
    };
    check(
        "status reply",
        &messages::encode_status(&status),
        "01 036c6f77 0a 01 03302e31",
    );
    let batch = [SeriesData {
        labels: vec![Label::new("a", "b")],
        timestamps: vec![5, 3],
        values: vec![2.0, 2.0],
    }];
    check(
        "search batch",
        &messages::encode_batch(&batch),
        "01 01 0161 0162 02 0a 03 02 00",
    );
    let keyed = [KeyedSeries::new(
        0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
        batch[0].labels.clone(),
        batch[0].timestamps.clone(),
        batch[0].values.clone(),
    )];
    check(
        "ordered search batch",
        &messages::encode_keyed_batch(&keyed),
        "01 0102030405060708090a0b0c0d0e0f10 01 0161 0162 02 0a 03 02 00",
    );
    assert_eq!(
        messages::decode_keyed_batch(&messages::encode_keyed_batch(&keyed)).expect("decodes"),
        keyed
    );
    check("credit", &messages::encode_credit(1), "01");
    let error = NodeError::ReadOnly {
        addr: "ignored".into(),
        reason: "disk".into(),
    };
    check("error", &messages::encode_error(&error), "03 046469736b");
    let deadline = NodeError::DeadlineExceeded {
        addr: "ignored".into(),
    };
    check(
        "deadline error",
        &messages::encode_error(&deadline),
        "02 00",
    );
}

#[test]
fn requests_decode_to_what_was_encoded() {
    let rows = vec![SeriesSamples {
        labels: vec![Label::new("__name__", "up"), Label::new("job", "x")],
        samples: vec![Sample::new(-7, f64::NAN), Sample::new(i64::MAX, -0.0)],
    }];
    let requests = [
        Request::Write {
            tenant: Tenant::new(1, 2),
            rows,
        },
        Request::Search {
            query: query(),
            credit: 9,
            ordered: false,
        },
        Request::Search {
            query: query(),
            credit: 2,
            ordered: true,
        },
        Request::Series(query()),
        Request::LabelNames(query()),
        Request::LabelValues {
            name: "job".into(),
            query: query(),
        },
        Request::Cardinality {
            tenant: Tenant::new(4, 4),
            range: TimeRange::ALL,
            limit: 0,
        },
        Request::DeleteSeries {
            tenant: Tenant::new(0, 9),
            matchers: query().matchers,
        },
        Request::Tenants {
            range: TimeRange::new(5, 6),
        },
        Request::Status,
    ];
    for req in requests {
        let body = request(req.clone(), 77);
        let (timeout, got) = messages::decode_request(req.method(), &body).expect("decodes");
        assert_eq!(timeout, 77);
        // NaN != NaN: compare the printed form, which shows NaN as NaN.
        assert_eq!(format!("{got:?}"), format!("{req:?}"));
    }
}
