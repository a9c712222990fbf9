//! Offline rendering: the objects the operator would apply for SliceCache
//! manifests, with no cluster.
//!
//! Each SliceCache document in the input is validated and built exactly as
//! the controller does; the output is one multi-document YAML stream in
//! apply order. Objects carry no owner reference (there is no uid before
//! the SliceCache exists in a cluster). Documents of other kinds are
//! skipped, so a file that also holds a Secret renders as well.

use serde::Deserialize;
use slicecache_api::SliceCache;

use crate::controller::{
    build::{self, BuildDefaults, BuildError, Owner},
    validate::{self, ValidateError},
};

/// Why a manifest could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("document {index}: not YAML: {source}")]
    Parse {
        index: usize,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("document {index} ({name}): {source}")]
    Invalid {
        index: usize,
        name: String,
        #[source]
        source: ValidateError,
    },
    #[error("document {index} ({name}): {source}")]
    Build {
        index: usize,
        name: String,
        #[source]
        source: BuildError,
    },
    #[error("printing objects: {0}")]
    Print(String),
    #[error("no SliceCache in the input")]
    Empty,
}

impl RenderError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Parse { .. } => "ParseFailed",
            Self::Invalid { source, .. } => source.reason(),
            Self::Build { source, .. } => source.reason(),
            Self::Print(_) => "PrintFailed",
            Self::Empty => "NoSliceCache",
        }
    }
}

/// Renders every SliceCache in `input` (multi-document YAML).
pub fn render(input: &str, defaults: &BuildDefaults) -> Result<String, RenderError> {
    let mut out = String::new();
    let mut found = 0;
    for (index, doc) in serde_yaml_ng::Deserializer::from_str(input).enumerate() {
        let value = serde_json::Value::deserialize(doc).map_err(|source| RenderError::Parse { index, source })?;
        if value.is_null() || value.get("kind").and_then(|k| k.as_str()) != Some("SliceCache") {
            continue;
        }
        let cache: SliceCache = serde_json::from_value(value).map_err(|e| RenderError::Print(e.to_string()))?;
        let name = cache.metadata.name.clone().unwrap_or_default();
        let validated = validate::validate_spec(&cache).map_err(|source| RenderError::Invalid {
            index,
            name: name.clone(),
            source,
        })?;
        let mut owner = Owner::of(&cache, "default");
        owner.generation = owner.generation.max(1);
        let desired = build::build(&validated, &owner, defaults).map_err(|source| RenderError::Build {
            index,
            name: name.clone(),
            source,
        })?;
        for object in desired.to_values().map_err(|e| RenderError::Print(e.to_string()))? {
            out.push_str("---\n");
            out.push_str(&serde_yaml_ng::to_string(&object).map_err(|e| RenderError::Print(e.to_string()))?);
        }
        found += 1;
    }
    if found == 0 {
        return Err(RenderError::Empty);
    }
    Ok(out)
}
