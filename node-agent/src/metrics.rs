//! The agent's Prometheus metrics, in one registry served on the admin port.
//!
//! Names follow Prometheus conventions (`_total` counters, `_bytes` sizes,
//! `_seconds` histograms) so `promtool check metrics` accepts the output; the
//! operator's tuner and the Helm chart's alerts query exactly these names.

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The `slicecache_slices_total` series, one per result.
#[derive(Debug)]
pub struct SliceCounters {
    pub hit_memory: IntCounter,
    pub hit_disk: IntCounter,
    pub miss: IntCounter,
    pub coalesced: IntCounter,
}

/// The fetch windows' metrics (see the `window` module).
#[derive(Clone, Debug)]
pub struct WindowMetrics {
    /// Bytes of slices ahead held from the budget now.
    pub ahead_bytes: IntGauge,
    /// Slice fetches ahead that waited because the budget was spent.
    pub budget_waits: IntCounter,
    /// Window growths (one per round-trip-bound slice).
    pub grows: IntCounter,
    /// The window each response that fetched ahead ended with.
    pub slices: Histogram,
}

/// Every metric the agent exports.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub client_bytes: IntCounter,
    pub client_sendfile_bytes: IntCounter,
    pub client_sendfile_waits: IntCounter,
    pub origin_bytes: IntCounter,
    pub origin_requests: IntCounterVec,
    pub origin_retries: IntCounter,
    pub slices: IntCounterVec,
    /// `slices` children resolved once: they move on every slice.
    pub slice_counters: SliceCounters,
    pub client_ttfb: Histogram,
    pub origin_ttfb: Histogram,
    pub slice_fetch_duration: Histogram,
    pub queue_wait: Histogram,
    pub lookahead_waits: IntCounter,
    pub subrequests_in_flight: IntGauge,
    /// The fetch windows' metrics (see the `window` module).
    pub window: WindowMetrics,
    pub window_budget: IntGauge,
    pub memory_used: IntGauge,
    pub memory_capacity: IntGauge,
    /// Set from the arena's count at each scrape.
    pub memory_spilled: IntCounter,
    pub slice_size: IntGauge,
    pub concurrency: IntGauge,
    pub config_reloads: IntCounterVec,
    pub purges: IntCounterVec,
    pub purge_refusals: IntCounterVec,
    pub object_changes: IntCounter,
    pub object_invalidations: IntCounter,
    pub promotions: IntCounter,
    /// Slices from fleet peers offered to the hot set, by whether its
    /// admission gate took them (`admitted`, `rejected`).
    pub hot_set_puts: IntCounterVec,
    pub client_connections: IntGauge,
    pub client_cuts: IntCounterVec,
    pub rejected_requests: IntCounterVec,
}

