//! slicecache node agent.

pub mod store;
