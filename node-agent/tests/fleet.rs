//! One cache per fleet: three real agents on loopback with a static member
//! list and a shared token, in front of one recording origin. Each slice
//! has an owner; the others ask the owner's peer port; every byte a client
//! gets is checked.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rustix::process::Signal;
use slicecache_testkit::client::HttpClient;
use slicecache_testkit::net::free_addr;
use slicecache_testkit::origin::{pattern, OriginObject, TestOrigin};
use slicecache_testkit::wait::wait_for;

use common::{assert_bytes, AgentBuilder, AgentProc};
use slicecache_agent::fleet::ring::{OwnershipKey, Ring, RingMember};
use slicecache_agent::store::ObjectId;

const TOKEN: &str = "fleet-token-0123456789abcdef";
const PURGE_TOKEN: &str = "purge-token-0123456789";
const OBJECTS: usize = 12;
const OBJECT_LEN: usize = (4 << 20) + 12_345;
const NAMES: [&str; 3] = ["node-a", "node-b", "node-c"];

struct Fleet {
    agents: Vec<AgentProc>,
    /// How each agent was started, to start it again.
    builders: Vec<AgentBuilder>,
    peer_addrs: Vec<SocketAddr>,
    token_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// Three agents for `origin`: a fleet (static members, one token), or,
/// with `fleet: false`, three independent caches.
async fn start_agents(origin: &TestOrigin, fleet: bool) -> Fleet {
    start_agents_with(origin, fleet, &[]).await
}

/// [`start_agents`] with more flags for every agent.
async fn start_agents_with(origin: &TestOrigin, fleet: bool, flags: &[(&str, &str)]) -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let peer_addrs: Vec<SocketAddr> = NAMES.iter().map(|_| free_addr()).collect();
    let members: Vec<String> = NAMES
        .iter()
        .zip(&peer_addrs)
        .map(|(name, addr)| format!("{name}={addr}"))
        .collect();
    let (mut agents, mut builders) = (Vec::new(), Vec::new());
    for (name, peer) in NAMES.iter().zip(&peer_addrs) {
        let mut builder = AgentBuilder::new(&origin.url())
            .flag("--slice-size", "256Ki")
            .flag("--memory-cache", "128Mi")
            .env("SLICECACHE_PURGE_TOKEN", PURGE_TOKEN);
        if fleet {
            builder = builder
                .flag("--node-name", name)
                .flag("--peer-listen", &peer.to_string())
                .flag("--peers", &members.join(","))
                .flag("--peer-token-file", &token_file.to_string_lossy())
                .flag("--fleet-granule", "1Mi");
        }
        for (name, value) in flags {
            builder = builder.flag(name, value);
        }
        agents.push(builder.clone().start().await);
        builders.push(builder);
    }
    Fleet {
        agents,
        builders,
        peer_addrs,
        token_file,
        _dir: dir,
    }
}

fn put_objects(origin: &TestOrigin) -> Vec<(String, Bytes)> {
    (0..OBJECTS)
        .map(|i| {
            let path = format!("/objects/{i}.bin");
            let body = pattern(OBJECT_LEN, 100 + i as u64);
            origin
                .state
                .put(&path, OriginObject::new(body.clone(), &format!("v{i}")));
            (path, body)
        })
        .collect()
}

/// Every object, whole, from every agent in a shuffled order, plus random
/// ranges from random agents; every byte checked.
async fn spray(agents: &[AgentProc], objects: &[(String, Bytes)], seed: u64) -> u64 {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut clients: Vec<HttpClient> = agents.iter().map(|a| a.client()).collect();
    let mut client_bytes = 0u64;
    for (path, body) in objects {
        let mut order: Vec<usize> = (0..agents.len()).collect();
        order.shuffle(&mut rng);
        for i in order {
            let resp = clients[i].get(path, &[]).await.unwrap();
            assert_eq!(resp.status, 200, "{path} from agent {i}");
            assert_bytes(&resp.body, body, &format!("{path} from agent {i}"));
            client_bytes += resp.body.len() as u64;
            let first = rng.random_range(0..body.len() - 1);
            let last = (first + rng.random_range(0..1 << 20)).min(body.len() - 1);
            let j = rng.random_range(0..agents.len());
            let resp = clients[j]
                .get(path, &[("Range", &format!("bytes={first}-{last}"))])
                .await
                .unwrap();
            assert_eq!(resp.status, 206, "{path} {first}-{last} from agent {j}");
            assert_bytes(&resp.body, &body[first..=last], &format!("{path} {first}-{last}"));
            client_bytes += resp.body.len() as u64;
        }
    }
    client_bytes
}