fn latency_buckets() -> Vec<f64> {
    // 100µs .. ~52s
    exponential_buckets(0.0001, 2.0, 20).unwrap_or_default()
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let histogram = |name: &str, help: &str| -> Result<Histogram, prometheus::Error> {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(latency_buckets()))?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
        let slices = counter_vec(
            "slicecache_slices_total",
            "Slices served, by result: hit (memory or disk), miss (fetched) or coalesced (joined an in-flight fetch).",
            &["result", "tier"],
        )?;
        let slice_counters = SliceCounters {
            hit_memory: slices.with_label_values(&["hit", "memory"]),
            hit_disk: slices.with_label_values(&["hit", "disk"]),
            miss: slices.with_label_values(&["miss", "origin"]),
            coalesced: slices.with_label_values(&["coalesced", "origin"]),
        };
        Ok(Self {
            slices,
            slice_counters,
            requests: counter_vec(
                "slicecache_requests_total",
                "Client requests by method and response status.",
                &["method", "status"],
            )?,
            client_bytes: counter("slicecache_client_bytes_total", "Body bytes sent to clients.")?,
            client_sendfile_bytes: counter(
                "slicecache_client_sendfile_bytes_total",
                "Body bytes sent to clients with sendfile from the memory tier (part of slicecache_client_bytes_total).",
            )?,
            client_sendfile_waits: counter(
                "slicecache_client_sendfile_waits_total",
                "Responses sent with sendfile whose client socket filled up, so that the agent waited for the client to read.",
            )?,
            origin_bytes: counter("slicecache_origin_bytes_total", "Body bytes received from the origin.")?,
            origin_requests: counter_vec(
                "slicecache_origin_requests_total",
                "Origin subrequests by response status (or error kind).",
                &["status"],
            )?,
            origin_retries: counter(
                "slicecache_origin_retries_total",
                "Slice fetches retried after an origin failure.",
            )?,
            client_ttfb: histogram(
                "slicecache_client_ttfb_seconds",
                "Time from request to response header sent.",
            )?,
            origin_ttfb: histogram(
                "slicecache_origin_ttfb_seconds",
                "Time from origin subrequest to its response header.",
            )?,
            slice_fetch_duration: histogram(
                "slicecache_slice_fetch_duration_seconds",
                "Time to fetch one slice from the origin.",
            )?,
            queue_wait: histogram(
                "slicecache_subrequest_queue_wait_seconds",
                "Time a slice fetch waited for an origin subrequest slot.",
            )?,
            lookahead_waits: counter(
                "slicecache_lookahead_waits_total",
                "Slices not in memory whose lookup waited for a look-ahead slot: their request spanned more slices than concurrency fetches at once.",
            )?,
            subrequests_in_flight: gauge(
                "slicecache_origin_subrequests_in_flight",
                "Origin subrequests in flight.",
            )?,
            window: WindowMetrics {
                ahead_bytes: gauge(
                    "slicecache_fetch_ahead_bytes",
                    "Bytes of slices fetched ahead of the ones being sent, held from the fetch-ahead budget.",
                )?,
                budget_waits: counter(
                    "slicecache_fetch_ahead_budget_waits_total",
                    "Slices not fetched ahead yet because the agent-wide fetch-ahead budget was spent.",
                )?,
                grows: counter(
                    "slicecache_fetch_window_grows_total",
                    "Fetch windows grown by one slice because the origin's round trip bounded a slice.",
                )?,
                slices: {
                    let h = Histogram::with_opts(
                        HistogramOpts::new(
                            "slicecache_fetch_window_slices",
                            "The fetch window that responses whose window grew ended with, in slices.",
                        )
                        .buckets(exponential_buckets(1.0, 2.0, 8).unwrap_or_default()),
                    )?;
                    registry.register(Box::new(h.clone()))?;
                    h
                },
            },
            window_budget: gauge(
                "slicecache_fetch_ahead_budget_bytes",
                "The agent-wide budget for slices fetched ahead (a quarter of the memory tier).",
            )?,
            memory_used: gauge(
                "slicecache_memory_used_bytes",
                "Bytes of slices held in the memory tier.",
            )?,
            memory_capacity: gauge("slicecache_memory_capacity_bytes", "Capacity of the memory tier.")?,
            memory_spilled: counter(
                "slicecache_memory_spilled_extents_total",
                "Slices stored in base pages because no populated huge-page block of the memory arena was ready.",
            )?,
            slice_size: gauge("slicecache_slice_size_bytes", "Slice size in force.")?,
            concurrency: gauge(
                "slicecache_concurrency",
                "Origin subrequests per client request in force.",
            )?,
            config_reloads: counter_vec(
                "slicecache_config_reloads_total",
                "Config file reloads by result.",
                &["result"],
            )?,
            purges: counter_vec(
                "slicecache_purges_total",
                "Purge requests by kind (url, prefix).",
                &["kind"],
            )?,
            purge_refusals: counter_vec(
                "slicecache_purge_refusals_total",
                "Purge requests refused, by reason: disabled, no_token, bad_token.",
                &["reason"],
            )?,
            object_changes: counter(
                "slicecache_object_changes_total",
                "Objects found changed at the origin while being served or revalidated.",
            )?,
            object_invalidations: counter(
                "slicecache_object_invalidations_total",
                "Cached object versions dropped because a new version replaced them.",
            )?,
            promotions: counter(
                "slicecache_promotions_total",
                "Disk-tier hits admitted into the memory tier.",
            )?,
            hot_set_puts: counter_vec(
                "slicecache_hot_set_puts_total",
                "Slices fetched from fleet peers offered to the hot set, by whether its admission gate took them.",
                &["result"],
            )?,
            client_connections: gauge(
                "slicecache_client_connections",
                "Client connections open now.",
            )?,
            client_cuts: counter_vec(
                "slicecache_client_connections_closed_total",
                "Client connections the agent refused or cut, by reason: global_limit, per_ip_limit, header_timeout, idle_timeout, send_timeout.",
                &["reason"],
            )?,
            rejected_requests: counter_vec(
                "slicecache_client_requests_rejected_total",
                "Client requests answered 400, 414 or 431 before any cache work, by reason.",
                &["reason"],
            )?,
            registry,
        })
    }

    /// Counts one slice served by `result` (`hit`, `miss`, `coalesced`) and
    /// `tier` (`memory`, `disk`, `origin`).
    pub fn count_slice(&self, result: &str, tier: &str) {
        let c = &self.slice_counters;
        match (result, tier) {
            ("hit", "memory") => c.hit_memory.inc(),
            ("hit", _) => c.hit_disk.inc(),
            ("coalesced", _) => c.coalesced.inc(),
            _ => c.miss.inc(),
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}
