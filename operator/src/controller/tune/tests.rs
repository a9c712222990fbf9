//! Unit tests of the tune step: settings, starting points, due times,
//! recorded decisions, the `TuningActive` condition and the metrics.

#![allow(clippy::unwrap_used)]

use slicecache_api::{spec::SliceCacheSpec, units::ByteSize};

use super::*;
use crate::controller::fixtures::{at, decision, t, MI};
use crate::{
    controller::conditions::{REASON_OFF, REASON_RECOMMENDING, REASON_TUNING, REASON_WAITING},
    tuner::{Bounds, Selector, TuningDecision},
};

fn validated(tuning_yaml: &str) -> ValidatedSliceCache {
    let spec: SliceCacheSpec = serde_yaml_ng::from_str(&format!(
        "origin:\n  url: http://origin:8080\nslicing:\n  sliceSize: 1Mi\n  concurrency: 8\ntuning:\n{tuning_yaml}"
    ))
    .unwrap();
    ValidatedSliceCache::new(&spec).unwrap()
}

const AUTO: &str = "  mode: Auto\n  prometheus:\n    url: http://prom:9090\n  interval: 30s\n";
const RECOMMEND: &str = "  mode: Recommend\n  prometheus:\n    url: http://prom:9090\n  interval: 30s\n";

