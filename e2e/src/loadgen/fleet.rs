//! The simulated node_exporter fleet: host slots, churn, and the scrapes
//! each sender turns into requests.
//!
//! The fleet has `hosts` slots. A slot holds one host at a time; churn
//! replaces `round(churn × hosts)` slots every `churn_every_points` scrapes,
//! walking the slots round robin, so a replaced host's series stop and a new
//! host's series (a new `instance`) start at the same scrape. Slot `s` holds
//! host id `s + generation × hosts`, where `generation` counts its
//! replacements so far; values come from
//! `strata_storage::encoding::synthetic::NodeExporter`, seeded per host id,
//! so the data depends only on the configuration, not on how slots are
//! spread over senders.

use strata_storage::encoding::synthetic::{HostScrapes, NodeExporter};

use super::encode::{BodyBuilder, EncodeError, encode_labels};

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("host id of slot {slot} after {generation} replacements does not fit in 32 bits")]
    HostId { slot: u32, generation: u64 },
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// What the fleet looks like.
#[derive(Clone, Debug)]
pub struct FleetShape {
    /// Host slots (about 459 series each).
    pub hosts: u32,
    pub interval_ms: i64,
    /// Timestamp of the first scrape (each host adds its phase).
    pub start_ms: i64,
    pub seed: u64,
    /// Fraction of the slots replaced at each churn event, 0 to 1.
    pub churn: f64,
    /// Scrapes between churn events; 0 means no churn.
    pub churn_every_points: u64,
}

impl FleetShape {
    /// Slots replaced per churn event.
    pub fn churned_per_event(&self) -> u64 {
        if self.churn_every_points == 0 {
            return 0;
        }
        (self.churn.clamp(0.0, 1.0) * f64::from(self.hosts)).round() as u64
    }

    /// Replacements of `slot` after the churn events up to the one before
    /// scrape `point`: events replace the ranges `[(e-1)m, em)` of slots
    /// modulo `hosts`, so slot `s` was covered once for each `x < E·m` with
    /// `x mod hosts = s`.
    pub fn generation(&self, slot: u32, point: u64) -> u64 {
        let per_event = self.churned_per_event();
        if per_event == 0 || self.hosts == 0 {
            return 0;
        }
        let covered = (point / self.churn_every_points) * per_event;
        let slot = u64::from(slot);
        if covered > slot {
            (covered - slot - 1) / u64::from(self.hosts) + 1
        } else {
            0
        }
    }

    fn host_id(&self, slot: u32, generation: u64) -> Result<u32, FleetError> {
        generation
            .checked_mul(u64::from(self.hosts))
            .and_then(|g| g.checked_add(u64::from(slot)))
            .and_then(|id| u32::try_from(id).ok())
            .ok_or(FleetError::HostId { slot, generation })
    }

    /// Series per host (every host has the same families).
    pub fn series_per_host() -> u64 {
        NodeExporter {
            hosts: 1,
            points: 0,
            ..NodeExporter::default()
        }
        .scrapes(0)
        .series_count() as u64
    }
}

/// One host in a slot: encoded labels and the state of its values.
struct Slot {
    slot: u32,
    generation: u64,
    /// Encoded labels of every series, one after the other.
    labels: Vec<u8>,
    /// End of each series' labels in `labels`.
    ends: Vec<u32>,
    scrapes: HostScrapes,
}

impl Slot {
    fn new(shape: &FleetShape, slot: u32, generation: u64, point: u64) -> Result<Slot, FleetError> {
        let id = shape.host_id(slot, generation)?;
        let generator = NodeExporter {
            hosts: shape.hosts,
            // Any count above 1: rates are per interval.
            points: 2,
            interval_ms: shape.interval_ms,
            // A host that arrives late starts at the fleet's current scrape.
            start_ms: shape.start_ms + point as i64 * shape.interval_ms,
            seed: shape.seed,
        };
        let mut scrapes = generator.scrapes(id);
        let series = std::mem::take(&mut scrapes.labels);
        let mut labels = Vec::with_capacity(series.len() * 128);
        let mut ends = Vec::with_capacity(series.len());
        for s in &series {
            encode_labels(s, &mut labels)?;
            ends.push(labels.len() as u32);
        }
        Ok(Slot {
            slot,
            generation,
            labels,
            ends,
            scrapes,
        })
    }
}

