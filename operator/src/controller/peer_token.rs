//! Rotating the fleet's peer token without a restart and without a refused
//! peer request.
//!
//! The Secret `NAME-peer-token` holds the tokens one per line under the
//! key `token`; each agent presents the first and accepts every line, and
//! reads the file again while it runs (a Secret volume reaches every node
//! within a minute or two). A rotation is three writes, each once the one
//! before has had [`PROPAGATION`] to reach every agent:
//!
//! 1. `old` + `new`: every agent accepts the new token (annotation
//!    `slicecache.io/peer-token-step: accepting`);
//! 2. `new` + `old`: every agent presents it, and agents that have not read
//!    the change yet are still accepted (`presenting`);
//! 3. `new` alone (the annotation removed).
//!
//! Rotations start `spec.fleet.tokenRotation` after the last one ended.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

/// Annotation: the rotation step the Secret is in.
pub const STEP_ANNOTATION: &str = "slicecache.io/peer-token-step";
/// Annotation: when the Secret's tokens were last written (RFC 3339).
pub const WRITTEN_ANNOTATION: &str = "slicecache.io/peer-token-written";
/// How long a step waits for the Secret volume to reach every agent.
pub const PROPAGATION: Duration = Duration::from_secs(300);

const ACCEPTING: &str = "accepting";
const PRESENTING: &str = "presenting";

/// The Secret's tokens and annotations after one rotation step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenWrite {
    /// The `token` key's new text.
    pub text: String,
    /// The new value of [`STEP_ANNOTATION`]; `None` removes it.
    pub step: Option<&'static str>,
}

/// The next rotation step for a Secret holding `text`, in step `step`,
/// last written at `written` (its creation time when unknown), or `None`
/// while nothing is due. `fresh` makes a new token.
pub fn next_step(
    text: &str,
    step: Option<&str>,
    written: Timestamp,
    now: Timestamp,
    period: Duration,
    fresh: impl FnOnce() -> String,
) -> Option<TokenWrite> {
    let tokens: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let elapsed = now.duration_since(written).unsigned_abs();
    let (first, second) = match tokens.as_slice() {
        [] => return None,
        [only] => (*only, None),
        [a, b, ..] => (*a, Some(*b)),
    };
    match (step, second) {
        (Some(ACCEPTING), Some(new)) if elapsed >= PROPAGATION => Some(TokenWrite {
            text: format!("{new}\n{first}\n"),
            step: Some(PRESENTING),
        }),
        (Some(PRESENTING), Some(_)) if elapsed >= PROPAGATION => Some(TokenWrite {
            text: format!("{first}\n"),
            step: None,
        }),
        (Some(ACCEPTING | PRESENTING), Some(_)) => None,
        // Steady (or a step that lost its second token): rotate when due.
        _ if elapsed >= period => Some(TokenWrite {
            text: format!("{first}\n{}\n", fresh()),
            step: Some(ACCEPTING),
        }),
        _ => None,
    }
}

/// The annotations of a Secret after `write`, at `now`.
pub fn annotations_after(
    mut annotations: BTreeMap<String, String>,
    write: &TokenWrite,
    now: Timestamp,
) -> BTreeMap<String, String> {
    match write.step {
        Some(step) => annotations.insert(STEP_ANNOTATION.into(), step.into()),
        None => annotations.remove(STEP_ANNOTATION),
    };
    annotations.insert(WRITTEN_ANNOTATION.into(), now.to_string());
    annotations
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("a time")
    }

    #[test]
    fn a_rotation_accepts_then_presents_then_drops_the_old_token() {
        let fresh = || "new".to_string();
        assert_eq!(next_step("old\n", None, at(0), at(3_600), DAY, fresh), None, "not due");
        let one = next_step("old\n", None, at(0), at(86_400), DAY, fresh).expect("due");
        assert_eq!(
            one,
            TokenWrite {
                text: "old\nnew\n".into(),
                step: Some(ACCEPTING)
            }
        );
        let wait = PROPAGATION.as_secs() as i64;
        assert_eq!(next_step(&one.text, one.step, at(0), at(wait - 1), DAY, fresh), None);
        let two = next_step(&one.text, one.step, at(0), at(wait), DAY, fresh).expect("presenting");
        assert_eq!(
            two,
            TokenWrite {
                text: "new\nold\n".into(),
                step: Some(PRESENTING)
            }
        );
        assert_eq!(next_step(&two.text, two.step, at(0), at(wait - 1), DAY, fresh), None);
        let three = next_step(&two.text, two.step, at(0), at(wait), DAY, fresh).expect("dropping");
        assert_eq!(
            three,
            TokenWrite {
                text: "new\n".into(),
                step: None
            }
        );
        assert_eq!(next_step(&three.text, three.step, at(0), at(wait), DAY, fresh), None);
    }

    #[test]
    fn odd_secrets_are_left_alone_or_rotated_safely() {
        let fresh = || "new".to_string();
        assert_eq!(
            next_step("", None, at(0), at(999_999), DAY, fresh),
            None,
            "no token to keep"
        );
        // A step annotation on a one-token Secret: rotate from that token.
        let w = next_step("only\n", Some(PRESENTING), at(0), at(86_400), DAY, fresh).expect("due");
        assert_eq!(w.text, "only\nnew\n");
    }

    #[test]
    fn the_annotations_follow_the_step() {
        let now = at(0);
        let write = TokenWrite {
            text: String::new(),
            step: Some(ACCEPTING),
        };
        let a = annotations_after(BTreeMap::new(), &write, now);
        assert_eq!(a[STEP_ANNOTATION], ACCEPTING);
        assert_eq!(a[WRITTEN_ANNOTATION], now.to_string());
        let a = annotations_after(
            a,
            &TokenWrite {
                text: String::new(),
                step: None,
            },
            now,
        );
        assert!(!a.contains_key(STEP_ANNOTATION));
    }
}
