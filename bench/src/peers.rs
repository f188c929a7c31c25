//! The best Rust peers measured beside mp in the same run (feature `peers`): iceoryx2, the
//! zero-copy shared-memory reference, and ipc-channel, typed channels between processes.
//! Every row crosses two real processes: the other side is a child started by mp (spawn, a
//! fresh run of this binary), which then talks to the parent only through the peer's own
//! channels (an mp pipe carries nothing but the set-up: a service name, "ready", a command).
//!
//! The series are emitted under the benchmark names of the mp rows they are compared with
//! (`shm.rtt8`, `shm.rtt8.nospin`, `zc.64MiB`, `copy.1MiB`, `tput.64KiB`, `tput.1MiB`),
//! measured the same way, so that `cargo xtask bench` puts them in the same table row. The
//! typed 8-byte round trip has no mp row elsewhere, so mp's and ipc-channel's are both
//! measured here (`rtt8.typed`), alternating batch by batch.

use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

use iceoryx2::prelude::*;
use ipc_channel::ipc::{
    self as ipcc, IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcReceiver, IpcSender,
};
use mp_core::connection::{pipe_with, Socket};
use mp_core::{Connection, Process};

use crate::emit;

/// iceoryx2's inter-process service family.
type Ice = iceoryx2::service::ipc::Service;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

// ------------------------------------------------------------------ iceoryx2

/// A node of iceoryx2's inter-process services, with its signal handling off (mp's children
/// and the bench keep the default signal dispositions) and its logging cut to errors.
fn node() -> Node<Ice> {
    set_log_level(LogLevel::Error);
    NodeBuilder::new()
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<Ice>()
        .expect("iceoryx2 node")
}

/// A service name unique to this run (the services of a killed run would otherwise clash).
fn service_name(what: &str) -> ServiceName {
    ServiceName::new(&format!("mp-bench/{}/{what}", std::process::id())).expect("service name")
}

/// Busy-polls `receive` until a sample is there, as iceoryx2's own benchmarks wait (its
/// publish-subscribe ports have no blocking receive; a sleeping wait pairs them with an
/// event service, as [`PingEnd::recv`] does for the sleeping round trip).
macro_rules! poll {
    ($sub:expr) => {
        loop {
            if let Some(s) = $sub.receive().expect("iceoryx2 receive") {
                break s;
            }
            std::hint::spin_loop();
        }
    };
}

/// One end of the 8-byte ping-pong: a publisher and a subscriber of `u64`, and, when the
/// waits sleep, a notifier and a listener of two event services beside them.
struct PingEnd {
    publisher: iceoryx2::port::publisher::Publisher<Ice, u64, ()>,
    sub: iceoryx2::port::subscriber::Subscriber<Ice, u64, ()>,
    events: Option<(
        iceoryx2::port::notifier::Notifier<Ice>,
        iceoryx2::port::listener::Listener<Ice>,
    )>,
}

impl PingEnd {
    /// The end that publishes on `out` and subscribes to `inp` (services under `prefix`,
    /// made by the parent, opened by the child).
    fn new(node: &Node<Ice>, prefix: &str, out: &str, inp: &str, sleep: bool, make: bool) -> Self {
        let name = |what: &str| ServiceName::new(&format!("{prefix}/{what}")).expect("name");
        let data = |what: &str| {
            let b = node.service_builder(&name(what)).publish_subscribe::<u64>();
            if make {
                b.max_publishers(1)
                    .max_subscribers(1)
                    .history_size(0)
                    .subscriber_max_buffer_size(1)
                    .enable_safe_overflow(true)
                    .create()
                    .expect("create service")
            } else {
                b.open().expect("open service")
            }
        };
        let event = |what: &str| {
            let b = node.service_builder(&name(&format!("{what}.ev"))).event();
            if make {
                b.create().expect("create event service")
            } else {
                b.open().expect("open event service")
            }
        };
        let (o, i) = (data(out), data(inp));
        let events = sleep.then(|| {
            let (o, i) = (event(out), event(inp));
            (
                o.notifier_builder().create().expect("notifier"),
                i.listener_builder().create().expect("listener"),
            )
        });
        Self {
            publisher: o.publisher_builder().create().expect("publisher"),
            sub: i.subscriber_builder().create().expect("subscriber"),
            events,
        }
    }