/// The slots one sender owns (`slot % shards == shard`), scraped in turn.
pub struct Shard {
    shape: FleetShape,
    slots: Vec<Slot>,
    values: Vec<f64>,
    /// The scrape under way.
    point: u64,
    /// Next slot (index into `slots`) to scrape at `point`.
    next_slot: usize,
    /// Series started so far, churn included.
    pub series_created: u64,
}

impl Shard {
    pub fn new(shape: &FleetShape, shard: u32, shards: u32) -> Result<Shard, FleetError> {
        let slots = (0..shape.hosts)
            .filter(|s| s % shards.max(1) == shard)
            .map(|s| Slot::new(shape, s, 0, 0))
            .collect::<Result<Vec<_>, _>>()?;
        let series_created = slots.iter().map(|s| s.ends.len() as u64).sum();
        Ok(Shard {
            shape: shape.clone(),
            slots,
            values: Vec::new(),
            point: 0,
            next_slot: 0,
            series_created,
        })
    }

    /// Series active now.
    pub fn active_series(&self) -> u64 {
        self.slots.iter().map(|s| s.ends.len() as u64).sum()
    }

    /// The scrape under way (0-based); all scrapes before it are sent.
    pub fn point(&self) -> u64 {
        self.point
    }

    /// Scrapes hosts into `body` until it holds at least `batch` samples or
    /// scrape `end_point` would start. Hosts are scraped whole, so a body
    /// may exceed `batch` by up to a host's series. Returns false once
    /// `end_point` is reached.
    pub fn fill(
        &mut self,
        body: &mut BodyBuilder,
        batch: u64,
        end_point: u64,
    ) -> Result<bool, FleetError> {
        while body.samples() < batch {
            if self.point >= end_point {
                return Ok(false);
            }
            if self.slots.is_empty() {
                self.point = end_point;
                return Ok(false);
            }
            if self.next_slot == 0 {
                self.churn()?;
            }
            let slot = &mut self.slots[self.next_slot];
            let t = slot.scrapes.next_timestamp();
            slot.scrapes.scrape(&mut self.values);
            let mut start = 0;
            for (&end, &v) in slot.ends.iter().zip(&self.values) {
                body.push(&slot.labels[start..end as usize], t, v)?;
                start = end as usize;
            }
            self.next_slot += 1;
            if self.next_slot == self.slots.len() {
                self.next_slot = 0;
                self.point += 1;
            }
        }
        Ok(self.point < end_point)
    }

