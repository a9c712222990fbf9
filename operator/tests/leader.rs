//! Leader election against a mocked API server that keeps one Lease: it
//! answers GET, POST and PATCH the way the API server does for these
//! requests and records every call, and each test asserts the writes
//! (method, path, content type, field manager, body) the elector made.
//! The election protocol is `kube-lease-manager`'s; these tests pin what
//! the operator relies on: a free Lease is created and taken, an expired
//! one is taken over, a live one is not, and a leader stops when another
//! replica holds the Lease or a renewal fails.
#![allow(clippy::unwrap_used)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{Request, Response};
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::{SignedDuration, Timestamp},
};
use kube::{client::Body, Client};
use serde_json::{json, Map, Value};
use slicecache_operator::leader::{LeaderElector, LeaseTiming, LostLeadership};
use slicecache_testkit::mock_apiserver::Call;

const NS: &str = "slicecache-system";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/slicecache-system/leases";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/slicecache-system/leases/slicecache-operator";
const APPLY: &str = "application/apply-patch+yaml";
const STRATEGIC: &str = "application/strategic-merge-patch+json";

#[derive(Default)]
struct State {
    lease: Option<Value>,
    calls: Vec<Call>,
    /// Answer writes with 500, as an API server that is going away.
    fail_writes: bool,
}

/// The fake API server: one Lease, shared with the test.
#[derive(Clone, Default)]
struct FakeLeases(Arc<Mutex<State>>);

impl FakeLeases {
    fn with_lease(spec: Value) -> Self {
        let fake = Self::default();
        fake.0.lock().unwrap().lease = Some(lease(spec));
        fake
    }

    /// A Client whose requests this fake answers until the Client is dropped.
    fn client(&self) -> Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let fake = self.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let call = Call::read(request).await;
                let (code, body) = fake.answer(&call);
                send.send_response(
                    Response::builder()
                        .status(code)
                        .body(Body::from(serde_json::to_vec(&body).unwrap()))
                        .unwrap(),
                );
            }
        });
        Client::new(service, NS)
    }

    fn answer(&self, call: &Call) -> (u16, Value) {
        let mut state = self.0.lock().unwrap();
        state.calls.push(call.clone());
        if state.fail_writes && call.method != "GET" {
            return (500, status(500, "InternalError"));
        }
        match (call.method.as_str(), call.path.as_str()) {
            ("GET", LEASE) => match &state.lease {
                Some(l) => (200, l.clone()),
                None => (404, status(404, "NotFound")),
            },
            ("POST", LEASES) if state.lease.is_some() => (409, status(409, "AlreadyExists")),
            ("POST", LEASES) => {
                let spec = call.body.get("spec").cloned().unwrap_or(Value::Null);
                state.lease = Some(lease(spec));
                (201, state.lease.clone().unwrap())
            }
            ("PATCH", LEASE) => {
                let Some(current) = state.lease.as_mut() else {
                    return (404, status(404, "NotFound"));
                };
                let patch = call
                    .body
                    .get("spec")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                let holder = current.pointer("/spec/holderIdentity").and_then(Value::as_str);
                // Server-side apply: holderIdentity is owned by the manager
                // that set it, so another manager's different value conflicts.
                if call.content_type == APPLY {
                    let wanted = patch.get("holderIdentity").and_then(Value::as_str);
                    if holder.is_some_and(|h| Some(h) != wanted) {
                        return (409, status(409, "Conflict"));
                    }
                }
                let spec = current["spec"].as_object_mut().unwrap();
                for (k, v) in patch {
                    if v.is_null() {
                        spec.remove(&k);
                    } else {
                        spec.insert(k, v);
                    }
                }
                (200, current.clone())
            }
            _ => (404, status(404, "NotFound")),
        }
    }

    fn set_lease(&self, spec: Value) {
        self.0.lock().unwrap().lease = Some(lease(spec));
    }

    fn lease_spec(&self) -> Value {
        self.0
            .lock()
            .unwrap()
            .lease
            .as_ref()
            .map(|l| l["spec"].clone())
            .unwrap_or(Value::Null)
    }

    fn fail_writes(&self) {
        self.0.lock().unwrap().fail_writes = true;
    }

    /// Every call but GETs, from call number `from` on.
    fn writes_since(&self, from: usize) -> Vec<Call> {
        let state = self.0.lock().unwrap();
        state.calls[from..]
            .iter()
            .filter(|c| c.method != "GET")
            .cloned()
            .collect()
    }

    fn call_count(&self) -> usize {
        self.0.lock().unwrap().calls.len()
    }
}

