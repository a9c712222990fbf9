//! Readable sentences from Kubernetes API errors.
//!
//! `kube::Error`'s own text for an API error ends with a Debug dump of the
//! whole `Status` object; conditions, Events and logs that a person reads get
//! the API server's message instead, and, for refusals with a known cause,
//! what to change.

/// One sentence for `e`: the API server's message for an API error (with a
/// hint for known refusals), the error's text otherwise.
pub fn describe(e: &kube::Error) -> String {
    let kube::Error::Api(status) = e else {
        return e.to_string();
    };
    let message = if status.message.is_empty() {
        status.reason.clone()
    } else {
        status.message.clone()
    };
    if refuses_privileged_pods(&message) {
        return format!(
            "the cluster refused the agent pods because they run privileged, which spec.cache.disk.devices, \
             deviceFilter and useAllDevices need to open the node's raw block devices; allow privileged pods \
             in this namespace (Pod Security level \"privileged\"; on the API server, --allow-privileged) or \
             cache on a hostPathFile, emptyDirFile or volumeClaimTemplate instead, which run unprivileged \
             (the API server said: {message})"
        );
    }
    match status.code {
        0 => message,
        code => format!("{message} (HTTP {code})"),
    }
}

/// Whether an API server message refuses privileged containers: the
/// `--allow-privileged=false` check, or a Pod Security level.
fn refuses_privileged_pods(message: &str) -> bool {
    (message.contains("privileged") && message.contains("Forbidden"))
        || (message.contains("violates PodSecurity") && message.contains("privileged"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, reason: &str, message: &str) -> kube::Error {
        let status = kube::core::Status::failure(message, reason).with_code(code);
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn api_errors_read_as_the_servers_message_not_a_debug_dump() {
        let e = api(404, "NotFound", "secrets \"origin-tls\" not found");
        let text = describe(&e);
        assert_eq!(text, "secrets \"origin-tls\" not found (HTTP 404)");
        assert!(!text.contains("Status {"), "{text}");
        assert!(
            e.to_string().contains("Status"),
            "kube's own text carries the dump: {e}"
        );
    }

    #[test]
    fn a_refused_privileged_pod_says_why_and_what_to_change() {
        let e = api(
            422,
            "Invalid",
            "DaemonSet.apps \"media-agent\" is invalid: spec.template.spec.containers[0].securityContext.privileged: \
             Forbidden: disallowed by cluster policy",
        );
        let text = describe(&e);
        assert!(text.contains("because they run privileged"), "{text}");
        assert!(text.contains("spec.cache.disk.devices"), "{text}");
        assert!(text.contains("--allow-privileged"), "{text}");
        assert!(!text.contains("Status {"), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
    }
}