    /// Replaces the slots that a churn event before `point` replaced.
    fn churn(&mut self) -> Result<(), FleetError> {
        if self.point == 0 || self.shape.churned_per_event() == 0 {
            return Ok(());
        }
        if !self.point.is_multiple_of(self.shape.churn_every_points) {
            return Ok(());
        }
        for i in 0..self.slots.len() {
            let slot = self.slots[i].slot;
            let generation = self.shape.generation(slot, self.point);
            if generation != self.slots[i].generation {
                let new = Slot::new(&self.shape, slot, generation, self.point)?;
                self.series_created += new.ends.len() as u64;
                self.slots[i] = new;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use prost::Message;
    use strata_insert::remotewrite::proto::WriteRequest;

    use super::*;

    fn shape(hosts: u32, churn: f64, every: u64) -> FleetShape {
        FleetShape {
            hosts,
            interval_ms: 15_000,
            start_ms: 1_700_000_000_000,
            seed: 7,
            churn,
            churn_every_points: every,
        }
    }

    /// Every sample the shards send over `points` scrapes, decoded:
    /// series key -> [(timestamp, value)], in sending order.
    fn run(shape: &FleetShape, shards: u32, points: u64, batch: u64) -> SentSeries {
        let mut sent = SentSeries::new();
        let mut builder = BodyBuilder::new();
        for shard in 0..shards {
            let mut shard = Shard::new(shape, shard, shards).expect("shard");
            loop {
                let more = shard.fill(&mut builder, batch, points).expect("fill");
                let body = builder.finish().expect("finish");
                let raw = snap::raw::Decoder::new()
                    .decompress_vec(&body.bytes)
                    .expect("snappy");
                let request = WriteRequest::decode(raw.as_slice()).expect("decode");
                assert_eq!(request.timeseries.len() as u64, body.samples);
                for ts in request.timeseries {
                    let key: Vec<String> = ts
                        .labels
                        .iter()
                        .map(|l| format!("{}={}", l.name, l.value))
                        .collect();
                    let entry = sent.entry(key.join(",")).or_default();
                    for s in ts.samples {
                        entry.push((s.timestamp, s.value));
                    }
                }
                if !more {
                    break;
                }
            }
        }
        sent
    }

    type SentSeries = BTreeMap<String, Vec<(i64, f64)>>;

    fn instances(sent: &SentSeries) -> BTreeSet<String> {
        sent.keys()
            .filter_map(|k| k.split(',').find_map(|l| l.strip_prefix("instance=")))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn series_count_is_hosts_times_families() {
        let per_host = FleetShape::series_per_host();
        assert!(per_host > 400, "{per_host} series per host");
        let sent = run(&shape(5, 0.0, 0), 2, 3, 1000);
        assert_eq!(sent.len() as u64, 5 * per_host);
        assert!(sent.values().all(|samples| samples.len() == 3));
        assert_eq!(instances(&sent).len(), 5);
    }

    #[test]
    fn counters_only_grow_and_timestamps_advance_by_the_interval() {
        let sent = run(&shape(3, 0.0, 0), 1, 20, 500);
        let mut counters = 0;
        for (key, samples) in &sent {
            for pair in samples.windows(2) {
                assert_eq!(pair[1].0 - pair[0].0, 15_000, "{key}");
            }
            if key.contains("_total,") {
                counters += 1;
                for pair in samples.windows(2) {
                    assert!(pair[1].1 >= pair[0].1, "{key}: {pair:?}");
                }
            }
        }
        assert!(counters > 100, "{counters} counters");
        // Gauges wander: some series take more than one value.
        let moving = sent
            .values()
            .filter(|s| s.iter().any(|x| x.1 != s[0].1))
            .count();
        assert!(moving > sent.len() / 3, "{moving} of {} move", sent.len());
    }

    #[test]
    fn churn_replaces_a_fraction_of_hosts_every_n_points() {
        // 10 slots, 3 replaced every 4 scrapes, 12 scrapes: events before
        // scrapes 4 and 8 replace slots 0-2 and 3-5.
        let shape = shape(10, 0.3, 4);
        let per_host = FleetShape::series_per_host();
        let sent = run(&shape, 3, 12, 700);
        let hosts = instances(&sent);
        assert_eq!(hosts.len(), 16, "{hosts:?}");
        assert_eq!(sent.len() as u64, 16 * per_host);
        for (key, samples) in &sent {
            let id: u32 = key
                .split(',')
                .find_map(|l| l.strip_prefix("instance=host-"))
                .and_then(|i| i.split(':').next())
                .and_then(|i| i.parse().ok())
                .expect("instance");
            let want = match id {
                0..=2 => 4,   // replaced before scrape 4
                3..=5 => 8,   // replaced before scrape 8
                6..=9 => 12,  // never replaced
                10..=12 => 8, // from scrape 4
                13..=15 => 4, // from scrape 8
                _ => panic!("unexpected host {id}"),
            };
            assert_eq!(samples.len(), want, "{key}");
        }
        // A new host's first sample is at its first scrape.
        let first = sent
            .iter()
            .find(|(k, _)| k.contains("host-0010:"))
            .map(|(_, s)| s[0].0)
            .expect("host 10");
        let old = sent
            .iter()
            .find(|(k, _)| k.contains("host-0000:"))
            .map(|(_, s)| s[0].0)
            .expect("host 0");
        assert_eq!(first - old, 4 * 15_000 + 10 * 7919 % 15_000);
        // Generations follow the closed form.
        assert_eq!(shape.generation(0, 3), 0);
        assert_eq!(shape.generation(0, 4), 1);
        assert_eq!(shape.generation(3, 8), 1);
        assert_eq!(shape.generation(9, 16), 1);
        assert_eq!(shape.generation(0, 16), 2);
    }

    #[test]
    fn same_seed_same_requests_whatever_the_senders() {
        let a = run(&shape(6, 0.5, 2), 1, 6, 300);
        let b = run(&shape(6, 0.5, 2), 4, 6, 1000);
        assert_eq!(a.len(), b.len());
        for ((ka, sa), (kb, sb)) in a.iter().zip(&b) {
            assert_eq!(ka, kb);
            let bits =
                |s: &Vec<(i64, f64)>| s.iter().map(|x| (x.0, x.1.to_bits())).collect::<Vec<_>>();
            assert_eq!(bits(sa), bits(sb), "{ka}");
        }
        let mut other = shape(6, 0.5, 2);
        other.seed = 8;
        let c = run(&other, 1, 6, 300);
        assert_eq!(a.keys().collect::<Vec<_>>(), c.keys().collect::<Vec<_>>());
        assert_ne!(a, c, "another seed gives other values");
    }
}
