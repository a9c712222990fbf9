//! One cache per fleet on the real control plane: a SliceCache with
//! `fleet.mode: Shard` on three of four nodes. The agents find each other
//! in the EndpointSlices of the peers Service (their Pods on a non-loopback
//! range, their API access through their ServiceAccount's Role), so each
//! slice is fetched from the origin once for the whole fleet although every
//! agent serves every object. Then a fourth node is labelled into the
//! placement while clients keep reading from all agents: the DaemonSet
//! controller starts a fourth agent, every agent's ring grows to four, and
//! no client request fails or returns a wrong byte.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use slicecache_e2e::{
    install::{kubectl, pod_port, ready},
    poll,
    scene::Scene,
};
use slicecache_testkit::{
    client::HttpClient,
    metrics::{metric_sum, scrape},
    origin::{pattern, OriginObject},
};

const NS: &str = "fleet";
const OBJECTS: usize = 4;
const OBJECT_LEN: usize = (8 << 20) + 4321;

/// `(client, admin)` addresses of the SliceCache's agent Pods.
fn agents(scene: &Scene) -> Vec<(SocketAddr, SocketAddr)> {
    scene
        .agent_pods("models")
        .iter()
        .filter_map(|p| Some((pod_port(p, "http")?, pod_port(p, "admin")?)))
        .collect()
}

