//! The client side: concurrent import of the prepared bodies, a timed scan
//! that only counts what an export returns, and an untimed check of an
//! export against what was sent.

use std::io::{BufRead, BufReader};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::CompareError;
use super::dataset::{Check, Dataset, ExportLine};
use super::peer::{MachineCpu, Peer};

/// Retries of one import answered 429 or 503 (the server asks to slow down).
const MAX_RETRIES: u32 = 100;
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How often the memory of the server is sampled during an import.
const RSS_SAMPLE: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, Debug, Default)]
pub struct Ingest {
    pub samples: u64,
    pub requests: u64,
    pub retries: u64,
    pub seconds: f64,
    pub cpu_seconds: f64,
    pub peak_rss: u64,
    pub busy: Busy,
}

/// How busy the machine was besides the measured server, in cores.
#[derive(Clone, Copy, Debug, Default)]
pub struct Busy {
    /// This process: the load generator or export reader.
    pub client_cores: f64,
    /// Everything else: the other server, other users of the machine.
    pub other_cores: f64,
}

impl Busy {
    fn between(
        before: Option<MachineCpu>,
        after: Option<MachineCpu>,
        server_cpu_seconds: f64,
        seconds: f64,
    ) -> Busy {
        match (before, after) {
            (Some(b), Some(a)) if seconds > 0.0 => {
                let client = a.own_seconds - b.own_seconds;
                let busy = a.busy_seconds - b.busy_seconds;
                Busy {
                    client_cores: client / seconds,
                    other_cores: ((busy - client - server_cpu_seconds) / seconds).max(0.0),
                }
            }
            _ => Busy::default(),
        }
    }
}

