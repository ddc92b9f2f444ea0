//! Bodies of the frames of each call: requests, replies, search batches,
//! errors (layouts in the `rpc` module doc).

use super::codec::{CodecError, Reader, put_labels, put_samples, put_str, put_uvarint, put_varint};
use crate::cluster::{KeyedSeries, NodeError, NodeStatus, SeriesQuery};
use crate::types::{MatchOp, Matcher, MatcherError, Sample, Tenant, TimeRange};
use crate::{AddOutcome, Cardinality, Label, RejectReason, Rejection, SeriesData, SeriesSamples};

/// The calls of [`crate::cluster::Node`]; the value is the request frame's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Method {
    Write = 0x01,
    Search = 0x02,
    Series = 0x03,
    LabelNames = 0x04,
    LabelValues = 0x05,
    Cardinality = 0x06,
    DeleteSeries = 0x07,
    Tenants = 0x08,
    Status = 0x09,
    /// Since protocol version 2.
    SearchOrdered = 0x0a,
}

impl Method {
    pub const ALL: [Method; 10] = [
        Method::Write,
        Method::Search,
        Method::Series,
        Method::LabelNames,
        Method::LabelValues,
        Method::Cardinality,
        Method::DeleteSeries,
        Method::Tenants,
        Method::Status,
        Method::SearchOrdered,
    ];

    pub fn from_u8(b: u8) -> Option<Method> {
        Method::ALL.into_iter().find(|m| *m as u8 == b)
    }