    fn send(&self, v: u64) {
        self.publisher
            .loan_uninit()
            .expect("loan")
            .write_payload(v)
            .send()
            .expect("send");
        if let Some((n, _)) = &self.events {
            n.notify().expect("notify");
        }
    }

    /// The next value: busy-polled, or, with events, a look then a sleep on the listener
    /// (a notification is kept until taken, so none is lost between the two).
    fn recv(&self) -> u64 {
        match &self.events {
            None => *poll!(self.sub).payload(),
            Some((_, l)) => loop {
                if let Some(s) = self.sub.receive().expect("iceoryx2 receive") {
                    break *s.payload();
                }
                l.blocking_wait(|_| {}).expect("wait");
            },
        }
    }
}

/// Child of the 8-byte round trip: echoes every `u64` of service `a2b` on service `b2a`.
fn ice_echo(arg: (String, bool, Connection<()>)) {
    let (prefix, sleep, ready) = arg;
    let node = node();
    let end = PingEnd::new(&node, &prefix, "b2a", "a2b", sleep, false);
    ready.send_bytes(b"ready").expect("ready");
    loop {
        let v = end.recv();
        if v == u64::MAX {
            return;
        }
        end.send(v);
    }
}

/// Medians of per-round-trip times (one sample per batch of 2000), as `shm.rtt8` measures
/// mp's shm pipe. `sleep`: every wait sleeps on an event service instead of polling.
fn ice_rtt(reps: usize, sleep: bool) -> Vec<f64> {
    let node = node();
    let prefix = format!(
        "mp-bench/{}/rtt{}",
        std::process::id(),
        if sleep { ".ev" } else { "" }
    );
    let end = PingEnd::new(&node, &prefix, "a2b", "b2a", sleep, true);
    let (here, there) = pipe_with::<(), Socket>().expect("pipe");
    let mut p = Process::new(ice_echo, (prefix, sleep, there));
    p.start().expect("start");
    here.recv_bytes().expect("child ready");
    let round_trip = |v: u64| {
        end.send(v);
        let back = end.recv();
        debug_assert_eq!(back, v);
    };
    let per_batch = 2_000;
    for i in 0..per_batch {
        round_trip(i);
    }
    let mut samples = Vec::new();
    let mut one = Vec::with_capacity(per_batch as usize);
    for _ in 0..reps {
        one.clear();
        for i in 0..per_batch {
            let t = Instant::now();
            round_trip(i);
            one.push(t.elapsed().as_secs_f64());
        }
        samples.push(median(&mut one));
    }
    end.send(u64::MAX);
    p.join().expect("join");
    samples
}

fn prefix() -> String {
    format!("mp-bench/{}", std::process::id())
}

const BIG: usize = 64 << 20;

/// A `[u8]` service for large samples: one publisher, one subscriber, one sample in flight.
fn big_service(node: &Node<Ice>, name: &ServiceName, buffer: usize) -> PortFactoryOf {
    node.service_builder(name)
        .publish_subscribe::<[u8]>()
        .max_publishers(1)
        .max_subscribers(1)
        .history_size(0)
        .subscriber_max_buffer_size(buffer)
        .subscriber_max_borrowed_samples(1)
        .enable_safe_overflow(false)
        .open_or_create()
        .expect("service")
}

type PortFactoryOf = iceoryx2::service::port_factory::publish_subscribe::PortFactory<Ice, [u8], ()>;

/// Loans a sample of `len` bytes, writes its first and last byte in place, and sends it.
fn send_touched(
    publisher: &iceoryx2::port::publisher::Publisher<Ice, [u8], ()>,
    len: usize,
    mark: u8,
) {
    let mut s = publisher.loan_slice_uninit(len).expect("loan");
    let payload = s.payload_mut();
    payload[0] = MaybeUninit::new(mark);
    payload[len - 1] = MaybeUninit::new(mark);
    // SAFETY: the slice is shared memory that the OS zero-filled when it was mapped (or that
    // an earlier sample wrote), so every byte has a value; the receiver reads only the two
    // bytes written above. Writing all 64 MiB per message would measure memset, not transfer.
    let s = unsafe { s.assume_init() };
    s.send().expect("send");
}

