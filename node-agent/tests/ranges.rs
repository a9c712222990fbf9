//! Byte-exactness of ranged and whole-object responses, what the origin sees
//! (aligned slices only, each once), and that a warm pass costs the origin
//! nothing. Runs the real agent binary against the real TCP test origin.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rand::{Rng, SeedableRng};
use slicecache_testkit::origin::{pattern, OriginObject, TestOrigin};

use common::{assert_aligned, assert_bytes, assert_partial, parse_bytes_range, AgentBuilder, S};

/// A client request and what it must get.
#[derive(Clone, Debug)]
struct Case {
    path: &'static str,
    range: Option<String>,
    /// `None`: 200 with the whole body; `Some(Some((a, b)))`: 206 with those
    /// bytes; `Some(None)`: 416.
    expect: Option<Option<(u64, u64)>>,
}

async fn run_case(
    client: &mut slicecache_testkit::client::HttpClient,
    case: &Case,
    body: &Bytes,
) -> Result<(), String> {
    let headers: Vec<(&str, &str)> = case.range.iter().map(|r| ("Range", r.as_str())).collect();
    let resp = client
        .get(case.path, &headers)
        .await
        .map_err(|e| format!("{case:?}: {e}"))?;
    let what = format!("{} Range {:?}", case.path, case.range);
    let len = body.len() as u64;
    match case.expect {
        None => {
            if resp.status != 200 {
                return Err(format!("{what}: status {} instead of 200", resp.status));
            }
            if resp.header("content-length") != Some(len.to_string().as_str()) {
                return Err(format!("{what}: Content-Length {:?}", resp.header("content-length")));
            }
            if resp.body != *body {
                return Err(format!("{what}: whole body differs"));
            }
        }
        Some(Some((a, b))) => {
            let want_cr = format!("bytes {a}-{b}/{len}");
            if resp.status != 206 || resp.header("content-range") != Some(want_cr.as_str()) {
                return Err(format!(
                    "{what}: got {} {:?}, want 206 {want_cr}",
                    resp.status,
                    resp.header("content-range")
                ));
            }
            if resp.body != body.slice(a as usize..=b as usize) {
                return Err(format!("{what}: range body differs ({} bytes)", resp.body.len()));
            }
        }
        Some(None) => {
            let want_cr = format!("bytes */{len}");
            if resp.status != 416 || resp.header("content-range") != Some(want_cr.as_str()) {
                return Err(format!(
                    "{what}: got {} {:?}, want 416 {want_cr}",
                    resp.status,
                    resp.header("content-range")
                ));
            }
        }
    }
    Ok(())
}

/// Every (path, range) the origin saw, counted.
fn origin_fetch_counts(seen: &[slicecache_testkit::origin::SeenRequest]) -> HashMap<(String, String), usize> {
    let mut counts = HashMap::new();
    for r in seen {
        *counts
            .entry((r.path.clone(), r.range.clone().unwrap_or_default()))
            .or_insert(0) += 1;
    }
    counts
}

const RANDOM_OBJECTS: &[(&str, usize)] = &[
    ("/rand/a.bin", (1 << 20) + 12345),
    ("/rand/b.bin", 777_777),
    ("/rand/c.bin", 3 * (64 << 10) + 1),
    ("/rand/d.bin", (2 << 20) - 1),
];

fn random_cases(n: usize, seed: u64) -> Vec<Case> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut cases = Vec::with_capacity(n);
    for (path, _) in RANDOM_OBJECTS {
        cases.push(Case {
            path,
            range: None,
            expect: None,
        });
    }
    while cases.len() < n {
        let (path, len) = RANDOM_OBJECTS[rng.random_range(0..RANDOM_OBJECTS.len())];
        let len = len as u64;
        let slices = len.div_ceil(S);
        let kind = rng.random_range(0..100);
        let (spec, first, last) = if kind < 55 {
            // Small range anywhere.
            let a = rng.random_range(0..len);
            let b = (a + rng.random_range(0..4096)).min(len - 1);
            (format!("bytes={a}-{b}"), a, b)
        } else if kind < 80 {
            // Straddles a slice boundary.
            let k = rng.random_range(1..slices);
            let a = k * S - rng.random_range(1..=2000);
            let b = (k * S + rng.random_range(0..2000)).min(len - 1);
            (format!("bytes={a}-{b}"), a, b)
        } else if kind < 88 {
            // Open-ended, near the end.
            let a = rng.random_range(len.saturating_sub(3 * S)..len);
            (format!("bytes={a}-"), a, len - 1)
        } else if kind < 95 {
            // Suffix, possibly longer than the object.
            let n = rng.random_range(1..=(2 * S).min(len + 10));
            (format!("bytes=-{n}"), len - n.min(len), len - 1)
        } else {
            // Large, possibly past the end (clamped).
            let a = rng.random_range(0..len);
            let b = a + rng.random_range(0..3 * S);
            (format!("bytes={a}-{b}"), a, b.min(len - 1))
        };
        cases.push(Case {
            path,
            range: Some(spec),
            expect: Some(Some((first, last))),
        });
    }
    cases
}

