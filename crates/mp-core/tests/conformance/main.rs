//! The behaviour suite written once over [`mp_core::api::Backend`], run on every backend:
//! processes always, threads with the `threads` feature. The tests of a backend are in the
//! module named after it (`processes::...`, `threads::...`).

#[path = "../common/mod.rs"]
mod common;
mod suite;

/// One `#[test]` per suite function, in a module per backend.
macro_rules! instantiate {
    ($backend:ty, $($name:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                crate::suite::$name::<$backend>();
            }
        )+
    };
}

/// The suite's functions, for every backend.
macro_rules! for_backend {
    ($backend:ty) => {
        instantiate!(
            $backend,
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
    };
}

mod processes {
    for_backend!(mp_core::api::Processes);
}

#[cfg(feature = "threads")]
mod threads {
    for_backend!(mp_core::api::Threads);
}
