//! slicecache operator.
