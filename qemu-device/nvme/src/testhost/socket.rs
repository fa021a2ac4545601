//! A driver that reaches a controller only through its vfio-user socket, as
//! QEMU does: guest RAM is a memfd passed with DMA_MAP, registers and
//! doorbells are REGION_READ/WRITE messages, completions are polled in the
//! memfd. The isolation tests and the two-client fuzz target drive the
//! device process (or a server thread) with it, next to raw messages of
//! their own on [`SocketHost::client`].

use super::{command, completion, Completion, RAM_BASE};
use crate::controller::{reg, DOORBELLS};
use crate::dma::{memfd, Mapping};
use crate::nvme::Sqe;
use p2pnvme_vfio_user::build::{self, Client, ReplyMsg};
use p2pnvme_vfio_user::wire::{cmd, dma};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Guest RAM of a socket host: admin SQ, admin CQ, then data pages.
pub const SOCKET_RAM: u64 = 1 << 20;
const ASQ: u64 = RAM_BASE;
const ACQ: u64 = RAM_BASE + 0x1000;
/// First free page of the socket host's RAM (for data buffers).
pub const DATA: u64 = RAM_BASE + 0x2000;
const ENTRIES: u16 = 16;
/// I/O queue pair 1: its SQ and CQ (above the pages tests use for data).
const IOSQ: u64 = RAM_BASE + 0x1_0000;
const IOCQ: u64 = RAM_BASE + 0x1_1000;
/// Entries of I/O queue pair 1.
pub const IO_ENTRIES: u16 = 64;
/// How long a command or CSTS.RDY is waited for.
const PATIENCE: Duration = Duration::from_secs(10);
/// PCI config region (vfio-pci index 7) and its COMMAND register.
const CONFIG: u32 = 7;
const PCI_COMMAND: u64 = 4;

/// One client of a controller socket (see the module docs).
pub struct SocketHost {
    /// The raw vfio-user client, for requests of the test's own.
    pub client: Client,
    ram: Mapping,
    ram_fd: File,
    sq_tail: u16,
    cq_head: u16,
    phase: bool,
    cid: u16,
    io_tail: u16,
    io_head: u16,
    io_phase: bool,
}

impl SocketHost {
    /// Connects to `socket`, negotiates the version and maps
    /// [`SOCKET_RAM`] bytes of guest RAM at `RAM_BASE`.
    pub fn connect(socket: &Path) -> std::io::Result<SocketHost> {
        let client = Client::new(UnixStream::connect(socket)?);
        SocketHost::over(client)
    }

    /// As [`SocketHost::connect`], on a connected client.
    pub fn over(mut client: Client) -> std::io::Result<SocketHost> {
        let r = client.call(cmd::VERSION, &build::version(b"{}\0"), &[]);
        if r.errno() != 0 {
            return Err(std::io::Error::from_raw_os_error(r.errno() as i32));
        }
        let ram_fd = memfd("socket-host-ram", SOCKET_RAM)?;
        let ram = Mapping::new(&ram_fd, 0, SOCKET_RAM as usize)?;
        let mut h = SocketHost {
            client,
            ram,
            ram_fd,
            sq_tail: 0,
            cq_head: 0,
            phase: true,
            cid: 0,
            io_tail: 0,
            io_head: 0,
            io_phase: true,
        };
        let errno = h.dma_map(RAM_BASE, SOCKET_RAM, dma::READ | dma::WRITE);
        if errno != 0 {
            return Err(std::io::Error::from_raw_os_error(errno as i32));
        }
        Ok(h)
    }

    /// The memfd behind guest RAM (a test may shrink it).
    pub fn ram_file(&self) -> &File {
        &self.ram_fd
    }

    /// DMA_MAP of [iova, iova+size) of guest RAM (from offset 0 of its
    /// memfd) with `flags`; the reply's errno.
    pub fn dma_map(&mut self, iova: u64, size: u64, flags: u32) -> u32 {
        self.dma_map_at(iova, size, 0, flags)
    }