/// Waits until `n` agents run and each sees a ring of `n` members.
async fn wait_for_ring(scene: &Scene, n: usize) -> Vec<(SocketAddr, SocketAddr)> {
    poll(
        &format!("{n} agents, each with {n} members"),
        Duration::from_secs(90),
        || {
            let found = agents(scene);
            async move {
                if found.len() != n {
                    return None;
                }
                for (_, admin) in &found {
                    let text = scrape(*admin).await?;
                    if metric_sum(&text, "slicecache_fleet_members", &[]) != n as f64 {
                        return None;
                    }
                }
                Some(found)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_agents_share_one_cache_and_a_fourth_node_joins_without_errors() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut scene = Scene::with_nodes(dir.path(), NS, 4).await;
    for node in &scene.shim.node_names()[..3] {
        kubectl(scene.admin(), &["label", "node", node, "fleet=yes"]).unwrap_or_else(|e| panic!("{e}"));
    }
    let bodies: Vec<_> = (0..OBJECTS).map(|i| pattern(OBJECT_LEN, 40 + i as u64)).collect();
    for (i, body) in bodies.iter().enumerate() {
        scene
            .origin
            .state
            .put(&format!("/m/{i}"), OriginObject::new(body.clone(), &format!("v{i}")));
    }
    scene.apply(
        "models",
        "  slicing:\n    sliceSize: 1Mi\n  cache:\n    memory: 128Mi\n  placement:\n    nodeSelector:\n      \
         fleet: \"yes\"\n  fleet:\n    mode: Shard\n",
    );
    scene
        .wait_for_cache("models", "Ready", Duration::from_secs(90), ready)
        .await;
    let members = wait_for_ring(&scene, 3).await;
    scene
        .wait_for_cache("models", "3 fleet members in status", Duration::from_secs(60), |c| {
            c["status"]["fleet"]["members"] == 3 && c["status"]["fleet"]["ownedFraction"] == "33.3%"
        })
        .await;

    // Every agent serves every object in full; the origin sends each byte once.
    for (i, body) in bodies.iter().enumerate() {
        for (client, _) in &members {
            let resp = HttpClient::new(*client)
                .get(&format!("/m/{i}"), &[])
                .await
                .expect("a read through an agent");
            assert_eq!(resp.status, 200, "object {i} through {client}");
            assert!(resp.body == *body, "object {i} through {client}: wrong bytes");
        }
    }
    let origin_bytes = scene.origin.state.body_bytes.load(Ordering::Relaxed);
    let object_bytes = (OBJECTS * OBJECT_LEN) as u64;
    let ratio = origin_bytes as f64 / object_bytes as f64;
    println!("3 agents, every object read through each: origin sent {ratio:.3}x the object bytes");
    assert!(
        ratio <= 1.05,
        "the origin sent {ratio:.3}x the object bytes (at most 1.05x for one cache)"
    );
    let mut peer_bytes = 0.0;
    for (_, admin) in &members {
        let text = scrape(*admin).await.expect("metrics");
        peer_bytes += metric_sum(&text, "slicecache_peer_bytes_total", &[("direction", "in")]);
        assert_eq!(
            metric_sum(&text, "slicecache_peer_requests_total", &[("result", "refused")]),
            0.0
        );
    }
    assert!(
        peer_bytes >= object_bytes as f64,
        "non-owners read from the owners: {peer_bytes} peer bytes"
    );

    // Clients keep reading random ranges from every agent while a fourth
    // node joins the placement.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for r in 0..4usize {
        let (stop, failures, reads, bodies) = (stop.clone(), failures.clone(), reads.clone(), bodies.clone());
        let targets: Vec<SocketAddr> = members.iter().map(|(c, _)| *c).collect();
        readers.push(tokio::spawn(async move {
            let mut n = r;
            while !stop.load(Ordering::Relaxed) {
                n += 7;
                let object = n % OBJECTS;
                let start = (n * 1_048_573) % (OBJECT_LEN - 300_000);
                let end = start + 250_000 + n % 40_000;
                let range = format!("bytes={start}-{end}");
                let target = targets[n % targets.len()];
                let ok = match HttpClient::new(target)
                    .get(&format!("/m/{object}"), &[("range", &range)])
                    .await
                {
                    Ok(resp) => resp.status == 206 && resp.body[..] == bodies[object][start..=end],
                    Err(_) => false,
                };
                reads.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                    eprintln!("read {range} of /m/{object} through {target} failed");
                }
            }
        }));
    }
    let fourth = scene.shim.node_names()[3].clone();
    kubectl(scene.admin(), &["label", "node", &fourth, "fleet=yes"]).unwrap_or_else(|e| panic!("{e}"));
    let grown = wait_for_ring(&scene, 4).await;
    scene
        .wait_for_cache("models", "4 fleet members in status", Duration::from_secs(60), |c| {
            c["status"]["fleet"]["members"] == 4
        })
        .await;
    let wide =
        kubectl(scene.admin(), &["get", "slc", "models", "-n", NS, "-o", "wide"]).unwrap_or_else(|e| panic!("{e}"));
    println!("{wide}");
    assert!(
        wide.contains("MEMBERS") && wide.contains("25.0%"),
        "kubectl get slc -o wide:\n{wide}"
    );
    // Keep reading a little while on the new ring.
    let settled = reads.load(Ordering::Relaxed);
    poll("reads on the ring of four", Duration::from_secs(30), || {
        let done = reads.load(Ordering::Relaxed) >= settled + 40;
        async move { done.then_some(()) }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.expect("a reader");
    }
    let total = reads.load(Ordering::Relaxed);
    println!("{total} range reads while the fleet grew from 3 to 4 agents");
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "client reads failed while a member joined"
    );

    // The new member serves every object right: what the others own from
    // them, what it owns now from their previous owners (hand-over).
    let (new_client, new_admin) = *grown.iter().find(|a| !members.contains(a)).expect("the fourth agent");
    for (i, body) in bodies.iter().enumerate() {
        let resp = HttpClient::new(new_client)
            .get(&format!("/m/{i}"), &[])
            .await
            .expect("a read");
        assert!(
            resp.status == 200 && resp.body == *body,
            "object {i} through the new agent"
        );
    }
    let text = scrape(new_admin).await.expect("metrics of the new agent");
    assert!(metric_sum(&text, "slicecache_fleet_owned_fraction", &[]) > 0.2);
    // Neither the growth nor the new member's reads cost the origin a byte:
    // a quarter of the keys moved, and their new owner got them from the
    // members that held them.
    let again = scene.origin.state.body_bytes.load(Ordering::Relaxed) - origin_bytes;
    println!("from 3 to 4 agents and every object through the fourth: the origin sent {again} more bytes");
    assert_eq!(again, 0, "the new owner's slices came from their previous owners");

    // Token rotation, first step, with the chart's RBAC: back-date the
    // token's last write, and the operator's next reconcile adds a new
    // token after the old one (accepted by the agents, not yet presented).
    let secret = "models-peer-token";
    let get_secret = |output: &str| kubectl(scene.admin(), &["get", "secret", secret, "-n", NS, "-o", output]);
    let tokens = || get_secret("go-template={{.data.token | base64decode}}").unwrap_or_else(|e| panic!("{e}"));
    let before = tokens();
    kubectl(
        scene.admin(),
        &[
            "annotate",
            "secret",
            secret,
            "-n",
            NS,
            "--overwrite",
            "slicecache.io/peer-token-written=2020-01-01T00:00:00Z",
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // Any change to the SliceCache starts a reconcile (the Secret is not
    // watched; otherwise the next comes within the 5 minute resync).
    kubectl(
        scene.admin(),
        &[
            "annotate",
            "slc",
            "models",
            "-n",
            NS,
            "--overwrite",
            "e2e.slicecache.io/poke=rotation",
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let step = poll("the first step of the token rotation", Duration::from_secs(60), || {
        let out = get_secret("jsonpath={.metadata.annotations.slicecache\\.io/peer-token-step}");
        async move { out.ok().filter(|s| s == "accepting") }
    })
    .await;
    let after = tokens();
    let lines: Vec<&str> = after.lines().collect();
    println!("rotation step {step}: {} tokens in the Secret", lines.len());
    assert_eq!(lines.len(), 2, "old and new token: {after:?}");
    assert_eq!(lines[0], before.trim(), "the old token stays first (presented)");
    assert_eq!(lines[1].len(), 64, "a fresh 64-hex-digit token");
    scene.shutdown().await;
}
