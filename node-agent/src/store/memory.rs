//! Placeholder so the crate compiles on the `disk-store` branch; the L1
//! memory tier is written on main and replaces this file at merge.
