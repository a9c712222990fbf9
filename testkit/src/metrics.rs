//! Reading samples out of the Prometheus text exposition format, and
//! scraping an agent's admin port for it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::client::HttpClient;

/// The text of `GET /metrics` on `admin`, when it answers 200.
pub async fn scrape(admin: SocketAddr) -> Option<String> {
    let resp = HttpClient::new(admin).get("/metrics", &[]).await.ok()?;
    (resp.status == 200).then(|| String::from_utf8_lossy(&resp.body).into_owned())
}

/// Sums the samples of metric `name` (the exact name) that carry every label
/// pair in `labels`; 0 when there are none.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let have: BTreeMap<&str, &str> = label_text
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
            .collect();
        if labels.iter().all(|(k, v)| have.get(k) == Some(v)) {
            sum += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_only_the_named_metric_with_every_label() {
        let text = "# HELP x y\nm{a=\"1\",b=\"2\"} 3\nm{a=\"1\"} 4\nm_total 9\nm 1\n";
        assert_eq!(metric_sum(text, "m", &[("a", "1")]), 7.0);
        assert_eq!(metric_sum(text, "m", &[("b", "2")]), 3.0);
        assert_eq!(metric_sum(text, "m", &[]), 8.0);
        assert_eq!(metric_sum(text, "n", &[]), 0.0);
    }
}
