//! Which Pods the shim runs: only those whose container asks for the agent
//! image. The shim starts a local `slicecache-agent` process in place of a
//! container, so running it for any other image would run the wrong
//! program under that Pod's name; such Pods get no process at all.

/// How a container image is recognised as the agent's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageMatch {
    /// The image repository (the reference without tag or digest)
    /// is this name or ends with `/` and this name, e.g.
    /// `slicecache-agent` matches `ghcr.io/x/slicecache-agent:0.1.0`.
    RepositoryName(String),
    /// The image, tag included, is exactly this.
    Exact(String),
}

impl Default for ImageMatch {
    fn default() -> Self {
        Self::RepositoryName("slicecache-agent".into())
    }
}

impl ImageMatch {
    /// Parses an option value: `exact:IMAGE` or a repository name.
    pub fn parse(value: &str) -> Self {
        match value.strip_prefix("exact:") {
            Some(image) => Self::Exact(image.to_string()),
            None => Self::RepositoryName(value.to_string()),
        }
    }

    pub fn matches(&self, image: &str) -> bool {
        match self {
            Self::Exact(want) => image == want,
            Self::RepositoryName(name) => {
                let repo = repository(image);
                repo == name || repo.ends_with(&format!("/{name}"))
            }
        }
    }
}

/// The repository part of an image reference: without `@digest` and
/// without a `:tag` after the last `/` (a `:` before it is a registry port).
pub fn repository(image: &str) -> &str {
    let image = image.split_once('@').map_or(image, |(repo, _)| repo);
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].find(':') {
        Some(colon) => &image[..last_slash + colon],
        None => image,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_strips_tag_and_digest_but_not_a_registry_port() {
        assert_eq!(
            repository("slicecache/slicecache-agent:0.1.0"),
            "slicecache/slicecache-agent"
        );
        assert_eq!(repository("reg:5000/slicecache-agent"), "reg:5000/slicecache-agent");
        assert_eq!(
            repository("reg:5000/a/slicecache-agent:v1@sha256:ab"),
            "reg:5000/a/slicecache-agent"
        );
        assert_eq!(repository("slicecache-agent"), "slicecache-agent");
    }

    #[test]
    fn repository_name_matches_whole_path_segments_only() {
        let m = ImageMatch::default();
        assert!(m.matches("slicecache/slicecache-agent:0.1.0"));
        assert!(m.matches("slicecache-agent"));
        assert!(m.matches("reg:5000/x/slicecache-agent@sha256:00"));
        assert!(!m.matches("slicecache/not-slicecache-agent:1"));
        assert!(!m.matches("slicecache/slicecache-agent-debug:1"));
        assert!(!m.matches("busybox:1.36"));
        assert!(!m.matches("slicecache-agent-x/busybox"));
    }

    #[test]
    fn exact_needs_the_tag_too() {
        let m = ImageMatch::parse("exact:slicecache/slicecache-agent:0.1.0");
        assert!(m.matches("slicecache/slicecache-agent:0.1.0"));
        assert!(!m.matches("slicecache/slicecache-agent:0.2.0"));
        assert_eq!(ImageMatch::parse("agent"), ImageMatch::RepositoryName("agent".into()));
    }
}
