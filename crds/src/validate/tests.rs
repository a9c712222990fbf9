//! Unit tests of validation: defaults, the agent config a spec renders,
//! and every rejection with its field, reason and message.

use std::time::Duration;

use http::Uri;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::{
    agent_config::{AgentConfig, FormatPolicy},
    spec::{ServiceType, TuningMode, WorkloadKind, WIPE_CONFIRMATION},
    units::{ByteSize, HumanDuration},
};

const ORIGIN: &str = "origin:\n  url: https://media.example.com\n";

fn spec(yaml: &str) -> SliceCacheSpec {
    serde_yaml_ng::from_str(yaml).expect("test spec parses")
}

fn valid(yaml: &str) -> ValidatedSliceCache {
    ValidatedSliceCache::new(&spec(yaml)).unwrap_or_else(|e| panic!("spec should be valid: {e}\n{yaml}"))
}

/// Asserts that `yaml` is rejected with exactly one error, for `field`,
/// whose message names the field and contains `needle`.
fn rejected(yaml: &str, field: &str, reason: &str, needle: &str) -> ValidationError {
    let errors = match ValidatedSliceCache::new(&spec(yaml)) {
        Ok(_) => panic!("spec should be rejected ({field}):\n{yaml}"),
        Err(e) => e,
    };
    assert_eq!(errors.len(), 1, "expected one error, got: {errors}");
    let e = errors.errors()[0].clone();
    let message = e.to_string();
    assert_eq!(e.field(), field, "{message}");
    assert_eq!(e.reason(), reason, "{message}");
    assert!(
        message.starts_with(&format!("{field}: ")),
        "message must name the field: {message}"
    );
    assert!(message.contains(needle), "{message:?} should contain {needle:?}");
    e
}

// === defaults ===

#[test]
fn minimal_spec_resolves_every_default() {
    let v = valid(ORIGIN);
    let o = v.origin();
    assert_eq!(o.url().host(), Some("media.example.com"));
    assert_eq!(o.url_str(), "https://media.example.com");
    assert_eq!(o.host_header(), None);
    assert_eq!(o.connect_timeout(), Duration::from_secs(2));
    assert_eq!(o.first_byte_timeout(), Duration::from_secs(15));
    assert_eq!(o.idle_timeout(), Duration::from_secs(30));
    assert_eq!(o.max_connections_per_agent(), 256);

    let s = v.slicing();
    assert_eq!(s.slice_size(), 1 << 20);
    assert_eq!(s.concurrency(), 4);
    assert_eq!(s.min_object_size(), 0);
    assert_eq!(s.retries(), 2);

    let c = v.cache();
    assert_eq!(c.memory(), 256 << 20);
    assert!(matches!(c.devices(), DeviceSelection::None));
    assert!(c.host_path_file().is_none());
    assert!(!c.has_disk());
    assert_eq!(c.format(), FormatPolicy::IfNotOwned);
    assert_eq!(c.default_ttl(), Duration::from_secs(3600));
    assert!(c.honor_origin_cache_control());

    let t = v.tuning();
    assert_eq!(t.mode(), TuningMode::Off);
    assert!(!t.is_active());
    assert!(t.prometheus_url().is_none());
    assert_eq!(t.interval(), Duration::from_secs(60));
    assert_eq!(t.slice_size_bounds(), (64 << 10, 64 << 20));
    assert_eq!(t.concurrency_bounds(), (1, 64));
    assert_eq!(t.cooldown(), Duration::from_secs(600));

    assert_eq!(v.service().type_(), ServiceType::ClusterIP);
    assert_eq!(v.service().port(), 80);
    assert_eq!(v.rollout().max_unavailable(), MaxUnavailable::Count(1));
    assert_eq!(v.rollout().pause_between_nodes(), Duration::ZERO);
    assert!(v.placement().node_selector().is_empty());
    assert!(v.placement().tolerations().is_empty());
    assert!(v.placement().affinity().is_none());
    assert!(v.resources().is_none());
    assert!(v.image().is_none());
    assert!(!v.paused());
    assert!(!v.wipe_devices_on_delete());
    assert_eq!(v.replicas(), None);
    assert!(v.purge_token().is_none());
}

#[test]
fn minimal_agent_config_matches_agent_defaults() {
    let config = valid(ORIGIN).agent_config();
    assert_eq!(config, AgentConfig::for_origin("https://media.example.com"));
}

