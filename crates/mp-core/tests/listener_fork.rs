//! A forked child using (and dropping) a listener it inherited, alone in its test binary:
//! a forked child holds copies of every socket of its parent, so in a binary whose other
//! tests bind listeners it would hold theirs too (a connection to a listener just closed
//! could then land in the child's backlog instead of being refused).
#![cfg(unix)]

mod common;

use std::time::Duration;

use common::bounded;

use mp_core::listener::{Address, Client, Listener};
use mp_core::Process;

const SECS: Duration = Duration::from_secs(10);
const KEY: &[u8] = b"a secret key";

/// A forked child that uses and then drops a listener it inherited affects only itself: the
/// parent's listener keeps its socket file, its accept thread and its clients.
#[cfg(unix)]
#[test]
fn forked_child_dropping_a_listener_leaves_the_parent_serving() {
    bounded(60, || {
        let l = Listener::bind(&Address::unique_local(), Some(KEY)).unwrap();
        let Address::Unix(path) = l.address().clone() else {
            unreachable!()
        };
        // The child gets the only reference it may drop; the parent keeps using its own.
        let shared: &'static Listener = Box::leak(Box::new(l));
        let addr = shared.address().clone();
        let child_addr = addr.clone();
        let mut p = Process::from_closure(move || {
            // Served by the child's own accept thread.
            let t = std::thread::spawn(move || {
                Client::connect_timeout::<i32>(&child_addr, Some(KEY), SECS)
                    .unwrap()
                    .send(&1)
                    .unwrap()
            });
            let c = shared.accept_timeout::<i32>(SECS).unwrap();
            assert_eq!(c.recv_timeout(SECS).unwrap(), 1);
            t.join().unwrap();
            // SAFETY: in this forked child nothing else uses the leaked listener.
            drop(unsafe { Box::from_raw(shared as *const Listener as *mut Listener) });
        })
        .with_context(mp_core::get_context(mp_core::StartMethod::Fork).unwrap());
        p.start().unwrap();
        p.join_timeout(SECS).unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert!(path.exists(), "the child removed the parent's socket file");
        for i in 0..3 {
            let a = addr.clone();
            let t = std::thread::spawn(move || {
                Client::connect_timeout::<i32>(&a, Some(KEY), SECS)
                    .unwrap()
                    .send(&i)
                    .unwrap()
            });
            let c = shared.accept_timeout::<i32>(SECS).unwrap();
            assert_eq!(c.recv_timeout(SECS).unwrap(), i);
            t.join().unwrap();
        }
    });
}
