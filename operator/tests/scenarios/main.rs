//! Reconcile scenarios against a mocked API server (kube-rs's
//! `ApiServerVerifier` pattern): each test drives `reconcile` and asserts the
//! method, path and body of every API call it makes, in order, and that it
//! makes no other.
//!
//! [`harness`] holds the mocked API server and shared fixtures; each theme
//! is a module: [`lifecycle`] (a DaemonSet from creation to deletion),
//! [`deployment`] (workload Deployment) and [`tuning`] (the tuner inside
//! reconcile).

#![allow(clippy::unwrap_used)]

mod deployment;
mod harness;
mod lifecycle;
mod tuning;
