//! A transport mp-core has never heard of (the conformance kit's in-memory one) carries
//! typed connections: selecting a backend is a type parameter, and nothing in mp-core names
//! this one. Its ends cannot leave their process, and say so.

use std::time::Duration;

use mp_core::connection::{pipe_oneway_with, pipe_with};
use mp_core::{Connection, ConnectionError};
use mp_ipc_conformance::in_memory::InMemory;

#[test]
fn typed_connections_run_on_a_transport_mp_core_does_not_know() {
    let (a, b) = pipe_with::<(u32, String), InMemory>().unwrap();
    assert_eq!(a.transport(), Some("in-memory"));
    let t = std::thread::spawn(move || {
        while let Ok((n, s)) = b.recv() {
            b.send(&(n + 1, s.to_uppercase())).unwrap();
        }
    });
    for i in 0..100u32 {
        a.send(&(i, format!("item {i}"))).unwrap();
        assert_eq!(
            a.recv_timeout(Duration::from_secs(30)).unwrap(),
            (i + 1, format!("ITEM {i}"))
        );
    }
    drop(a);
    t.join().unwrap();

    let (mut rx, tx) = pipe_oneway_with::<Vec<u8>, InMemory>().unwrap();
    tx.send_bytes(&[1, 2, 3]).unwrap();
    assert!(rx.poll(Duration::from_secs(30)).unwrap());
    assert_eq!(rx.recv_bytes().unwrap(), vec![1, 2, 3]);
    rx.set_max_message_size(2);
    tx.send_bytes(&[1, 2, 3]).unwrap();
    assert!(matches!(
        rx.recv_bytes(),
        Err(ConnectionError::TooLarge { len: 3, max: 2 })
    ));
    drop(tx);
    assert!(matches!(rx.recv_bytes(), Err(ConnectionError::Broken)));
}

#[test]
fn an_end_of_an_in_process_transport_refuses_to_leave_its_process() {
    let (carrier, _other) = pipe_with::<Connection<u8>, mp_core::connection::Socket>().unwrap();
    let (inner, peer) = pipe_with::<u8, InMemory>().unwrap();
    // (postcard keeps no message of a custom serialization error: the variant says it.)
    assert!(matches!(
        carrier.send(&inner),
        Err(ConnectionError::Encode(_))
    ));
    // The carrier is still usable, and the refused end still works.
    inner.send(&7).unwrap();
    assert_eq!(peer.recv().unwrap(), 7);
    // Waiting needs an OS handle, which this transport does not have.
    assert!(mp_core::wait(&[&inner], Some(Duration::ZERO)).is_err());
}