fn lease(spec: Value) -> Value {
    let spec = if spec.is_null() {
        Value::Object(Map::new())
    } else {
        spec
    };
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "slicecache-operator", "namespace": NS, "resourceVersion": "1"},
        "spec": spec,
    })
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": reason, "reason": reason, "code": code})
}

fn micro_time(seconds_ago: i64) -> Value {
    let t = Timestamp::now() - SignedDuration::from_secs(seconds_ago);
    serde_json::to_value(MicroTime(t)).unwrap()
}

fn elector(fake: &FakeLeases, identity: &str, timing: LeaseTiming) -> LeaderElector {
    LeaderElector::new(fake.client(), NS, "slicecache-operator", identity, timing)
}

fn quick() -> LeaseTiming {
    LeaseTiming::new(Duration::from_secs(2), Duration::from_secs(1)).unwrap()
}

/// Asserts a PATCH of the Lease by `identity`'s field manager.
fn assert_patch(call: &Call, content_type: &str, identity: &str) {
    assert_eq!((call.method.as_str(), call.path.as_str()), ("PATCH", LEASE), "{call:?}");
    assert_eq!(call.content_type, content_type, "{call:?}");
    assert!(
        call.query
            .contains(&format!("fieldManager=kube-lease-manager-{identity}")),
        "{call:?}"
    );
}

#[tokio::test]
async fn a_missing_lease_is_created_and_taken() {
    let fake = FakeLeases::default();
    let elector = elector(&fake, "replica-a", LeaseTiming::DEFAULT);
    tokio::time::timeout(Duration::from_secs(10), elector.acquire())
        .await
        .expect("acquired");

    let writes = fake.writes_since(0);
    assert_eq!(writes.len(), 3, "{writes:#?}");
    assert_eq!((writes[0].method.as_str(), writes[0].path.as_str()), ("POST", LEASES));
    assert_eq!(writes[0].body["metadata"]["name"], "slicecache-operator");
    assert_patch(&writes[1], APPLY, "replica-a");
    assert_eq!(writes[1].body["spec"]["holderIdentity"], "replica-a");
    assert_eq!(writes[1].body["spec"]["leaseDurationSeconds"], 15);
    assert!(writes[1].body["spec"]["renewTime"].is_string(), "{:?}", writes[1].body);
    assert_patch(&writes[2], STRATEGIC, "replica-a");
    assert_eq!(writes[2].body["spec"], json!({"leaseTransitions": 1}));

    let spec = fake.lease_spec();
    assert_eq!(spec["holderIdentity"], "replica-a");
    assert_eq!(spec["leaseTransitions"], 1);
}

#[tokio::test]
async fn an_expired_lease_is_taken_over() {
    let fake = FakeLeases::with_lease(json!({
        "holderIdentity": "replica-old",
        "leaseDurationSeconds": 15,
        "acquireTime": micro_time(120),
        "renewTime": micro_time(60),
        "leaseTransitions": 3,
    }));
    let elector = elector(&fake, "replica-a", LeaseTiming::DEFAULT);
    tokio::time::timeout(Duration::from_secs(10), elector.acquire())
        .await
        .expect("took over the expired lease");

    let writes = fake.writes_since(0);
    assert_eq!(writes.len(), 3, "{writes:#?}");
    // The dead holder's claim is cleared first, then the Lease is taken by
    // server-side apply, which conflicts if another standby was faster.
    assert_patch(&writes[0], STRATEGIC, "replica-a");
    assert_eq!(
        writes[0].body["spec"],
        json!({"acquireTime": null, "renewTime": null, "holderIdentity": null, "leaseDurationSeconds": null})
    );
    assert_patch(&writes[1], APPLY, "replica-a");
    assert_eq!(writes[1].body["spec"]["holderIdentity"], "replica-a");
    assert_patch(&writes[2], STRATEGIC, "replica-a");
    assert_eq!(writes[2].body["spec"], json!({"leaseTransitions": 4}));
    assert_eq!(fake.lease_spec()["holderIdentity"], "replica-a");
}

