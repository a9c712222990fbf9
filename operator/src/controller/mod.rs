//! The SliceCache controller: one reconcile is the pipeline
//! [`dereference`] → [`validate`] → [`tune`] → [`build`] → [`apply`] →
//! [`status`], run under the `slicecache.io/cleanup` finalizer, with
//! [`cleanup`] on delete. A SliceCache is reconciled when it changes, when
//! an object it owns changes, and when a Node its placement selects changes
//! ([`nodes`]). Each step consumes what the one before it produced. The
//! tune step keeps one tuner per SliceCache in the [`Context`], so its
//! history outlives a reconcile.
//!
//! Vocabulary several steps share lives in leaf modules that import no
//! step: [`conditions`] (condition updates and reasons). [`events`] turns
//! what the status write changed into the tuner's Events.
//!
//! Every decision is an Event on the SliceCache; every error carries a
//! stable reason that is the Event reason, the `Degraded` condition reason
//! and the `reason` label of the error metric. One bad SliceCache yields an
//! error for that object and a backoff, never a dead watch.

pub mod api_error;
pub mod apply;
pub mod build;
pub mod cleanup;
pub mod conditions;
pub mod dereference;
pub mod events;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod nodes;
pub mod peer_token;
pub mod status;
pub mod tune;
pub mod validate;

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment},
    batch::v1::Job,
    core::v1::{ConfigMap, Node, Service, ServiceAccount},
    discovery::v1::EndpointSlice,
    policy::v1::PodDisruptionBudget,
};
use kube::{
    runtime::{
        controller::{Action, Config as ControllerConfig, Controller},
        events::{Event as KubeEvent, EventType, Recorder, Reporter},
        finalizer::{finalizer, Error as FinalizerError, Event as FinalizerEvent},
        reflector::ObjectRef,
        watcher,
    },
    Api, Client, Resource, ResourceExt,
};
use slicecache_api::{status::condition, SliceCache};
use std::sync::Mutex;

use crate::metrics::Metrics;
use apply::{ApplyError, Change};
use build::{BuildDefaults, BuildError, Owner, FIELD_MANAGER};
use cleanup::CleanupError;
use conditions::ConditionUpdate;
use dereference::DereferenceError;
use status::{Observed, StatusError};
use tune::TunerRegistry;
use validate::ValidateError;

/// The finalizer that runs [`cleanup`] before a SliceCache goes.
pub const FINALIZER: &str = "slicecache.io/cleanup";
/// Resync interval of a SliceCache that is settled.
pub const RESYNC: Duration = Duration::from_secs(300);
/// Requeue interval while a rollout is under way.
pub const ROLLOUT_POLL: Duration = Duration::from_secs(30);
/// Requeue interval while a referent is missing (Secrets are not watched).
pub const MISSING_REFERENT_POLL: Duration = Duration::from_secs(60);
/// Requeue interval while cleanup waits.
pub const CLEANUP_POLL: Duration = Duration::from_secs(10);
/// First and longest error backoff.
pub const BACKOFF_MIN: Duration = Duration::from_secs(5);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// A reconcile that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Dereference(#[from] DereferenceError),
    #[error(transparent)]
    Validate(#[from] ValidateError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error(transparent)]
    Cleanup(#[from] CleanupError),
    #[error("the SliceCache has no namespace")]
    NoNamespace,
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<FinalizerError<Error>>),
}

impl Error {
    /// Stable CamelCase reason, for events, conditions and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Dereference(e) => e.reason(),
            Self::Validate(e) => e.reason(),
            Self::Build(e) => e.reason(),
            Self::Apply(e) => e.reason(),
            Self::Status(e) => e.reason(),
            Self::Cleanup(e) => e.reason(),
            Self::NoNamespace => "MissingMetadata",
            Self::Finalizer(e) => match e.as_ref() {
                FinalizerError::ApplyFailed(e) | FinalizerError::CleanupFailed(e) => e.reason(),
                FinalizerError::AddFinalizer(_) => "AddFinalizerFailed",
                FinalizerError::RemoveFinalizer(_) => "RemoveFinalizerFailed",
                FinalizerError::UnnamedObject => "MissingMetadata",
                FinalizerError::InvalidFinalizer => "InvalidFinalizer",
            },
        }
    }

    /// Whether this is cleanup waiting for something, not a failure.
    pub fn is_waiting(&self) -> bool {
        match self {
            Self::Cleanup(e) => e.is_waiting(),
            Self::Finalizer(e) => match e.as_ref() {
                FinalizerError::ApplyFailed(e) | FinalizerError::CleanupFailed(e) => e.is_waiting(),
                _ => false,
            },
            _ => false,
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub defaults: BuildDefaults,
    /// One tuner per SliceCache in mode Recommend or Auto.
    pub tuners: TunerRegistry,
    /// Consecutive failures per SliceCache (`namespace/name`), for backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("defaults", &self.defaults)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, defaults: BuildDefaults, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            tuners: TunerRegistry::new(metrics.clone()),
            metrics,
            defaults,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failure of `key` and returns the backoff before the next try.
    fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        backoff_for(*n)
    }

    fn reset_backoff(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }

    async fn publish(&self, cache: &SliceCache, type_: EventType, reason: &str, action: &str, note: String) {
        let event = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(truncate(note, 1024)),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &cache.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }
}