    /// The `method` label of the RPC metrics.
    pub fn name(self) -> &'static str {
        match self {
            Method::Write => "write",
            Method::Search => "search",
            Method::Series => "series",
            Method::LabelNames => "label_names",
            Method::LabelValues => "label_values",
            Method::Cardinality => "cardinality",
            Method::DeleteSeries => "delete_series",
            Method::Tenants => "tenants",
            Method::Status => "status",
            Method::SearchOrdered => "search_ordered",
        }
    }

    /// Whether the call's result streams in batches.
    pub fn is_stream(self) -> bool {
        matches!(self, Method::Search | Method::SearchOrdered)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Matcher(#[from] MatcherError),
}

/// A decoded call, as the server runs it.
#[derive(Clone, Debug)]
pub enum Request {
    Write {
        tenant: Tenant,
        rows: Vec<SeriesSamples>,
    },
    /// `credit`: batches the server may send before the client grants more.
    /// `ordered`: in key order, each series with its key
    /// ([`Method::SearchOrdered`]).
    Search {
        query: SeriesQuery,
        credit: u32,
        ordered: bool,
    },
    Series(SeriesQuery),
    LabelNames(SeriesQuery),
    LabelValues {
        name: String,
        query: SeriesQuery,
    },
    Cardinality {
        tenant: Tenant,
        range: TimeRange,
        limit: usize,
    },
    DeleteSeries {
        tenant: Tenant,
        matchers: Vec<Matcher>,
    },
    Tenants {
        range: TimeRange,
    },
    Status,
}

/// Bytes of the timeout that starts every request body.
pub const TIMEOUT_BYTES: usize = 4;

/// A request body with a zero timeout, to be set by [`set_timeout`] when
/// the body is sent (a write split in several frames sends them in turn).
fn request_body() -> Vec<u8> {
    vec![0; TIMEOUT_BYTES]
}

/// Milliseconds the server has for the call, counted from when it reads it.
pub fn set_timeout(body: &mut [u8], timeout_ms: u32) {
    body[..TIMEOUT_BYTES].copy_from_slice(&timeout_ms.to_be_bytes());
}

fn put_tenant(out: &mut Vec<u8>, t: Tenant) {
    put_uvarint(out, u64::from(t.account_id));
    put_uvarint(out, u64::from(t.project_id));
}

fn put_range(out: &mut Vec<u8>, r: TimeRange) {
    put_varint(out, r.start);
    put_varint(out, r.end);
}

fn op_code(op: MatchOp) -> u8 {
    match op {
        MatchOp::Equal => 0,
        MatchOp::NotEqual => 1,
        MatchOp::RegexMatch => 2,
        MatchOp::RegexNoMatch => 3,
    }
}

fn put_matchers(out: &mut Vec<u8>, matchers: &[Matcher]) {
    put_uvarint(out, matchers.len() as u64);
    for m in matchers {
        out.push(op_code(m.op));
        put_str(out, &m.name);
        put_str(out, &m.value);
    }
}

fn put_query(out: &mut Vec<u8>, q: &SeriesQuery) {
    put_tenant(out, q.tenant);
    put_matchers(out, &q.matchers);
    put_range(out, q.range);
    put_uvarint(out, q.limit as u64);
}

/// One series of a write: labels, samples.
pub fn put_series_samples(out: &mut Vec<u8>, s: &SeriesSamples) {
    put_labels(out, &s.labels);
    put_samples(
        out,
        s.samples.len(),
        s.samples.iter().map(|x| x.timestamp),
        s.samples.iter().map(|x| x.value),
    );
}

/// Write bodies of `rows`, each at most `max_body` bytes where a row fits:
/// a large write travels as several calls (duplicates collapse in storage,
/// so replaying a partly stored write is harmless). Returns the bodies and
/// the size of the largest single row (the caller refuses rows over the limit).
pub fn encode_write(
    tenant: Tenant,
    rows: &[SeriesSamples],
    max_body: usize,
) -> (Vec<Vec<u8>>, usize) {
    let start = |out: &mut Vec<u8>| {
        *out = request_body();
        put_tenant(out, tenant);
    };
    let mut bodies = Vec::new();
    let mut body = Vec::new();
    start(&mut body);
    let mut chunk = Vec::new();
    let mut count = 0u64;
    let mut largest = 0;
    let mut row = Vec::new();
    for s in rows {
        row.clear();
        put_series_samples(&mut row, s);
        largest = largest.max(row.len());
        // A count takes at most 10 bytes.
        if count > 0 && body.len() + 10 + chunk.len() + row.len() > max_body {
            put_uvarint(&mut body, count);
            body.append(&mut chunk);
            bodies.push(std::mem::take(&mut body));
            start(&mut body);
            count = 0;
        }
        chunk.extend_from_slice(&row);
        count += 1;
    }
    put_uvarint(&mut body, count);
    body.append(&mut chunk);
    bodies.push(body);
    (bodies, largest)
}

/// Body of every request but write.
pub fn encode_request(req: &Request) -> Vec<u8> {
    let mut out = request_body();
    match req {
        Request::Write { tenant, rows } => {
            put_tenant(&mut out, *tenant);
            put_uvarint(&mut out, rows.len() as u64);
            for s in rows {
                put_series_samples(&mut out, s);
            }
        }
        Request::Search { query, credit, .. } => {
            put_query(&mut out, query);
            put_uvarint(&mut out, u64::from(*credit));
        }
        Request::Series(q) | Request::LabelNames(q) => put_query(&mut out, q),
        Request::LabelValues { name, query } => {
            put_query(&mut out, query);
            put_str(&mut out, name);
        }
        Request::Cardinality {
            tenant,
            range,
            limit,
        } => {
            put_tenant(&mut out, *tenant);
            put_range(&mut out, *range);
            put_uvarint(&mut out, *limit as u64);
        }
        Request::DeleteSeries { tenant, matchers } => {
            put_tenant(&mut out, *tenant);
            put_matchers(&mut out, matchers);
        }
        Request::Tenants { range } => put_range(&mut out, *range),
        Request::Status => {}
    }
    out
}

impl Request {
    pub fn method(&self) -> Method {
        match self {
            Request::Write { .. } => Method::Write,
            Request::Search { ordered: false, .. } => Method::Search,
            Request::Search { ordered: true, .. } => Method::SearchOrdered,
            Request::Series(_) => Method::Series,
            Request::LabelNames(_) => Method::LabelNames,
            Request::LabelValues { .. } => Method::LabelValues,
            Request::Cardinality { .. } => Method::Cardinality,
            Request::DeleteSeries { .. } => Method::DeleteSeries,
            Request::Tenants { .. } => Method::Tenants,
            Request::Status => Method::Status,
        }
    }
}

fn tenant(r: &mut Reader<'_>) -> Result<Tenant, CodecError> {
    Ok(Tenant::new(r.u32()?, r.u32()?))
}

fn range(r: &mut Reader<'_>) -> Result<TimeRange, CodecError> {
    Ok(TimeRange::new(r.varint()?, r.varint()?))
}

fn usize_of(r: &mut Reader<'_>) -> Result<usize, CodecError> {
    let v = r.uvarint()?;
    usize::try_from(v).map_err(|_| r.error("value does not fit usize"))
}

fn matchers(r: &mut Reader<'_>) -> Result<Vec<Matcher>, MessageError> {
    let n = r.count(3)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let op = match r.u8()? {
            0 => MatchOp::Equal,
            1 => MatchOp::NotEqual,
            2 => MatchOp::RegexMatch,
            3 => MatchOp::RegexNoMatch,
            _ => return Err(r.error("unknown matcher operator").into()),
        };
        let name = r.string()?;
        let value = r.string()?;
        out.push(Matcher::new(op, name, value)?);
    }
    Ok(out)
}