async fn run_cases_concurrently(
    agent: &common::AgentProc,
    cases: &Arc<Vec<Case>>,
    bodies: &Arc<HashMap<&'static str, Bytes>>,
    tasks: usize,
) {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let cases = cases.clone();
        let bodies = bodies.clone();
        let mut client = agent.client();
        handles.push(tokio::spawn(async move {
            for case in cases.iter().skip(t).step_by(tasks) {
                run_case(&mut client, case, &bodies[case.path]).await?;
            }
            Ok::<(), String>(())
        }));
    }
    for h in handles {
        if let Err(e) = h.await.expect("client task") {
            panic!("{e}");
        }
    }
}

/// 2000 random ranges over four objects from four concurrent clients, cold
/// then warm: every body byte-exact, the origin only ever asked for whole
/// aligned slices, never twice for one, and the warm pass costs it nothing.
#[tokio::test(flavor = "multi_thread")]
async fn random_ranges_are_exact_aligned_and_cached() {
    let origin = TestOrigin::start().await.unwrap();
    let mut bodies = HashMap::new();
    for (i, (path, len)) in RANDOM_OBJECTS.iter().enumerate() {
        let body = pattern(*len, 100 + i as u64);
        origin
            .state
            .put(path, OriginObject::new(body.clone(), &format!("r{i}")));
        bodies.insert(*path, body);
    }
    let bodies = Arc::new(bodies);
    let agent = AgentBuilder::new(&origin.url()).start().await;
    let cases = Arc::new(random_cases(2000, 42));

    run_cases_concurrently(&agent, &cases, &bodies, 4).await;
    let seen = common::settled(&origin).await;
    assert_aligned(&seen, S);
    for r in &seen {
        assert_eq!(r.status, 206, "origin answered {r:?}");
    }
    let counts = origin_fetch_counts(&seen);
    let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dups.is_empty(),
        "slices fetched from the origin more than once: {dups:?}"
    );
    // Every object was read whole once, so every slice was needed exactly once.
    let total_slices: u64 = RANDOM_OBJECTS.iter().map(|(_, l)| (*l as u64).div_ceil(S)).sum();
    assert_eq!(seen.len() as u64, total_slices, "one origin fetch per slice");
    let total_bytes: u64 = RANDOM_OBJECTS.iter().map(|(_, l)| *l as u64).sum();
    assert_eq!(origin.state.body_bytes.load(Ordering::Relaxed), total_bytes);
    // Every slice after the first of an object is guarded by the version the
    // response started with.
    for r in &seen {
        if let Some(m) = &r.if_match {
            let i = RANDOM_OBJECTS.iter().position(|(p, _)| *p == r.path).unwrap();
            assert_eq!(m, &format!("\"r{i}\""), "If-Match of {r:?}");
        }
    }

    origin.state.clear_seen();
    run_cases_concurrently(&agent, &cases, &bodies, 4).await;
    let seen = common::settled(&origin).await;
    assert_eq!(
        origin.state.body_bytes.load(Ordering::Relaxed),
        0,
        "warm pass fetched body bytes from the origin"
    );
    assert!(seen.is_empty(), "warm pass reached the origin: {seen:?}");
    let hits = agent.metric("slicecache_slices_total", &[("result", "hit")]).await;
    assert!(hits > 2000.0, "slice hits counted: {hits}");
}

/// The ranges to try on an object of `len` bytes: every pair of interesting
/// positions around slice boundaries, open ranges, suffixes, and some
/// unsatisfiable ones.
fn boundary_cases(path: &'static str, len: u64) -> Vec<Case> {
    let mut positions: Vec<u64> = [0, 1, S - 2, S - 1, S, S + 1, 2 * S - 1, 2 * S, 3 * S + 1]
        .into_iter()
        .chain([len.saturating_sub(2), len.saturating_sub(1)])
        .filter(|p| *p < len)
        .collect();
    positions.sort_unstable();
    positions.dedup();
    let mut cases = vec![Case {
        path,
        range: None,
        expect: None,
    }];
    let ranged = |spec: String, expect: Option<(u64, u64)>| Case {
        path,
        range: Some(spec),
        expect: Some(expect),
    };
    for (i, &a) in positions.iter().enumerate() {
        for &b in &positions[i..] {
            cases.push(ranged(format!("bytes={a}-{b}"), Some((a, b))));
        }
        cases.push(ranged(format!("bytes={a}-"), Some((a, len - 1))));
        cases.push(ranged(format!("bytes={a}-{}", len + S), Some((a, len - 1))));
    }
    for n in [1, 2, S - 1, S, S + 1, len, len + 1] {
        let expect = (n > 0 && len > 0).then(|| (len - n.min(len), len - 1));
        cases.push(ranged(format!("bytes=-{n}"), expect));
    }
    cases.push(ranged(format!("bytes={len}-"), None));
    cases.push(ranged(format!("bytes={}-{}", len + 1, len + 100), None));
    cases.push(ranged("bytes=-0".into(), None));
    cases
}

