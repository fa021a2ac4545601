//! Command execution: admin commands (queues, identify, features, log
//! pages) and I/O commands, as methods of the controller.

pub mod admin;
pub mod features;
mod identify;
pub mod io;
pub mod log_pages;
pub mod table;
