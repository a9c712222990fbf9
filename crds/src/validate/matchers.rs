//! PromQL label matchers, as `spec.tuning.prometheus.selector` takes them:
//! checked here so that a typo is a validation error naming the field, not a
//! query that Prometheus rejects at every tuning interval.

/// Why a text is not a list of label matchers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MatcherError {
    #[error("no matcher")]
    NoMatcher,
    #[error("expected a label name at {0:?}")]
    ExpectedName(String),
    #[error("expected =, !=, =~ or !~ after {0}")]
    ExpectedOperator(String),
    #[error("the value of {0} must be quoted")]
    Unquoted(String),
    #[error("the value of {0} has no closing quote")]
    Unclosed(String),
    #[error("expected a comma before {0:?}")]
    ExpectedComma(String),
}

/// Checks PromQL label matchers (`name="value"`, with `=`, `!=`, `=~` or
/// `!~`, separated by commas, braces optional) and returns them without
/// braces. Regular expressions are left to Prometheus.
pub fn label_matchers(text: &str) -> Result<String, MatcherError> {
    let t = text.trim();
    let t = t
        .strip_prefix('{')
        .and_then(|m| m.strip_suffix('}'))
        .unwrap_or(t)
        .trim();
    if t.is_empty() {
        return Err(MatcherError::NoMatcher);
    }
    let mut rest = t;
    while !rest.is_empty() {
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(MatcherError::ExpectedName(rest.to_string()));
        }
        rest = rest[name_end..].trim_start();
        let op = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| rest.starts_with(op))
            .ok_or_else(|| MatcherError::ExpectedOperator(name.to_string()))?;
        rest = rest[op.len()..].trim_start();
        let quote = rest
            .chars()
            .next()
            .filter(|c| matches!(c, '"' | '\''))
            .ok_or_else(|| MatcherError::Unquoted(name.to_string()))?;
        let mut escaped = false;
        let mut end = None;
        for (i, c) in rest.char_indices().skip(1) {
            match c {
                '\n' => break,
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                _ if c == quote => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end.ok_or_else(|| MatcherError::Unclosed(name.to_string()))?;
        rest = rest[end + 1..].trim_start();
        if !rest.is_empty() {
            rest = rest
                .strip_prefix(',')
                .ok_or_else(|| MatcherError::ExpectedComma(rest.to_string()))?
                .trim_start();
        }
    }
    Ok(t.to_string())
}