/// Backoff after `failures` consecutive failures: 5s, 10s, 20s ... 5m.
pub fn backoff_for(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    BACKOFF_MIN.saturating_mul(1 << exp).min(BACKOFF_MAX)
}

fn key_of(cache: &SliceCache) -> String {
    format!("{}/{}", cache.namespace().unwrap_or_default(), cache.name_any())
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

// === reconcile ===

/// Reconciles one SliceCache.
pub async fn reconcile(cache: Arc<SliceCache>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let key = key_of(&cache);
    let namespace = cache.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<SliceCache> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, cache, |event| async {
        match event {
            FinalizerEvent::Apply(cache) => reconcile_apply(&cache, &ctx).await,
            FinalizerEvent::Cleanup(cache) => reconcile_cleanup(&cache, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .observe_reconcile(started.elapsed(), result.as_ref().err().map(Error::reason));
    if result.is_ok() {
        ctx.reset_backoff(&key);
    }
    result
}

/// Requeues a failed SliceCache: cleanup that waits is polled, failures back off.
pub fn error_policy(cache: Arc<SliceCache>, error: &Error, ctx: Arc<Context>) -> Action {
    if error.is_waiting() {
        tracing::info!(slicecache = %key_of(&cache), reason = error.reason(), "{error}");
        return Action::requeue(CLEANUP_POLL);
    }
    let delay = ctx.backoff(&key_of(&cache));
    tracing::warn!(slicecache = %key_of(&cache), reason = error.reason(), ?delay, "reconcile failed: {error}");
    Action::requeue(delay)
}

/// The Apply half: the pipeline.
async fn reconcile_apply(cache: &SliceCache, ctx: &Context) -> Result<Action, Error> {
    let generation = cache.metadata.generation.unwrap_or(0);
    if cache.spec.paused == Some(true) {
        let new = status::compute(
            cache.status.as_ref(),
            generation,
            Observed::Stopped {
                updates: vec![ConditionUpdate::new(
                    condition::PROGRESSING,
                    false,
                    "Paused",
                    "spec.paused is true: nothing is created, changed or deleted; running agents keep serving",
                )],
                fallback_reason: "Paused",
            },
            &status::now(),
        );
        if status::write_if_changed(&ctx.client, cache, &new).await? {
            ctx.publish(
                cache,
                EventType::Normal,
                "Paused",
                "Pause",
                "reconciling paused by spec.paused".into(),
            )
            .await;
        }
        return Ok(Action::await_change());
    }

    let dereferenced = match dereference::dereference(&ctx.client, cache).await {
        Ok(d) => d,
        Err(e) if e.is_user_error() => {
            report_failure(cache, ctx, e.reason(), e.to_string()).await;
            return Ok(Action::requeue(MISSING_REFERENT_POLL));
        }
        Err(e) => return Err(fail(cache, ctx, e.into()).await),
    };

    let validated = match validate::validate(cache, &dereferenced) {
        Ok(v) => v,
        Err(e) => {
            report_failure(cache, ctx, e.reason(), e.to_string()).await;
            return Ok(Action::await_change());
        }
    };

    let owner = Owner::of(cache, "");
    let owner_uid = owner.uid.clone().unwrap_or_default();
    let tuning = ctx.tuners.tune(&owner, &validated, cache.status.as_ref()).await;
    let desired = match build::build_tuned(&validated, &owner, &ctx.defaults, tuning.in_force) {
        Ok(d) => d,
        Err(e) => return Err(fail(cache, ctx, e.into()).await),
    };
    let applied = match apply::apply(&ctx.client, &owner.namespace, &owner_uid, &desired).await {
        Ok(a) => a,
        Err(e) => return Err(fail(cache, ctx, e.into()).await),
    };

    let new = status::compute(
        cache.status.as_ref(),
        generation,
        Observed::Applied {
            validated: &validated,
            desired: &desired,
            applied: &applied,
            tuning: &tuning,
        },
        &status::now(),
    );
    status::write_if_changed(&ctx.client, cache, &new).await?;
    if let Some(nodes) = &new.nodes {
        ctx.metrics
            .observe_agents(&owner.namespace, &owner.name, nodes.desired, nodes.ready);
    }
    publish_apply_events(cache, ctx, &desired, &applied, &new).await;
    for event in events::tuning_events(validated.tuning().mode(), cache.status.as_ref(), &new) {
        let type_ = if event.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.publish(cache, type_, &event.reason, "Tune", event.note).await;
    }

    let poll = if new.is_true(condition::PROGRESSING) {
        ROLLOUT_POLL
    } else {
        RESYNC
    };
    Ok(Action::requeue(tuning.next_in.map_or(poll, |t| t.min(poll))))
}

async fn publish_apply_events(
    cache: &SliceCache,
    ctx: &Context,
    desired: &build::DesiredState,
    applied: &apply::Applied,
    new: &slicecache_api::SliceCacheStatus,
) {
    let created: Vec<String> = applied.created().map(|(k, n)| format!("{k} {n}")).collect();
    if !created.is_empty() {
        ctx.publish(
            cache,
            EventType::Normal,
            "Created",
            "Create",
            format!("created {}", created.join(", ")),
        )
        .await;
    }
    let deleted: Vec<String> = applied.deleted().map(|(k, n)| format!("{k} {n}")).collect();
    if !deleted.is_empty() {
        ctx.publish(
            cache,
            EventType::Normal,
            "Deleted",
            "Delete",
            format!("deleted {}, no longer wanted", deleted.join(", ")),
        )
        .await;
    }
    if let Some(from) = &applied.rollout_from {
        let how = match desired.workload {
            build::AgentWorkload::DaemonSet(_) => "agents restart node by node",
            build::AgentWorkload::Deployment(_) => "agent pods are replaced a few at a time",
        };
        ctx.publish(
            cache,
            EventType::Normal,
            "RolloutStarted",
            "Rollout",
            format!("pod template {from} -> {}: {how}", desired.pod_template_hash),
        )
        .await;
    } else if applied.change_of("ConfigMap") == Change::Updated {
        ctx.publish(
            cache,
            EventType::Normal,
            "ConfigUpdated",
            "Reconfigure",
            format!(
                "agent config {} rewritten (config hash {}): agents hot-reload it, no restart",
                desired.names.config_map, desired.config_hash
            ),
        )
        .await;
    }
    let old_updated = cache.status.as_ref().and_then(|s| s.nodes.as_ref()).map(|n| n.updated);
    let nodes = new.nodes.clone().unwrap_or_default();
    let was_progressing = cache.status.as_ref().is_some_and(|s| s.is_true(condition::PROGRESSING));
    if new.is_true(condition::PROGRESSING) && old_updated.is_some_and(|u| u != nodes.updated) && nodes.desired > 0 {
        ctx.publish(
            cache,
            EventType::Normal,
            "RolloutProgress",
            "Rollout",
            format!(
                "{}/{} agents run the current pod template",
                nodes.updated, nodes.desired
            ),
        )
        .await;
    } else if was_progressing && !new.is_true(condition::PROGRESSING) {
        ctx.publish(
            cache,
            EventType::Normal,
            "RolloutComplete",
            "Rollout",
            format!(
                "{}/{} agents run the current pod template",
                nodes.updated, nodes.desired
            ),
        )
        .await;
    }
}

/// Reports `reason` as `Degraded`, with a Warning Event when the status changed.
async fn report_failure(cache: &SliceCache, ctx: &Context, reason: &str, message: String) {
    let new = status::compute(
        cache.status.as_ref(),
        cache.metadata.generation.unwrap_or(0),
        Observed::Stopped {
            updates: vec![ConditionUpdate::new(condition::DEGRADED, true, reason, message.clone())],
            fallback_reason: reason,
        },
        &status::now(),
    );
    match status::write_if_changed(&ctx.client, cache, &new).await {
        Ok(true) => {
            ctx.publish(cache, EventType::Warning, reason, "Reconcile", message)
                .await
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "could not report {reason} in status"),
    }
}

/// Reports `error` in status and returns it.
async fn fail(cache: &SliceCache, ctx: &Context, error: Error) -> Error {
    report_failure(cache, ctx, error.reason(), error.to_string()).await;
    error
}

/// The Cleanup half: devices, then the finalizer goes.
async fn reconcile_cleanup(cache: &SliceCache, ctx: &Context) -> Result<Action, Error> {
    let result = cleanup_devices(cache, ctx).await;
    match &result {
        Ok(note) => {
            ctx.tuners.forget(&key_of(cache));
            ctx.metrics
                .forget_slicecache(&cache.namespace().unwrap_or_default(), &cache.name_any());
            ctx.publish(cache, EventType::Normal, "CleanedUp", "Cleanup", note.clone())
                .await
        }
        Err(e) => {
            let generation = cache.metadata.generation.unwrap_or(0);
            let mut updates = vec![ConditionUpdate::new(
                condition::PROGRESSING,
                true,
                "CleaningUp",
                e.to_string(),
            )];
            if !e.is_waiting() {
                updates.push(ConditionUpdate::new(
                    condition::DEGRADED,
                    true,
                    e.reason(),
                    e.to_string(),
                ));
            }
            let new = status::compute(
                cache.status.as_ref(),
                generation,
                Observed::Stopped {
                    updates,
                    fallback_reason: "CleaningUp",
                },
                &status::now(),
            );
            match status::write_if_changed(&ctx.client, cache, &new).await {
                Ok(true) => {
                    let type_ = if e.is_waiting() {
                        EventType::Normal
                    } else {
                        EventType::Warning
                    };
                    ctx.publish(cache, type_, e.reason(), "Cleanup", e.to_string()).await;
                }
                Ok(false) => {}
                Err(se) => tracing::warn!(error = %se, "could not report cleanup state"),
            }
        }
    }
    result.map(|_| Action::await_change()).map_err(Error::Cleanup)
}

async fn cleanup_devices(cache: &SliceCache, ctx: &Context) -> Result<String, CleanupError> {
    if cache.spec.paused == Some(true) {
        return Err(CleanupError::Paused);
    }
    match cleanup::plan(cache) {
        cleanup::Plan::KeepDevices { why } => Ok(format!("{why}; owned objects are removed by garbage collection")),
        cleanup::Plan::Wipe(validated) => {
            let owner = Owner::of(cache, "");
            let nodes = cleanup::wipe(&ctx.client, &validated, &owner, &ctx.defaults).await?;
            Ok(format!(
                "cache devices wiped on {nodes} node(s); owned objects are removed by garbage collection"
            ))
        }
    }
}

// === run ===

/// How many SliceCaches the operator reconciles at once by default.
pub const DEFAULT_MAX_CONCURRENT_RECONCILES: u16 = 2;

/// Runs the controller until `shutdown` resolves, reconciling at most
/// `concurrency` SliceCaches at once (0: no limit).
pub async fn run(ctx: Arc<Context>, concurrency: u16, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=slicecache-operator");
    let controller = Controller::new(
        Api::<SliceCache>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    );
    // A Node event concerns the SliceCaches whose placement selects it; the
    // controller's own cache of SliceCaches answers which those are.
    let caches = controller.store();
    controller
        .owns(Api::<DaemonSet>::all(client.clone()), owned.clone())
        .owns(Api::<Deployment>::all(client.clone()), owned.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), owned.clone())
        .owns(Api::<Service>::all(client.clone()), owned.clone())
        .owns(Api::<ServiceAccount>::all(client.clone()), owned.clone())
        .owns(Api::<PodDisruptionBudget>::all(client.clone()), owned.clone())
        .owns(Api::<Job>::all(client.clone()), owned.clone())
        // The EndpointSlice controller copies the Services' labels onto
        // their slices: a change of fleet members updates the status.
        .watches(
            Api::<EndpointSlice>::all(client.clone()),
            owned,
            |slice: EndpointSlice| {
                let instance = slice.labels().get("app.kubernetes.io/instance").cloned();
                instance.map(|name| ObjectRef::new(&name).within(&slice.namespace().unwrap_or_default()))
            },
        )
        .watches(
            Api::<Node>::all(client),
            watcher::Config::default(),
            move |node: Node| nodes::caches_for_node(node.labels(), &caches.state()),
        )
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile error"),
            }
        })
        .await;
}
