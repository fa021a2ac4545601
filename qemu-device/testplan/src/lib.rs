//! Test files for `p2pnvme test`, independent of how a case is run.
//!
//! Data path: a TOML file is read by [`plan`] into cases (`[defaults]`
//! merged in, `matrix` expanded, every option key checked against the
//! options the runner takes); [`select`] keeps the cases a `--filter` and a
//! `--shard` name; the runner boots one guest per case; [`report`] turns the
//! outcomes into a summary line, JUnit XML and KTAP.

pub mod plan;
pub mod report;
pub mod select;

pub use plan::{load, Case, Expect, OptionKind, OptionValue, PlanError};
pub use report::{CaseResult, Outcome, Summary};