    /// DMA_MAP of guest RAM from `offset` of its memfd; the reply's errno.
    pub fn dma_map_at(&mut self, iova: u64, size: u64, offset: u64, flags: u32) -> u32 {
        let fd = self.ram_fd.as_raw_fd();
        self.client
            .call(
                cmd::DMA_MAP,
                &build::dma_map(iova, size, offset, flags),
                &[fd],
            )
            .errno()
    }

    /// Reads a 32-bit register of BAR0 (None: the request failed).
    pub fn read32(&mut self, off: u64) -> Option<u32> {
        let r = self
            .client
            .call(cmd::REGION_READ, &build::region_rw(0, off, 4, &[]), &[]);
        (r.errno() == 0 && r.payload.len() >= 20)
            .then(|| u32::from_le_bytes(r.payload[16..20].try_into().unwrap()))
    }

    /// Writes a BAR0 register (4 or 8 bytes); the reply's errno.
    pub fn write_reg(&mut self, off: u64, bytes: &[u8]) -> u32 {
        self.region_write(0, off, bytes).errno()
    }

    fn region_write(&mut self, region: u32, off: u64, bytes: &[u8]) -> ReplyMsg {
        let n = bytes.len() as u32;
        self.client.call(
            cmd::REGION_WRITE,
            &build::region_rw(region, off, n, bytes),
            &[],
        )
    }