/// Objects of 0, 1, S-1, S, S+1, 2S-1, 2S and 5S+3 bytes, read whole and by
/// ranges at and across slice boundaries, once starting with the whole
/// object and once starting cold with the ranges.
#[tokio::test(flavor = "multi_thread")]
async fn slice_boundary_sweep() {
    let origin = TestOrigin::start().await.unwrap();
    let sizes = [0, 1, S - 1, S, S + 1, 2 * S - 1, 2 * S, 5 * S + 3];
    let mut objects: Vec<(&'static str, Bytes)> = Vec::new();
    for (i, len) in sizes.iter().enumerate() {
        for order in ["whole-first", "ranges-first"] {
            let path: &'static str = Box::leak(format!("/sweep/{order}/{len}").into_boxed_str());
            let body = pattern(*len as usize, 1000 + i as u64);
            origin
                .state
                .put(path, OriginObject::new(body.clone(), &format!("s{i}")));
            objects.push((path, body));
        }
    }
    let agent = AgentBuilder::new(&origin.url()).start().await;
    let mut client = agent.client();
    let mut failures = Vec::new();
    let mut count = 0;
    for (path, body) in &objects {
        let mut cases = boundary_cases(path, body.len() as u64);
        if path.contains("ranges-first") {
            cases.rotate_left(1); // the whole-object GET goes last
        }
        for case in &cases {
            count += 1;
            if let Err(e) = run_case(&mut client, case, body).await {
                failures.push(e);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} cases failed:\n{}\nagent log:\n{}",
        failures.len(),
        failures.join("\n"),
        agent.log()
    );
    let seen = common::settled(&origin).await;
    assert_aligned(&seen, S);
    let counts = origin_fetch_counts(&seen);
    let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "slices fetched more than once: {dups:?}");
    // Each object's slices were each fetched exactly once (an empty object
    // costs one request that learns its size).
    for (path, body) in &objects {
        let fetched: Vec<u64> = seen
            .iter()
            .filter(|r| r.path == *path)
            .map(|r| parse_bytes_range(r.range.as_deref().unwrap()).unwrap().0 / S)
            .collect();
        let want = (body.len() as u64).div_ceil(S).max(1) as usize;
        assert_eq!(fetched.len(), want, "{path}: slices fetched {fetched:?}");
    }
}

/// Property: for any object among a few boundary-heavy sizes and any
/// `a-b`, `a-` or `-n` range (satisfiable or not), the agent answers exactly
/// what a reference model of RFC 9110 says, byte for byte.
#[test]
fn proptest_single_ranges_match_the_model() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    const PATHS: [&str; 4] = ["/prop/0", "/prop/1", "/prop/2", "/prop/3"];
    let sizes = [S - 1, S + 1, 3 * S, 3 * S + 5];
    let origin = rt.block_on(TestOrigin::start()).unwrap();
    let bodies: Vec<Bytes> = sizes
        .iter()
        .enumerate()
        .map(|(i, len)| {
            let body = pattern(*len as usize, 77 + i as u64);
            origin
                .state
                .put(PATHS[i], OriginObject::new(body.clone(), &format!("p{i}")));
            body
        })
        .collect();
    let agent = rt.block_on(AgentBuilder::new(&origin.url()).start());
    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (0usize..PATHS.len(), 0u8..3, any::<u64>(), any::<u64>());
    let result = runner.run(&strategy, |(i, kind, x, y)| {
        let len = sizes[i];
        let (spec, expect) = match kind {
            0 => {
                let a = x % (len + S);
                let b = a + y % (3 * S);
                (format!("bytes={a}-{b}"), (a < len).then(|| (a, b.min(len - 1))))
            }
            1 => {
                let a = x % (len + 10);
                (format!("bytes={a}-"), (a < len).then(|| (a, len - 1)))
            }
            _ => {
                let n = y % (len + S);
                (format!("bytes=-{n}"), (n > 0).then(|| (len - n.min(len), len - 1)))
            }
        };
        let case = Case {
            path: PATHS[i],
            range: Some(spec),
            expect: Some(expect),
        };
        let mut client = agent.client();
        rt.block_on(run_case(&mut client, &case, &bodies[i]))
            .map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert_aligned(&rt.block_on(common::settled(&origin)), S);
    // Sanity: the helper agrees with itself on a direct check too.
    let resp = rt
        .block_on(agent.client().get(PATHS[3], &[("Range", "bytes=65530-65545")]))
        .unwrap();
    assert_partial(&resp, &bodies[3], 65530, 65545, "straddling range");
    assert_bytes(&resp.body, &bodies[3][65530..=65545], "straddling bytes");
}
