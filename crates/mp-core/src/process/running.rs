//! The parent's view of a started child: its pid, its boot channel (which carries the
//! child's reports and tells the child the parent lives), and how to wait for it.

use std::sync::Mutex;
use std::time::Duration;

use mp_ipc::deadline::Deadline;
use mp_ipc::handle::RawHandle;
use mp_ipc::Channel;

use super::boot::Report;
use crate::sys::{self, Chan, Exit, Signal, Waiter};
use crate::{ChildPanic, ProcessError};

/// How long the reports of an ended child may take to read: they are on the channel
/// already, unless something other than the child wrote there.
const REPORT_GRACE: Duration = Duration::from_secs(1);
/// The most reports one child sends (a panic, an exit code, a boot failure), with room.
const MAX_REPORTS: usize = 16;

/// How a child ended.
#[derive(Debug, Clone)]
pub(crate) struct Finished {
    pub(crate) exitcode: i32,
    pub(crate) panic: Option<ChildPanic>,
    pub(crate) boot_error: Option<String>,
}

impl Finished {
    /// `Ok` for exit code 0, the matching error otherwise.
    pub(crate) fn result(&self) -> Result<(), ProcessError> {
        if let Some(panic) = &self.panic {
            return Err(ProcessError::Panicked {
                panic: panic.clone(),
                exitcode: self.exitcode,
            });
        }
        if let Some(msg) = &self.boot_error {
            return Err(ProcessError::Boot(msg.clone()));
        }
        match self.exitcode {
            0 => Ok(()),
            exitcode => Err(ProcessError::Failed { exitcode }),
        }
    }
}

pub(crate) struct Running {
    pub(crate) pid: u32,
    pub(crate) name: String,
    pub(crate) daemon: bool,
    boot: Chan,
    waiter: Waiter,
    finished: Mutex<Option<Finished>>,
}

impl Running {
    pub(crate) fn new(pid: u32, name: String, daemon: bool, boot: Chan, waiter: Waiter) -> Self {
        Self {
            pid,
            name,
            daemon,
            boot,
            waiter,
            finished: Mutex::new(None),
        }
    }

    pub(crate) fn boot(&self) -> &Chan {
        &self.boot
    }

    pub(crate) fn boot_handle(&self) -> RawHandle {
        sys::chan_raw_handle(&self.boot)
    }

    /// The handle that becomes ready when the child ends.
    pub(crate) fn sentinel(&self) -> RawHandle {
        self.waiter.sentinel().unwrap_or_else(|| self.boot_handle())
    }

    /// How the child ended, if it has, without blocking.
    pub(crate) fn poll(&self) -> Result<Option<Finished>, ProcessError> {
        self.wait(Some(Duration::ZERO))
    }

    /// Waits up to `timeout` (`None`: without limit) for the child to end.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> Result<Option<Finished>, ProcessError> {
        let mut finished = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = finished.as_ref() {
            return Ok(Some(f.clone()));
        }
        let exit = match timeout {
            Some(t) if t.is_zero() => self.waiter.try_wait()?,
            _ => self.waiter.wait(timeout)?,
        };
        let Some(exit) = exit else { return Ok(None) };
        let f = self.collect(exit);
        *finished = Some(f.clone());
        Ok(Some(f))
    }

    /// Reads the child's reports, now that it has ended.
    fn collect(&self, exit: Exit) -> Finished {
        let mut f = Finished {
            exitcode: 255,
            panic: None,
            boot_error: None,
        };
        let mut said_code = None;
        let mut buf = Vec::new();
        // The child has ended, but whatever it left on the channel (or a process it gave
        // the channel to) may be anything: a bounded number of reports, read within a
        // bounded time, so a stalled or endless stream cannot hold `join`.
        let deadline = Deadline::after(REPORT_GRACE);
        for _ in 0..MAX_REPORTS {
            if !self.boot.poll(Some(Duration::ZERO)).unwrap_or(false)
                || self
                    .boot
                    .recv_frame_until(&mut buf, 1 << 24, deadline)
                    .is_err()
            {
                break;
            }
            match crate::codec::decode::<Report>(&buf) {
                Ok(Report::Panicked {
                    message,
                    location,
                    backtrace,
                }) => {
                    f.panic = Some(ChildPanic {
                        message,
                        location,
                        backtrace,
                    })
                }
                Ok(Report::BootFailed(msg)) => f.boot_error = Some(msg),
                Ok(Report::Exiting(code)) => said_code = Some(code),
                Err(_) => break,
            }
        }
        f.exitcode = match exit {
            Exit::Code(c) => c,
            Exit::Unknown => said_code.unwrap_or(255),
        };
        f
    }

    pub(crate) fn signal(&self, signal: Signal) -> Result<(), ProcessError> {
        if self.poll()?.is_some() {
            return Ok(());
        }
        Ok(sys::send_signal(self.pid, signal)?)
    }
}