    /// Enables bus mastering and the controller with a 16-entry admin
    /// queue; false if CSTS.RDY did not come.
    pub fn enable(&mut self) -> bool {
        self.region_write(CONFIG, PCI_COMMAND, &6u16.to_le_bytes());
        self.write_reg(reg::CC, &0u32.to_le_bytes());
        let q = u32::from(ENTRIES - 1);
        self.write_reg(reg::AQA, &(q << 16 | q).to_le_bytes());
        self.write_reg(reg::ASQ, &ASQ.to_le_bytes());
        self.write_reg(reg::ACQ, &ACQ.to_le_bytes());
        self.write_reg(reg::CC, &(1u32 | 6 << 16 | 4 << 20).to_le_bytes());
        (self.sq_tail, self.cq_head, self.phase) = (0, 0, true);
        let start = Instant::now();
        while start.elapsed() < PATIENCE {
            match self.read32(reg::CSTS) {
                Some(c) if c & 1 == 1 => return true,
                Some(c) if c & 2 == 2 => return false,
                None => return false,
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        false
    }

    /// Submits an admin command and waits for its completion (None: none
    /// came within 10 s, or the socket failed).
    pub fn admin(&mut self, mut sqe: Sqe) -> Option<Completion> {
        self.cid = self.cid.wrapping_add(1);
        sqe.dw[0] = (sqe.dw[0] & 0xffff) | u32::from(self.cid) << 16;
        let raw: Vec<u8> = sqe.dw.iter().flat_map(|d| d.to_le_bytes()).collect();
        let at = (ASQ - RAM_BASE) as usize + usize::from(self.sq_tail) * 64;
        assert!(self.ram.write(at, &raw));
        self.sq_tail = (self.sq_tail + 1) % ENTRIES;
        let tail = u32::from(self.sq_tail);
        if self.write_reg(DOORBELLS, &tail.to_le_bytes()) != 0 {
            return None;
        }
        let start = Instant::now();
        loop {
            let mut e = [0u8; 16];
            let at = (ACQ - RAM_BASE) as usize + usize::from(self.cq_head) * 16;
            assert!(self.ram.read(at, &mut e));
            if (e[14] & 1 == 1) == self.phase {
                self.cq_head = (self.cq_head + 1) % ENTRIES;
                if self.cq_head == 0 {
                    self.phase = !self.phase;
                }
                let head = u32::from(self.cq_head);
                self.write_reg(DOORBELLS + 4, &head.to_le_bytes());
                return Some(completion(&e));
            }
            if start.elapsed() > PATIENCE {
                return None;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Identify Controller into guest RAM at `buf`.
    pub fn identify_at(&mut self, buf: u64) -> Option<Completion> {
        let mut c = command(0x06, 0);
        c.dw[6] = buf as u32;
        c.dw[7] = (buf >> 32) as u32;
        c.dw[10] = 1;
        self.admin(c)
    }

    /// Identify Controller into the data page; the serial number on
    /// success.
    pub fn identify(&mut self) -> Option<String> {
        self.ram.write((DATA - RAM_BASE) as usize, &[0u8; 4096]);
        let c = self.identify_at(DATA)?;
        if !c.ok() {
            return None;
        }
        let mut sn = [0u8; 20];
        self.ram.read((DATA - RAM_BASE) as usize + 4, &mut sn);
        Some(String::from_utf8_lossy(&sn).trim().to_string())
    }

    /// Creates I/O queue pair 1 ([`IO_ENTRIES`] entries, polled: no
    /// interrupt); false if a command failed.
    pub fn create_io_queue(&mut self) -> bool {
        let size = u32::from(IO_ENTRIES - 1) << 16 | 1;
        let mut cq = command(crate::nvme::admin::CREATE_CQ, 0);
        (cq.dw[6], cq.dw[7]) = (IOCQ as u32, (IOCQ >> 32) as u32);
        (cq.dw[10], cq.dw[11]) = (size, 1); // contiguous, interrupts off
        let mut sq = command(crate::nvme::admin::CREATE_SQ, 0);
        (sq.dw[6], sq.dw[7]) = (IOSQ as u32, (IOSQ >> 32) as u32);
        (sq.dw[10], sq.dw[11]) = (size, 1 << 16 | 1); // CQ 1, contiguous
        (self.io_tail, self.io_head, self.io_phase) = (0, 0, true);
        self.admin(cq).is_some_and(|c| c.ok()) && self.admin(sq).is_some_and(|c| c.ok())
    }

    /// Puts I/O commands on SQ 1 and rings its doorbell once; false if the
    /// doorbell write failed.
    pub fn submit_io(&mut self, sqes: &[Sqe]) -> bool {
        for s in sqes {
            self.cid = self.cid.wrapping_add(1);
            let mut s = *s;
            s.dw[0] = (s.dw[0] & 0xffff) | u32::from(self.cid) << 16;
            let raw: Vec<u8> = s.dw.iter().flat_map(|d| d.to_le_bytes()).collect();
            let at = (IOSQ - RAM_BASE) as usize + usize::from(self.io_tail) * 64;
            assert!(self.ram.write(at, &raw));
            self.io_tail = (self.io_tail + 1) % IO_ENTRIES;
        }
        let tail = u32::from(self.io_tail);
        self.write_reg(DOORBELLS + 8, &tail.to_le_bytes()) == 0
    }

    /// The I/O completions posted so far (not waiting); rings CQ 1's head
    /// doorbell when there were any.
    pub fn reap_io(&mut self) -> Vec<Completion> {
        let mut done = vec![];
        loop {
            let mut e = [0u8; 16];
            let at = (IOCQ - RAM_BASE) as usize + usize::from(self.io_head) * 16;
            assert!(self.ram.read(at, &mut e));
            if (e[14] & 1 == 1) != self.io_phase {
                break;
            }
            self.io_head = (self.io_head + 1) % IO_ENTRIES;
            if self.io_head == 0 {
                self.io_phase = !self.io_phase;
            }
            done.push(completion(&e));
        }
        if !done.is_empty() {
            let head = u32::from(self.io_head);
            self.write_reg(DOORBELLS + 12, &head.to_le_bytes());
        }
        done
    }

    /// Writes guest RAM at `addr`.
    pub fn write_mem(&self, addr: u64, data: &[u8]) {
        assert!(self.ram.write((addr - RAM_BASE) as usize, data));
    }

    /// Reads guest RAM at `addr`.
    pub fn read_mem(&self, addr: u64, buf: &mut [u8]) {
        assert!(self.ram.read((addr - RAM_BASE) as usize, buf));
    }

    /// The CMB's memfd from DEVICE_GET_REGION_INFO (None: no fd offered).
    pub fn cmb_fd(&mut self) -> Option<OwnedFd> {
        let r = self.client.call(
            cmd::DEVICE_GET_REGION_INFO,
            &build::region_info(2, 256),
            &[],
        );
        r.fds.into_iter().next()
    }
}