/// Child of the 64 MiB round trip: for each sample of `big.a2b`, reads its first and last
/// byte in place, and sends a 64 MiB sample back on `big.b2a` (loaned, first and last byte
/// written).
fn ice_big_echo(arg: (String, Connection<()>)) {
    let (prefix, ready) = arg;
    let node = node();
    let name = |what: &str| ServiceName::new(&format!("{prefix}/{what}")).expect("name");
    let a2b = big_service(&node, &name("big.a2b"), 1);
    let b2a = big_service(&node, &name("big.b2a"), 1);
    let sub = a2b.subscriber_builder().create().expect("subscriber");
    let publisher = b2a
        .publisher_builder()
        .initial_max_slice_len(BIG)
        .max_loaned_samples(1)
        .create()
        .expect("publisher");
    ready.send_bytes(b"ready").expect("ready");
    loop {
        let s = poll!(sub);
        let p = s.payload();
        let seen = std::hint::black_box(p[0]) ^ std::hint::black_box(p[p.len() - 1]);
        if p.len() == 1 {
            return;
        }
        drop(s);
        send_touched(&publisher, BIG, seen | 1);
    }
}

/// Mean time of a 64 MiB sample to the child and a 64 MiB sample back, per 20 round trips,
/// as `zc.64MiB` measures mp's `SharedVec` (there, the same buffer travels back).
fn ice_big(reps: usize) -> Vec<f64> {
    let node = node();
    let a2b = big_service(&node, &service_name("big.a2b"), 1);
    let b2a = big_service(&node, &service_name("big.b2a"), 1);
    let publisher = a2b
        .publisher_builder()
        .initial_max_slice_len(BIG)
        .max_loaned_samples(1)
        .create()
        .expect("publisher");
    let sub = b2a.subscriber_builder().create().expect("subscriber");
    let (here, there) = pipe_with::<(), Socket>().expect("pipe");
    let mut p = Process::new(ice_big_echo, (prefix(), there));
    p.start().expect("start");
    here.recv_bytes().expect("child ready");
    let round_trip = || {
        send_touched(&publisher, BIG, 0x5a);
        let back = poll!(sub);
        let p = back.payload();
        debug_assert_eq!(p.len(), BIG);
        std::hint::black_box(p[0] ^ p[p.len() - 1]);
    };
    for _ in 0..5 {
        round_trip();
    }
    let per_sample = 20;
    let mut samples = Vec::new();
    for _ in 0..reps * 3 {
        let t = Instant::now();
        for _ in 0..per_sample {
            round_trip();
        }
        samples.push(t.elapsed().as_secs_f64() / per_sample as f64);
    }
    send_touched(&publisher, 1, 0);
    p.join().expect("join");
    samples
}

const MIB: usize = 1 << 20;
/// Messages per sample of the 1 MiB one-way rate, after `WARM`, as `copy.1MiB` counts.
const COUNT: usize = 256;
const WARM: usize = 8;

/// Child of the 1 MiB one-way rate: for each command on `cmd`, copies a private 1 MiB
/// message into `COUNT + WARM` loaned samples and sends them (blocking while the
/// subscriber's buffer is full).
fn ice_mib_producer(arg: (String, Connection<()>)) {
    let (prefix, cmd) = arg;
    let node = node();
    let svc = big_service(
        &node,
        &ServiceName::new(&format!("{prefix}/mib")).expect("name"),
        4,
    );
    let publisher = svc
        .publisher_builder()
        .initial_max_slice_len(MIB)
        .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
        .create()
        .expect("publisher");
    cmd.send_bytes(b"ready").expect("ready");
    let msg = vec![0x5au8; MIB];
    while cmd.recv_bytes().is_ok() {
        for _ in 0..COUNT + WARM {
            publisher
                .loan_slice_uninit(MIB)
                .expect("loan")
                .write_from_slice(&msg)
                .send()
                .expect("send");
        }
    }
}