#[test]
fn agent_config_maps_every_field() {
    let v = valid(
        r#"
origin:
  url: http://origin.internal:8080/assets
  hostHeader: assets.example.com
  timeouts: { connect: 500ms, firstByte: 5s, idle: 1m }
  maxConnectionsPerAgent: 64
slicing: { sliceSize: 4Mi, concurrency: 8, minObjectSize: 256Ki, retries: 3 }
cache:
  memory: 2Gi
  disk:
    devices: [/dev/disk/by-id/nvme-a, /dev/disk/by-id/nvme-b]
    hostPathFile: { path: /var/lib/slicecache/extra.img, size: 10Gi }
    format: Never
  ttl: { default: 5m, honorOriginCacheControl: false }
purgeTokenSecretRef: { name: purge }
"#,
    );
    let c = v.agent_config();
    assert_eq!(c.origin.url, "http://origin.internal:8080/assets");
    assert_eq!(c.origin.host_header.as_deref(), Some("assets.example.com"));
    assert_eq!(c.origin.connect_timeout, HumanDuration::millis(500));
    assert_eq!(c.origin.first_byte_timeout, HumanDuration::secs(5));
    assert_eq!(c.origin.idle_timeout, HumanDuration::secs(60));
    assert_eq!(c.origin.max_connections, 64);
    assert_eq!(c.tunables.slice_size, ByteSize::mib(4));
    assert_eq!(c.tunables.concurrency, 8);
    assert_eq!(c.tunables.min_object_size, ByteSize::kib(256));
    assert_eq!(c.tunables.retries, 3);
    assert_eq!(c.tunables.default_ttl, HumanDuration::secs(300));
    assert!(!c.tunables.honor_origin_cache_control);
    assert_eq!(c.cache.memory, ByteSize::gib(2));
    let devices: Vec<_> = c
        .cache
        .devices
        .iter()
        .map(|d| (d.path.as_str(), d.size, d.format))
        .collect();
    assert_eq!(
        devices,
        vec![
            ("/dev/disk/by-id/nvme-a", None, FormatPolicy::Never),
            ("/dev/disk/by-id/nvme-b", None, FormatPolicy::Never),
            (
                "/var/lib/slicecache/extra.img",
                Some(ByteSize::gib(10)),
                FormatPolicy::Never
            ),
        ]
    );
    assert_eq!(c.admin.purge_token_file.as_deref(), Some(PURGE_TOKEN_FILE));
    let token = v.purge_token().expect("purge token");
    assert_eq!((token.name(), token.key()), ("purge", DEFAULT_PURGE_TOKEN_KEY));

    // The rendered file is what the agent parses.
    let yaml = serde_yaml_ng::to_string(&c).expect("serialise");
    let back: AgentConfig = serde_yaml_ng::from_str(&yaml).expect("agent parses its config");
    assert_eq!(back, c);
}

#[test]
fn discovered_devices_are_left_to_the_node() {
    let v = valid(&format!(
        "{ORIGIN}cache:\n  disk:\n    deviceFilter: '^nvme[0-9]+n1$'\n"
    ));
    match v.cache().devices() {
        DeviceSelection::Filter(re) => {
            assert!(re.is_match("nvme0n1"));
            assert!(!re.is_match("sda"));
        }
        other => panic!("expected a filter, got {other:?}"),
    }
    assert!(v.cache().has_disk());
    assert!(v.agent_config().cache.devices.is_empty());

    let v = valid(&format!("{ORIGIN}cache:\n  disk:\n    useAllDevices: true\n"));
    assert!(matches!(v.cache().devices(), DeviceSelection::All));
}

#[test]
fn overwrite_needs_devices_named_one_by_one() {
    let v = valid(&format!(
        "{ORIGIN}cache:\n  disk:\n    format: Overwrite\n    devices: [/dev/disk/by-id/nvme-a]\n    hostPathFile: {{ path: /var/lib/slicecache/dev, size: 1Gi }}\n"
    ));
    let formats: Vec<_> = v.agent_config().cache.devices.iter().map(|d| d.format).collect();
    assert_eq!(formats, [FormatPolicy::Overwrite, FormatPolicy::Overwrite]);
    for (selection, yaml) in [
        ("deviceFilter", "deviceFilter: '^nvme'"),
        ("useAllDevices", "useAllDevices: true"),
    ] {
        rejected(
            &format!("{ORIGIN}cache:\n  disk:\n    format: Overwrite\n    {yaml}\n"),
            "spec.cache.disk.format",
            "OverwriteWithDiscovery",
            selection,
        );
    }
}

