//! The command table: one entry per supported opcode. It drives dispatch
//! and the Commands Supported and Effects log page, so a command cannot be
//! run without being reported, nor reported without being run.

use super::admin::AdminCtx;
use super::io::{self, IoCtx};
use super::{get_set_features, identify, log_pages};
use crate::nvme::{admin as aop, io as iop, CmdResult, Sqe, Status};
use crate::wire::{CommandsEffectsLog, U32};
use zerocopy::FromZeros;

/// Commands Supported and Effects: the command is supported (CSUPP).
pub const SUPPORTED: u32 = 1;
/// It may change logical block content (LBCC).
pub const CHANGES_CONTENT: u32 = 1 << 1;

/// An admin command.
pub struct AdminCommand {
    /// Opcode.
    pub opcode: u8,
    /// Name (fault rules, the trace).
    pub name: &'static str,
    /// Commands Supported and Effects entry.
    pub effects: u32,
    /// The handler.
    pub run: AdminRun,
}

/// Who runs an admin command.
#[derive(Clone, Copy)]
pub enum AdminRun {
    /// A command on the narrow admin context (identify, features, log pages).
    Ctx(fn(&mut AdminCtx<'_>, &Sqe) -> CmdResult),
    /// An operation on the controller itself, which runs it.
    Controller(ControllerOp),
}

/// The admin commands that operate the controller's queues and events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControllerOp {
    /// Create I/O Submission Queue.
    CreateSq,
    /// Delete I/O Submission Queue.
    DeleteSq,
    /// Create I/O Completion Queue.
    CreateCq,
    /// Delete I/O Completion Queue.
    DeleteCq,
    /// Doorbell Buffer Config (shadow doorbells).
    DoorbellBufferConfig,
    /// Asynchronous Event Request: held until an event completes it.
    AsyncEvent,
}

/// An I/O command of the NVM command set.
pub struct IoCommand {
    /// Opcode.
    pub opcode: u8,
    /// Name (fault rules, the trace).
    pub name: &'static str,
    /// Commands Supported and Effects entry.
    pub effects: u32,
    /// The handler.
    pub run: fn(&mut IoCtx<'_>, &Sqe) -> CmdResult,
}

/// Every admin command the controller runs.
pub static ADMIN: &[AdminCommand] = &[
    AdminCommand {
        opcode: aop::DELETE_SQ,
        name: "delete-sq",
        effects: SUPPORTED,
        run: AdminRun::Controller(ControllerOp::DeleteSq),
    },
    AdminCommand {
        opcode: aop::CREATE_SQ,
        name: "create-sq",
        effects: SUPPORTED,
        run: AdminRun::Controller(ControllerOp::CreateSq),
    },
    AdminCommand {
        opcode: aop::GET_LOG_PAGE,
        name: "get-log-page",
        effects: SUPPORTED,
        run: AdminRun::Ctx(get_log_page),
    },
    AdminCommand {
        opcode: aop::DELETE_CQ,
        name: "delete-cq",
        effects: SUPPORTED,
        run: AdminRun::Controller(ControllerOp::DeleteCq),
    },
    AdminCommand {
        opcode: aop::CREATE_CQ,
        name: "create-cq",
        effects: SUPPORTED,
        run: AdminRun::Controller(ControllerOp::CreateCq),
    },
    AdminCommand {
        opcode: aop::IDENTIFY,
        name: "identify",
        effects: SUPPORTED,
        run: AdminRun::Ctx(identify::identify),
    },
    // Commands complete too fast to abort: "not aborted".
    AdminCommand {
        opcode: aop::ABORT,
        name: "abort",
        effects: SUPPORTED,
        run: AdminRun::Ctx(|_, _| Ok(1)),
    },
    AdminCommand {
        opcode: aop::SET_FEATURES,
        name: "set-features",
        effects: SUPPORTED,
        run: AdminRun::Ctx(get_set_features::set_features),
    },
    AdminCommand {
        opcode: aop::GET_FEATURES,
        name: "get-features",
        effects: SUPPORTED,
        run: AdminRun::Ctx(get_set_features::get_features),
    },
    AdminCommand {
        opcode: aop::ASYNC_EVENT,
        name: "async-event",
        effects: SUPPORTED,
        run: AdminRun::Controller(ControllerOp::AsyncEvent),
    },
    AdminCommand {
        opcode: aop::KEEP_ALIVE,
        name: "keep-alive",
        effects: SUPPORTED,
        run: AdminRun::Ctx(|_, _| Ok(0)),
    },
    AdminCommand {
        opcode: aop::DOORBELL_BUFFER_CONFIG,
        name: "doorbell-buffer-config",
        effects: SUPPORTED,
        run: AdminRun::Controller(ControllerOp::DoorbellBufferConfig),
    },
];

/// Every I/O command the controller runs.
pub static IO: &[IoCommand] = &[
    IoCommand {
        opcode: iop::FLUSH,
        name: "flush",
        effects: SUPPORTED,
        run: io::flush,
    },
    IoCommand {
        opcode: iop::WRITE,
        name: "write",
        effects: SUPPORTED | CHANGES_CONTENT,
        run: io::write,
    },
    IoCommand {
        opcode: iop::READ,
        name: "read",
        effects: SUPPORTED,
        run: io::read,
    },
    IoCommand {
        opcode: iop::COMPARE,
        name: "compare",
        effects: SUPPORTED,
        run: io::compare,
    },
    IoCommand {
        opcode: iop::WRITE_ZEROES,
        name: "write-zeroes",
        effects: SUPPORTED | CHANGES_CONTENT,
        run: io::write_zeroes,
    },
    IoCommand {
        opcode: iop::DSM,
        name: "dsm",
        effects: SUPPORTED | CHANGES_CONTENT,
        run: io::dsm,
    },
    IoCommand {
        opcode: iop::COPY,
        name: "copy",
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

/// Runs one I/O command through the command table.
pub fn execute_io(c: &mut IoCtx<'_>, sqe: &Sqe) -> CmdResult {
    match io(sqe.opcode()) {
        Some(cmd) => (cmd.run)(c, sqe),
        None => Err(Status::INVALID_OPCODE),
    }
}

/// Get Log Page, whose Commands Supported and Effects page is this table.
fn get_log_page(c: &mut AdminCtx<'_>, sqe: &Sqe) -> CmdResult {
    log_pages::get_log_page(c, sqe, &effects_log())
}

/// Commands Supported and Effects, straight from the command table.
fn effects_log() -> CommandsEffectsLog {
    let mut log = CommandsEffectsLog::new_zeroed();
    for c in ADMIN {
        log.acs[c.opcode as usize] = U32::new(c.effects);
    }
    for c in IO {
        log.iocs[c.opcode as usize] = U32::new(c.effects);
    }
    log
}
