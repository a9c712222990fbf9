//! Binding unscheduled Pods to the shim's Nodes: the local control plane
//! has no kube-scheduler, and DaemonSet Pods too are created without a
//! node (they carry a required node affinity on `metadata.name` instead).
//!
//! Only what the agents' Pods use is honoured: `nodeSelector` and required
//! node affinity (label expressions and the `metadata.name` field). Among
//! the fitting Nodes the one with the fewest Pods wins, so a Deployment
//! spreads. Pods for another scheduler are left alone.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Pod};

/// A candidate Node: its name and labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub labels: BTreeMap<String, String>,
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

/// The fitting candidate with the fewest Pods (`load`), ties by name.
pub fn pick_node<'a>(pod: &Pod, candidates: &'a [Candidate], load: &BTreeMap<String, usize>) -> Option<&'a str> {
    candidates
        .iter()
        .filter(|c| fits(pod, c))
        .min_by_key(|c| (load.get(&c.name).copied().unwrap_or(0), c.name.as_str()))
        .map(|c| c.name.as_str())
}

/// Whether `pod` may run on `node` by its node selector and required node affinity.
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
    selector_ok && affinity_ok
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
        assert_eq!(pick_node(&p, &candidates(), &BTreeMap::new()), Some("shim-node-2"));
    }

    #[test]
    fn selectors_and_label_expressions_filter_and_load_spreads() {
        let c = candidates();
        let p = pod(Some(("disk", "ssd")), None);
        let load = BTreeMap::from([("shim-node-1".to_string(), 2)]);
        assert_eq!(pick_node(&p, &c, &load), Some("shim-node-2"));
        let term = NodeSelectorTerm {
            match_expressions: Some(vec![req("disk", "NotIn", &["ssd"])]),
            match_fields: None,
        };
        assert_eq!(pick_node(&pod(None, Some(term)), &c, &load), Some("shim-node-3"));
        let nowhere = pod(Some(("disk", "tape")), None);
        assert_eq!(pick_node(&nowhere, &c, &load), None);
        let empty_term = pod(None, Some(NodeSelectorTerm::default()));
        assert_eq!(pick_node(&empty_term, &c, &load), None);
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