/// Bytes per second of 1 MiB messages one way, child to parent: the child writes each into
/// a loaned sample, the parent copies it out into a reused buffer (as mp's shm pipe row:
/// one copy in, one copy out).
fn ice_mib(reps: usize) -> Vec<f64> {
    let node = node();
    let svc = big_service(&node, &service_name("mib"), 4);
    let sub = svc.subscriber_builder().create().expect("subscriber");
    let (here, there) = pipe_with::<(), Socket>().expect("pipe");
    let mut p = Process::new(ice_mib_producer, (prefix(), there));
    p.start().expect("start");
    here.recv_bytes().expect("child ready");
    let mut dst = vec![0u8; MIB];
    let mut take = || {
        let s = poll!(sub);
        dst.copy_from_slice(s.payload());
        std::hint::black_box(&mut dst);
    };
    let mut rates = Vec::new();
    for _ in 0..reps {
        here.send_bytes(b"go").expect("command");
        for _ in 0..WARM {
            take();
        }
        let t = Instant::now();
        for _ in 0..COUNT {
            take();
        }
        rates.push((COUNT * MIB) as f64 / t.elapsed().as_secs_f64());
    }
    drop(here);
    p.join().expect("join");
    rates
}

// ------------------------------------------------------------------ ipc-channel

/// What the child of an ipc-channel benchmark hands the parent through the one-shot server:
/// the sender of its inbox and the receiver of its replies.
type Boot<T> = (IpcSender<T>, IpcReceiver<T>);

/// Child side of the set-up: connects to the parent's one-shot server `name` and sends it
/// the two ends the parent keeps.
fn ipc_connect<A, B>(name: String) -> (IpcReceiver<A>, IpcSender<B>)
where
    A: for<'de> serde::Deserialize<'de> + serde::Serialize,
    B: for<'de> serde::Deserialize<'de> + serde::Serialize,
{
    let boot = IpcSender::<(IpcSender<A>, IpcReceiver<B>)>::connect(name).expect("connect");
    let (to_child, inbox) = ipcc::channel::<A>().expect("channel");
    let (reply, from_child) = ipcc::channel::<B>().expect("channel");
    boot.send((to_child, from_child)).expect("boot");
    (inbox, reply)
}

/// Child of the typed round trip: echoes every `u64`.
fn ipc_echo(name: String) {
    let (inbox, reply) = ipc_connect::<u64, u64>(name);
    while let Ok(v) = inbox.recv() {
        if reply.send(v).is_err() {
            return;
        }
    }
}

/// Child of the typed round trip over mp: echoes every `u64`.
fn mp_echo(conn: Connection<u64>) {
    while let Ok(v) = conn.recv() {
        if conn.send(&v).is_err() {
            return;
        }
    }
}

/// Mean round trip of one batch of `per_batch` (after one warm-up batch).
fn batch_mean(per_batch: usize, mut round_trip: impl FnMut(u64)) -> f64 {
    let t = Instant::now();
    for i in 0..per_batch {
        round_trip(i as u64);
    }
    t.elapsed().as_secs_f64() / per_batch as f64
}

