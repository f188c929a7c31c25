//! The conformance kit of `mp`'s backend contract (`mp-ipc`).
//!
//! One generic suite checks what every transport promises ([`mp_ipc::Channel`],
//! [`mp_ipc::Endpoint`], [`mp_ipc::Transport`]): whole frames in order, end of stream when
//! the peer goes (dropped, exited, killed mid-frame), refusal of oversized frames before
//! allocation, polling, clones, handles in frames, ends handed to a real child process and
//! adopted there, hostile adoption input. A backend crate runs all of it with one line in
//! its tests, the way iceoryx2 instantiates one conformance suite per implementation:
//!
//! ```ignore
//! // crates/my-backend/tests/conformance.rs
//! mp_ipc_conformance::transport_suite!(my_backend::MyTransport);
//! ```
//!
//! A transport whose ends cannot leave their process ([`mp_ipc::Capabilities`]
//! `crosses_processes: false`) runs the in-process part only:
//! `transport_suite!(MyTransport, in_process)`. [`in_memory::InMemory`] is such a transport;
//! this crate's own tests run the suite on it, which is how the kit shows it knows nothing
//! of any backend. `docs/writing-a-backend.md` walks through it.
//!
//! With the feature `mp-core`, two more suites check `mp-core` on top of a transport, the
//! way its users see it: [`connection_suite!`] (typed connections and queues over a
//! transport, across real child processes under every start method) and
//! [`processes_suite!`] (processes, queues, pipes, locks and pools of one flavor: processes,
//! or threads). `mp-core`'s tests instantiate them.
//!
//! Cross-process tests run the test binary again, for that one test, with the end's handles
//! inherited and named in the environment ([`Here`]); the child side of each test runs in
//! that child and exits.

#[cfg(feature = "mp-core")]
pub mod connections;
pub mod cross;
pub mod in_memory;
#[cfg(feature = "mp-core")]
pub mod processes;
pub mod suite;
#[cfg(feature = "mp-core")]
pub mod support;
mod sys;

use std::fs::File;
use std::process::{Child as OsChild, Command};
use std::time::{Duration, Instant};

use mp_ipc::handle::{OwnedHandle, RawHandle};
use mp_ipc::{Channel, Endpoint, Transport};

/// How long the suite waits for anything that should happen (generous: machines are slow
/// and loaded). Tests never assert that something happened *quickly*.
pub const SECS: Duration = Duration::from_secs(30);

/// The receive limit the suite uses when it is not testing limits.
pub const LIMIT: u64 = 64 << 20;

/// The environment variable that tells a re-run test binary it is the child of a test, and
/// what it inherited: `handle,handle,...;hex-state`.
const CHILD_ENV: &str = "MP_IPC_CONFORMANCE_CHILD";

/// `n` bytes of a recognisable pattern.
pub fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Receives one frame, failing the test if none comes within [`SECS`].
pub fn recv(end: &impl Channel) -> Vec<u8> {
    assert!(
        end.poll(Some(SECS)).expect("poll"),
        "no frame within {SECS:?}"
    );
    let mut buf = Vec::new();
    end.recv_frame(&mut buf, LIMIT).expect("recv_frame");
    buf
}

/// A new temporary file, deleted already (Unix) or when closed (Windows), open for reading
/// and writing.
fn temp_file() -> File {
    sys::temp_file().expect("temporary file")
}

/// A fresh path in the temporary directory for [`temp_file`].
fn temp_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "mp-ipc-conformance-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ))
}

/// An owned copy of a raw handle (a second descriptor or handle for the same object).
fn duplicate(h: RawHandle) -> OwnedHandle {
    sys::duplicate(h).expect("duplicate a handle")
}

/// Where a test runs: its name, so that it can run again as a child process, and whether
/// this process *is* that child.
#[derive(Debug)]
pub struct Here {
    test: String,
}

