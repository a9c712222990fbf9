//! Every PromQL query the tuner runs, in one place, and the signals they yield.
//!
//! Each signal is one instant query over the agents of one SliceCache,
//! aggregated across agents (`sum` of rates, quantiles over summed buckets)
//! because all agents of a SliceCache share one slice size and concurrency.
//! `W` below is the rate window (the tuning interval) and `SEL` the label
//! matchers that pick the SliceCache's agents (see [`Selector`]).
//!
//! | signal | PromQL | meaning |
//! |---|---|---|
//! | `hitRatio` | `sum(rate(slicecache_slices_total{SEL,result="hit"}[W])) / sum(rate(slicecache_slices_total{SEL}[W]))` | slices served from memory or disk; coalesced count as misses |
//! | `originAmplification` | `sum(rate(slicecache_origin_bytes_total{SEL}[W])) / (sum(rate(slicecache_client_bytes_total{SEL}[W])) * MISS)` with `MISS = sum(rate(slicecache_slices_total{SEL,result="miss"}[W])) / sum(rate(slicecache_slices_total{SEL}[W]))` | origin bytes per client byte served from misses |
//! | `originTtfbP50`, `originTtfbP90` | `histogram_quantile(q, sum by (le) (rate(slicecache_origin_ttfb_seconds_bucket{SEL}[W])))` | origin subrequest to response header |
//! | `subrequestThroughput` | `sum(rate(slicecache_origin_bytes_total{SEL}[W])) / sum(rate(slicecache_slice_fetch_duration_seconds_sum{SEL}[W]))` | origin bytes per second of slice fetch time: the speed of one subrequest |
//! | `ttfbShare` | `sum(rate(slicecache_origin_ttfb_seconds_sum{SEL}[W])) / sum(rate(slicecache_slice_fetch_duration_seconds_sum{SEL}[W]))` | share of fetch time spent before the first byte: per-request overhead |
//! | `slicesPerRequest` | `sum(rate(slicecache_slices_total{SEL}[W])) / sum(rate(slicecache_requests_total{SEL}[W]))` | how many slices a client request spans: above 1, larger slices mean fewer subrequests |
//! | `lookaheadWaitRatio` | `sum(rate(slicecache_lookahead_waits_total{SEL}[W])) / sum(rate(slicecache_slices_total{SEL,tier!="memory"}[W]))` | share of slices not in memory that waited for a look-ahead slot: requests span more slices than concurrency fetches at once |
//! | `queueWaitP90` | `histogram_quantile(0.9, sum by (le) (rate(slicecache_subrequest_queue_wait_seconds_bucket{SEL}[W])))` | wait for one of the agent's origin connections |
//! | `originThrottleRatio` | `(sum(rate(slicecache_origin_requests_total{SEL,status=~"429\|503"}[W])) or vector(0)) / sum(rate(slicecache_origin_requests_total{SEL}[W]))` | origin asks us to slow down |
//! | `originErrorRatio` | same with `status=~"5xx\|connect\|timeout\|io\|protocol"` | origin fails |
//! | `originRequestRate` | `sum(rate(slicecache_origin_requests_total{SEL}[W]))` | subrequests per second: is there anything to learn from |
//! | `clientTtfbP90` | `histogram_quantile(0.9, sum by (le) (rate(slicecache_client_ttfb_seconds_bucket{SEL}[W])))` | what clients feel; reported, not steered on |
//! | `sliceSize`, `concurrency` | `max(slicecache_slice_size_bytes{SEL})`, `max(slicecache_concurrency{SEL})` | tunables in force on the agents |
//!
//! Amplification is what the slice size costs: a client reading 64 KiB at a
//! random offset through 1 MiB slices makes the origin send 16 times the
//! bytes the client asked for. Bytes served from misses are not counted by
//! the agent directly; client bytes times the miss share of slices stands in
//! for them. A window without misses has no amplification (not 0, not 1):
//! the signal is then missing and slice size holds.
//!
//! PromQL answers `0/0` with NaN and `x/0` with Inf; both count as missing.
//! A status the origin never sent has no series at all, so the throttle and
//! error numerators fall back to `vector(0)`: none of them is 0%, not
//! unknown, once there are subrequests at all.