#[test]
fn settings_come_from_the_validated_spec() {
    let v = validated(&format!(
        "{AUTO}  minConcurrency: 2\n  maxConcurrency: 16\n  cooldown: 5m\n"
    ));
    let s = TunerSettings::of(&owner(), &v);
    assert_eq!(s.mode, TuningMode::Auto);
    assert_eq!(s.start, t(MI, 8));
    assert_eq!((s.bounds.min_concurrency, s.bounds.max_concurrency), (2, 16));
    assert_eq!(s.cooldown, Duration::from_secs(300));
    assert_eq!(s.selector, Selector::for_slicecache("shop", "media"));
    // Matchers of the user's own: other series, so another tuner.
    let custom = TunerSettings::of(
        &owner(),
        &validated(
            "  mode: Auto\n  prometheus:\n    url: http://prom:9090\n    selector: '{job=\"edge\"}'\n  \
             interval: 30s\n  minConcurrency: 2\n  maxConcurrency: 16\n  cooldown: 5m\n",
        ),
    );
    assert_eq!(custom.selector.as_str(), r#"job="edge""#);
    assert_ne!(custom, s);
}

#[test]
fn starting_point_carries_the_tuners_values_only_in_auto() {
    let auto = TunerSettings::of(&owner(), &validated(AUTO));
    let effective = EffectiveTunables {
        slice_size: ByteSize(256 << 10),
        concurrency: 3,
    };
    // Fresh operator: what status says is in force.
    assert_eq!(starting_point(&auto, None, Some(&effective)), t(256 << 10, 3));
    // New SliceCache: the spec's values.
    assert_eq!(starting_point(&auto, None, None), t(MI, 8));
    // A new tuner for the same SliceCache (bounds changed): the old one's values, inside the new bounds.
    let narrow = TunerSettings {
        bounds: Bounds {
            min_concurrency: 4,
            ..auto.bounds
        },
        ..auto.clone()
    };
    assert_eq!(
        starting_point(&narrow, Some((&auto, t(2 * MI, 2))), Some(&effective)),
        t(2 * MI, 4)
    );
    // The user edited spec.slicing: restart from it.
    let edited = TunerSettings {
        start: t(4 * MI, 8),
        ..auto.clone()
    };
    assert_eq!(starting_point(&edited, Some((&auto, t(2 * MI, 2))), None), t(4 * MI, 8));
    // A SliceCache recreated under the same name: not the old object's values.
    let other = TunerSettings {
        uid: "uid-2".into(),
        ..auto.clone()
    };
    assert_eq!(starting_point(&other, Some((&auto, t(2 * MI, 2))), None), t(MI, 8));
    // Recommend changes nothing: the spec's values are in force.
    let recommend = TunerSettings::of(&owner(), &validated(RECOMMEND));
    assert_eq!(
        starting_point(&recommend, Some((&auto, t(2 * MI, 2))), Some(&effective)),
        t(MI, 8)
    );
}

#[test]
fn evaluations_are_due_once_per_interval() {
    let now = Instant::now();
    let interval = Duration::from_secs(60);
    assert!(is_due(None, now, interval));
    assert!(!is_due(Some(now), now, interval));
    assert!(!is_due(Some(now), now + Duration::from_secs(30), interval));
    assert!(is_due(Some(now), now + Duration::from_millis(59_500), interval));
    assert!(is_due(Some(now), now + Duration::from_secs(61), interval));
}

#[test]
fn identical_holds_keep_the_recorded_decision() {
    let steady = decision(
        t(MI, 8),
        t(MI, 8),
        Some(HoldReason::Steady),
        "steady: amplification 1.02",
    );
    let first = last_decision(&steady, None, None, at(100));
    assert_eq!(first.time, at(100));
    assert_eq!(first.reason, "steady: amplification 1.02");
    // The next interval holds the same way with other numbers: the record stays.
    let again = decision(
        t(MI, 8),
        t(MI, 8),
        Some(HoldReason::Steady),
        "steady: amplification 1.05",
    );
    let kept = last_decision(&again, Some(DecisionKey::of(&steady)), Some(&first), at(160));
    assert_eq!(kept, first);
    // Another kind of hold is recorded.
    let down = decision(
        t(MI, 8),
        t(MI, 8),
        Some(HoldReason::PrometheusUnreachable),
        "holding: down",
    );
    let new = last_decision(&down, Some(DecisionKey::of(&steady)), Some(&first), at(220));
    assert_eq!((new.time, new.reason.as_str()), (at(220), "holding: down"));
    // After a restart the kind of the recorded decision is unknown: recorded again.
    assert_eq!(last_decision(&again, None, Some(&first), at(280)).time, at(280));
    // A change is recorded with its values and metrics.
    let change = decision(t(MI, 8), t(MI, 4), None, "origin 429/503 at 20.00%: concurrency 8 -> 4");
    let r = last_decision(&change, Some(DecisionKey::of(&steady)), Some(&first), at(340));
    assert_eq!(r.from.concurrency, 8);
    assert_eq!(r.to.concurrency, 4);
    assert_eq!(r.to.slice_size, ByteSize(MI));
    assert_eq!(r.metrics["originThrottleRatio"], "0.2000");
}

#[test]
fn tuning_active_says_whether_the_tuner_can_see() {
    let auto = validated(AUTO);
    let recommend = validated(RECOMMEND);
    let law = LawConfig::default();
    let url = "http://prom:9090";
    let cond = |v: &ValidatedSliceCache, d: &TuningDecision| tuning_condition(v.tuning(), url, &law, d);

    let change = decision(t(MI, 8), t(MI, 4), None, "origin 429/503 at 20.00%: concurrency 8 -> 4");
    let c = cond(&auto, &change);
    assert!(c.holds);
    assert_eq!(c.reason, REASON_TUNING);
    assert!(c.message.contains("every 30s"), "{}", c.message);
    assert!(c.message.contains("ConfigMap"), "{}", c.message);
    let c = cond(&recommend, &change);
    assert_eq!((c.holds, c.reason.as_str()), (true, REASON_RECOMMENDING));
    assert!(c.message.contains("spec values stay in force"), "{}", c.message);

    // Holds with usable signals keep it True, with the same message whatever the numbers.
    for hold in [HoldReason::Steady, HoldReason::Settling, HoldReason::Cooldown] {
        let a = cond(
            &auto,
            &decision(t(MI, 8), t(MI, 8), Some(hold), "steady: amplification 1.02"),
        );
        let b = cond(
            &auto,
            &decision(t(MI, 8), t(MI, 8), Some(hold), "steady: amplification 1.07"),
        );
        assert_eq!(a, b);
        assert_eq!(a, cond(&auto, &change));
    }

    for hold in [
        HoldReason::PrometheusUnreachable,
        HoldReason::QueryTimeout,
        HoldReason::PrometheusError,
        HoldReason::NoData,
    ] {
        let reason = format!("holding: because {hold}");
        let c = cond(&recommend, &decision(t(MI, 8), t(MI, 8), Some(hold), &reason));
        assert!(!c.holds);
        assert_eq!(c.reason, hold.as_str());
        assert!(c.message.starts_with(&reason), "{}", c.message);
        assert!(c.message.contains("kept"), "{}", c.message);
    }
    let idle = |rate: &str| {
        cond(
            &auto,
            &decision(
                t(MI, 8),
                t(MI, 8),
                Some(HoldReason::Idle),
                &format!("holding: at {rate}/s"),
            ),
        )
    };
    assert_eq!((idle("0.010").holds, idle("0.010").reason.as_str()), (false, "Idle"));
    assert_eq!(idle("0.010"), idle("0.020"));
    assert!(idle("0.010").message.contains("0.05"), "{}", idle("0.010").message);

    assert_eq!(TuningReport::off().condition.reason, REASON_OFF);
    assert!(!TuningReport::off().condition.holds);
}

#[test]
fn hit_ratio_is_a_percentage_with_one_decimal() {
    assert_eq!(hit_ratio_text(0.934), "93.4%");
    assert_eq!(hit_ratio_text(0.93449), "93.4%");
    assert_eq!(hit_ratio_text(0.0), "0.0%");
    assert_eq!(hit_ratio_text(1.0), "100.0%");
    // Rate arithmetic can stray past the ends by a rounding error.
    assert_eq!(hit_ratio_text(1.000_001), "100.0%");
    assert_eq!(hit_ratio_text(-0.000_001), "0.0%");
}

#[test]
fn evaluations_record_changes_holds_and_whether_signals_were_seen() {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let interval = Duration::from_secs(30);
    let change = decision(t(MI, 8), t(MI, 4), None, "origin 429/503 at 20.00%: concurrency 8 -> 4");
    let e = evaluation_metrics(&change, REASON_TUNING, interval, at);
    assert_eq!(e.change, Some((t(MI, 8), t(MI, 4))));
    assert_eq!((e.held_because, e.saw_signals), (None, true));
    assert_eq!((e.reason.as_str(), e.interval, e.at), (REASON_TUNING, interval, at));
    // Holds with signals are successful evaluations; blind ones are not.
    for (hold, saw) in [
        (HoldReason::Steady, true),
        (HoldReason::Cooldown, true),
        (HoldReason::Idle, true),
        (HoldReason::NoData, false),
        (HoldReason::PrometheusUnreachable, false),
    ] {
        let e = evaluation_metrics(
            &decision(t(MI, 8), t(MI, 8), Some(hold), "holding"),
            hold.as_str(),
            interval,
            at,
        );
        assert_eq!((e.held_because, e.saw_signals), (Some(hold), saw), "{hold}");
        assert_eq!(e.change, Some((t(MI, 8), t(MI, 8))));
    }
}

fn owner() -> Owner {
    Owner {
        name: "media".into(),
        namespace: "shop".into(),
        uid: Some("uid-1".into()),
        generation: 1,
    }
}

fn tuning_series(metrics: &Metrics) -> Vec<String> {
    metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("slicecache_operator_tuning_"))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn the_tune_step_reports_to_the_metrics() {
    let metrics = Arc::new(Metrics::new().unwrap());
    let registry = TunerRegistry::new(metrics.clone());
    // A port nothing listens on: Prometheus is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = validated(&format!(
        "  mode: Auto\n  prometheus:\n    url: http://127.0.0.1:{port}\n  interval: 30s\n"
    ));
    let report = registry.tune(&owner(), &down, None).await;
    assert_eq!(report.condition.reason, "PrometheusUnreachable");
    assert_eq!(report.hit_ratio, None);
    let series = tuning_series(&metrics);
    for line in [
        r#"slicecache_operator_tuning_active{namespace="shop",reason="PrometheusUnreachable",slicecache="media"} 1"#,
        r#"slicecache_operator_tuning_holds_total{namespace="shop",reason="PrometheusUnreachable",slicecache="media"} 1"#,
        r#"slicecache_operator_tuning_value{knob="concurrency",namespace="shop",slicecache="media"} 8"#,
        r#"slicecache_operator_tuning_value{knob="sliceSize",namespace="shop",slicecache="media"} 1048576"#,
        r#"slicecache_operator_tuning_interval_seconds{namespace="shop",slicecache="media"} 30"#,
    ] {
        assert!(series.iter().any(|l| l == line), "no {line} in {series:#?}");
    }
    // Blind: no successful evaluation to report.
    assert!(!series.iter().any(|l| l.contains("last_evaluation")), "{series:#?}");
    // A reconcile before the interval is up records nothing.
    registry.tune(&owner(), &down, None).await;
    assert_eq!(tuning_series(&metrics), series);

    // Mode Off: the tuner's series go; only the reason is left.
    let report = registry.tune(&owner(), &validated("  mode: Off\n"), None).await;
    assert_eq!(report, TuningReport::off());
    assert_eq!(
        tuning_series(&metrics),
        [r#"slicecache_operator_tuning_active{namespace="shop",reason="TuningOff",slicecache="media"} 1"#]
    );
    // Deleted: nothing.
    registry.forget("shop/media");
    assert!(tuning_series(&metrics).is_empty(), "{:#?}", tuning_series(&metrics));
}

