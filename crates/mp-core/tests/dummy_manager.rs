//! `mp_core::dummy::Manager` (Python's `multiprocessing.dummy.Manager()`): the manager
//! server on a thread of this process, handing out the proxy types of a process manager, to
//! threads and to real child processes; and `dummy::Namespace`.
#![cfg(feature = "threads")]

mod common;

use std::time::Duration;

use common::bounded;
use mp_core::dummy::{Manager, Namespace, Process};
use mp_core::manager::{DictProxy, LockProxy, ManagerError};

const SECS: Duration = Duration::from_secs(10);

/// Code written against the manager API, run by threads.
fn count_under_lock(d: DictProxy<String, u32>, lock: LockProxy, rounds: u32) {
    for _ in 0..rounds {
        let _held = lock.guard().unwrap();
        let n = d.get(&"n".to_string()).unwrap().unwrap_or(0);
        d.set(&"n".to_string(), &(n + 1)).unwrap();
    }
}

#[test]
fn threads_share_the_proxies_of_a_dummy_manager() {
    bounded(60, || {
        let m = Manager::start().unwrap();
        let d = m.dict::<String, u32>().unwrap();
        let lock = m.lock().unwrap();
        let q = m.queue::<u32>(0).unwrap();
        let mut threads = Vec::new();
        for i in 0..4u32 {
            let (d, lock, q) = (d.clone(), lock.clone(), q.clone());
            let mut p = Process::from_closure(move || {
                count_under_lock(d, lock, 25);
                q.put(&i).unwrap();
            });
            p.start().unwrap();
            threads.push(p);
        }
        for p in threads {
            p.join().unwrap();
        }
        assert_eq!(d.get(&"n".to_string()).unwrap(), Some(100));
        let mut got: Vec<u32> = (0..4).map(|_| q.get_timeout(SECS).unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2, 3]);
        // The condition over a lock works on it too.
        let cond = m.condition_with(&lock).unwrap();
        cond.acquire().unwrap();
        assert!(lock.locked().unwrap());
        cond.release().unwrap();
    });
}

fn child_counts(arg: (DictProxy<String, u32>, LockProxy)) {
    count_under_lock(arg.0, arg.1, 10);
}

/// The server in this process serves a real child process too (it connects to the local
/// address the proxies carry).
#[test]
fn a_child_process_reaches_the_dummy_managers_server() {
    bounded(60, || {
        let m = Manager::start().unwrap();
        let d = m.dict::<String, u32>().unwrap();
        let lock = m.lock().unwrap();
        let mut p = mp_core::Process::new(child_counts, (d.clone(), lock.clone()));
        p.start().unwrap();
        count_under_lock(d.clone(), lock.clone(), 10);
        p.join_timeout(SECS).unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert_eq!(d.get(&"n".to_string()).unwrap(), Some(20));
    });
}

#[test]
fn shutdown_stops_the_server_thread_and_proxies_fail() {
    bounded(60, || {
        let mut m = Manager::start().unwrap();
        let v = m.value(&1u8).unwrap();
        m.shutdown_timeout(SECS).unwrap();
        match v.get() {
            Err(ManagerError::Connection(_) | ManagerError::Connect(_)) => {}
            other => panic!("expected a connection error, got {other:?}"),
        }
        // Again: nothing to do.
        m.shutdown().unwrap();
    });
}

#[test]
fn dummy_namespace_is_shared_by_threads() {
    bounded(60, || {
        let m = Manager::start().unwrap();
        let ns = Namespace::new();
        let inner = m.list::<u32>(&[]).unwrap();
        let mut threads = Vec::new();
        for i in 0..3u32 {
            let ns = ns.clone();
            let inner = inner.clone();
            let mut p = Process::from_closure(move || {
                ns.set(&format!("t{i}"), &i).unwrap();
                ns.set("list", &inner).unwrap();
            });
            p.start().unwrap();
            threads.push(p);
        }
        for p in threads {
            p.join().unwrap();
        }
        assert_eq!(ns.names().unwrap(), ["list", "t0", "t1", "t2"]);
        assert_eq!(ns.get::<u32>("t2").unwrap(), Some(2));
        // A proxy stored in it is a proxy: each get is a clone with its own reference.
        let l = ns
            .get::<mp_core::manager::ListProxy<u32>>("list")
            .unwrap()
            .unwrap();
        l.append(&7).unwrap();
        drop(l);
        assert!(ns.remove("list").unwrap());
        assert_eq!(inner.to_vec().unwrap(), [7], "the list outlives the copies");
        assert!(!ns.remove("list").unwrap());
        assert!(ns.get::<String>("t0").is_err());
    });
}
