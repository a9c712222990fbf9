//! Prometheus metrics of one disk store.
//!
//! Operators size devices and judge eviction from these, and the tuner reads
//! them, so names follow Prometheus conventions (`_total`, `_bytes`,
//! `_seconds`) and carry a `device` label: an agent may run several stores.

use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, IntGauge, Opts, Registry};

const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Metric handles; clones share the underlying values.
#[derive(Clone, Debug)]
pub struct DiskMetrics {
    pub capacity_bytes: IntGauge,
    pub used_bytes: IntGauge,
    pub free_bytes: IntGauge,
    pub entries: IntGauge,
    pub hits: IntCounter,
    pub misses: IntCounter,
    pub put_bytes: IntCounter,
    pub puts_rejected: IntCounter,
    pub device_written_bytes: IntCounter,
    pub region_reclaims: IntCounter,
    pub reinsertions: IntCounter,
    pub reinserted_bytes: IntCounter,
    pub checksum_failures: IntCounter,
    pub io_errors: IntCounter,
    pub recovery_torn_entries: IntCounter,
    pub recovery_duration_seconds: Gauge,
    pub read_duration_seconds: Histogram,
    pub write_duration_seconds: Histogram,
    pub writes_in_flight: IntGauge,
}

impl DiskMetrics {
    /// Creates the metrics, labelled `device=<device>`, without registering.
    pub fn new(device: &str) -> Result<Self, prometheus::Error> {
        let opts =
            |name: &str, help: &str| Opts::new(format!("slicecache_disk_{name}"), help).const_label("device", device);
        let hist = |name: &str, help: &str| {
            HistogramOpts::new(format!("slicecache_disk_{name}"), help)
                .const_label("device", device)
                .buckets(LATENCY_BUCKETS.to_vec())
        };
        Ok(Self {
            capacity_bytes: IntGauge::with_opts(opts("capacity_bytes", "Bytes of the device usable for entries."))?,
            used_bytes: IntGauge::with_opts(opts("used_bytes", "Bytes of live entries (headers, payload, padding)."))?,
            free_bytes: IntGauge::with_opts(opts(
                "free_bytes",
                "Bytes not yet written: free regions plus the rest of the write head.",
            ))?,
            entries: IntGauge::with_opts(opts("entries", "Live entries in the index (extents and metadata)."))?,
            hits: IntCounter::with_opts(opts("hits_total", "Reads that returned verified bytes."))?,
            misses: IntCounter::with_opts(opts("misses_total", "Reads that returned nothing."))?,
            put_bytes: IntCounter::with_opts(opts("put_bytes_total", "Payload bytes accepted by put and put_meta."))?,
            puts_rejected: IntCounter::with_opts(opts(
                "puts_rejected_total",
                "Puts dropped because the entry does not fit in a region.",
            ))?,
            device_written_bytes: IntCounter::with_opts(opts(
                "device_written_bytes_total",
                "Bytes written to the device's data regions, including reinsertions and rewritten tail blocks.",
            ))?,
            region_reclaims: IntCounter::with_opts(opts(
                "region_reclaims_total",
                "Regions reclaimed (FIFO eviction).",
            ))?,
            reinsertions: IntCounter::with_opts(opts(
                "reinsertions_total",
                "Recently read entries rewritten at the head when their region was reclaimed.",
            ))?,
            reinserted_bytes: IntCounter::with_opts(opts(
                "reinserted_bytes_total",
                "Payload bytes rewritten by reinsertion.",
            ))?,
            checksum_failures: IntCounter::with_opts(opts(
                "checksum_failures_total",
                "Reads whose header or payload failed verification (served as misses).",
            ))?,
            io_errors: IntCounter::with_opts(opts("io_errors_total", "Device reads or writes that failed."))?,
            recovery_torn_entries: IntCounter::with_opts(opts(
                "recovery_torn_entries_total",
                "Torn or corrupt entries dropped while rebuilding the index.",
            ))?,
            recovery_duration_seconds: Gauge::with_opts(opts(
                "recovery_duration_seconds",
                "Time the last open spent loading the checkpoint or scanning regions.",
            ))?,
            read_duration_seconds: Histogram::with_opts(hist(
                "read_duration_seconds",
                "Latency of device reads of one entry.",
            ))?,
            write_duration_seconds: Histogram::with_opts(hist(
                "write_duration_seconds",
                "Latency of device writes (region flushes).",
            ))?,
            writes_in_flight: IntGauge::with_opts(opts(
                "writes_in_flight",
                "Device writes submitted and not yet returned (reads proceed meanwhile).",
            ))?,
        })
    }

    /// Registers every metric on `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.capacity_bytes.clone()))?;
        registry.register(Box::new(self.used_bytes.clone()))?;
        registry.register(Box::new(self.free_bytes.clone()))?;
        registry.register(Box::new(self.entries.clone()))?;
        registry.register(Box::new(self.hits.clone()))?;
        registry.register(Box::new(self.misses.clone()))?;
        registry.register(Box::new(self.put_bytes.clone()))?;
        registry.register(Box::new(self.puts_rejected.clone()))?;
        registry.register(Box::new(self.device_written_bytes.clone()))?;
        registry.register(Box::new(self.region_reclaims.clone()))?;
        registry.register(Box::new(self.reinsertions.clone()))?;
        registry.register(Box::new(self.reinserted_bytes.clone()))?;
        registry.register(Box::new(self.checksum_failures.clone()))?;
        registry.register(Box::new(self.io_errors.clone()))?;
        registry.register(Box::new(self.recovery_torn_entries.clone()))?;
        registry.register(Box::new(self.recovery_duration_seconds.clone()))?;
        registry.register(Box::new(self.read_duration_seconds.clone()))?;
        registry.register(Box::new(self.write_duration_seconds.clone()))?;
        registry.register(Box::new(self.writes_in_flight.clone()))?;
        Ok(())
    }
}
