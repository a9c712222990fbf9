//! Binding unscheduled Pods to the shim's Nodes: the local control plane
//! has no kube-scheduler, and DaemonSet Pods too are created without a
//! node (they carry a required node affinity on `metadata.name` instead).
//!
//! Only what the agents' Pods use is honoured: `nodeSelector`, required
//! node affinity (label expressions and the `metadata.name` field), the
//! Node's `NoSchedule` and `NoExecute` taints against the Pod's
//! tolerations, and the node affinity of the PersistentVolumes bound to the
//! Pod's claims (see `claims`). Among the fitting Nodes the one with the
//! fewest Pods wins, so a Deployment spreads. Resources are not counted.
//! Pods for another scheduler are left alone.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration};

/// A candidate Node: its name, labels and taints.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
}

/// Whether the shim should bind `pod`: no node yet, not being deleted,
/// and meant for the default scheduler.
pub fn wants_binding(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.node_name.as_deref().is_none_or(str::is_empty)
        && pod.metadata.deletion_timestamp.is_none()
        && spec.scheduler_name.as_deref().is_none_or(|s| s == "default-scheduler")
        && pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_none_or(|p| p == "Pending")
}

/// The fitting candidate with the fewest Pods (`load`), ties by name;
/// `volumes` is the node affinity of each volume bound to the Pod's claims,
/// all of which the node must satisfy.
pub fn pick_node<'a>(
    pod: &Pod,
    candidates: &'a [Candidate],
    load: &BTreeMap<String, usize>,
    volumes: &[NodeSelector],
) -> Option<&'a str> {
    candidates
        .iter()
        .filter(|c| {
            fits(pod, c)
                && volumes
                    .iter()
                    .all(|v| v.node_selector_terms.iter().any(|t| term_matches(t, c)))
        })
        .min_by_key(|c| (load.get(&c.name).copied().unwrap_or(0), c.name.as_str()))
        .map(|c| c.name.as_str())
}

/// Whether `pod` may run on `node` by its node selector, required node
/// affinity and tolerations.
pub fn fits(pod: &Pod, node: &Candidate) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| node.labels.get(k) == Some(v));
    let terms = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
        .map(|r| r.node_selector_terms.as_slice());
    let affinity_ok = match terms {
        None | Some([]) => true,
        Some(terms) => terms.iter().any(|t| term_matches(t, node)),
    };
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    let taints_ok = node
        .taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|taint| tolerations.iter().any(|t| tolerates(t, taint)));
    selector_ok && affinity_ok && taints_ok
}

/// Whether `toleration` tolerates `taint`, as the scheduler decides it.
fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let key = toleration.key.as_deref().unwrap_or_default();
    let effect = toleration.effect.as_deref().unwrap_or_default();
    let key_ok = key == taint.key || (key.is_empty() && toleration.operator.as_deref() == Some("Exists"));
    let effect_ok = effect.is_empty() || effect == taint.effect;
    let value_ok = match toleration.operator.as_deref() {
        Some("Exists") => true,
        // Equal is the default.
        _ => toleration.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default(),
    };
    key_ok && effect_ok && value_ok
}

