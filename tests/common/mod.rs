//! Helpers shared by the black-box tests of the `churnwatch` binary.

// Each test crate uses only part of the helpers.
#![allow(dead_code)]

pub mod process;
pub mod schema;
pub mod stream;
pub mod topic;