impl Here {
    /// The test `name` in the module at `module_path` (what `module_path!()` says inside
    /// the test; [`transport_suite!`] passes both).
    pub fn new(module_path: &str, name: &str) -> Self {
        // libtest names a test by its path without the crate's name.
        let path = module_path.split_once("::").map_or("", |(_, rest)| rest);
        let test = if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}::{name}")
        };
        Self { test }
    }

    /// In the child of a test: the end the parent handed over, adopted. `None` in the
    /// parent.
    pub fn child_end<T: Transport>(&self) -> Option<T::End> {
        let spec = std::env::var(CHILD_ENV).ok()?;
        let (handles, state) = spec.split_once(';').expect("child spec");
        let handles = handles
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|h| {
                let raw: usize = h.parse().expect("handle value");
                // SAFETY: the parent made exactly these handles inheritable for this child
                // and named them here; nothing else in this process owns them.
                unsafe { sys::owned_from_inherited(raw) }
            })
            .collect();
        let state: Vec<u8> = (0..state.len() / 2)
            .map(|i| u8::from_str_radix(&state[2 * i..2 * i + 2], 16).expect("hex state"))
            .collect();
        Some(T::End::adopt(handles, &state).expect("child: adopt the end"))
    }

    /// Runs this test again as a child process that receives `end` (the parent's copy is
    /// closed once the child has it).
    pub fn spawn<T: Transport>(&self, end: T::End) -> Child {
        let handles = Endpoint::handles(&end);
        let state: String = Endpoint::export(&end)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let names: Vec<String> = handles
            .iter()
            .map(|&h| sys::handle_value(h).to_string())
            .collect();
        let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
        cmd.args([&self.test, "--exact", "--nocapture", "--test-threads=1"])
            .stdout(std::process::Stdio::null())
            .env(CHILD_ENV, format!("{};{state}", names.join(",")));
        let child = sys::spawn_inheriting(&mut cmd, &handles).expect("spawn the child");
        drop(end);
        Child {
            child,
            test: self.test.clone(),
        }
    }
}

/// A child process running the child side of a test.
#[derive(Debug)]
pub struct Child {
    child: OsChild,
    test: String,
}

