//! Which SliceCaches a Node event concerns: those whose
//! `placement.nodeSelector` matches the node's labels, where an absent or
//! empty selector selects every node. The controller watches Nodes and
//! re-reconciles these SliceCaches, so a node that joins, leaves or gains
//! the selected labels updates the fleet and `status.nodes` at once rather
//! than at the next resync.
//!
//! Only the node's current labels are known here, so a node that *loses*
//! a selected label maps to no cache; that cache still hears of it when the
//! DaemonSet controller removes the agent and the owned DaemonSet's status
//! changes. Tolerations and affinity are not evaluated: a node that matches
//! the selector but not the affinity costs one idle reconcile.

use std::{collections::BTreeMap, sync::Arc};

use kube::runtime::reflector::ObjectRef;
use slicecache_api::SliceCache;

/// Whether `selector` (a `nodeSelector`) selects a node labelled `labels`.
pub fn selects(selector: Option<&BTreeMap<String, String>>, labels: &BTreeMap<String, String>) -> bool {
    selector.is_none_or(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// The SliceCaches among `caches` whose placement selects a node labelled
/// `labels`.
pub fn caches_for_node(labels: &BTreeMap<String, String>, caches: &[Arc<SliceCache>]) -> Vec<ObjectRef<SliceCache>> {
    caches
        .iter()
        .filter(|c| {
            let selector = c.spec.placement.as_ref().and_then(|p| p.node_selector.as_ref());
            selects(selector, labels)
        })
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(name: &str, namespace: &str, placement: &str) -> Arc<SliceCache> {
        let yaml = format!(
            "apiVersion: slicecache.io/v1alpha1\nkind: SliceCache\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  origin:\n    url: https://media.example.com\n{placement}"
        );
        Arc::new(serde_yaml_ng::from_str(&yaml).expect("SliceCache"))
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn names(refs: &[ObjectRef<SliceCache>]) -> Vec<String> {
        refs.iter()
            .map(|r| format!("{}/{}", r.namespace.as_deref().unwrap_or(""), r.name))
            .collect()
    }

    const NVME: &str =
        "  placement:\n    nodeSelector:\n      slicecache.io/disk: nvme\n      topology.kubernetes.io/zone: a\n";

    #[test]
    fn a_node_with_every_selected_label_matches() {
        let caches = [cache("media", "video", NVME)];
        let node = labels(&[
            ("slicecache.io/disk", "nvme"),
            ("topology.kubernetes.io/zone", "a"),
            ("kubernetes.io/hostname", "n1"),
        ]);
        assert_eq!(names(&caches_for_node(&node, &caches)), ["video/media"]);
    }

    #[test]
    fn a_node_missing_a_label_or_with_another_value_does_not() {
        let caches = [cache("media", "video", NVME)];
        let missing = labels(&[("slicecache.io/disk", "nvme")]);
        let other_value = labels(&[("slicecache.io/disk", "nvme"), ("topology.kubernetes.io/zone", "b")]);
        assert!(caches_for_node(&missing, &caches).is_empty());
        assert!(caches_for_node(&other_value, &caches).is_empty());
        assert!(caches_for_node(&BTreeMap::new(), &caches).is_empty());
    }

    #[test]
    fn no_or_an_empty_selector_selects_every_node() {
        let caches = [
            cache("no-placement", "a", ""),
            cache("no-selector", "b", "  placement:\n    tolerations: []\n"),
            cache("empty-selector", "c", "  placement:\n    nodeSelector: {}\n"),
        ];
        let expected = ["a/no-placement", "b/no-selector", "c/empty-selector"];
        assert_eq!(names(&caches_for_node(&BTreeMap::new(), &caches)), expected);
        assert_eq!(names(&caches_for_node(&labels(&[("any", "label")]), &caches)), expected);
    }

    #[test]
    fn each_matching_cache_of_several_is_named_once() {
        let caches = [
            cache("media", "video", NVME),
            cache(
                "models",
                "ml",
                "  placement:\n    nodeSelector:\n      slicecache.io/disk: nvme\n",
            ),
            cache(
                "images",
                "os",
                "  placement:\n    nodeSelector:\n      slicecache.io/disk: hdd\n",
            ),
            cache("everywhere", "edge", ""),
        ];
        let node = labels(&[("slicecache.io/disk", "nvme"), ("topology.kubernetes.io/zone", "b")]);
        assert_eq!(
            names(&caches_for_node(&node, &caches)),
            ["ml/models", "edge/everywhere"]
        );
        let refs = caches_for_node(&node, &caches);
        assert_eq!(refs[0], ObjectRef::new("models").within("ml"));
        assert!(caches_for_node(&labels(&[("slicecache.io/disk", "ssd")]), &caches[..3]).is_empty());
    }
}