/// An origin object that says how long it may be reused.
fn with_cache_control(body: &Bytes, etag: &str, cache_control: &str) -> OriginObject {
    let mut o = OriginObject::new(body.clone(), etag);
    o.cache_control = Some(cache_control.into());
    o
}

/// The members of `key`'s ranking in the test fleet, owner first.
fn ranked(path: &str, offset: u64) -> Vec<String> {
    let ring = Ring::new(NAMES.iter().map(|n| RingMember::new(n, 1.0)).collect());
    let key = OwnershipKey::new(ObjectId::from_cache_key(path), offset, 1 << 20);
    ring.ranked(&key).iter().map(|m| m.name.clone()).collect()
}

/// `clients` readers per agent of `agents` reading every object whole,
/// round after round, until `rounds` are done; every byte checked.
async fn read_in_loops(agents: &[&AgentProc], objects: &[(String, Bytes)], clients: usize, rounds: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for (a, agent) in agents.iter().enumerate() {
        for c in 0..clients {
            let mut client = agent.client();
            let objects = objects.to_vec();
            tasks.spawn(async move {
                for round in 0..rounds {
                    for (path, body) in objects.iter().cycle().skip(c).take(objects.len()) {
                        let resp = client.get(path, &[]).await.unwrap();
                        assert_eq!(resp.status, 200, "{path} from agent {a}, round {round}");
                        assert_bytes(&resp.body, body, &format!("{path} from agent {a}, round {round}"));
                    }
                }
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

async fn sum(agents: &[AgentProc], name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut total = 0.0;
    for a in agents {
        total += a.metric(name, labels).await;
    }
    total
}

/// A hot object read again and again through one agent: the slices other
/// members own cross to this agent once, then its hot set serves them, and
/// the origin still sent each byte once.
#[tokio::test(flavor = "multi_thread")]
async fn a_non_owner_serves_repeated_hits_from_its_hot_set() {
    let origin = TestOrigin::start().await.unwrap();
    let objects = put_objects(&origin);
    let fleet = start_agents(&origin, true).await;
    let (path, body) = &objects[0];
    let agent = &fleet.agents[0];
    let mut client = agent.client();
    let ok = [("role", "client"), ("result", "ok")];
    let resp = client.get(path, &[]).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_bytes(&resp.body, body, "first read");
    let first = agent.metric("slicecache_peer_requests_total", &ok).await;
    assert!(first > 0.0, "some slices of {path} are owned by other members");
    for round in 0..4 {
        let resp = client.get(path, &[]).await.unwrap();
        assert_eq!(resp.status, 200);
        assert_bytes(&resp.body, body, &format!("read {round} from the hot set"));
    }
    let after = agent.metric("slicecache_peer_requests_total", &ok).await;
    let admitted = agent
        .metric("slicecache_hot_set_puts_total", &[("result", "admitted")])
        .await;
    println!("{first} peer requests on the first read, {after} after five; {admitted} slices in the hot set");
    assert_eq!(after, first, "repeated hits went back to the owners");
    assert_eq!(
        admitted, first,
        "every peer-fetched slice was offered to the hot set and fit"
    );
    assert_eq!(origin.state.body_bytes.load(Ordering::Relaxed), body.len() as u64);
    // Nothing of it went to this agent's own memory tier or disk: the hot
    // set holds it (the agents run without disks here).
    assert_eq!(agent.metric("slicecache_promotions_total", &[]).await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_fetches_each_byte_from_the_origin_once() {
    let object_bytes = (OBJECTS * OBJECT_LEN) as f64;

    let origin = TestOrigin::start().await.unwrap();
    let objects = put_objects(&origin);
    let fleet = start_agents(&origin, true).await;
    spray(&fleet.agents, &objects, 1).await;
    let fleet_ratio = origin.state.body_bytes.load(Ordering::Relaxed) as f64 / object_bytes;
    // The agents count the same: origin bytes against the object bytes, and
    // the peers carried the rest.
    let origin_counted = sum(&fleet.agents, "slicecache_origin_bytes_total", &[]).await;
    let peer_in = sum(&fleet.agents, "slicecache_peer_bytes_total", &[("direction", "in")]).await;
    let refused = sum(
        &fleet.agents,
        "slicecache_peer_requests_total",
        &[("result", "refused")],
    )
    .await;
    println!(
        "fleet of 3: origin bytes / object bytes = {fleet_ratio:.3}; {:.1} MiB between peers",
        peer_in / 1048576.0
    );
    assert!(
        fleet_ratio <= 1.05,
        "the fleet fetched {fleet_ratio:.3}x the object bytes"
    );
    assert!(fleet_ratio >= 1.0, "every byte was fetched at least once");
    assert!((origin_counted / object_bytes - fleet_ratio).abs() < 0.01);
    assert!(peer_in > object_bytes, "non-owners read from the owners: {peer_in}");
    assert_eq!(refused, 0.0);
    for a in &fleet.agents {
        assert_eq!(a.metric("slicecache_fleet_members", &[]).await, 3.0);
        let owned = a.metric("slicecache_fleet_owned_fraction", &[]).await;
        assert!((owned - 1.0 / 3.0).abs() < 1e-9, "{owned}");
    }
    drop(fleet);

    // The same workload on three independent caches: each fetches everything.
    let origin = TestOrigin::start().await.unwrap();
    let objects = put_objects(&origin);
    let alone = start_agents(&origin, false).await;
    spray(&alone.agents, &objects, 1).await;
    let alone_ratio = origin.state.body_bytes.load(Ordering::Relaxed) as f64 / object_bytes;
    println!("3 independent caches: origin bytes / object bytes = {alone_ratio:.3}");
    assert!(
        alone_ratio >= 2.9,
        "three caches fetched {alone_ratio:.3}x the object bytes"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_peer_port_wants_the_token_and_the_client_port_ignores_the_hop_marker() {
    let origin = TestOrigin::start().await.unwrap();
    let objects = put_objects(&origin);
    let fleet = start_agents(&origin, true).await;
    let (path, body) = &objects[0];
    let peer = fleet.peer_addrs[0];
    let mut client = HttpClient::new(peer);
    for auth in [None, Some("Bearer wrong-token-0123456789abcd"), Some(TOKEN)] {
        let headers: Vec<(&str, &str)> = auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
        let resp = client.get(path, &headers).await.unwrap();
        assert_eq!(resp.status, 403, "peer port with {auth:?}");
    }
    let refused = fleet.agents[0]
        .metric(
            "slicecache_peer_requests_total",
            &[("role", "server"), ("result", "refused")],
        )
        .await;
    assert_eq!(refused, 3.0);
    let bearer = format!("Bearer {TOKEN}");
    let resp = client.get(path, &[("Authorization", &bearer)]).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_bytes(&resp.body, body, "from the peer port with the token");
    // Served on the peer port: counted as peer bytes out, not client bytes.
    let a = &fleet.agents[0];
    assert_eq!(a.metric("slicecache_client_bytes_total", &[]).await, 0.0);
    assert!(a.metric("slicecache_peer_bytes_total", &[("direction", "out")]).await >= body.len() as f64);

    // A hop marker on the client port changes nothing: agent b still asks
    // each granule's owner, so it fetches only its own share.
    let b = &fleet.agents[1];
    let (path, body) = &objects[1];
    let resp = b.client().get(path, &[("slicecache-hop", "1")]).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_bytes(&resp.body, body, "hop marker on the client port");
    let b_origin = b.metric("slicecache_origin_bytes_total", &[]).await;
    let b_peer = b.metric("slicecache_peer_bytes_total", &[("direction", "in")]).await;
    assert!(b_peer > 0.0, "b asked the owners");
    assert!(
        b_origin < body.len() as f64 * 0.7,
        "b fetched {b_origin} of {} itself",
        body.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_or_killed_peer_sends_clients_to_the_origin_without_errors() {
    let origin = TestOrigin::start().await.unwrap();
    let objects = put_objects(&origin);
    let mut fleet = start_agents(&origin, true).await;
    // Stop node-b: its peer port accepts (the kernel does) and never answers.
    fleet.agents[1].signal(Signal::STOP);
    let mut latencies = Vec::new();
    let (a, c) = (&fleet.agents[0], &fleet.agents[2]);
    let mut clients = [a.client(), c.client()];
    for (round, (path, body)) in objects.iter().enumerate() {
        let client = &mut clients[round % 2];
        let started = Instant::now();
        let resp = client.get(path, &[]).await.unwrap();
        latencies.push(started.elapsed());
        assert_eq!(resp.status, 200, "{path} while node-b is stopped");
        assert_bytes(&resp.body, body, path);
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    println!(
        "while a peer is stopped: p50 {:?}, p99 {:?}",
        latencies[latencies.len() / 2],
        p99
    );
    let timeouts = sum(
        &fleet.agents[..1],
        "slicecache_peer_requests_total",
        &[("result", "timeout")],
    )
    .await
        + sum(
            &fleet.agents[2..],
            "slicecache_peer_requests_total",
            &[("result", "timeout")],
        )
        .await;
    let open = sum(
        &fleet.agents[..1],
        "slicecache_peer_requests_total",
        &[("result", "circuit_open")],
    )
    .await
        + sum(
            &fleet.agents[2..],
            "slicecache_peer_requests_total",
            &[("result", "circuit_open")],
        )
        .await;
    assert!(timeouts >= 1.0, "the first-byte timeout fired");
    assert!(open >= 1.0, "the breaker opened and kept requests away from node-b");
    // One first-byte timeout (1 s) per request at most: never a pile-up.
    assert!(p99 < Duration::from_secs(3), "p99 {p99:?}");

    // Killed outright: connections are refused, and clients still see bytes.
    fleet.agents[1].signal(Signal::CONT);
    fleet.agents[1].signal(Signal::KILL);
    let origin_before = origin.state.body_bytes.load(Ordering::Relaxed);
    for (path, body) in objects.iter().rev() {
        for agent in [&fleet.agents[0], &fleet.agents[2]] {
            let resp = agent
                .client()
                .get(path, &[("Range", "bytes=1000-2099999")])
                .await
                .unwrap();
            assert_eq!(resp.status, 206, "{path} after node-b died");
            assert_bytes(&resp.body, &body[1000..=2_099_999], path);
        }
    }
    assert!(origin.state.body_bytes.load(Ordering::Relaxed) >= origin_before);
    fleet.agents[0].assert_alive();
    fleet.agents[2].assert_alive();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_changed_at_the_origin_is_never_served_mixed() {
    let origin = TestOrigin::start().await.unwrap();
    let path = "/changing.bin";
    let v1 = pattern(OBJECT_LEN, 1);
    let v2 = pattern(OBJECT_LEN, 2);
    // Every request revalidates, at owners and non-owners alike.
    let object = |body: &Bytes, etag: &str| with_cache_control(body, etag, "max-age=0");
    origin.state.put(path, object(&v1, "v1"));
    let fleet = start_agents(&origin, true).await;
    // Every owner holds v1's slices.
    for agent in &fleet.agents {
        let resp = agent.client().get(path, &[]).await.unwrap();
        assert_bytes(&resp.body, &v1, "v1 before the change");
    }
    origin.state.put(path, object(&v2, "v2"));
    for round in 0..3 {
        for (i, agent) in fleet.agents.iter().enumerate() {
            let mut client = agent.client();
            for range in [None, Some((100_000usize, 3_500_000usize))] {
                let headers: Vec<(String, String)> = range
                    .map(|(a, b)| vec![("Range".to_string(), format!("bytes={a}-{b}"))])
                    .unwrap_or_default();
                let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let resp = client.get(path, &headers).await.unwrap();
                let (a, b) = range.unwrap_or((0, OBJECT_LEN - 1));
                let what = format!("round {round}, agent {i}, bytes {a}-{b}");
                // The origin says v2 and nothing may be reused without asking:
                // v2, whole; a mix of v1 and v2 would fail here too.
                assert_eq!(resp.header("etag"), Some("\"v2\""), "{what}");
                assert_bytes(&resp.body, &v2[a..=b], &what);
            }
        }
    }
}

/// Owners disagree: after the origin changes, one owner is purged and
/// learns v2 while the others still hold v1 as fresh. A response is one
/// version, whole, or cut short (never completed with mixed bytes).
#[tokio::test(flavor = "multi_thread")]
async fn owners_holding_different_versions_never_mix_a_response() {
    let origin = TestOrigin::start().await.unwrap();
    let path = "/changing.bin";
    let v1 = pattern(OBJECT_LEN, 1);
    let v2 = pattern(OBJECT_LEN, 2);
    let fresh = |body: &Bytes, etag: &str| with_cache_control(body, etag, "max-age=3600");
    origin.state.put(path, fresh(&v1, "v1"));
    let fleet = start_agents(&origin, true).await;
    for agent in &fleet.agents {
        let resp = agent.client().get(path, &[]).await.unwrap();
        assert_bytes(&resp.body, &v1, "v1 before the change");
    }
    origin.state.put(path, fresh(&v2, "v2"));
    let bearer = format!("Bearer {PURGE_TOKEN}");
    let purged = fleet.agents[1]
        .admin_client()
        .request("POST", &format!("/purge?url={path}"), &[("Authorization", &bearer)])
        .await
        .unwrap();
    assert_eq!(purged.status, 200, "{}", String::from_utf8_lossy(&purged.body));
    let (mut whole, mut cut) = (0, 0);
    for round in 0..3 {
        for (i, agent) in fleet.agents.iter().enumerate() {
            match agent.client().get(path, &[]).await {
                Ok(resp) => {
                    let what = format!("round {round}, agent {i}");
                    match resp.header("etag") {
                        Some("\"v1\"") => assert_bytes(&resp.body, &v1, &what),
                        Some("\"v2\"") => assert_bytes(&resp.body, &v2, &what),
                        other => panic!("{what}: ETag {other:?}"),
                    }
                    whole += 1;
                }
                Err(_) => cut += 1,
            }
        }
    }
    println!("{whole} responses whole and of one version, {cut} cut short");
    assert!(whole >= 6, "most responses complete: {whole} whole, {cut} cut");
}

/// An owner whose peer-serving load is far over the others' sheds: the
/// members ask the next member in rendezvous order, which copies each slice
/// from the owner once and serves it from then on. The members' hot sets
/// (1/8 of 32 MiB) are too small for the 16 MiB read again and again, so
/// without shedding the owner would serve every read.
#[tokio::test(flavor = "multi_thread")]
async fn an_overloaded_owner_sheds_to_the_next_member() {
    let origin = TestOrigin::start().await.unwrap();
    // Eight 2 MiB objects whose two granules node-a owns.
    let objects: Vec<(String, Bytes)> = (0..)
        .map(|i| format!("/owned-by-a/{i}.bin"))
        .filter(|path| ranked(path, 0)[0] == NAMES[0] && ranked(path, 1 << 20)[0] == NAMES[0])
        .take(8)
        .enumerate()
        .map(|(i, path)| {
            let body = pattern(2 << 20, 500 + i as u64);
            origin
                .state
                .put(&path, OriginObject::new(body.clone(), &format!("s{i}")));
            (path, body)
        })
        .collect();
    let object_bytes: u64 = objects.iter().map(|(_, b)| b.len() as u64).sum();
    let fleet = start_agents_with(
        &origin,
        true,
        &[("--memory-cache", "32Mi"), ("--fleet-hot-key-rate", "0")],
    )
    .await;
    let readers = [&fleet.agents[1], &fleet.agents[2]];
    read_in_loops(&readers, &objects, 4, 6).await;

    let shed = sum(&fleet.agents, "slicecache_fleet_spills_total", &[("reason", "load")]).await;
    let served = [("role", "server"), ("result", "ok")];
    let by_owner = fleet.agents[0].metric("slicecache_peer_requests_total", &served).await;
    let by_others = sum(&fleet.agents[1..], "slicecache_peer_requests_total", &served).await;
    let origin_bytes = origin.state.body_bytes.load(Ordering::Relaxed);
    println!(
        "{shed} misses shed; peer requests served by the owner {by_owner}, by the next members {by_others}; origin sent {:.3}x the object bytes",
        origin_bytes as f64 / object_bytes as f64
    );
    assert!(shed > 0.0, "node-a carried every read, yet nobody shed");
    assert!(by_others > 0.0, "the next members served none of node-a's keys");
    assert!(
        origin_bytes as f64 <= object_bytes as f64 * 1.05,
        "the holders copied from the owner, not the origin: {origin_bytes} of {object_bytes}"
    );
    let errors = sum(&fleet.agents, "slicecache_peer_requests_total", &[("result", "error")]).await;
    assert_eq!(errors, 0.0);
}

/// A key its owner sees asked more than the hot line is marked hot in the
/// answers; the members then spread it over three holders, each copying it
/// from the owner once, and the origin still sends each byte once.
#[tokio::test(flavor = "multi_thread")]
async fn a_hot_key_is_spread_over_its_holders() {
    let origin = TestOrigin::start().await.unwrap();
    let path = "/hot/episode.bin";
    let body = pattern(8 << 20, 77);
    origin.state.put(path, OriginObject::new(body.clone(), "hot-1"));
    let objects = vec![(path.to_string(), body.clone())];
    let fleet = start_agents_with(
        &origin,
        true,
        &[
            ("--memory-cache", "32Mi"),
            ("--fleet-hot-key-rate", "4"),
            ("--fleet-load-bound", "0"),
        ],
    )
    .await;
    // Each member misses on what others own: the hot set (4 MiB) cannot
    // hold the 8 MiB, so each read asks the owners again.
    let readers: Vec<&AgentProc> = fleet.agents.iter().collect();
    read_in_loops(&readers, &objects, 2, 8).await;

    let spread = sum(&fleet.agents, "slicecache_fleet_spills_total", &[("reason", "hot")]).await;
    let known = sum(&fleet.agents, "slicecache_fleet_hot_keys", &[]).await;
    let load = sum(&fleet.agents, "slicecache_fleet_spills_total", &[("reason", "load")]).await;
    let origin_bytes = origin.state.body_bytes.load(Ordering::Relaxed);
    println!("{known} hot keys known, {spread} misses sent to a holder other than the owner; origin sent {origin_bytes} for {} bytes", body.len());
    assert!(known > 0.0, "no owner marked a key hot");
    assert!(spread > 0.0, "hot keys still went to their owners only");
    assert_eq!(load, 0.0, "shedding is off in this test");
    assert!(origin_bytes as f64 <= body.len() as f64 * 1.05, "{origin_bytes}");
    let errors = sum(&fleet.agents, "slicecache_peer_requests_total", &[("result", "error")]).await;
    assert_eq!(errors, 0.0);
}

/// Rotating the token without a restart, the way the operator does: the
/// new token is first accepted, then presented, then the old one dropped.
/// Peers never refuse each other on the way, and at the end only the new
/// token opens the peer port.
#[tokio::test(flavor = "multi_thread")]
async fn the_token_rotates_without_a_refused_peer_request() {
    const NEW: &str = "rotated-token-fedcba9876543210";
    let origin = TestOrigin::start().await.unwrap();
    let objects = put_objects(&origin);
    let fleet = start_agents(&origin, true).await;
    let steps = [
        format!("{TOKEN}\n{NEW}\n"),
        format!("{NEW}\n{TOKEN}\n"),
        format!("{NEW}\n"),
    ];
    for (step, text) in steps.iter().enumerate() {
        let tmp = fleet.token_file.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &fleet.token_file).unwrap();
        // Each agent logs every change it applies.
        let deadline = Instant::now() + Duration::from_secs(20);
        while fleet
            .agents
            .iter()
            .any(|a| a.log().matches("peer token file changed").count() < step + 1)
        {
            assert!(
                Instant::now() < deadline,
                "an agent did not read step {step} of the rotation"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        spray(&fleet.agents, &objects[step * 4..step * 4 + 4], step as u64).await;
    }
    let refused = sum(
        &fleet.agents,
        "slicecache_peer_requests_total",
        &[("result", "refused")],
    )
    .await;
    let asked = sum(
        &fleet.agents,
        "slicecache_peer_requests_total",
        &[("role", "client"), ("result", "ok")],
    )
    .await;
    assert!(asked > 0.0, "the members asked each other during the rotation");
    assert_eq!(refused, 0.0, "a member refused another during the rotation");
    let mut client = HttpClient::new(fleet.peer_addrs[0]);
    let (path, _) = &objects[0];
    let old = format!("Bearer {TOKEN}");
    let new = format!("Bearer {NEW}");
    assert_eq!(client.get(path, &[("Authorization", &old)]).await.unwrap().status, 403);
    assert_eq!(client.get(path, &[("Authorization", &new)]).await.unwrap().status, 200);
}

/// Clients keep reading through two members while the third is killed
/// and started again (same name, same peer port): no client sees an
/// error, the dead member's keys come from the origin meanwhile (its
/// breaker is open at the others), and once it is back (a probe succeeds)
/// the others ask it for its keys again. Every read is of an object put
/// at the origin just before, so every read has keys none of the members
/// holds yet: a key the others took from the origin in the dead member's
/// place stays in their memory and would never show it being asked again.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_killed_mid_load_costs_no_errors_and_gets_its_keys_back() {
    use std::sync::atomic::{AtomicBool, AtomicU64};
    use std::sync::Arc;

    let origin = TestOrigin::start().await.unwrap();
    let mut fleet = start_agents(&origin, true).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut readers = Vec::new();
    for r in 0..4u64 {
        let mut client = fleet.agents[[0, 2][r as usize % 2]].client();
        let (stop, reads, failures, state) = (stop.clone(), reads.clone(), failures.clone(), origin.state.clone());
        readers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(r);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let (path, body) = (format!("/fresh/{r}/{n}.bin"), pattern(1 << 20, r << 32 | n));
                state.put(&path, OriginObject::new(body.clone(), &format!("f{r}-{n}")));
                let first = rng.random_range(0..body.len() / 2);
                let last = first + rng.random_range(0..body.len() / 2);
                let range = format!("bytes={first}-{last}");
                let ok = match client.get(&path, &[("Range", &range)]).await {
                    Ok(resp) => resp.status == 206 && resp.body[..] == body[first..=last],
                    Err(_) => false,
                };
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                    eprintln!("{range} of {path} failed");
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let wait_reads = |n: u64| {
        let reads = reads.clone();
        let target = reads.load(Ordering::Relaxed) + n;
        wait_for("the readers", Duration::from_secs(60), move || {
            let done = reads.load(Ordering::Relaxed) >= target;
            async move { done }
        })
    };
    let skipped = [("role", "client"), ("result", "circuit_open")];
    wait_reads(30).await;
    fleet.agents[1].signal(Signal::KILL);
    // Until its breakers open, and for a while after.
    wait_for("node-a to open node-b's breaker", Duration::from_secs(30), || async {
        fleet.agents[0].metric("slicecache_peer_requests_total", &skipped).await >= 1.0
    })
    .await;
    wait_reads(60).await;
    let while_dead = reads.load(Ordering::Relaxed);

    // Back on the same peer port, empty (no disk here).
    fleet.agents[1] = fleet.builders[1].clone().start().await;
    // Each of the other two closes its breaker after its own probe (up to
    // 5 s after it opened), so wait for both, and for node-b to serve.
    let served = [("role", "server"), ("result", "ok")];
    let fleet = &fleet;
    wait_for(
        "both members to close node-b's breaker and ask it again",
        Duration::from_secs(30),
        || async move {
            let mut open = 0.0;
            for agent in [&fleet.agents[0], &fleet.agents[2]] {
                open += agent
                    .metric("slicecache_peer_circuit_open", &[("peer", "node-b")])
                    .await;
            }
            open == 0.0 && fleet.agents[1].metric("slicecache_peer_requests_total", &served).await >= 10.0
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    let back = fleet.agents[1].metric("slicecache_peer_requests_total", &served).await;
    println!(
        "{} range reads of fresh objects, {while_dead} of them until node-b came back; back, it served {back} peer requests",
        reads.load(Ordering::Relaxed)
    );
    assert_eq!(failures.load(Ordering::Relaxed), 0, "client reads failed");
}
