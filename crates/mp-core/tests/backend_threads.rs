//! What only the threads backend (`mp_core::dummy`, Python's `multiprocessing.dummy`) does:
//! thread names, capturing closures, unserializable values, `Unsupported` for terminate,
//! a pool's terminate with running tasks, and tickets when its types are serialized. The
//! behaviour it shares with processes is in `tests/conformance`.
#![cfg(feature = "threads")]

mod common;

use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{bounded, prompt};
use mp_core::dummy::{
    current_process, pipe, pipe_oneway, JoinableQueue, Pool, Process, Queue, Unsupported,
};
use mp_core::{ConnectionError, GetError, ProcessError, TaskError};

#[test]
fn threads_are_named_thread_n_and_share_the_pid() {
    bounded(30, || {
        let seen = Arc::new(Mutex::new(None));
        let s2 = seen.clone();
        let mut p = Process::from_closure(move || {
            *s2.lock().unwrap() = Some(current_process());
        });
        assert_eq!(p.name(), None);
        p.start().unwrap();
        p.join().unwrap();
        let name = p.name().unwrap().to_string();
        assert!(name.starts_with("Thread-"), "{name}");
        let info = seen.lock().unwrap().take().unwrap();
        assert_eq!(info.name, name);
        assert_eq!(info.pid, std::process::id());
        assert_eq!(p.pid(), Some(std::process::id()));
        assert_eq!(info.authkey, mp_core::current_process().authkey);

        let mut q = Process::new(|_: ()| (), ())
            .with_name("mine")
            .with_daemon(true);
        q.set_name("renamed").unwrap();
        q.start().unwrap();
        assert!(q.set_name("late").is_err());
        q.join().unwrap();
        assert_eq!(q.name(), Some("renamed"));
        assert!(q.daemon());
    });
}

#[test]
fn terminate_kill_and_interrupt_are_unsupported() {
    bounded(30, || {
        let mut p = Process::new(|ms: u64| std::thread::sleep(Duration::from_millis(ms)), 50);
        p.start().unwrap();
        assert_eq!(p.terminate(), Err(Unsupported("terminate")));
        assert_eq!(p.kill(), Err(Unsupported("kill")));
        assert_eq!(p.interrupt(), Err(Unsupported("interrupt")));
        assert!(matches!(p.close(), Err(ProcessError::StillRunning)));
        p.join().unwrap();
        p.close().unwrap();
        assert!(matches!(p.join(), Err(ProcessError::Closed)));
    });
}

#[test]
fn a_panic_keeps_message_location_and_backtrace() {
    bounded(30, || {
        let mut p = Process::from_closure(|| panic!("bad {}", 42));
        p.start().unwrap();
        let err = p.join().unwrap_err();
        let ProcessError::Panicked { panic, exitcode } = err else {
            panic!("{err:?}")
        };
        assert_eq!(exitcode, 1);
        assert_eq!(panic.message, "bad 42");
        assert!(panic.location.contains("backend_threads.rs"));
        assert!(!panic.backtrace.is_empty());
        assert_eq!(p.panic().unwrap().message, "bad 42");
        assert_eq!(p.exitcode(), Some(1));
    });
}

#[test]
fn values_need_not_be_serializable() {
    bounded(30, || {
        // An Arc<Mutex<_>> is no serde value; on threads it travels as it is.
        let shared = Arc::new(Mutex::new(0));
        let q = Queue::<Arc<Mutex<i32>>>::new().unwrap();
        q.put(shared.clone()).unwrap();
        *q.get().unwrap().lock().unwrap() += 1;
        let (a, b) = pipe::<Arc<Mutex<i32>>>().unwrap();
        a.send_owned(shared.clone()).unwrap();
        *b.recv().unwrap().lock().unwrap() += 1;
        let pool = Pool::new(2).unwrap();
        let counter = Arc::new(AtomicUsize::new(0));
        let c2 = counter.clone();
        let out = pool
            .map(
                move |x: usize| {
                    c2.fetch_add(1, Ordering::SeqCst);
                    x
                },
                0..10,
            )
            .unwrap();
        assert_eq!(out.len(), 10);
        assert_eq!(counter.load(Ordering::SeqCst), 10);
        assert_eq!(*shared.lock().unwrap(), 2);
        // A value that is not even Send stays out (compile-time): Rc is refused by put.
        let _not_send: Option<Rc<()>> = None;
    });
}