impl Child {
    /// Waits (at most [`SECS`]) for the child and fails the test unless it succeeded.
    pub fn expect_success(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(status.success(), "child of {} failed: {status}", self.test);
                return;
            }
            if start.elapsed() > SECS {
                let _ = self.child.kill();
                panic!("child of {} still running after {SECS:?}", self.test);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills the child and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One `#[test]` per suite function for transport `$t`, in the current module. With
/// `in_process`, only the tests that keep ends within one process.
///
/// ```ignore
/// mp_ipc_conformance::transport_suite!(mp_unix::UnixSocket);
/// mp_ipc_conformance::transport_suite!(mp_ipc_conformance::in_memory::InMemory, in_process);
/// ```
#[macro_export]
macro_rules! transport_suite {
    ($t:ty) => {
        $crate::transport_suite!($t, in_process);
        $crate::transport_suite!(@tests $t, cross:
            a_child_echoes_every_frame,
            a_child_exiting_with_its_end_open_is_eof,
            a_writer_killed_mid_frame_is_eof_or_truncated,
            a_handle_reaches_a_child,
        );
    };
    ($t:ty, in_process) => {
        $crate::transport_suite!(@tests $t, suite:
            frames_keep_boundaries_and_order,
            a_16_mib_frame_arrives_whole,
            a_dropped_peer_is_eof_after_its_frames,
            a_blocked_reader_wakes_when_the_peer_goes,
            poll_looks_waits_and_consumes_nothing,
            an_oversized_frame_is_refused,
            recv_frame_into_fits_or_returns_the_frame,
            a_split_receive_puts_the_prefix_apart,
            two_threads_stream_both_ways,
            clones_share_the_stream_and_keep_the_peer_open,
            handles_travel_with_frames,
            an_exported_end_is_adopted_where_it_stopped,
            adopt_refuses_nonsense,
            the_dispatch_reports_the_transport,
            the_wait_handle_becomes_ready_with_a_frame,
        );
    };
    (@tests $t:ty, $module:ident: $($name:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                let here = $crate::Here::new(module_path!(), stringify!($name));
                $crate::$module::$name::<$t>(&here);
            }
        )+
    };
}

/// One `#[test]` per function of [`connections`] for transport `$t` (an
/// [`mp_ipc::Transport`] usable with `mp_core::connection::pipe_with`), in a module `$m`.
/// With `in_process`, only the tests that stay in one process (for a transport whose ends
/// cannot leave it).
#[cfg(feature = "mp-core")]
#[macro_export]
macro_rules! connection_suite {
    ($m:ident, $t:ty, in_process) => {
        mod $m {
            #[test]
            fn recv_into_buffer_too_short_and_limits() {
                $crate::support::bounded(30, $crate::connections::recv_into_and_limits::<$t>);
            }
            #[test]
            fn a_message_of_the_wrong_type_is_a_decode_error() {
                $crate::support::bounded(
                    30,
                    $crate::connections::wrong_type_is_a_decode_error::<$t>,
                );
            }
            #[test]
            fn two_threads_stream_both_ways() {
                $crate::support::bounded(60, $crate::connections::threads_stream::<$t>);
            }
            #[test]
            fn poll_and_timeouts() {
                $crate::support::bounded(30, $crate::connections::poll_timing::<$t>);
            }
        }
    };
    ($m:ident, $t:ty) => {
        mod $m {
            use $crate::connections as c;
            use $crate::support::{bounded, for_each_context};
            type B = $t;

            #[test]
            fn values_and_bytes_round_trip() {
                for_each_context(60, c::round_trip::<B>);
            }
            #[test]
            fn a_16_mib_message_arrives_intact() {
                for_each_context(60, c::big_message::<B>);
            }
            #[test]
            fn a_closed_peer_is_eof_and_broken_pipe() {
                for_each_context(30, c::closed_peer::<B>);
            }
            #[test]
            fn messages_keep_order_and_boundaries() {
                for_each_context(30, c::ordered_and_not_merged::<B>);
            }
            #[test]
            fn a_polling_child_does_not_split_messages() {
                for_each_context(30, c::polling_child_does_not_split::<B>);
            }
            #[test]
            fn wait_sees_messages_in_arrival_order() {
                for_each_context(30, c::wait_mixed::<B>);
            }
            #[test]
            fn wait_sees_a_peer_that_died_holding_its_end() {
                for_each_context(30, c::wait_sees_a_dead_peer::<B>);
            }
            #[test]
            fn a_connection_travels_inside_a_message() {
                for_each_context(30, c::connection_inside_a_message::<B>);
            }
            #[test]
            fn a_writer_killed_mid_message_is_eof_or_truncated() {
                for_each_context(60, c::killed_writer::<B>);
            }
            #[test]
            fn poll_and_timeouts() {
                bounded(30, c::poll_timing::<B>);
            }
            #[test]
            fn recv_into_buffer_too_short_and_limits() {
                bounded(30, c::recv_into_and_limits::<B>);
            }
            #[test]
            fn a_message_of_the_wrong_type_is_a_decode_error() {
                bounded(30, c::wrong_type_is_a_decode_error::<B>);
            }
            #[test]
            fn two_threads_stream_both_ways() {
                bounded(60, c::threads_stream::<B>);
            }
            #[test]
            fn queue_is_fifo_for_small_and_big_items() {
                for_each_context(60, c::queue_fifo_and_sizes::<B>);
            }
            #[test]
            fn queue_many_producers_many_consumers_exactly_once() {
                for_each_context(60, c::queue_many_to_many::<B>);
            }
            #[test]
            fn queue_bounded_joinable_simple() {
                bounded(30, c::queue_bounded_and_joinable::<B>);
            }
            #[test]
            fn queue_survives_a_killed_user() {
                for_each_context(60, c::queue_killed_user::<B>);
            }
        }
    };
}

/// One `#[test]` per function of [`processes`] for flavor `$b` (`mp_core::api::Processes`,
/// or `mp_core::api::Threads`), in a module `$m`.
#[cfg(feature = "mp-core")]
#[macro_export]
macro_rules! processes_suite {
    ($m:ident, $b:ty) => {
        mod $m {
            $crate::processes_suite!(@tests $b,
                process_lifecycle,
                process_join_timeout_and_state_errors,
                process_panic_is_reported,
                queue_fifo_bounds_and_timeouts,
                queue_producers_and_consumer_across_workers,
                simple_queue_between_workers,
                joinable_queue_join_waits_for_task_done,
                pipe_round_trip_between_workers,
                pipe_eof_when_the_peer_is_dropped,
                pipe_oneway_and_bytes,
                lock_between_workers,
                pool_map_imap_ordering,
                pool_apply_and_apply_async,
                pool_panicking_task_fails_only_itself,
                pool_close_join_and_closed_errors,
            );
        }
    };
    (@tests $b:ty, $($name:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::processes::$name::<$b>();
            }
        )+
    };
}