#[test]
fn tuning_clamps_unwritten_starting_points_into_bounds() {
    let v = valid(&format!(
        "{ORIGIN}tuning:\n  mode: Auto\n  prometheus: {{ url: 'http://prom:9090' }}\n  minSliceSize: 4Mi\n  maxSliceSize: 16Mi\n  minConcurrency: 8\n  maxConcurrency: 16\ncache:\n  memory: 1Gi\n"
    ));
    assert_eq!(v.slicing().slice_size(), 4 << 20);
    assert_eq!(v.slicing().concurrency(), 8);
    assert_eq!(v.tuning().slice_size_bounds(), (4 << 20, 16 << 20));
    assert_eq!(v.tuning().concurrency_bounds(), (8, 16));
    assert_eq!(
        v.tuning().prometheus_url().map(Uri::to_string).as_deref(),
        Some("http://prom:9090/")
    );
}

#[test]
fn wipe_acts_only_with_the_confirmation() {
    let v = valid(&format!(
        "{ORIGIN}cleanup:\n  wipeDevicesOnDelete: true\n  confirmation: {WIPE_CONFIRMATION}\n"
    ));
    assert!(v.wipe_devices_on_delete());
    // A confirmation without the switch does nothing.
    let v = valid(&format!("{ORIGIN}cleanup:\n  confirmation: {WIPE_CONFIRMATION}\n"));
    assert!(!v.wipe_devices_on_delete());
}

#[test]
fn max_unavailable_resolves_like_a_daemonset() {
    assert_eq!(MaxUnavailable::Count(2).resolve(10), 2);
    assert_eq!(MaxUnavailable::Percent(25).resolve(10), 3);
    assert_eq!(MaxUnavailable::Percent(1).resolve(3), 1);
    assert_eq!(MaxUnavailable::Percent(100).resolve(0), 1);
    assert_eq!(
        MaxUnavailable::Percent(25).to_int_or_string(),
        IntOrString::String("25%".into())
    );
    let v = valid(&format!(
        "{ORIGIN}rollout:\n  maxUnavailable: 50%\n  pauseBetweenNodes: 30s\n"
    ));
    assert_eq!(v.rollout().max_unavailable(), MaxUnavailable::Percent(50));
    assert_eq!(v.rollout().pause_between_nodes(), Duration::from_secs(30));
}

// === slice size edges ===

#[test]
fn slice_size_edges() {
    for ok in ["64Ki", "65536", "128Ki", "1Mi", "1024Ki", "64Mi", "67108864"] {
        let v = valid(&format!("{ORIGIN}slicing:\n  sliceSize: '{ok}'\n"));
        assert!(v.slicing().slice_size().is_power_of_two(), "{ok}");
    }
    let v = valid(&format!("{ORIGIN}slicing:\n  sliceSize: 65536\n"));
    assert_eq!(v.slicing().slice_size(), 65536);

    let e = rejected(
        &format!("{ORIGIN}slicing:\n  sliceSize: 32Ki\n"),
        "spec.slicing.sliceSize",
        "SizeOutOfRange",
        "32Ki is outside 64Ki-64Mi",
    );
    assert!(matches!(e, ValidationError::SizeOutOfRange { .. }));
    rejected(
        &format!("{ORIGIN}slicing:\n  sliceSize: 3Mi\n"),
        "spec.slicing.sliceSize",
        "NotPowerOfTwo",
        "3Mi is not a power of two",
    );
    rejected(
        &format!("{ORIGIN}slicing:\n  sliceSize: 128Mi\ncache:\n  memory: 1Gi\n"),
        "spec.slicing.sliceSize",
        "SizeOutOfRange",
        "128Mi is outside 64Ki-64Mi",
    );
    rejected(
        &format!("{ORIGIN}slicing:\n  sliceSize: 1M\n"),
        "spec.slicing.sliceSize",
        "NotPowerOfTwo",
        "1000000 is not a power of two",
    );
    rejected(
        &format!("{ORIGIN}slicing:\n  sliceSize: 0\n"),
        "spec.slicing.sliceSize",
        "SizeOutOfRange",
        "0 is outside",
    );
}

// === every rule, one rejected input each ===