fn term_matches(term: &NodeSelectorTerm, node: &Candidate) -> bool {
    let exprs = term.match_expressions.iter().flatten();
    let fields = term.match_fields.iter().flatten();
    let mut any = false;
    let labels_ok = exprs.into_iter().all(|r| {
        any = true;
        requirement_matches(r, node.labels.get(&r.key).map(String::as_str))
    });
    let fields_ok = fields.into_iter().all(|r| {
        any = true;
        let value = (r.key == "metadata.name").then_some(node.name.as_str());
        requirement_matches(r, value)
    });
    // An empty term matches nothing, as in the scheduler.
    any && labels_ok && fields_ok
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|w| w == v)),
        "NotIn" => value.is_none_or(|v| values.iter().all(|w| w != v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => matches!((value.and_then(number), values.first().and_then(|w| number(w))), (Some(a), Some(b)) if a > b),
        "Lt" => matches!((value.and_then(number), values.first().and_then(|w| number(w))), (Some(a), Some(b)) if a < b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Affinity, NodeAffinity, NodeSelector, PodSpec};

    use super::*;

    fn candidates() -> Vec<Candidate> {
        (1..=3)
            .map(|i| Candidate {
                name: format!("shim-node-{i}"),
                labels: BTreeMap::from([
                    ("kubernetes.io/hostname".to_string(), format!("shim-node-{i}")),
                    ("disk".to_string(), if i == 3 { "hdd" } else { "ssd" }.to_string()),
                ]),
                taints: Vec::new(),
            })
            .collect()
    }

    fn pod(selector: Option<(&str, &str)>, term: Option<NodeSelectorTerm>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                node_selector: selector.map(|(k, v)| BTreeMap::from([(k.to_string(), v.to_string())])),
                affinity: term.map(|t| Affinity {
                    node_affinity: Some(NodeAffinity {
                        required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                            node_selector_terms: vec![t],
                        }),
                        ..NodeAffinity::default()
                    }),
                    ..Affinity::default()
                }),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn a_daemon_set_pod_goes_to_its_named_node() {
        let term = NodeSelectorTerm {
            match_fields: Some(vec![req("metadata.name", "In", &["shim-node-2"])]),
            match_expressions: None,
        };
        let p = pod(None, Some(term));
        assert_eq!(pick_node(&p, &candidates(), &BTreeMap::new(), &[]), Some("shim-node-2"));
    }

    #[test]
    fn selectors_and_label_expressions_filter_and_load_spreads() {
        let c = candidates();
        let p = pod(Some(("disk", "ssd")), None);
        let load = BTreeMap::from([("shim-node-1".to_string(), 2)]);
        assert_eq!(pick_node(&p, &c, &load, &[]), Some("shim-node-2"));
        let term = NodeSelectorTerm {
            match_expressions: Some(vec![req("disk", "NotIn", &["ssd"])]),
            match_fields: None,
        };
        assert_eq!(pick_node(&pod(None, Some(term)), &c, &load, &[]), Some("shim-node-3"));
        let nowhere = pod(Some(("disk", "tape")), None);
        assert_eq!(pick_node(&nowhere, &c, &load, &[]), None);
        let empty_term = pod(None, Some(NodeSelectorTerm::default()));
        assert_eq!(pick_node(&empty_term, &c, &load, &[]), None);
    }

    #[test]
    fn taints_keep_pods_without_a_matching_toleration_away() {
        let mut c = candidates();
        c[0].taints.push(Taint {
            key: "slicecache.io/cache-node".into(),
            value: Some("true".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        });
        c[1].taints.push(Taint {
            key: "soft".into(),
            value: None,
            effect: "PreferNoSchedule".into(),
            time_added: None,
        });
        let plain = pod(None, None);
        assert!(!fits(&plain, &c[0]));
        assert!(fits(&plain, &c[1]), "PreferNoSchedule does not filter");
        let toleration = |op: &str, key: Option<&str>, value: Option<&str>, effect: Option<&str>| {
            let mut p = pod(None, None);
            if let Some(spec) = p.spec.as_mut() {
                spec.tolerations = Some(vec![Toleration {
                    key: key.map(str::to_string),
                    operator: Some(op.into()),
                    value: value.map(str::to_string),
                    effect: effect.map(str::to_string),
                    toleration_seconds: None,
                }]);
            }
            p
        };
        let key = Some("slicecache.io/cache-node");
        assert!(fits(&toleration("Equal", key, Some("true"), Some("NoSchedule")), &c[0]));
        assert!(!fits(
            &toleration("Equal", key, Some("false"), Some("NoSchedule")),
            &c[0]
        ));
        assert!(!fits(&toleration("Equal", key, Some("true"), Some("NoExecute")), &c[0]));
        assert!(fits(&toleration("Exists", key, None, None), &c[0]));
        assert!(fits(&toleration("Exists", None, None, None), &c[0]));
    }

    #[test]
    fn a_bound_volume_pins_the_pod_to_its_node() {
        let c = candidates();
        let volume = NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![req("kubernetes.io/hostname", "In", &["shim-node-3"])]),
                match_fields: None,
            }],
        };
        let p = pod(None, None);
        assert_eq!(
            pick_node(&p, &c, &BTreeMap::new(), std::slice::from_ref(&volume)),
            Some("shim-node-3")
        );
        let ssd = pod(Some(("disk", "ssd")), None);
        assert_eq!(pick_node(&ssd, &c, &BTreeMap::new(), &[volume]), None);
    }

    #[test]
    fn only_unbound_live_default_scheduler_pods_are_bound() {
        let mut p = pod(None, None);
        assert!(wants_binding(&p));
        if let Some(spec) = p.spec.as_mut() {
            spec.scheduler_name = Some("other".into());
        }
        assert!(!wants_binding(&p));
        let mut bound = pod(None, None);
        if let Some(spec) = bound.spec.as_mut() {
            spec.node_name = Some("n".into());
        }
        assert!(!wants_binding(&bound));
    }
}