fn query(r: &mut Reader<'_>) -> Result<SeriesQuery, MessageError> {
    Ok(SeriesQuery {
        tenant: tenant(r)?,
        matchers: matchers(r)?,
        range: range(r)?,
        limit: usize_of(r)?,
    })
}

/// Decodes a request body: the timeout in milliseconds and the call.
pub fn decode_request(method: Method, body: &[u8]) -> Result<(u32, Request), MessageError> {
    let mut r = Reader::new(body);
    let t = r.bytes(TIMEOUT_BYTES)?;
    let timeout_ms = u32::from_be_bytes([t[0], t[1], t[2], t[3]]);
    let req = match method {
        Method::Write => {
            let tenant = tenant(&mut r)?;
            let n = r.count(3)?;
            let mut rows = Vec::with_capacity(n);
            let (mut ts, mut vs) = (Vec::new(), Vec::new());
            for _ in 0..n {
                let labels = r.labels()?;
                ts.clear();
                vs.clear();
                r.samples(&mut ts, &mut vs)?;
                let samples = ts
                    .iter()
                    .zip(&vs)
                    .map(|(t, v)| Sample::new(*t, *v))
                    .collect();
                rows.push(SeriesSamples { labels, samples });
            }
            Request::Write { tenant, rows }
        }
        Method::Search | Method::SearchOrdered => Request::Search {
            query: query(&mut r)?,
            credit: r.u32()?,
            ordered: method == Method::SearchOrdered,
        },
        Method::Series => Request::Series(query(&mut r)?),
        Method::LabelNames => Request::LabelNames(query(&mut r)?),
        Method::LabelValues => {
            let query = query(&mut r)?;
            Request::LabelValues {
                name: r.string()?,
                query,
            }
        }
        Method::Cardinality => Request::Cardinality {
            tenant: tenant(&mut r)?,
            range: range(&mut r)?,
            limit: usize_of(&mut r)?,
        },
        Method::DeleteSeries => Request::DeleteSeries {
            tenant: tenant(&mut r)?,
            matchers: matchers(&mut r)?,
        },
        Method::Tenants => Request::Tenants {
            range: range(&mut r)?,
        },
        Method::Status => Request::Status,
    };
    r.finish()?;
    Ok((timeout_ms, req))
}

fn reason_code(reason: RejectReason) -> u8 {
    match reason {
        RejectReason::TooOld => 1,
        RejectReason::TooNew => 2,
        RejectReason::EmptyLabels => 3,
    }
}

fn reason_of(r: &Reader<'_>, code: u8) -> Result<RejectReason, CodecError> {
    Ok(match code {
        1 => RejectReason::TooOld,
        2 => RejectReason::TooNew,
        3 => RejectReason::EmptyLabels,
        _ => return Err(r.error("unknown reject reason")),
    })
}

pub fn encode_outcome(o: &AddOutcome) -> Vec<u8> {
    let mut out = Vec::new();
    put_uvarint(&mut out, o.accepted);
    put_uvarint(&mut out, o.rejected);
    put_uvarint(&mut out, o.rejected_by_reason.len() as u64);
    for (reason, n) in &o.rejected_by_reason {
        out.push(reason_code(*reason));
        put_uvarint(&mut out, *n);
    }
    match &o.first_rejection {
        None => out.push(0),
        Some(rej) => {
            out.push(reason_code(rej.reason));
            put_str(&mut out, &rej.series);
            put_varint(&mut out, rej.timestamp);
        }
    }
    out
}

pub fn decode_outcome(body: &[u8]) -> Result<AddOutcome, CodecError> {
    let mut r = Reader::new(body);
    let accepted = r.uvarint()?;
    let rejected = r.uvarint()?;
    let n = r.count(2)?;
    let mut rejected_by_reason = Vec::with_capacity(n);
    for _ in 0..n {
        let code = r.u8()?;
        rejected_by_reason.push((reason_of(&r, code)?, r.uvarint()?));
    }
    let first_rejection = match r.u8()? {
        0 => None,
        code => Some(Rejection {
            reason: reason_of(&r, code)?,
            series: r.string()?,
            timestamp: r.varint()?,
        }),
    };
    r.finish()?;
    Ok(AddOutcome {
        accepted,
        rejected,
        rejected_by_reason,
        first_rejection,
    })
}