#[test]
fn rejects_bad_origin_urls() {
    for (url, problem) in [
        ("ftp://media.example.com", "scheme \"ftp\" is not http or https"),
        ("media.example.com", "needs a scheme"),
        ("https://user:pw@media.example.com", "must not carry credentials"),
        ("https://media.example.com/?a=b", "must not have a query string"),
        ("https://media example.com", "contains whitespace"),
        ("", "empty"),
    ] {
        rejected(
            &format!("origin:\n  url: '{url}'\n"),
            "spec.origin.url",
            "InvalidUrl",
            problem,
        );
    }
}

#[test]
fn rejects_bad_host_header() {
    rejected(
        &format!("{ORIGIN}  hostHeader: 'a b/c'\n"),
        "spec.origin.hostHeader",
        "InvalidHostHeader",
        "\"a b/c\" is not a valid host name",
    );
}

#[test]
fn rejects_zero_timeouts() {
    for (key, field) in [
        ("connect", "spec.origin.timeouts.connect"),
        ("firstByte", "spec.origin.timeouts.firstByte"),
        ("idle", "spec.origin.timeouts.idle"),
    ] {
        rejected(
            &format!("{ORIGIN}  timeouts:\n    {key}: 0s\n"),
            field,
            "DurationTooShort",
            "0s is shorter than the minimum 1ms",
        );
    }
}

#[test]
fn rejects_numbers_out_of_range() {
    for (yaml, field, needle) in [
        (
            "  maxConnectionsPerAgent: 0\n",
            "spec.origin.maxConnectionsPerAgent",
            "0 is outside 1-65535",
        ),
        (
            "slicing:\n  concurrency: 0\n",
            "spec.slicing.concurrency",
            "0 is outside 1-64",
        ),
        (
            "slicing:\n  concurrency: 65\n",
            "spec.slicing.concurrency",
            "65 is outside 1-64",
        ),
        (
            "slicing:\n  retries: 11\n",
            "spec.slicing.retries",
            "11 is outside 0-10",
        ),
        ("service:\n  port: 0\n", "spec.service.port", "0 is outside 1-65535"),
        ("workload: Deployment\nreplicas: -1\n", "spec.replicas", "-1 is outside"),
        (
            "tuning:\n  minConcurrency: 0\n",
            "spec.tuning.minConcurrency",
            "0 is outside 1-64",
        ),
        (
            "tuning:\n  maxConcurrency: 100\n",
            "spec.tuning.maxConcurrency",
            "100 is outside 1-64",
        ),
    ] {
        rejected(&format!("{ORIGIN}{yaml}"), field, "NumberOutOfRange", needle);
    }
}

#[test]
fn rejects_large_min_object_size() {
    rejected(
        &format!("{ORIGIN}slicing:\n  minObjectSize: 1Gi\n"),
        "spec.slicing.minObjectSize",
        "SizeOutOfRange",
        "1Gi is outside 0-64Mi",
    );
}

#[test]
fn rejects_memory_smaller_than_a_slice() {
    rejected(
        &format!("{ORIGIN}slicing:\n  sliceSize: 64Mi\ncache:\n  memory: 32Mi\n"),
        "spec.cache.memory",
        "MemoryBelowSlice",
        "32Mi is smaller than spec.slicing.sliceSize (64Mi)",
    );
    rejected(
        &format!(
            "{ORIGIN}tuning:\n  mode: Auto\n  prometheus: {{ url: 'http://prom:9090' }}\ncache:\n  memory: 32Mi\n"
        ),
        "spec.cache.memory",
        "MemoryBelowSlice",
        "smaller than spec.tuning.maxSliceSize (64Mi)",
    );
}

#[test]
fn rejects_conflicting_device_selection() {
    let e = rejected(
        &format!(
            "{ORIGIN}cache:\n  disk:\n    devices: [/dev/sdb]\n    deviceFilter: '^sd'\n    useAllDevices: true\n"
        ),
        "spec.cache.disk",
        "ConflictingDeviceSelection",
        "at most one of devices, deviceFilter and useAllDevices may be set",
    );
    assert!(
        e.to_string()
            .contains("found devices and deviceFilter and useAllDevices"),
        "{e}"
    );
    rejected(
        &format!("{ORIGIN}cache:\n  disk:\n    deviceFilter: '^sd'\n    useAllDevices: true\n"),
        "spec.cache.disk",
        "ConflictingDeviceSelection",
        "found deviceFilter and useAllDevices",
    );
    // useAllDevices: false is not a selection.
    valid(&format!(
        "{ORIGIN}cache:\n  disk:\n    devices: [/dev/sdb]\n    useAllDevices: false\n"
    ));
}