/// Sends every body once, from `senders` threads taking the next body in
/// turn, and measures the server meanwhile.
pub fn ingest(peer: &Peer, dataset: &Dataset, senders: usize) -> Result<Ingest, CompareError> {
    let next = AtomicUsize::new(0);
    let accepted = AtomicU64::new(0);
    let retries = AtomicU64::new(0);
    let failure: Mutex<Option<CompareError>> = Mutex::new(None);
    let peak_rss = AtomicU64::new(0);
    let url = peer.url("/api/v1/import");
    let before = peer.stats()?;
    let machine_before = MachineCpu::now();
    let started = Instant::now();
    let (stop_sampling, sampling_stopped) = mpsc::channel::<()>();
    let (seconds, after, machine_after) = std::thread::scope(|scope| {
        let peak = &peak_rss;
        let sampler = scope.spawn(move || {
            loop {
                if let Ok(stats) = peer.stats() {
                    peak.fetch_max(stats.rss_bytes, Ordering::Relaxed);
                }
                if !matches!(
                    sampling_stopped.recv_timeout(RSS_SAMPLE),
                    Err(RecvTimeoutError::Timeout)
                ) {
                    return;
                }
            }
        });
        let threads: Vec<_> = (0..senders)
            .map(|_| {
                scope.spawn(|| {
                    while let Some(body) = dataset.bodies.get(next.fetch_add(1, Ordering::Relaxed))
                    {
                        match send(peer, &url, body) {
                            Ok(tries) => {
                                accepted.fetch_add(body.samples, Ordering::Relaxed);
                                retries.fetch_add(u64::from(tries), Ordering::Relaxed);
                            }
                            Err(e) => {
                                // Stop every sender: the result would be wrong anyway.
                                next.store(usize::MAX / 2, Ordering::Relaxed);
                                failure
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .get_or_insert(e);
                                return;
                            }
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            let _ = thread.join();
        }
        // The import ends with the last response, not with the sampler.
        let end = (started.elapsed(), peer.stats(), MachineCpu::now());
        let _ = stop_sampling.send(());
        let _ = sampler.join();
        end
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let after = after?;
    let seconds = seconds.as_secs_f64();
    let cpu_seconds = after.cpu_seconds - before.cpu_seconds;
    Ok(Ingest {
        samples: accepted.into_inner(),
        requests: dataset.bodies.len() as u64,
        retries: retries.into_inner(),
        seconds,
        cpu_seconds,
        peak_rss: peak_rss.into_inner().max(after.rss_bytes),
        busy: Busy::between(machine_before, machine_after, cpu_seconds, seconds),
    })
}

/// One import; returns how many retries it took.
fn send(peer: &Peer, url: &str, body: &super::dataset::Body) -> Result<u32, CompareError> {
    let mut tries = 0;
    loop {
        let response = peer
            .client
            .post(url)
            .body(body.bytes.clone())
            .send()
            .map_err(|source| CompareError::Http {
                url: url.to_string(),
                source,
            })?;
        let status = response.status().as_u16();
        match status {
            200..=299 => return Ok(tries),
            429 | 503 if tries < MAX_RETRIES => {
                tries += 1;
                sleep(RETRY_PAUSE);
            }
            _ => {
                let text = response.text().unwrap_or_default();
                return Err(CompareError::Status {
                    url: url.to_string(),
                    status,
                    body: text.chars().take(500).collect(),
                });
            }
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Scan {
    pub lines: u64,
    pub samples: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub cpu_seconds: f64,
    pub busy: Busy,
}

/// The export request of every series over the range of the dataset.
fn export_url(peer: &Peer, dataset: &Dataset) -> String {
    let start = (dataset.first_ms.div_euclid(1000) - 1).to_string();
    let end = (dataset.last_ms.div_euclid(1000) + 1).to_string();
    let query = crate::encode_params(&[
        ("match[]", r#"{__name__=~".+"}"#),
        ("start", &start),
        ("end", &end),
    ]);
    peer.url(&format!("/api/v1/export?{query}"))
}

/// Exports everything and counts lines and samples, doing as little as
/// possible on the client so that the server's speed is what is measured.
pub fn scan(peer: &Peer, dataset: &Dataset) -> Result<Scan, CompareError> {
    let before = peer.stats()?;
    let machine_before = MachineCpu::now();
    let started = Instant::now();
    let mut scan = Scan::default();
    for_each_export_line(peer, dataset, |line| {
        scan.lines += 1;
        scan.bytes += line.len() as u64 + 1;
        scan.samples += count_timestamps(line).ok_or_else(|| {
            CompareError::Export(format!(
                "no timestamps array in {}",
                String::from_utf8_lossy(&line[..line.len().min(200)])
            ))
        })?;
        Ok(())
    })
    .map_err(|e| annotate(peer, e))?;
    scan.seconds = started.elapsed().as_secs_f64();
    scan.cpu_seconds = peer.stats()?.cpu_seconds - before.cpu_seconds;
    scan.busy = Busy::between(
        machine_before,
        MachineCpu::now(),
        scan.cpu_seconds,
        scan.seconds,
    );
    Ok(scan)
}

/// Exports everything and compares it with the dataset.
pub fn verify(peer: &Peer, dataset: &Dataset) -> Result<Check, CompareError> {
    let mut check = Check::default();
    for_each_export_line(peer, dataset, |line| {
        let parsed: ExportLine = serde_json::from_slice(line).map_err(|e| {
            CompareError::Export(format!(
                "line {} is not an export line ({e}): {}",
                check.lines + 1,
                String::from_utf8_lossy(&line[..line.len().min(200)])
            ))
        })?;
        check.lines += 1;
        check.samples += parsed.timestamps.len() as u64;
        if parsed.values.len() != parsed.timestamps.len() {
            return Err(CompareError::Export(format!(
                "line {} has {} values and {} timestamps",
                check.lines,
                parsed.values.len(),
                parsed.timestamps.len()
            )));
        }
        dataset.check_line(&parsed, &mut check);
        Ok(())
    })
    .map_err(|e| annotate(peer, e))?;
    dataset.finish_check(&mut check);
    Ok(check)
}

fn annotate(peer: &Peer, e: CompareError) -> CompareError {
    match e {
        CompareError::Export(what) => CompareError::Export(format!("{}: {what}", peer.kind.name())),
        other => other,
    }
}

fn for_each_export_line(
    peer: &Peer,
    dataset: &Dataset,
    mut f: impl FnMut(&[u8]) -> Result<(), CompareError>,
) -> Result<(), CompareError> {
    let url = export_url(peer, dataset);
    let response = peer
        .client
        .get(&url)
        .send()
        .map_err(|source| CompareError::Http {
            url: url.clone(),
            source,
        })?;
    let status = response.status().as_u16();
    if status != 200 {
        let body = response.text().unwrap_or_default();
        return Err(CompareError::Status { url, status, body });
    }
    let mut reader = BufReader::with_capacity(1 << 20, response);
    let mut line = Vec::with_capacity(1 << 16);
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| CompareError::Export(format!("reading {url}: {e}")))?;
        if n == 0 {
            return Ok(());
        }
        let content = line.strip_suffix(b"\n").unwrap_or(&line);
        if !content.is_empty() {
            f(content)?;
        }
    }
}

/// Elements of the `"timestamps":[...]` array of an export line: integers,
/// so commas separate them and nothing else.
fn count_timestamps(line: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"timestamps\":[";
    let start = line.windows(KEY.len()).rposition(|w| w == KEY)? + KEY.len();
    let rest = &line[start..];
    let end = rest.iter().position(|&b| b == b']')?;
    let array = &rest[..end];
    if array.iter().all(u8::is_ascii_whitespace) {
        return Some(0);
    }
    Some(array.iter().filter(|&&b| b == b',').count() as u64 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_counted_without_parsing() {
        let check = |line: &str, want: Option<u64>| {
            assert_eq!(count_timestamps(line.as_bytes()), want, "{line}");
        };
        check(
            r#"{"metric":{"a":"x,y"},"values":[1,2,3],"timestamps":[1,2,3]}"#,
            Some(3),
        );
        check(r#"{"metric":{},"values":[1],"timestamps":[7]}"#, Some(1));
        check(r#"{"metric":{},"values":[],"timestamps":[]}"#, Some(0));
        check(r#"{"metric":{},"values":[1]}"#, None);
    }
}
