//! What validation reports: one [`ValidationError`] per problem, each
//! naming its field path and carrying a stable reason, and
//! [`ValidationErrors`], every problem of one spec at once.

use std::fmt;

use super::{matchers::MatcherError, url::UrlProblem};
use crate::{
    spec::{TuningMode, WIPE_CONFIRMATION},
    units::{ByteSize, HumanDuration},
};

/// One problem with a spec. Every message starts with the field path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("{field}: {value:?} is not a valid origin URL: {problem}")]
    InvalidUrl {
        field: &'static str,
        value: String,
        problem: UrlProblem,
    },
    #[error("{field}: {value:?} is not a valid host name")]
    InvalidHostHeader { field: &'static str, value: String },
    #[error("{field}: {value} is not a power of two")]
    NotPowerOfTwo { field: &'static str, value: ByteSize },
    #[error("{field}: {value} is outside {min}-{max}")]
    SizeOutOfRange {
        field: &'static str,
        value: ByteSize,
        min: ByteSize,
        max: ByteSize,
    },
    #[error("{field}: {value} is smaller than the minimum {min}")]
    SizeTooSmall {
        field: &'static str,
        value: ByteSize,
        min: ByteSize,
    },
    #[error("{field}: {value} is outside {min}-{max}")]
    NumberOutOfRange {
        field: &'static str,
        value: i64,
        min: i64,
        max: i64,
    },
    #[error("{field}: {value} is shorter than the minimum {min}")]
    DurationTooShort {
        field: &'static str,
        value: HumanDuration,
        min: HumanDuration,
    },
    #[error("{field}: {value} is larger than {max_field} ({max})")]
    BoundsInverted {
        field: &'static str,
        value: String,
        max_field: &'static str,
        max: String,
    },
    #[error("{field}: {value} is outside the tuning bounds {min}-{max}")]
    OutsideTuningBounds {
        field: &'static str,
        value: String,
        min: String,
        max: String,
    },
    #[error("{field}: required when spec.tuning.mode is {mode:?}")]
    PrometheusRequired { field: &'static str, mode: TuningMode },
    #[error("{field}: {value:?} is not a list of PromQL label matchers such as job=\"slicecache\": {problem}")]
    InvalidSelector {
        field: &'static str,
        value: String,
        problem: MatcherError,
    },
    #[error("{field}: {value:?} is not a valid regular expression: {problem}")]
    InvalidDeviceFilter {
        field: &'static str,
        value: String,
        problem: String,
    },
    #[error("{field}: {value:?} must be an absolute path under /dev/")]
    InvalidDevicePath { field: &'static str, value: String },
    #[error("{field}: {value:?} is listed more than once")]
    DuplicateDevice { field: &'static str, value: String },
    #[error("{field}: at most one of devices, deviceFilter and useAllDevices may be set, found {}", .fields.join(" and "))]
    ConflictingDeviceSelection {
        field: &'static str,
        fields: Vec<&'static str>,
    },
    #[error(
        "{field}: Overwrite erases whatever a device holds, so it needs devices named one by one, not {selection}"
    )]
    OverwriteWithDiscovery {
        field: &'static str,
        selection: &'static str,
    },
    #[error("{field}: {value:?} must be an absolute file path")]
    InvalidHostPath { field: &'static str, value: String },
    #[error("{field}: {value} is smaller than {min_field} ({min})")]
    MemoryBelowSlice {
        field: &'static str,
        value: ByteSize,
        min_field: &'static str,
        min: ByteSize,
    },
    #[error("{field}: {value} is smaller than the largest slice size the spec allows ({slice}); a slice must fall inside one ownership granule, so raise the granule or lower the slice size")]
    GranuleBelowSlice {
        field: &'static str,
        value: ByteSize,
        slice: ByteSize,
    },
    #[error("{field}: {value:?} must be a count of at least 1 or a percentage from 1% to 100%")]
    InvalidMaxUnavailable { field: &'static str, value: String },
    #[error("{field}: must not be empty")]
    Empty { field: &'static str },
    #[error("{field}: must be {WIPE_CONFIRMATION:?} for wipeDevicesOnDelete to act")]
    WipeNotConfirmed { field: &'static str },
    #[error("{field}: applies only to spec.workload: Deployment; a DaemonSet runs one agent on every node that spec.placement selects")]
    ReplicasNeedDeployment { field: &'static str },
    #[error("{field}: workload Deployment cannot use storage of the node, as its pods move between nodes and two may share one; use spec.cache.disk.emptyDirFile or spec.cache.disk.volumeClaimTemplate, or workload DaemonSet")]
    NodeStorageWithDeployment { field: &'static str },
    #[error("{field}: {pod} (storage of the pod) cannot be combined with {node} (storage of the node)")]
    PodAndNodeStorage {
        field: &'static str,
        pod: &'static str,
        node: &'static str,
    },
}

// === impl ValidationError ===

impl ValidationError {
    /// A stable CamelCase name for this kind of problem, usable as an Event
    /// or condition reason and as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidUrl { .. } => "InvalidUrl",
            Self::InvalidHostHeader { .. } => "InvalidHostHeader",
            Self::NotPowerOfTwo { .. } => "NotPowerOfTwo",
            Self::SizeOutOfRange { .. } => "SizeOutOfRange",
            Self::SizeTooSmall { .. } => "SizeTooSmall",
            Self::NumberOutOfRange { .. } => "NumberOutOfRange",
            Self::DurationTooShort { .. } => "DurationTooShort",
            Self::BoundsInverted { .. } => "BoundsInverted",
            Self::OutsideTuningBounds { .. } => "OutsideTuningBounds",
            Self::PrometheusRequired { .. } => "PrometheusRequired",
            Self::InvalidSelector { .. } => "InvalidSelector",
            Self::InvalidDeviceFilter { .. } => "InvalidDeviceFilter",
            Self::InvalidDevicePath { .. } => "InvalidDevicePath",
            Self::DuplicateDevice { .. } => "DuplicateDevice",
            Self::ConflictingDeviceSelection { .. } => "ConflictingDeviceSelection",
            Self::OverwriteWithDiscovery { .. } => "OverwriteWithDiscovery",
            Self::InvalidHostPath { .. } => "InvalidHostPath",
            Self::MemoryBelowSlice { .. } => "MemoryBelowSlice",
            Self::GranuleBelowSlice { .. } => "GranuleBelowSlice",
            Self::InvalidMaxUnavailable { .. } => "InvalidMaxUnavailable",
            Self::Empty { .. } => "Empty",
            Self::WipeNotConfirmed { .. } => "WipeNotConfirmed",
            Self::ReplicasNeedDeployment { .. } => "ReplicasNeedDeployment",
            Self::NodeStorageWithDeployment { .. } => "NodeStorageWithDeployment",
            Self::PodAndNodeStorage { .. } => "PodAndNodeStorage",
        }
    }

    /// The path of the offending field, e.g. `spec.slicing.sliceSize`.
    pub fn field(&self) -> &'static str {
        match self {
            Self::InvalidUrl { field, .. }
            | Self::InvalidHostHeader { field, .. }
            | Self::NotPowerOfTwo { field, .. }
            | Self::SizeOutOfRange { field, .. }
            | Self::SizeTooSmall { field, .. }
            | Self::NumberOutOfRange { field, .. }
            | Self::DurationTooShort { field, .. }
            | Self::BoundsInverted { field, .. }
            | Self::OutsideTuningBounds { field, .. }
            | Self::PrometheusRequired { field, .. }
            | Self::InvalidSelector { field, .. }
            | Self::InvalidDeviceFilter { field, .. }
            | Self::InvalidDevicePath { field, .. }
            | Self::DuplicateDevice { field, .. }
            | Self::ConflictingDeviceSelection { field, .. }
            | Self::OverwriteWithDiscovery { field, .. }
            | Self::InvalidHostPath { field, .. }
            | Self::MemoryBelowSlice { field, .. }
            | Self::GranuleBelowSlice { field, .. }
            | Self::InvalidMaxUnavailable { field, .. }
            | Self::PodAndNodeStorage { field, .. }
            | Self::Empty { field }
            | Self::WipeNotConfirmed { field }
            | Self::ReplicasNeedDeployment { field }
            | Self::NodeStorageWithDeployment { field } => field,
        }
    }
}

/// Every problem found in one spec; never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationErrors(pub(super) Vec<ValidationError>);

// === impl ValidationErrors ===

impl ValidationErrors {
    /// The problems, in field order.
    pub fn errors(&self) -> &[ValidationError] {
        &self.0
    }

    /// The reason of the first problem, for a condition or Event that can
    /// carry only one.
    pub fn reason(&self) -> &'static str {
        self.0.first().map_or("Invalid", ValidationError::reason)
    }

    pub fn iter(&self) -> impl Iterator<Item = &ValidationError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a `ValidationErrors` holds at least one error.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

impl IntoIterator for ValidationErrors {
    type Item = ValidationError;
    type IntoIter = std::vec::IntoIter<ValidationError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}