#[test]
fn joinable_queue_with_consumer_threads() {
    bounded(30, || {
        let q = JoinableQueue::<u32>::bounded(4).unwrap();
        let total = Arc::new(AtomicUsize::new(0));
        let mut workers: Vec<Process> = (0..3)
            .map(|_| {
                let (q, total) = (q.clone(), total.clone());
                Process::from_closure(move || loop {
                    match q.get_timeout(Duration::from_millis(300)) {
                        Ok(n) => {
                            total.fetch_add(n as usize, Ordering::SeqCst);
                            q.task_done().unwrap();
                        }
                        Err(GetError::Empty) => return,
                        Err(e) => panic!("{e}"),
                    }
                })
            })
            .collect();
        for w in &mut workers {
            w.start().unwrap();
        }
        for i in 0..100 {
            q.put(i).unwrap();
        }
        q.join().unwrap();
        assert_eq!(total.load(Ordering::SeqCst), (0..100).sum::<u32>() as usize);
        for w in &workers {
            w.join().unwrap();
        }
    });
}

#[test]
fn pipe_poll_reads_ahead_and_mismatched_messages_are_decode_errors() {
    bounded(30, || {
        let (a, b) = pipe::<u32>().unwrap();
        a.send(&1).unwrap();
        assert!(b.poll(Duration::ZERO).unwrap());
        assert!(b.poll(Duration::ZERO).unwrap(), "poll consumes nothing");
        assert_eq!(b.recv().unwrap(), 1);
        a.send_bytes(b"raw").unwrap();
        assert!(matches!(b.recv(), Err(ConnectionError::Decode(_))));
        a.send(&2).unwrap();
        assert!(matches!(b.recv_bytes(), Err(ConnectionError::Decode(_))));
        a.send_bytes(b"long message").unwrap();
        let mut small = [0u8; 4];
        match b.recv_bytes_into(&mut small) {
            Err(ConnectionError::BufferTooShort { message, capacity }) => {
                assert_eq!(message, b"long message");
                assert_eq!(capacity, 4);
            }
            other => panic!("{other:?}"),
        }
        // A clone of an end keeps the peer from seeing EOF until both are gone.
        let a2 = a.try_clone().unwrap();
        drop(a);
        assert!(!b.poll(Duration::from_millis(20)).unwrap());
        drop(a2);
        assert!(matches!(b.recv(), Err(ConnectionError::Eof)));

        let (r, mut w) = pipe_oneway::<u8>().unwrap();
        w.close();
        assert!(w.is_closed());
        assert!(matches!(w.send(&1), Err(ConnectionError::Closed)));
        prompt("recv after the writer closed", || {
            assert!(matches!(r.recv(), Err(ConnectionError::Eof)))
        });
    });
}

#[test]
fn pool_terminate_fails_queued_tasks_at_once() {
    bounded(30, || {
        let pool = Pool::new(1).unwrap();
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate_rx));
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let started_tx = Arc::new(Mutex::new(started_tx));
        let running = pool
            .apply_async(
                move |_: ()| {
                    started_tx.lock().unwrap().send(()).unwrap();
                    gate.lock().unwrap().recv().unwrap();
                    7
                },
                (),
            )
            .unwrap();
        started_rx.recv().unwrap();
        let queued: Vec<_> = (0..3)
            .map(|i| pool.apply_async(|x: u32| x, i).unwrap())
            .collect();
        let lazy = pool.imap(|x: u32| x, 0..100).unwrap();
        pool.terminate();
        for q in &queued {
            assert!(matches!(
                q.get_timeout(Duration::from_secs(1)),
                Err(TaskError::Terminated)
            ));
        }
        assert!(!running.ready(), "a running task cannot be stopped");
        gate_tx.send(()).unwrap();
        assert!(matches!(running.get(), Err(TaskError::Terminated)));
        let rest: Vec<_> = lazy.collect();
        assert!(rest.iter().all(|r| matches!(r, Err(TaskError::Terminated))));
        pool.join().unwrap();
    });
}

#[test]
fn imap_yields_an_input_panic_after_the_results_before_it() {
    bounded(30, || {
        let pool = Pool::new(2).unwrap();
        let input = (0..5u32).map(|i| if i == 3 { panic!("input broke") } else { i });
        let out: Vec<_> = pool.imap(|x: u32| x * 10, input).unwrap().collect();
        assert_eq!(out.len(), 4);
        assert_eq!(
            out[..3]
                .iter()
                .map(|r| *r.as_ref().unwrap())
                .collect::<Vec<_>>(),
            [0, 10, 20]
        );
        assert!(matches!(&out[3], Err(TaskError::Input(m)) if m.contains("input broke")));
    });
}

#[test]
fn serialized_handles_are_tickets_valid_once_in_this_process() {
    bounded(30, || {
        let q = Queue::<u32>::new().unwrap();
        let bytes = postcard::to_stdvec(&q).unwrap();
        let back: Queue<u32> = postcard::from_bytes(&bytes).unwrap();
        back.put(5).unwrap();
        assert_eq!(q.get().unwrap(), 5);
        assert!(
            postcard::from_bytes::<Queue<u32>>(&bytes).is_err(),
            "claimed once"
        );

        let (a, b) = pipe::<u32>().unwrap();
        a.send(&9).unwrap();
        assert!(b.poll(Duration::ZERO).unwrap());
        let bytes = postcard::to_stdvec(&b).unwrap();
        drop(b);
        let b: mp_core::dummy::Connection<u32> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(
            b.recv().unwrap(),
            9,
            "the message read ahead travels with the end"
        );
    });
}