/// Typed 8-byte round trips, mp's `Connection<u64>` (default spin, then spin off) and
/// ipc-channel's `IpcSender<u64>`, a batch of each in turn so all see the same machine.
fn typed_rtt(reps: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let per_batch = 2_000;
    let (server, name) = IpcOneShotServer::<Boot<u64>>::new().expect("one-shot server");
    let mut ipc_child = Process::new(ipc_echo, name);
    ipc_child.start().expect("start");
    let (_, (to_child, from_child)) = server.accept().expect("accept");
    let ipc_rt = |v: u64| {
        to_child.send(v).expect("send");
        let back = from_child.recv().expect("recv");
        debug_assert_eq!(back, v);
    };

    let (here, there) = pipe_with::<u64, Socket>().expect("pipe");
    let mut mp_child = Process::new(mp_echo, there);
    mp_child.start().expect("start");
    let mp_rt = |v: u64| {
        here.send(&v).expect("send");
        let back = here.recv().expect("recv");
        debug_assert_eq!(back, v);
    };

    // mp with the spin off in both processes: every receive sleeps, as ipc-channel's do.
    let old = mp_core::connection::socket_spin_limit();
    mp_core::connection::set_socket_spin_limit(Duration::ZERO);
    std::env::set_var("MP_SPIN_US", "0");
    let (quiet, there) = pipe_with::<u64, Socket>().expect("pipe");
    let mut quiet_child = Process::new(mp_echo, there);
    quiet_child.start().expect("start");
    std::env::remove_var("MP_SPIN_US");
    mp_core::connection::set_socket_spin_limit(old);
    let quiet_rt = |v: u64| {
        quiet.send(&v).expect("send");
        let back = quiet.recv().expect("recv");
        debug_assert_eq!(back, v);
    };

    // The spin limit is this process's: on for mp's batches, off for the quiet child's.
    let quiet_batch = || {
        mp_core::connection::set_socket_spin_limit(Duration::ZERO);
        let m = batch_mean(per_batch, quiet_rt);
        mp_core::connection::set_socket_spin_limit(old);
        m
    };
    batch_mean(per_batch, ipc_rt);
    batch_mean(per_batch, mp_rt);
    quiet_batch();
    let (mut ipc_s, mut mp_s, mut quiet_s) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps * 3 {
        ipc_s.push(batch_mean(per_batch, ipc_rt));
        mp_s.push(batch_mean(per_batch, mp_rt));
        quiet_s.push(quiet_batch());
    }
    drop((to_child, from_child));
    ipc_child.join().expect("join");
    drop(here);
    mp_child.join().expect("join");
    drop(quiet);
    quiet_child.join().expect("join");
    (mp_s, quiet_s, ipc_s)
}

/// Child of the typed throughput: for each command `(count, size)`, sends `count` messages
/// of `size` bytes, typed as `Vec<u8>`.
fn ipc_producer(name: String) {
    let (inbox, reply) = ipc_connect::<(u64, u64), Vec<u8>>(name);
    // `IpcSender::send` takes its value; serde writes a `Vec<u8>` and a `[u8]` as the same
    // sequence, so the child sends its one payload by reference through the same channel
    // typed as `&[u8]` (no clone per message; the parent still receives `Vec<u8>`).
    let reply: IpcSender<&[u8]> = reply.to_opaque().to();
    while let Ok((count, size)) = inbox.recv() {
        let payload = vec![0xA5u8; size as usize];
        for _ in 0..count {
            if reply.send(&payload[..]).is_err() {
                return;
            }
        }
    }
}

/// What the child of the untyped throughput hands the parent: the sender of its commands
/// and the receiver of its bytes.
type BytesBoot = (IpcSender<(u64, u64)>, IpcBytesReceiver);

/// Child of the untyped throughput: as [`ipc_producer`], through ipc-channel's bytes channel
/// (no serde: the bytes are the message).
fn ipc_bytes_producer(name: String) {
    let boot = IpcSender::<BytesBoot>::connect(name).expect("connect");
    let (to_child, inbox) = ipcc::channel::<(u64, u64)>().expect("channel");
    let (reply, from_child): (IpcBytesSender, IpcBytesReceiver) =
        ipcc::bytes_channel().expect("bytes channel");
    boot.send((to_child, from_child)).expect("boot");
    while let Ok((count, size)) = inbox.recv() {
        let payload = vec![0xA5u8; size as usize];
        for _ in 0..count {
            if reply.send(&payload).is_err() {
                return;
            }
        }
    }
}