#[test]
fn rejects_bad_device_paths() {
    for path in [
        "sdb",
        "/dev/",
        "/var/lib/disk",
        "/dev/../etc/passwd",
        "/dev/disk/by-id/",
    ] {
        rejected(
            &format!("{ORIGIN}cache:\n  disk:\n    devices: ['{path}']\n"),
            "spec.cache.disk.devices",
            "InvalidDevicePath",
            "must be an absolute path under /dev/",
        );
    }
    rejected(
        &format!("{ORIGIN}cache:\n  disk:\n    devices: [/dev/sdb, /dev/sdb]\n"),
        "spec.cache.disk.devices",
        "DuplicateDevice",
        "\"/dev/sdb\" is listed more than once",
    );
}

#[test]
fn prometheus_selectors_are_label_matchers() {
    for (text, want) in [
        (r#"job="slicecache""#, r#"job="slicecache""#),
        (
            r#" { job="a", pod=~"x-.*" , env!='dev',} "#,
            r#"job="a", pod=~"x-.*" , env!='dev',"#,
        ),
        (r#"a!~"q\"{,}\"""#, r#"a!~"q\"{,}\"""#),
    ] {
        assert_eq!(label_matchers(text).as_deref(), Ok(want), "{text}");
    }
    for (text, problem) in [
        ("{}", "no matcher"),
        ("job", "expected =, !=, =~ or !~ after job"),
        ("job=slicecache", "the value of job must be quoted"),
        (r#"job="a"#, "the value of job has no closing quote"),
        (r#"job="a" pod="b""#, "expected a comma before"),
        (r#"9job="a""#, "expected a label name"),
        (r#"job="a"} or vector(1) {x="y""#, "expected a comma before"),
    ] {
        let got = label_matchers(text).expect_err(text);
        assert!(got.to_string().contains(problem), "{text}: {got}");
    }
    rejected(
        &format!("{ORIGIN}tuning:\n  prometheus:\n    url: http://prom:9090\n    selector: 'job=x'\n"),
        "spec.tuning.prometheus.selector",
        "InvalidSelector",
        "is not a list of PromQL label matchers such as job=\"slicecache\": the value of job must be quoted",
    );
    let v = ValidatedSliceCache::new(&spec(&format!(
        "{ORIGIN}tuning:\n  prometheus:\n    url: http://prom:9090\n    selector: '{{job=\"edge\"}}'\n"
    )))
    .expect("a custom selector is valid");
    assert_eq!(v.tuning().prometheus_selector(), Some(r#"job="edge""#));
}

#[test]
fn rejects_bad_device_filter() {
    rejected(
        &format!("{ORIGIN}cache:\n  disk:\n    deviceFilter: '^nvme[0-9+n1$'\n"),
        "spec.cache.disk.deviceFilter",
        "InvalidDeviceFilter",
        "is not a valid regular expression: unclosed character class",
    );
    rejected(
        &format!("{ORIGIN}cache:\n  disk:\n    deviceFilter: ''\n"),
        "spec.cache.disk.deviceFilter",
        "Empty",
        "must not be empty",
    );
}

#[test]
fn rejects_bad_host_path_file() {
    rejected(
        &format!("{ORIGIN}cache:\n  disk:\n    hostPathFile: {{ path: cache.img, size: 1Gi }}\n"),
        "spec.cache.disk.hostPathFile.path",
        "InvalidHostPath",
        "must be an absolute file path",
    );
    rejected(
        &format!("{ORIGIN}cache:\n  disk:\n    hostPathFile: {{ path: /var/lib/cache.img, size: 1Mi }}\n"),
        "spec.cache.disk.hostPathFile.size",
        "SizeTooSmall",
        "1Mi is smaller than the minimum 64Mi",
    );
    rejected(
        &format!(
            "{ORIGIN}cache:\n  disk:\n    devices: [/dev/loop0]\n    hostPathFile: {{ path: /dev/loop0, size: 1Gi }}\n"
        ),
        "spec.cache.disk.hostPathFile.path",
        "DuplicateDevice",
        "listed more than once",
    );
}

#[test]
fn rejects_tuning_without_prometheus() {
    for mode in ["Recommend", "Auto"] {
        rejected(
            &format!("{ORIGIN}tuning:\n  mode: {mode}\n"),
            "spec.tuning.prometheus.url",
            "PrometheusRequired",
            &format!("required when spec.tuning.mode is {mode}"),
        );
    }
    rejected(
        &format!("{ORIGIN}tuning:\n  prometheus: {{ url: 'prom:9090' }}\n"),
        "spec.tuning.prometheus.url",
        "InvalidUrl",
        "needs a scheme",
    );
}

#[test]
fn rejects_short_tuning_interval() {
    rejected(
        &format!("{ORIGIN}tuning:\n  interval: 5s\n"),
        "spec.tuning.interval",
        "DurationTooShort",
        "5s is shorter than the minimum 10s",
    );
}

#[test]
fn rejects_bad_tuning_slice_bounds() {
    rejected(
        &format!("{ORIGIN}tuning:\n  minSliceSize: 3Mi\n"),
        "spec.tuning.minSliceSize",
        "NotPowerOfTwo",
        "3Mi is not a power of two",
    );
    rejected(
        &format!("{ORIGIN}tuning:\n  maxSliceSize: 128Mi\n"),
        "spec.tuning.maxSliceSize",
        "SizeOutOfRange",
        "128Mi is outside 64Ki-64Mi",
    );
    rejected(
        &format!("{ORIGIN}tuning:\n  minSliceSize: 4Mi\n  maxSliceSize: 1Mi\n"),
        "spec.tuning.minSliceSize",
        "BoundsInverted",
        "4Mi is larger than spec.tuning.maxSliceSize (1Mi)",
    );
    // Against the default maximum, too.
    valid(&format!(
        "{ORIGIN}tuning:\n  minSliceSize: 64Mi\ncache:\n  memory: 64Mi\n"
    ));
}

#[test]
fn rejects_inverted_concurrency_bounds() {
    rejected(
        &format!("{ORIGIN}tuning:\n  minConcurrency: 16\n  maxConcurrency: 8\n"),
        "spec.tuning.minConcurrency",
        "BoundsInverted",
        "16 is larger than spec.tuning.maxConcurrency (8)",
    );
}

#[test]
fn rejects_starting_points_outside_tuning_bounds() {
    let auto =
        "tuning:\n  mode: Auto\n  prometheus: { url: 'http://prom:9090' }\n  maxSliceSize: 4Mi\n  maxConcurrency: 8\n";
    rejected(
        &format!("{ORIGIN}{auto}slicing:\n  sliceSize: 8Mi\n"),
        "spec.slicing.sliceSize",
        "OutsideTuningBounds",
        "8Mi is outside the tuning bounds 64Ki-4Mi",
    );
    rejected(
        &format!("{ORIGIN}{auto}slicing:\n  concurrency: 16\n"),
        "spec.slicing.concurrency",
        "OutsideTuningBounds",
        "16 is outside the tuning bounds 1-8",
    );
    // With tuning off, the bounds do not constrain the spec values.
    valid(&format!(
        "{ORIGIN}tuning:\n  maxSliceSize: 4Mi\n  maxConcurrency: 8\nslicing:\n  sliceSize: 8Mi\n  concurrency: 16\n"
    ));
}

#[test]
fn rejects_bad_max_unavailable() {
    for value in ["0", "'0%'", "'101%'", "'abc'", "-1", "'05%'"] {
        rejected(
            &format!("{ORIGIN}rollout:\n  maxUnavailable: {value}\n"),
            "spec.rollout.maxUnavailable",
            "InvalidMaxUnavailable",
            "must be a count of at least 1 or a percentage",
        );
    }
}

#[test]
fn rejects_wipe_without_confirmation() {
    for cleanup in [
        "wipeDevicesOnDelete: true",
        "wipeDevicesOnDelete: true\n  confirmation: yes",
    ] {
        rejected(
            &format!("{ORIGIN}cleanup:\n  {cleanup}\n"),
            "spec.cleanup.confirmation",
            "WipeNotConfirmed",
            "must be \"yes-really-wipe-cache-devices\"",
        );
    }
}

#[test]
fn rejects_empty_strings() {
    rejected(
        &format!("{ORIGIN}image: ' '\n"),
        "spec.image",
        "Empty",
        "must not be empty",
    );
    rejected(
        &format!("{ORIGIN}purgeTokenSecretRef: {{ name: '' }}\n"),
        "spec.purgeTokenSecretRef.name",
        "Empty",
        "must not be empty",
    );
    rejected(
        &format!("{ORIGIN}purgeTokenSecretRef: {{ name: purge, key: '' }}\n"),
        "spec.purgeTokenSecretRef.key",
        "Empty",
        "must not be empty",
    );
}

#[test]
fn reports_every_problem_at_once() {
    let errors = ValidatedSliceCache::new(&spec(
        "origin:\n  url: ftp://x\nslicing:\n  sliceSize: 3Mi\n  concurrency: 0\ncleanup:\n  wipeDevicesOnDelete: true\n",
    ))
    .expect_err("invalid");
    let fields: Vec<_> = errors.iter().map(ValidationError::field).collect();
    assert_eq!(
        fields,
        [
            "spec.origin.url",
            "spec.slicing.sliceSize",
            "spec.slicing.concurrency",
            "spec.cleanup.confirmation"
        ]
    );
    assert_eq!(errors.reason(), "InvalidUrl");
    let text = errors.to_string();
    assert!(
        text.contains("spec.slicing.sliceSize: 3Mi is not a power of two; "),
        "{text}"
    );
}

// === workload ===

#[test]
fn workload_defaults_to_daemon_set_without_replicas() {
    let v = valid(ORIGIN);
    assert_eq!(v.workload(), WorkloadKind::DaemonSet);
    assert_eq!(v.replicas(), None);
}

#[test]
fn deployment_takes_replicas_and_storage_of_the_pod() {
    let v = valid(&format!(
        "{ORIGIN}workload: Deployment\nreplicas: 3\ncache:\n  disk:\n    emptyDirFile:\n      size: 1Gi\n    volumeClaimTemplate:\n      storageClassName: fast-block\n      size: 100Gi\n"
    ));
    assert_eq!(v.workload(), WorkloadKind::Deployment);
    assert_eq!(v.replicas(), Some(3));
    let c = v.cache();
    assert!(c.has_disk());
    assert!(!c.has_node_storage());
    assert_eq!(c.empty_dir_file(), Some(1 << 30));
    let volume = c.block_volume().expect("block volume");
    assert_eq!(volume.storage_class_name(), Some("fast-block"));
    assert_eq!(volume.size(), 100 << 30);
    let devices = v.agent_config().cache.devices;
    let paths: Vec<_> = devices.iter().map(|d| (d.path.as_str(), d.size)).collect();
    assert_eq!(
        paths,
        [(EMPTY_DIR_FILE_PATH, Some(ByteSize::gib(1))), (BLOCK_VOLUME_PATH, None)]
    );

    // Memory alone, and replicas left to an autoscaler.
    let v = valid(&format!("{ORIGIN}workload: Deployment\n"));
    assert_eq!(v.replicas(), None);
    assert!(!v.cache().has_disk());
    // Storage of the pod works with a DaemonSet too.
    valid(&format!(
        "{ORIGIN}cache:\n  disk:\n    emptyDirFile:\n      size: 64Mi\n"
    ));
}

#[test]
fn replicas_need_workload_deployment() {
    for yaml in ["replicas: 2\n", "workload: DaemonSet\nreplicas: 0\n"] {
        rejected(
            &format!("{ORIGIN}{yaml}"),
            "spec.replicas",
            "ReplicasNeedDeployment",
            "applies only to spec.workload: Deployment",
        );
    }
}

#[test]
fn deployment_rejects_storage_of_the_node() {
    for (disk, field) in [
        ("devices: [/dev/sdb]", "spec.cache.disk.devices"),
        ("deviceFilter: \"^nvme\"", "spec.cache.disk.deviceFilter"),
        ("useAllDevices: true", "spec.cache.disk.useAllDevices"),
        (
            "hostPathFile:\n      path: /var/lib/slicecache/cache.img\n      size: 1Gi",
            "spec.cache.disk.hostPathFile",
        ),
    ] {
        rejected(
            &format!("{ORIGIN}workload: Deployment\ncache:\n  disk:\n    {disk}\n"),
            field,
            "NodeStorageWithDeployment",
            "use spec.cache.disk.emptyDirFile or spec.cache.disk.volumeClaimTemplate",
        );
    }
}

#[test]
fn rejects_pod_storage_beside_node_storage_and_small_pod_storage() {
    rejected(
        &format!("{ORIGIN}cache:\n  disk:\n    devices: [/dev/sdb]\n    volumeClaimTemplate:\n      size: 1Gi\n"),
        "spec.cache.disk",
        "PodAndNodeStorage",
        "volumeClaimTemplate (storage of the pod) cannot be combined with devices",
    );
    rejected(
        &format!("{ORIGIN}cache:\n  disk:\n    emptyDirFile:\n      size: 1Mi\n"),
        "spec.cache.disk.emptyDirFile.size",
        "SizeTooSmall",
        "smaller than the minimum 64Mi",
    );
    rejected(
        &format!("{ORIGIN}workload: Deployment\ncache:\n  disk:\n    volumeClaimTemplate:\n      size: 32Mi\n"),
        "spec.cache.disk.volumeClaimTemplate.size",
        "SizeTooSmall",
        "smaller than the minimum 64Mi",
    );
}

#[test]
fn reasons_are_camel_case_and_distinct() {
    let samples = [
        ValidationError::Empty { field: "f" },
        ValidationError::WipeNotConfirmed { field: "f" },
        ValidationError::NotPowerOfTwo {
            field: "f",
            value: ByteSize(3),
        },
    ];
    for e in &samples {
        let r = e.reason();
        assert!(r.chars().next().is_some_and(|c| c.is_ascii_uppercase()), "{r}");
        assert!(r.chars().all(|c| c.is_ascii_alphanumeric()), "{r}");
    }
}

// === fleet ===

#[test]
fn fleet_is_off_by_default_and_shard_renders_its_section() {
    let v = valid(ORIGIN);
    assert!(!v.fleet().is_sharded());
    assert!(!v.agent_config().fleet.enabled(), "no fleet section without Shard");

    let v = valid(&format!("{ORIGIN}fleet:\n  mode: Shard\n  connectTimeout: 150ms\n"));
    assert!(v.fleet().is_sharded());
    assert_eq!(v.fleet().granule(), 4 << 20);
    let config = v.agent_config();
    assert_eq!(config.fleet.granule, ByteSize::mib(4));
    assert_eq!(config.fleet.connect_timeout, HumanDuration::millis(150));
    assert_eq!(config.fleet.peer_token_file.as_deref(), Some(PEER_TOKEN_FILE));
    assert_eq!(config.fleet.replicas, 1);

    let v = valid(&format!("{ORIGIN}fleet:\n  mode: Shard\n  replicas: 2\n"));
    assert_eq!(v.agent_config().fleet.replicas, 2);
}

#[test]
fn the_default_granule_covers_the_largest_slice() {
    let v = valid(&format!("{ORIGIN}slicing:\n  sliceSize: 16Mi\nfleet:\n  mode: Shard\n"));
    assert_eq!(v.fleet().granule(), 16 << 20);
    let v = valid(&format!(
        "{ORIGIN}fleet:\n  mode: Shard\ntuning:\n  mode: Auto\n  maxSliceSize: 32Mi\n  prometheus:\n    url: http://prometheus:9090\n"
    ));
    assert_eq!(v.fleet().granule(), 32 << 20);
}

#[test]
fn fleet_granule_is_checked() {
    rejected(
        &format!("{ORIGIN}fleet:\n  mode: Shard\n  granule: 3Mi\n"),
        "spec.fleet.granule",
        "NotPowerOfTwo",
        "3Mi",
    );
    rejected(
        &format!("{ORIGIN}fleet:\n  granule: 2Gi\n"),
        "spec.fleet.granule",
        "SizeOutOfRange",
        "2Gi",
    );
    rejected(
        &format!("{ORIGIN}slicing:\n  sliceSize: 8Mi\nfleet:\n  mode: Shard\n  granule: 4Mi\n"),
        "spec.fleet.granule",
        "GranuleBelowSlice",
        "raise the granule",
    );
    rejected(
        &format!("{ORIGIN}fleet:\n  mode: Shard\n  tokenRotation: 10m\n"),
        "spec.fleet.tokenRotation",
        "DurationTooShort",
        "1h",
    );
    rejected(
        &format!("{ORIGIN}fleet:\n  mode: Shard\n  replicas: 4\n"),
        "spec.fleet.replicas",
        "NumberOutOfRange",
        "4",
    );
    rejected(
        &format!("{ORIGIN}fleet:\n  firstByteTimeout: 0s\n"),
        "spec.fleet.firstByteTimeout",
        "DurationTooShort",
        "0",
    );
}