/// QUEUE-11/12/13 on threads: shutdown wakes blocked getters and putters, keeps or
/// discards what is queued, and a joinable queue counts discarded items done.
#[test]
fn queue_shutdown_on_threads() {
    use mp_core::{PutError, QueueError};
    bounded(30, || {
        let q = Queue::<u32>::new().unwrap();
        let getter = {
            let q = q.clone();
            std::thread::spawn(move || q.get_timeout(Duration::from_secs(10)))
        };
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(q.shutdown(false).unwrap(), 0);
        assert!(matches!(getter.join().unwrap(), Err(GetError::ShutDown)));
        assert!(q.is_shut_down());
        assert!(matches!(q.put(1), Err(PutError::ShutDown(1))));

        let full = Queue::<u32>::bounded(1).unwrap();
        full.put(1).unwrap();
        let putter = {
            let q = full.clone();
            std::thread::spawn(move || q.put_timeout(2, Duration::from_secs(10)))
        };
        std::thread::sleep(Duration::from_millis(100));
        full.shutdown(false).unwrap();
        assert!(matches!(putter.join().unwrap(), Err(PutError::ShutDown(2))));
        assert_eq!(full.get().unwrap(), 1); // kept by a graceful shutdown
        assert!(matches!(full.get_nowait(), Err(GetError::ShutDown)));

        let jq = JoinableQueue::<u32>::new().unwrap();
        for i in 0..3 {
            jq.put(i).unwrap();
        }
        assert_eq!(jq.get().unwrap(), 0);
        assert_eq!(jq.shutdown(true).unwrap(), 2);
        assert_eq!(jq.qsize(), 0);
        assert!(matches!(
            jq.join_timeout(Duration::from_millis(100)),
            Err(QueueError::Timeout)
        ));
        jq.task_done().unwrap();
        prompt("join once the taken item is done", || jq.join().unwrap());
    });
}

/// Not serializable: moved, never encoded.
#[derive(Clone)]
struct NoSerde(u32);

/// Python's `multiprocessing.dummy` has `active_children`, `Value`, `Array` and a
/// `connection` module with `Listener` and `Client`.
#[test]
fn dummy_active_children_values_and_listener() {
    use mp_core::dummy::connection::{Client, Listener};
    use mp_core::dummy::{active_children, Array, Event, Value};
    use mp_core::listener::Address;
    use mp_core::{AuthenticationError, ListenerError};

    bounded(30, || {
        let go = Event::new().unwrap();
        let g2 = go.clone();
        let v = Value::new(0u64).unwrap();
        let a = Array::<u8>::zeroed(3).unwrap();
        let (v2, a2) = (v.clone(), a.clone());
        let mut p = Process::from_closure(move || {
            assert!(g2.wait_timeout(Duration::from_secs(20)));
            *v2.lock().unwrap() += 5;
            a2.set(1, 9);
        })
        .with_name("busy");
        p.start().unwrap();
        let names: Vec<String> = active_children().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["busy"]);
        go.set();
        p.join().unwrap();
        assert!(active_children().is_empty());
        assert_eq!((v.get(), a.to_vec()), (5, vec![0, 9, 0]));

        let address = Address::unique_local();
        let listener = Listener::bind(&address, Some(b"secret")).unwrap();
        assert!(matches!(
            Listener::bind(&address, None),
            Err(ListenerError::Io(e)) if e.kind() == std::io::ErrorKind::AddrInUse
        ));
        assert!(matches!(
            Client::connect::<u32>(&address, Some(b"wrong")),
            Err(ListenerError::Authentication(AuthenticationError::Rejected))
        ));
        let addr2 = address.clone();
        let t = std::thread::spawn(move || {
            let c = Client::connect::<NoSerde>(&addr2, Some(b"secret")).unwrap();
            c.send(&NoSerde(5)).unwrap();
        });
        let conn = listener.accept::<NoSerde>().unwrap();
        assert_eq!(conn.recv().unwrap().0, 5);
        t.join().unwrap();
        drop(listener);
        assert!(matches!(
            Client::connect::<u32>(&address, Some(b"secret")),
            Err(ListenerError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
        ));

        // poll_forever on the threads backend too.
        let (a, b) = pipe::<u8>().unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            a.send(&1).unwrap();
        });
        b.poll_forever().unwrap();
        assert_eq!(b.recv().unwrap(), 1);
        t.join().unwrap();
    });
}
