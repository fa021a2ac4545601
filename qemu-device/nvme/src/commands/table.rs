//! The command table: one entry per supported opcode. It drives dispatch
//! and the Commands Supported and Effects log page, so a command cannot be
//! run without being reported, nor reported without being run.

use super::io::{self, IoCtx};
use crate::controller::Controller;
use crate::nvme::{admin as aop, io as iop, CmdResult, Sqe};

/// Commands Supported and Effects: the command is supported (CSUPP).
pub const SUPPORTED: u32 = 1;
/// It may change logical block content (LBCC).
pub const CHANGES_CONTENT: u32 = 1 << 1;

/// An admin command: `run` returns `None` to hold the command.
pub struct AdminCommand {
    /// Opcode.
    pub opcode: u8,
    /// Commands Supported and Effects entry.
    pub effects: u32,
    /// The handler.
    pub run: fn(&mut Controller, &Sqe) -> Option<CmdResult>,
}

/// An I/O command of the NVM command set.
pub struct IoCommand {
    /// Opcode.
    pub opcode: u8,
    /// Commands Supported and Effects entry.
    pub effects: u32,
    /// The handler.
    pub run: fn(&mut IoCtx<'_>, &Sqe) -> CmdResult,
}

/// Every admin command the controller runs.
pub static ADMIN: &[AdminCommand] = &[
    AdminCommand {
        opcode: aop::DELETE_SQ,
        effects: SUPPORTED,
        run: |c, s| Some(c.delete_sq(s)),
    },
    AdminCommand {
        opcode: aop::CREATE_SQ,
        effects: SUPPORTED,
        run: |c, s| Some(c.create_sq(s)),
    },
    AdminCommand {
        opcode: aop::GET_LOG_PAGE,
        effects: SUPPORTED,
        run: |c, s| Some(c.get_log_page(s)),
    },
    AdminCommand {
        opcode: aop::DELETE_CQ,
        effects: SUPPORTED,
        run: |c, s| Some(c.delete_cq(s)),
    },
    AdminCommand {
        opcode: aop::CREATE_CQ,
        effects: SUPPORTED,
        run: |c, s| Some(c.create_cq(s)),
    },
    AdminCommand {
        opcode: aop::IDENTIFY,
        effects: SUPPORTED,
        run: |c, s| Some(c.identify(s)),
    },
    // Commands complete too fast to abort: "not aborted".
    AdminCommand {
        opcode: aop::ABORT,
        effects: SUPPORTED,
        run: |_, _| Some(Ok(1)),
    },
    AdminCommand {
        opcode: aop::SET_FEATURES,
        effects: SUPPORTED,
        run: |c, s| Some(c.set_features(s)),
    },
    AdminCommand {
        opcode: aop::GET_FEATURES,
        effects: SUPPORTED,
        run: |c, s| Some(c.get_features(s)),
    },
    AdminCommand {
        opcode: aop::ASYNC_EVENT,
        effects: SUPPORTED,
        run: |c, s| c.async_event(s),
    },
    AdminCommand {
        opcode: aop::KEEP_ALIVE,
        effects: SUPPORTED,
        run: |_, _| Some(Ok(0)),
    },
    AdminCommand {
        opcode: aop::DOORBELL_BUFFER_CONFIG,
        effects: SUPPORTED,
        run: |c, s| Some(c.doorbell_buffer_config(s)),
    },
];

/// Every I/O command the controller runs.
pub static IO: &[IoCommand] = &[
    IoCommand {
        opcode: iop::FLUSH,
        effects: SUPPORTED,
        run: io::flush,
    },
    IoCommand {
        opcode: iop::WRITE,
        effects: SUPPORTED | CHANGES_CONTENT,
        run: io::write,
    },
    IoCommand {
        opcode: iop::READ,
        effects: SUPPORTED,
        run: io::read,
    },
    IoCommand {
        opcode: iop::COMPARE,
        effects: SUPPORTED,
        run: io::compare,
    },
    IoCommand {
        opcode: iop::WRITE_ZEROES,
        effects: SUPPORTED | CHANGES_CONTENT,
        run: io::write_zeroes,
    },
    IoCommand {
        opcode: iop::DSM,
        effects: SUPPORTED | CHANGES_CONTENT,
        run: io::dsm,
    },
    IoCommand {
        opcode: iop::COPY,
        effects: SUPPORTED | CHANGES_CONTENT,
        run: io::copy,
    },
];

/// The admin command with this opcode.
pub fn admin(opcode: u8) -> Option<&'static AdminCommand> {
    ADMIN.iter().find(|c| c.opcode == opcode)
}

/// The I/O command with this opcode.
pub fn io(opcode: u8) -> Option<&'static IoCommand> {
    IO.iter().find(|c| c.opcode == opcode)
}