use std::{collections::BTreeMap, fmt, time::Duration};

use super::prometheus::{PrometheusClient, QueryError};

/// Label matchers selecting one SliceCache's agent series, without braces:
/// `namespace="shop",pod=~"videos-agent-([a-z0-9]{1,10}-)?[a-z0-9]{5}"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector(String);

impl Selector {
    /// The default: the namespace and the pod names of the SliceCache's
    /// DaemonSet (`NAME-agent-xxxxx`) or Deployment (`NAME-agent-<replica set
    /// hash, up to 10>-xxxxx`). These are the `namespace` and `pod`
    /// labels that Kubernetes service discovery, PodMonitors and
    /// ServiceMonitors attach to every target, so no relabeling is needed.
    pub fn for_slicecache(namespace: &str, name: &str) -> Self {
        Self(format!(
            r#"namespace="{}",pod=~"{}-agent-([a-z0-9]{{1,10}}-)?[a-z0-9]{{5}}""#,
            escape_string(namespace),
            escape_string(&regex_escape(name))
        ))
    }

    /// Label matchers as written by the user, e.g. `job="slicecache"`.
    /// Surrounding braces are accepted and dropped.
    pub fn custom(matchers: &str) -> Self {
        let m = matchers.trim();
        let m = m.strip_prefix('{').and_then(|m| m.strip_suffix('}')).unwrap_or(m);
        Self(m.trim().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `{SEL}` or `{SEL,extra}`.
    fn braces(&self, extra: &str) -> String {
        match (self.0.is_empty(), extra.is_empty()) {
            (true, _) => format!("{{{extra}}}"),
            (false, true) => format!("{{{}}}", self.0),
            (false, false) => format!("{{{},{extra}}}", self.0),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn escape_string(s: &str) -> String {
    s.replace('\\', r"\\").replace('"', "\\\"")
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The tuner's queries for one SliceCache and rate window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queries {
    pub hit_ratio: String,
    pub amplification: String,
    pub origin_ttfb_p50: String,
    pub origin_ttfb_p90: String,
    pub subrequest_throughput: String,
    pub ttfb_share: String,
    pub slices_per_request: String,
    pub lookahead_wait_ratio: String,
    pub queue_wait_p90: String,
    pub throttle_ratio: String,
    pub error_ratio: String,
    pub origin_request_rate: String,
    pub client_ttfb_p90: String,
    pub slice_size: String,
    pub concurrency: String,
}

impl Queries {
    pub fn new(selector: &Selector, window: Duration) -> Self {
        let w = format!("{}s", window.as_secs().max(1));
        let sel = |extra: &str| selector.braces(extra);
        let rate = |metric: &str, extra: &str| format!("sum(rate({metric}{}[{w}]))", sel(extra));
        let quantile = |q: f64, metric: &str| {
            format!(
                "histogram_quantile({q}, sum by (le) (rate({metric}_bucket{}[{w}])))",
                sel("")
            )
        };
        let slices = rate("slicecache_slices_total", "");
        let origin_bytes = rate("slicecache_origin_bytes_total", "");
        let fetch_seconds = rate("slicecache_slice_fetch_duration_seconds_sum", "");
        let origin_requests = rate("slicecache_origin_requests_total", "");
        Self {
            hit_ratio: format!("{} / {slices}", rate("slicecache_slices_total", r#"result="hit""#)),
            amplification: format!(
                "{origin_bytes} / ({} * ({} / {slices}))",
                rate("slicecache_client_bytes_total", ""),
                rate("slicecache_slices_total", r#"result="miss""#),
            ),
            origin_ttfb_p50: quantile(0.5, "slicecache_origin_ttfb_seconds"),
            origin_ttfb_p90: quantile(0.9, "slicecache_origin_ttfb_seconds"),
            subrequest_throughput: format!("{origin_bytes} / {fetch_seconds}"),
            ttfb_share: format!("{} / {fetch_seconds}", rate("slicecache_origin_ttfb_seconds_sum", "")),
            slices_per_request: format!("{slices} / {}", rate("slicecache_requests_total", "")),
            lookahead_wait_ratio: format!(
                "{} / {}",
                rate("slicecache_lookahead_waits_total", ""),
                rate("slicecache_slices_total", r#"tier!="memory""#)
            ),
            queue_wait_p90: quantile(0.9, "slicecache_subrequest_queue_wait_seconds"),
            throttle_ratio: format!(
                "({} or vector(0)) / {origin_requests}",
                rate("slicecache_origin_requests_total", r#"status=~"429|503""#)
            ),
            error_ratio: format!(
                "({} or vector(0)) / {origin_requests}",
                rate(
                    "slicecache_origin_requests_total",
                    r#"status=~"5xx|connect|timeout|io|protocol""#
                )
            ),
            origin_request_rate: origin_requests.clone(),
            client_ttfb_p90: quantile(0.9, "slicecache_client_ttfb_seconds"),
            slice_size: format!("max(slicecache_slice_size_bytes{})", sel("")),
            concurrency: format!("max(slicecache_concurrency{})", sel("")),
        }
    }

    /// Every query by signal name (the names of [`Signals::snapshot`]).
    pub fn by_name(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("hitRatio", &self.hit_ratio),
            ("originAmplification", &self.amplification),
            ("originTtfbP50Seconds", &self.origin_ttfb_p50),
            ("originTtfbP90Seconds", &self.origin_ttfb_p90),
            ("subrequestThroughputBytesPerSecond", &self.subrequest_throughput),
            ("ttfbShare", &self.ttfb_share),
            ("slicesPerRequest", &self.slices_per_request),
            ("lookaheadWaitRatio", &self.lookahead_wait_ratio),
            ("queueWaitP90Seconds", &self.queue_wait_p90),
            ("originThrottleRatio", &self.throttle_ratio),
            ("originErrorRatio", &self.error_ratio),
            ("originRequestsPerSecond", &self.origin_request_rate),
            ("clientTtfbP90Seconds", &self.client_ttfb_p90),
            ("sliceSizeBytes", &self.slice_size),
            ("concurrency", &self.concurrency),
        ]
    }
}

/// What the agents' metrics say about one window. `None`: no data (no
/// series, or a ratio over zero traffic).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Signals {
    pub hit_ratio: Option<f64>,
    pub amplification: Option<f64>,
    pub origin_ttfb_p50: Option<f64>,
    pub origin_ttfb_p90: Option<f64>,
    /// Bytes per second of one subrequest.
    pub subrequest_throughput: Option<f64>,
    /// 0..1: time to first byte over whole fetch time.
    pub ttfb_share: Option<f64>,
    /// Slices per client request.
    pub slices_per_request: Option<f64>,
    /// 0..1: share of slices not in memory that waited for a look-ahead slot.
    pub lookahead_wait_ratio: Option<f64>,
    pub queue_wait_p90: Option<f64>,
    pub throttle_ratio: Option<f64>,
    pub error_ratio: Option<f64>,
    /// Origin subrequests per second across the SliceCache.
    pub origin_request_rate: Option<f64>,
    pub client_ttfb_p90: Option<f64>,
    /// Slice size in force on the agents (largest if they disagree).
    pub slice_size: Option<u64>,
    /// Concurrency in force on the agents (largest if they disagree).
    pub concurrency: Option<u32>,
}

impl Signals {
    /// Signals as text by name, for `status.tuning.lastDecision.metrics`.
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut put = |name: &str, value: Option<f64>, digits: usize| {
            if let Some(v) = value {
                out.insert(name.to_string(), format!("{v:.digits$}"));
            }
        };
        put("hitRatio", self.hit_ratio, 3);
        put("originAmplification", self.amplification, 2);
        put("originTtfbP50Seconds", self.origin_ttfb_p50, 4);
        put("originTtfbP90Seconds", self.origin_ttfb_p90, 4);
        put("subrequestThroughputBytesPerSecond", self.subrequest_throughput, 0);
        put("ttfbShare", self.ttfb_share, 3);
        put("slicesPerRequest", self.slices_per_request, 2);
        put("lookaheadWaitRatio", self.lookahead_wait_ratio, 3);
        put("queueWaitP90Seconds", self.queue_wait_p90, 4);
        put("originThrottleRatio", self.throttle_ratio, 4);
        put("originErrorRatio", self.error_ratio, 4);
        put("originRequestsPerSecond", self.origin_request_rate, 2);
        put("clientTtfbP90Seconds", self.client_ttfb_p90, 4);
        if let Some(s) = self.slice_size {
            out.insert("sliceSizeBytes".into(), s.to_string());
        }
        if let Some(c) = self.concurrency {
            out.insert("concurrency".into(), c.to_string());
        }
        out
    }

    /// True when no query returned anything: nothing scrapes the agents,
    /// or the selector matches no series.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Runs every query and collects the signals. The first failing query ends
/// the collection: a Prometheus that fails one query will fail the rest, and
/// the tuner holds on any failure anyway.
pub async fn collect(client: &PrometheusClient, queries: &Queries) -> Result<Signals, QueryError> {
    let (hit_ratio, amplification, origin_ttfb_p50, origin_ttfb_p90, subrequest_throughput, ttfb_share) = tokio::try_join!(
        client.query_value(&queries.hit_ratio),
        client.query_value(&queries.amplification),
        client.query_value(&queries.origin_ttfb_p50),
        client.query_value(&queries.origin_ttfb_p90),
        client.query_value(&queries.subrequest_throughput),
        client.query_value(&queries.ttfb_share),
    )?;
    let (slices_per_request, lookahead_wait_ratio) = tokio::try_join!(
        client.query_value(&queries.slices_per_request),
        client.query_value(&queries.lookahead_wait_ratio),
    )?;
    let (queue_wait_p90, throttle_ratio, error_ratio, origin_request_rate, client_ttfb_p90, slice_size, concurrency) =
        tokio::try_join!(
            client.query_value(&queries.queue_wait_p90),
            client.query_value(&queries.throttle_ratio),
            client.query_value(&queries.error_ratio),
            client.query_value(&queries.origin_request_rate),
            client.query_value(&queries.client_ttfb_p90),
            client.query_value(&queries.slice_size),
            client.query_value(&queries.concurrency),
        )?;
    Ok(Signals {
        hit_ratio,
        amplification,
        origin_ttfb_p50,
        origin_ttfb_p90,
        subrequest_throughput,
        ttfb_share,
        slices_per_request,
        lookahead_wait_ratio,
        queue_wait_p90,
        throttle_ratio,
        error_ratio,
        origin_request_rate,
        client_ttfb_p90,
        slice_size: slice_size.filter(|v| *v >= 1.0).map(|v| v as u64),
        concurrency: concurrency.filter(|v| *v >= 1.0).map(|v| v as u32),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn default_selector_matches_the_daemonset_and_deployment_pods() {
        let sel = Selector::for_slicecache("shop", "videos.eu");
        assert_eq!(
            sel.as_str(),
            r#"namespace="shop",pod=~"videos\\.eu-agent-([a-z0-9]{1,10}-)?[a-z0-9]{5}""#
        );
        assert_eq!(Selector::custom(r#" {job="x"} "#).as_str(), r#"job="x""#);
    }

    #[test]
    fn queries_carry_the_selector_and_window() {
        let q = Queries::new(&Selector::custom(r#"job="a""#), Duration::from_secs(60));
        assert_eq!(
            q.hit_ratio,
            r#"sum(rate(slicecache_slices_total{job="a",result="hit"}[60s])) / sum(rate(slicecache_slices_total{job="a"}[60s]))"#
        );
        assert_eq!(
            q.origin_ttfb_p90,
            r#"histogram_quantile(0.9, sum by (le) (rate(slicecache_origin_ttfb_seconds_bucket{job="a"}[60s])))"#
        );
        let empty = Queries::new(&Selector::custom(""), Duration::from_secs(30));
        assert_eq!(empty.concurrency, "max(slicecache_concurrency{})");
        assert_eq!(q.by_name().len(), 15);
        assert_eq!(
            q.lookahead_wait_ratio,
            r#"sum(rate(slicecache_lookahead_waits_total{job="a"}[60s])) / sum(rate(slicecache_slices_total{job="a",tier!="memory"}[60s]))"#
        );
    }
}
