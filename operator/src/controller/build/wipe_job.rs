//! Device wipe Jobs: one per node, run on delete when
//! `spec.cleanup.wipeDevicesOnDelete` is confirmed, with the agents' pod
//! template turned into a one-shot `slicecache-agent wipe`.
//!
//! Contract: pure, like the whole build step; the cleanup step creates the
//! Jobs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use slicecache_api::ValidatedSliceCache;

use super::{
    config_map::CONFIG_PATH,
    listen_port,
    meta::{annotate, labels, metadata, Owner},
    pod_template::{pod_template, Ports},
    BuildDefaults, BuildError, ObjectNames,
};

/// `app.kubernetes.io/component` of device wipe Jobs.
pub const WIPE_COMPONENT: &str = "device-wipe";
/// Job annotation naming the node a wipe Job runs on.
pub const WIPE_NODE: &str = "slicecache.io/wipe-node";

/// The label selector of one SliceCache's wipe Jobs.
pub fn wipe_job_selector(owner: &Owner) -> String {
    format!(
        "app.kubernetes.io/instance={},app.kubernetes.io/component={WIPE_COMPONENT}",
        owner.name
    )
}

/// A Job that erases the slicecache superblocks of the devices on `node`.
///
/// It mounts the same devices and config as the agents and runs
/// `slicecache-agent wipe --config ...` once, pinned to the node by
/// `nodeName` (so it runs even where agents are no longer scheduled) and
/// tolerating what the agents tolerate.
pub fn wipe_job(
    validated: &ValidatedSliceCache,
    owner: &Owner,
    defaults: &BuildDefaults,
    node: &str,
) -> Result<k8s_openapi::api::batch::v1::Job, BuildError> {
    use k8s_openapi::api::batch::v1::{Job, JobSpec};

    let names = ObjectNames::for_cache(&owner.name);
    let config = validated.agent_config();
    let client_port = listen_port("listen", &config.listen)?;
    let admin_port = listen_port("adminListen", &config.admin_listen)?;
    // No peer port: the Job is no fleet member and needs neither the peer
    // token nor the API.
    let ports = Ports {
        client: client_port,
        admin: admin_port,
        peer: None,
    };
    let mut template = pod_template(validated, owner, defaults, &names, ports);
    template.metadata = Some(ObjectMeta {
        labels: Some(labels(owner, WIPE_COMPONENT)),
        ..ObjectMeta::default()
    });
    if let Some(spec) = template.spec.as_mut() {
        spec.node_name = Some(node.to_string());
        spec.node_selector = None;
        spec.affinity = None;
        spec.restart_policy = Some("Never".into());
        for c in &mut spec.containers {
            c.name = "wipe".into();
            c.args = Some(vec!["wipe".into(), "--config".into(), CONFIG_PATH.into()]);
            c.ports = None;
            c.liveness_probe = None;
            c.readiness_probe = None;
        }
    }
    // Job names become label values (<= 63 characters).
    let node_hash = format!("{:010x}", xxhash_rust::xxh3::xxh3_64(node.as_bytes()) & 0xff_ffff_ffff);
    let prefix: String = owner.name.chars().take(46).collect();
    let name = format!("{prefix}-wipe-{node_hash}");
    let mut metadata = metadata(owner, &name, WIPE_COMPONENT);
    annotate(&mut metadata, WIPE_NODE, node);
    Ok(Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(3),
            template,
            ..JobSpec::default()
        }),
        ..Job::default()
    })
}
