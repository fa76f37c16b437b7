//! Harness for the end-to-end tests (in progress).
pub mod netns;