#[tokio::test]
async fn a_live_lease_is_not_taken_over() {
    let live = json!({
        "holderIdentity": "replica-old",
        "leaseDurationSeconds": 15,
        "acquireTime": micro_time(30),
        "renewTime": micro_time(1),
        "leaseTransitions": 3,
    });
    let fake = FakeLeases::with_lease(live.clone());
    let elector = elector(&fake, "replica-a", LeaseTiming::DEFAULT);
    let attempt = tokio::time::timeout(Duration::from_secs(3), elector.acquire()).await;

    assert!(attempt.is_err(), "a standby took a live lease");
    assert!(fake.call_count() >= 1, "the standby read the lease");
    assert!(fake.writes_since(0).is_empty(), "{:#?}", fake.writes_since(0));
    assert_eq!(fake.lease_spec(), live);
}

#[tokio::test]
async fn a_leader_stops_when_another_replica_holds_the_lease() {
    let fake = FakeLeases::default();
    let elector = elector(&fake, "replica-a", quick());
    let leadership = tokio::time::timeout(Duration::from_secs(10), elector.acquire())
        .await
        .expect("acquired");
    let before = fake.call_count();
    // Another replica took the Lease (our renewals were late, say).
    fake.set_lease(json!({
        "holderIdentity": "replica-b",
        "leaseDurationSeconds": 2,
        "renewTime": micro_time(0),
    }));

    let lost = tokio::time::timeout(Duration::from_secs(5), leadership.hold())
        .await
        .expect("the leader noticed");
    assert!(matches!(lost, LostLeadership::TakenOver), "{lost:?}");
    // The renewal rewrote only the times, never the holder, so it cannot
    // take the Lease back from replica-b.
    let writes = fake.writes_since(before);
    assert_eq!(writes.len(), 1, "{writes:#?}");
    assert_patch(&writes[0], STRATEGIC, "replica-a");
    let renewal = writes[0].body["spec"].as_object().unwrap();
    assert!(
        renewal.contains_key("renewTime") && !renewal.contains_key("holderIdentity"),
        "{renewal:?}"
    );
    assert_eq!(fake.lease_spec()["holderIdentity"], "replica-b");
}

#[tokio::test]
async fn a_leader_stops_when_a_renewal_fails() {
    let fake = FakeLeases::default();
    let elector = elector(&fake, "replica-a", quick());
    let leadership = tokio::time::timeout(Duration::from_secs(10), elector.acquire())
        .await
        .expect("acquired");
    let before = fake.call_count();
    fake.fail_writes();

    let lost = tokio::time::timeout(Duration::from_secs(5), leadership.hold())
        .await
        .expect("the leader stopped");
    assert!(matches!(lost, LostLeadership::RenewFailed(_)), "{lost:?}");
    let writes = fake.writes_since(before);
    assert_eq!(writes.len(), 1, "one renewal, no retry: {writes:#?}");
    assert_patch(&writes[0], STRATEGIC, "replica-a");
}

#[tokio::test]
async fn a_released_lease_is_taken_by_a_standby_at_once() {
    let fake = FakeLeases::default();
    let leader = elector(&fake, "replica-a", LeaseTiming::DEFAULT);
    let leadership = tokio::time::timeout(Duration::from_secs(10), leader.acquire())
        .await
        .expect("acquired");
    let before = fake.call_count();
    leadership.release().await;

    let writes = fake.writes_since(before);
    assert_eq!(writes.len(), 1, "{writes:#?}");
    assert_patch(&writes[0], STRATEGIC, "replica-a");
    assert!(writes[0].body["spec"]["holderIdentity"].is_null());
    assert!(fake.lease_spec().get("holderIdentity").is_none());

    // Well within the 15 s duration: the standby does not wait for expiry.
    let standby = elector(&fake, "replica-b", LeaseTiming::DEFAULT);
    tokio::time::timeout(Duration::from_secs(3), standby.acquire())
        .await
        .expect("the standby took the released lease");
    assert_eq!(fake.lease_spec()["holderIdentity"], "replica-b");
    assert_eq!(fake.lease_spec()["leaseTransitions"], 2);
}