pub fn encode_label_sets(sets: &[Vec<Label>]) -> Vec<u8> {
    let mut out = Vec::new();
    put_uvarint(&mut out, sets.len() as u64);
    for labels in sets {
        put_labels(&mut out, labels);
    }
    out
}

pub fn decode_label_sets(body: &[u8]) -> Result<Vec<Vec<Label>>, CodecError> {
    let mut r = Reader::new(body);
    let n = r.count(1)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(r.labels()?);
    }
    r.finish()?;
    Ok(out)
}

pub fn encode_strings(strings: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    put_uvarint(&mut out, strings.len() as u64);
    for s in strings {
        put_str(&mut out, s);
    }
    out
}

pub fn decode_strings(body: &[u8]) -> Result<Vec<String>, CodecError> {
    let mut r = Reader::new(body);
    let n = r.count(1)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(r.string()?);
    }
    r.finish()?;
    Ok(out)
}

fn put_counts(out: &mut Vec<u8>, list: &[(String, u64)]) {
    put_uvarint(out, list.len() as u64);
    for (name, n) in list {
        put_str(out, name);
        put_uvarint(out, *n);
    }
}

fn counts(r: &mut Reader<'_>) -> Result<Vec<(String, u64)>, CodecError> {
    let n = r.count(2)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push((r.string()?, r.uvarint()?));
    }
    Ok(out)
}

pub fn encode_cardinality(c: &Cardinality) -> Vec<u8> {
    let mut out = Vec::new();
    put_uvarint(&mut out, c.total_series);
    put_counts(&mut out, &c.series_by_metric_name);
    put_counts(&mut out, &c.values_by_label_name);
    put_counts(&mut out, &c.series_by_label_pair);
    out
}

pub fn decode_cardinality(body: &[u8]) -> Result<Cardinality, CodecError> {
    let mut r = Reader::new(body);
    let c = Cardinality {
        total_series: r.uvarint()?,
        series_by_metric_name: counts(&mut r)?,
        values_by_label_name: counts(&mut r)?,
        series_by_label_pair: counts(&mut r)?,
    };
    r.finish()?;
    Ok(c)
}

pub fn encode_count(n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_uvarint(&mut out, n);
    out
}

pub fn decode_count(body: &[u8]) -> Result<u64, CodecError> {
    let mut r = Reader::new(body);
    let n = r.uvarint()?;
    r.finish()?;
    Ok(n)
}

pub fn encode_tenants(tenants: &[Tenant]) -> Vec<u8> {
    let mut out = Vec::new();
    put_uvarint(&mut out, tenants.len() as u64);
    for t in tenants {
        put_tenant(&mut out, *t);
    }
    out
}

pub fn decode_tenants(body: &[u8]) -> Result<Vec<Tenant>, CodecError> {
    let mut r = Reader::new(body);
    let n = r.count(2)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(tenant(&mut r)?);
    }
    r.finish()?;
    Ok(out)
}

pub fn encode_status(s: &NodeStatus) -> Vec<u8> {
    let mut out = vec![u8::from(s.read_only)];
    put_str(&mut out, &s.read_only_reason);
    put_uvarint(&mut out, s.series);
    put_uvarint(&mut out, s.free_disk_bytes);
    put_str(&mut out, &s.version);
    out
}

pub fn decode_status(body: &[u8]) -> Result<NodeStatus, CodecError> {
    let mut r = Reader::new(body);
    let s = NodeStatus {
        read_only: r.u8()? != 0,
        read_only_reason: r.string()?,
        series: r.uvarint()?,
        free_disk_bytes: r.uvarint()?,
        version: r.string()?,
    };
    r.finish()?;
    Ok(s)
}

/// Appends one series of a search batch.
pub fn put_series_data(out: &mut Vec<u8>, s: &SeriesData) {
    put_series_parts(out, &s.labels, &s.timestamps, &s.values);
}

/// [`put_series_data`] of a series' parts.
pub fn put_series_parts(out: &mut Vec<u8>, labels: &[Label], timestamps: &[i64], values: &[f64]) {
    put_labels(out, labels);
    put_samples(
        out,
        timestamps.len(),
        timestamps.iter().copied(),
        values.iter().copied(),
    );
}