/// A Prometheus that answers every query with an empty vector, `delay`
/// after it arrives; its base URL.
async fn slow_prometheus(delay: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                // One read holds a small GET's head.
                let mut head = [0u8; 4096];
                if sock.read(&mut head).await.is_err() {
                    return;
                }
                tokio::time::sleep(delay).await;
                let body = slicecache_testkit::scripted::prometheus_vector(None);
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_slow_prometheus_does_not_hold_the_reconcile() {
    let registry = TunerRegistry::new(Arc::new(Metrics::new().unwrap()));
    let url = slow_prometheus(EVALUATION_WAIT * 3).await;
    let auto = validated(&format!(
        "  mode: Auto\n  prometheus:\n    url: {url}\n  interval: 30s\n"
    ));
    // The first evaluation waits for Prometheus: the reconcile goes on
    // with the values in force and comes back soon.
    let report = registry.tune(&owner(), &auto, None).await;
    assert_eq!(report.condition.reason, REASON_WAITING);
    assert_eq!(report.next_in, Some(EVALUATION_POLL));
    assert_eq!(report.in_force, Some(t(MI, 8)));
    // Reconciles meanwhile get the same; the evaluation's own report
    // arrives once Prometheus has answered every query.
    let report = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let report = registry.tune(&owner(), &auto, None).await;
            if report.condition.reason != REASON_WAITING {
                return report;
            }
            assert_eq!(report.next_in, Some(EVALUATION_POLL));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the evaluation ends once Prometheus answers");
    // Due an interval after the evaluation started.
    let next = report.next_in.expect("a next evaluation");
    assert!(
        next <= Duration::from_secs(30) && next > Duration::from_secs(20),
        "{next:?}"
    );
    assert!(report.last_decision.is_some(), "{report:?}");
    assert_eq!(report.in_force, Some(t(MI, 8)));
}