/// Bytes per second of messages one way through ipc-channel, measured as mp's `tput.*`
/// rows: a command inside the timing, then `count` messages, 2 warm-up batches. Typed
/// (`IpcReceiver<Vec<u8>>`, serde) or, with `bytes`, its bytes channel.
fn ipc_tput(reps: usize, count: usize, size: usize, bytes: bool) -> Vec<f64> {
    type Recv = Box<dyn Fn() -> Vec<u8>>;
    let (to_child, recv, child): (IpcSender<(u64, u64)>, Recv, Process) = if bytes {
        let (server, name) = IpcOneShotServer::<BytesBoot>::new().expect("one-shot server");
        let mut child = Process::new(ipc_bytes_producer, name);
        child.start().expect("start");
        let (_, (tx, rx)) = server.accept().expect("accept");
        (tx, Box::new(move || rx.recv().expect("recv")), child)
    } else {
        let (server, name) = IpcOneShotServer::<Boot<(u64, u64)>>::new().expect("one-shot server");
        let mut child = Process::new(ipc_producer, name);
        child.start().expect("start");
        // The child's reply channel is typed `Vec<u8>` on this side.
        let (_, (tx, rx)) = server.accept().expect("accept");
        let rx: IpcReceiver<Vec<u8>> = rx.to_opaque().to();
        (tx, Box::new(move || rx.recv().expect("recv")), child)
    };
    let batch = || {
        to_child.send((count as u64, size as u64)).expect("command");
        for _ in 0..count {
            let m = recv();
            debug_assert_eq!(m.len(), size);
        }
    };
    batch();
    batch();
    let rates = (0..reps)
        .map(|_| {
            let t = Instant::now();
            batch();
            (count * size) as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    drop(to_child);
    drop(recv);
    child.join().expect("join");
    rates
}

/// Runs the peers' benchmarks with `reps` repetitions.
pub fn run(reps: usize) {
    let reps = reps.max(1);
    emit(
        "shm.rtt8",
        "iceoryx2",
        "s",
        "iceoryx2 0.10 publish-subscribe ping-pong of a u64 between two processes (two services, a loaned sample each way, receives busy-polled as iceoryx2's own benchmark does); median of 2000 per sample",
        &ice_rtt(reps, false),
    );
    emit(
        "shm.rtt8.nospin",
        "iceoryx2_event",
        "s",
        "as shm.rtt8/iceoryx2, each wait a look then a sleep on an event service (a notifier and a listener beside each publish-subscribe service), as mp's spin-disabled shm pipe sleeps in every wait; median of 2000 per sample",
        &ice_rtt(reps, true),
    );
    emit(
        "zc.64MiB",
        "iceoryx2",
        "s",
        "iceoryx2 0.10: a loaned 64 MiB sample to a child and a loaned 64 MiB sample back (first and last byte written in place and read in place, receives busy-polled); mean of 20 round trips",
        &ice_big(reps),
    );
    emit(
        "copy.1MiB",
        "iceoryx2",
        "B/s",
        "iceoryx2 0.10: a child copies each 1 MiB message into a loaned sample (buffer of 4, retried while full), the parent copies it out into a reused buffer (busy-polled)",
        &ice_mib(reps),
    );
    let (mp_s, quiet_s, ipc_s) = typed_rtt(reps);
    emit(
        "rtt8.typed",
        "mp",
        "s",
        "typed Connection<u64> send/recv round trip with an echo child (spawn), default receive spin; mean of 2000 per sample, alternating with the others",
        &mp_s,
    );
    emit(
        "rtt8.typed",
        "mp_nospin",
        "s",
        "as rtt8.typed/mp with the receive spin off in both processes (every receive sleeps, as ipc-channel's do)",
        &quiet_s,
    );
    emit(
        "rtt8.typed",
        "ipc_channel",
        "s",
        "ipc-channel 0.23 IpcSender<u64>/IpcReceiver<u64> round trip with an echo child (channels handed over through an IpcOneShotServer); mean of 2000 per sample",
        &ipc_s,
    );
    for (label, size, count) in [("64KiB", 64 << 10, 1_000), ("1MiB", 1 << 20, 64)] {
        emit(
            &format!("tput.{label}"),
            "ipc_channel",
            "B/s",
            "ipc-channel 0.23: child IpcSender::send of the payload -> parent IpcReceiver<Vec<u8>>::recv (a new Vec per message)",
            &ipc_tput(reps.max(3) * 2, count, size, false),
        );
        emit(
            &format!("tput.{label}"),
            "ipc_channel_bytes",
            "B/s",
            "ipc-channel 0.23, untyped: child IpcBytesSender::send(&payload) -> parent IpcBytesReceiver::recv (a new Vec per message)",
            &ipc_tput(reps.max(3) * 2, count, size, true),
        );
    }
}