/// A search batch body: a count, then the series.
pub fn encode_batch(series: &[SeriesData]) -> Vec<u8> {
    let mut out = Vec::new();
    put_uvarint(&mut out, series.len() as u64);
    for s in series {
        put_series_data(&mut out, s);
    }
    out
}

pub fn decode_batch(body: &[u8]) -> Result<Vec<SeriesData>, CodecError> {
    let mut r = Reader::new(body);
    let n = r.count(2)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(series_data(&mut r)?);
    }
    r.finish()?;
    Ok(out)
}

fn series_data(r: &mut Reader<'_>) -> Result<SeriesData, CodecError> {
    let labels = r.labels()?;
    let (mut timestamps, mut values) = (Vec::new(), Vec::new());
    r.samples(&mut timestamps, &mut values)?;
    Ok(SeriesData {
        labels,
        timestamps,
        values,
    })
}

/// Appends one series of an ordered search batch: its key, then as
/// [`put_series_data`].
pub fn put_keyed_series(out: &mut Vec<u8>, s: &KeyedSeries) {
    out.extend_from_slice(&s.key().to_be_bytes());
    put_series_parts(out, s.labels(), &s.timestamps, &s.values);
}

/// An ordered search batch body: a count, then the keyed series.
pub fn encode_keyed_batch(series: &[KeyedSeries]) -> Vec<u8> {
    let mut out = Vec::new();
    put_uvarint(&mut out, series.len() as u64);
    for s in series {
        put_keyed_series(&mut out, s);
    }
    out
}

pub fn decode_keyed_batch(body: &[u8]) -> Result<Vec<KeyedSeries>, CodecError> {
    let mut r = Reader::new(body);
    // A key and a series without labels or samples take 18 bytes.
    let n = r.count(18)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let key = r.bytes(16)?;
        let key = u128::from_be_bytes(key.try_into().map_err(|_| r.error("short key"))?);
        let s = series_data(&mut r)?;
        out.push(KeyedSeries::new(key, s.labels, s.timestamps, s.values));
    }
    r.finish()?;
    Ok(out)
}

pub fn encode_credit(n: u32) -> Vec<u8> {
    encode_count(u64::from(n))
}

pub fn decode_credit(body: &[u8]) -> Result<u32, CodecError> {
    let mut r = Reader::new(body);
    let n = r.u32()?;
    r.finish()?;
    Ok(n)
}

/// Error kinds on the wire; the client names its own node address.
const ERR_UNAVAILABLE: u8 = 1;
const ERR_DEADLINE: u8 = 2;
const ERR_READ_ONLY: u8 = 3;
const ERR_REMOTE: u8 = 4;
const ERR_PROTOCOL: u8 = 5;

/// An error frame body: the kind and its text (without the node address).
pub fn encode_error(e: &NodeError) -> Vec<u8> {
    let (code, text) = match e {
        NodeError::Unavailable { detail, .. } => (ERR_UNAVAILABLE, detail.as_str()),
        NodeError::DeadlineExceeded { .. } => (ERR_DEADLINE, ""),
        NodeError::ReadOnly { reason, .. } => (ERR_READ_ONLY, reason.as_str()),
        NodeError::Remote { message, .. } => (ERR_REMOTE, message.as_str()),
        NodeError::Protocol { detail, .. } => (ERR_PROTOCOL, detail.as_str()),
    };
    let mut out = vec![code];
    put_str(&mut out, text);
    out
}

/// The error an error frame carries, attributed to the node at `addr`.
pub fn decode_error(addr: &str, body: &[u8]) -> Result<NodeError, CodecError> {
    let mut r = Reader::new(body);
    let code = r.u8()?;
    let text = r.string()?;
    r.finish()?;
    let addr = addr.to_string();
    Ok(match code {
        ERR_UNAVAILABLE => NodeError::Unavailable { addr, detail: text },
        ERR_DEADLINE => NodeError::DeadlineExceeded { addr },
        ERR_READ_ONLY => NodeError::ReadOnly { addr, reason: text },
        ERR_REMOTE => NodeError::Remote {
            addr,
            message: text,
        },
        ERR_PROTOCOL => NodeError::Protocol { addr, detail: text },
        _ => {
            return Err(CodecError {
                at: 0,
                what: "unknown error kind",
            });
        }
    })
}
