//! slicecache node agent.
