//! Command execution through narrow contexts: identify, features and log
//! pages on `AdminCtx`, I/O commands on `IoCtx`. This module does not
//! depend on `controller`; the admin commands that operate the controller
//! itself (queues, doorbell buffer, events) live there.

pub mod admin;
pub mod features;
mod get_set_features;
mod identify;
pub mod io;
pub mod log_pages;
pub mod table;
