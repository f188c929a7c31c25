//! The groups, rows, targets, curves and notes of issue 18 (large arrays without copies,
//! honest copy references, scaling curves, idle costs, start floors), kept apart from the
//! shared table code of `bench.rs`, which chains them in.

use std::fmt::Write as _;

use super::{fmt_ratio, fmt_value, speedup, Report, Row, Series};

/// Groups run after the others, each round (`bench_<group>.py` is the Python side where it
/// exists).
pub(super) const GROUPS: &[(&str, bool)] = &[
    ("copy", false),
    ("zerocopy", false),
    ("scaling", false),
    ("idle", false),
    // The Rust peers (iceoryx2, ipc-channel): mp-bench's feature `peers`, no Python side.
    ("peers", false),
];

const fn vs(
    title: &'static str,
    bench: &'static str,
    mp: &'static str,
    raw: Option<&'static str>,
    python: Option<(&'static str, &'static str)>,
) -> Row {
    Row {
        title,
        bench,
        mp,
        raw,
        python,
    }
}

/// Rows of the main table.
pub(super) const ROWS: &[Row] = &[
    vs(
        "64 MiB to a child and back, zero-copy `SharedVec` (vs mp's copy path; vs Python's pickled array)",
        "zc.64MiB",
        "mp",
        Some("mp_copy"),
        Some(("zc.64MiB", "python")),
    ),
    vs(
        "64 MiB to a child and back, zero-copy (vs Python's `SharedMemory` whose name is sent)",
        "zc.64MiB",
        "mp",
        Some("mp_copy"),
        Some(("zc.64MiB", "python_shm")),
    ),
    vs(
        "64 MiB to a child and back, zero-copy (vs Python's pickle 5 out-of-band over `shared_memory`)",
        "zc.64MiB",
        "mp",
        Some("mp_copy"),
        Some(("zc.64MiB", "python_pickle5")),
    ),
    vs(
        "shm pipe 1 MiB one way (vs a cross-process copy: two processes, two slots, no framing)",
        "copy.1MiB",
        "mp_shm",
        Some("xproc"),
        Some(("shm.1mib", "python")),
    ),
    vs(
        "shm pipe 1 MiB one way (vs memcpy between buffers not in the cache)",
        "copy.1MiB",
        "mp_shm",
        Some("memcpy_cold"),
        Some(("shm.1mib", "python")),
    ),
    vs(
        "throughput 64 KiB, typed `Connection<Vec<u8>>` (vs `recv_bytes_into`)",
        "tput.64KiB",
        "mp_typed",
        Some("mp_into"),
        Some(("tput.64KiB", "python")),
    ),
    vs(
        "throughput 1 MiB, typed `Connection<Vec<u8>>` (vs `recv_bytes_into`)",
        "tput.1MiB",
        "mp_typed",
        Some("mp_into"),
        Some(("tput.1MiB", "python")),
    ),
    // The Rust peers, each beside the mp row it is measured like (the reference column).
    vs(
        "shm pipe round trip 8 B (vs iceoryx2 publish-subscribe ping-pong, busy-polled)",
        "shm.rtt8",
        "mp",
        Some("iceoryx2"),
        Some(("shm.rtt8", "python")),
    ),
    vs(
        "shm pipe round trip 8 B, spin disabled (vs iceoryx2 woken by an event service: both sleep in every wait)",
        "shm.rtt8.nospin",
        "mp",
        Some("iceoryx2_event"),
        Some(("shm.rtt8", "python")),
    ),
    vs(
        "64 MiB to a child and back, zero-copy `SharedVec` (vs iceoryx2: a loaned 64 MiB sample each way)",
        "zc.64MiB",
        "mp",
        Some("iceoryx2"),
        Some(("zc.64MiB", "python_shm")),
    ),
    vs(
        "shm pipe 1 MiB one way (vs iceoryx2: copied into a loaned sample, copied out)",
        "copy.1MiB",
        "mp_shm",
        Some("iceoryx2"),
        Some(("shm.1mib", "python")),
    ),
    vs(
        "round trip 8 B, typed `Connection<u64>` (vs ipc-channel `IpcSender<u64>`)",
        "rtt8.typed",
        "mp",
        Some("ipc_channel"),
        None,
    ),
    vs(
        "round trip 8 B, typed, mp's spin disabled (vs ipc-channel: both sleep in every receive)",
        "rtt8.typed",
        "mp_nospin",
        Some("ipc_channel"),
        None,
    ),
    vs(
        "throughput 64 KiB, typed `Connection<Vec<u8>>` (vs ipc-channel `IpcSender<Vec<u8>>`)",
        "tput.64KiB",
        "mp_typed",
        Some("ipc_channel"),
        Some(("tput.64KiB", "python")),
    ),
    vs(
        "throughput 1 MiB, typed `Connection<Vec<u8>>` (vs ipc-channel `IpcSender<Vec<u8>>`)",
        "tput.1MiB",
        "mp_typed",
        Some("ipc_channel"),
        Some(("tput.1MiB", "python")),
    ),
    vs(
        "throughput 64 KiB, `recv_bytes` (vs ipc-channel's bytes channel)",
        "tput.64KiB",
        "mp",
        Some("ipc_channel_bytes"),
        Some(("tput.64KiB", "python")),
    ),
    vs(
        "throughput 1 MiB, `recv_bytes` (vs ipc-channel's bytes channel)",
        "tput.1MiB",
        "mp",
        Some("ipc_channel_bytes"),
        Some(("tput.1MiB", "python")),
    ),
    vs(
        "idle Pool(2): CPU share over the window (parent + workers)",
        "idle.pool",
        "mp",
        None,
        Some(("idle.pool", "python")),
    ),
    vs(
        "idle child blocked in `recv`: CPU share",
        "idle.recv",
        "mp",
        None,
        Some(("idle.recv", "python")),
    ),
    vs(
        "idle manager, no clients: CPU share",
        "idle.manager",
        "mp",
        None,
        Some(("idle.manager", "python")),
    ),
    vs(
        "RSS of a spawned child waiting in `recv`",
        "footprint.recv_child",
        "mp",
        None,
        Some(("footprint.recv_child", "python")),
    ),
];

/// The N of the scaling curves and their titles.
const CURVES: &[(&str, &str)] = &[
    ("start_join", "start + join of N processes (total time)"),
    ("wait", "wait() over N connections, one ready (per call)"),
    ("queue", "queue fed by N producer processes (items/s)"),
    ("pool", "pool of N workers, map with chunksize 1 (items/s)"),
];
const NS: &[usize] = &[1, 2, 4, 16, 64, 256];
const IMPLS: &[(&str, &str)] = &[
    ("mp", "#3b6fb6"),
    ("mp_fork", "#6fa8dc"),
    ("python", "#e08a2e"),
];

impl Report<'_> {
    /// The points `(N, median)` of one curve.
    fn curve(&self, what: &str, imp: &str) -> Vec<(usize, f64)> {
        NS.iter()
            .filter_map(|&n| {
                self.get(&format!("scale.{what}.{n}"), imp)
                    .map(|s| (n, s.median()))
            })
            .collect()
    }

    fn curve_unit(&self, what: &str) -> Option<&Series> {
        NS.iter()
            .find_map(|n| self.get(&format!("scale.{what}.{n}"), "mp"))
    }

    /// The targets of issue 18, checked against this run.
    pub(super) fn perf_targets(&self, line: &mut dyn FnMut(Option<bool>, String)) {
        match self.get("zc.64MiB", "mp") {
            Some(m) => line(
                Some(m.median() < 100e-6),
                format!(
                    "64 MiB to a child and back through SharedVec in under 100 µs: {}",
                    fmt_value(m.median(), "s")
                ),
            ),
            None => line(None, "64 MiB zero-copy round trip".into()),
        }
        for (imp, min, what) in [
            (
                "python",
                100.0,
                "at least 100× Python's everyday path (pickled through a Pipe)",
            ),
            (
                "python_shm",
                1.0,
                "no slower than Python's hand-made SharedMemory path",
            ),
        ] {
            match (self.get("zc.64MiB", "mp"), self.get("zc.64MiB", imp)) {
                (Some(m), Some(p)) => {
                    let r = speedup(m, p);
                    line(
                        Some(r >= min),
                        format!("64 MiB zero-copy round trip {what}: {}", fmt_ratio(Some(r))),
                    )
                }
                _ => line(None, format!("64 MiB zero-copy round trip {what}")),
            }
        }
        match (self.get("shm.rtt8", "mp"), self.get("shm.rtt8", "iceoryx2")) {
            (Some(m), Some(i)) => line(
                Some(m.median() <= i.median()),
                format!(
                    "shm round trip no slower than iceoryx2's in the same run: mp {} vs iceoryx2 {}",
                    fmt_value(m.median(), "s"),
                    fmt_value(i.median(), "s")
                ),
            ),
            _ => line(
                None,
                "shm round trip no slower than iceoryx2's in the same run".into(),
            ),
        }
        for (bench, mp, reference, min, what) in [
            (
                "copy.1MiB",
                "mp_shm",
                "xproc",
                0.7,
                "shm pipe 1 MiB at least 70% of a cross-process copy",
            ),
            (
                "copy.1MiB",
                "mp_shm",
                "memcpy_cold",
                0.7,
                "shm pipe 1 MiB at least 70% of a memcpy between buffers not in the cache",
            ),
            (
                "tput.64KiB",
                "mp_typed",
                "mp_into",
                0.9,
                "typed 64 KiB recv within 90% of recv_bytes_into",
            ),
            (
                "tput.1MiB",
                "mp_typed",
                "mp_into",
                0.9,
                "typed 1 MiB recv within 90% of recv_bytes_into",
            ),
        ] {
            match (self.get(bench, mp), self.get(bench, reference)) {
                (Some(m), Some(r)) => {
                    let f = speedup(m, r);
                    line(Some(f >= min), format!("{what}: {:.0}%", f * 100.0))
                }
                _ => line(None, what.into()),
            }
        }
        // Growth: from the smallest to the largest N, cost per unit of N grows at most
        // linearly (times: cost ratio <= N ratio; rates: rate ratio >= 1 / N ratio).
        for &(what, title) in CURVES {
            for &(imp, _) in IMPLS {
                let c = self.curve(what, imp);
                let (Some(first), Some(last)) = (c.first(), c.last()) else {
                    continue;
                };
                if first.0 == last.0 {
                    continue;
                }
                let grow = last.0 as f64 / first.0 as f64;
                let higher_better = self.curve_unit(what).is_some_and(Series::higher_is_better);
                let (ok, ratio) = if higher_better {
                    (last.1 * grow >= first.1, first.1 / last.1)
                } else {
                    (last.1 <= first.1 * grow, last.1 / first.1)
                };
                if imp == "mp" || imp == "mp_fork" {
                    line(
                        Some(ok),
                        format!(
                            "{title}, {imp}: no faster than linear from N = {} to {} (cost × {ratio:.1} for N × {grow:.0})",
                            first.0, last.0
                        ),
                    );
                }
            }
        }
        match (
            self.get("scale.pool.16", "mp"),
            self.get("scale.pool.2", "mp"),
        ) {
            (Some(a), Some(b)) => {
                let f = a.median() / b.median();
                line(
                    Some(f >= 0.7),
                    format!(
                        "pool of 16 workers on this machine keeps at least 70% of 2 workers' throughput: {:.0}%",
                        f * 100.0
                    ),
                )
            }
            _ => line(None, "oversubscribed pool (16 vs 2 workers)".into()),
        }
        for (bench, what) in [
            ("idle.pool", "an idle pool"),
            ("idle.recv", "a process blocked in recv"),
            ("idle.manager", "a manager with no clients"),
        ] {
            match self.get(bench, "mp") {
                Some(m) => line(
                    Some(m.median() < 0.01),
                    format!(
                        "{what} uses under 1% of a CPU: {}",
                        fmt_value(m.median(), "cpu")
                    ),
                ),
                None => line(None, format!("{what}: idle CPU")),
            }
        }
        match (
            self.get("start_join.fork", "mp"),
            self.get("start_join.fork", "python"),
            self.get("start_join.fork", "raw"),
        ) {
            (Some(m), p, r) => {
                if let Some(p) = p {
                    let x = speedup(m, p);
                    line(
                        Some(x >= 8.0),
                        format!(
                            "fork start + join at least 8× Python's: {}",
                            fmt_ratio(Some(x))
                        ),
                    );
                }
                if let Some(r) = r {
                    let x = m.median() / r.median();
                    line(
                        Some(x <= 2.0),
                        format!(
                            "fork start + join at most 2× a bare fork + waitpid: {x:.2}× ({} vs {})",
                            fmt_value(m.median(), "s"),
                            fmt_value(r.median(), "s")
                        ),
                    );
                }
            }
            _ => line(None, "fork start + join".into()),
        }
    }

    /// The scaling section of the markdown: one table per curve, and the chart.
    pub(super) fn scaling_markdown(&self) -> String {
        let mut md = String::new();
        if CURVES
            .iter()
            .all(|(what, _)| self.curve_unit(what).is_none())
        {
            return md;
        }
        md.push_str("## Scaling\n\n");
        md.push_str(
            "Medians per N on this machine (2 CPUs: from N = 4 on, processes outnumber CPUs). \
             mp starts by spawn unless marked fork; Python by fork, its default here.\n\n",
        );
        for &(what, title) in CURVES {
            let Some(unit) = self.curve_unit(what).map(|s| s.unit.clone()) else {
                continue;
            };
            let _ = writeln!(md, "**{title}**\n");
            let present: Vec<&(&str, &str)> = IMPLS
                .iter()
                .filter(|(imp, _)| !self.curve(what, imp).is_empty())
                .collect();
            md.push_str("| N |");
            for (imp, _) in &present {
                let _ = write!(md, " {imp} |");
            }
            md.push_str("\n|---|");
            md.push_str(&"---|".repeat(present.len()));
            md.push('\n');
            for &n in NS {
                let cells: Vec<String> = present
                    .iter()
                    .map(|(imp, _)| {
                        self.get(&format!("scale.{what}.{n}"), imp)
                            .map_or("–".into(), |s| fmt_value(s.median(), &unit))
                    })
                    .collect();
                if cells.iter().all(|c| c == "–") {
                    continue;
                }
                let _ = writeln!(md, "| {n} | {} |", cells.join(" | "));
            }
            md.push('\n');
        }
        md.push_str("![scaling curves, log-log](scaling.svg)\n\n");
        md
    }

    /// Four log-log panels, one per curve; one line per implementation.
    pub(super) fn scaling_svg(&self) -> String {
        let (pw, ph, pad) = (380.0, 260.0, 55.0);
        let (w, h) = (2.0 * (pw + pad) + 20.0, 2.0 * (ph + pad) + 50.0);
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/>"#
        );
        let _ = writeln!(
            s,
            r#"<text x="10" y="18" font-size="13" font-weight="bold">Scaling with N (medians, log-log; 2 CPUs)</text>"#
        );
        for (k, (imp, color)) in IMPLS.iter().enumerate() {
            let x = 360.0 + 90.0 * k as f64;
            let _ = writeln!(
                s,
                r#"<rect x="{x}" y="8" width="10" height="10" fill="{color}"/><text x="{}" y="17">{imp}</text>"#,
                x + 14.0
            );
        }
        for (i, &(what, title)) in CURVES.iter().enumerate() {
            let (ox, oy) = (
                pad + (i % 2) as f64 * (pw + pad),
                40.0 + (i / 2) as f64 * (ph + pad),
            );
            let unit = self
                .curve_unit(what)
                .map(|u| u.unit.clone())
                .unwrap_or_default();
            let all: Vec<f64> = IMPLS
                .iter()
                .flat_map(|(imp, _)| self.curve(what, imp))
                .map(|p| p.1)
                .filter(|v| v.is_finite() && *v > 0.0)
                .collect();
            let _ = writeln!(
                s,
                r##"<rect x="{ox}" y="{oy}" width="{pw}" height="{ph}" fill="none" stroke="#999"/><text x="{ox}" y="{}" font-weight="bold">{title}</text>"##,
                oy - 5.0
            );
            if all.is_empty() {
                continue;
            }
            let lo = all
                .iter()
                .cloned()
                .fold(f64::INFINITY, f64::min)
                .log10()
                .floor();
            let hi = all
                .iter()
                .cloned()
                .fold(f64::NEG_INFINITY, f64::max)
                .log10()
                .ceil()
                .max(lo + 1.0);
            let xs = |n: usize| ox + (n as f64).log2() / 8.0 * pw;
            let ys = |v: f64| oy + ph - (v.log10() - lo) / (hi - lo) * ph;
            for &n in NS {
                let _ = writeln!(
                    s,
                    r##"<line x1="{x:.1}" y1="{oy}" x2="{x:.1}" y2="{}" stroke="#eee"/><text x="{x:.1}" y="{}" text-anchor="middle" fill="#555">{n}</text>"##,
                    oy + ph,
                    oy + ph + 14.0,
                    x = xs(n)
                );
            }
            let mut e = lo;
            while e <= hi {
                let y = ys(10f64.powf(e));
                let _ = writeln!(
                    s,
                    r##"<line x1="{ox}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end" fill="#555">{}</text>"##,
                    ox + pw,
                    ox - 4.0,
                    y + 4.0,
                    fmt_value(10f64.powf(e), &unit)
                );
                e += 1.0;
            }
            for (imp, color) in IMPLS {
                let pts: Vec<String> = self
                    .curve(what, imp)
                    .into_iter()
                    .filter(|p| p.1.is_finite() && p.1 > 0.0)
                    .map(|(n, v)| format!("{:.1},{:.1}", xs(n), ys(v)))
                    .collect();
                if pts.len() < 2 {
                    continue;
                }
                let _ = writeln!(
                    s,
                    r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                    pts.join(" ")
                );
            }
        }
        s.push_str("</svg>\n");
        s
    }
}

/// What the added groups measure, for the markdown's method section.
pub(super) const METHOD: &str = "\
- **start + join floors**: beside each start method's start + join, in alternation with it, \
the bare floor: `fork()` + `_exit(0)` + `waitpid()` for fork and the fork server, and for spawn \
a re-execution of the benchmark binary (std `Command` spawn + wait) that exits first thing in \
`main`.\n\
- **64 MiB to a child and back**: a `SharedVec<u8>` of 64 MiB, filled once, sent to a spawned \
echo child over a socket pipe, which reads its first and last byte in place and sends it back; \
mean of 20 round trips per sample. The parent keeps its handle, so the buffer comes back to the \
same mapping. mp's copy path sends the same 64 MiB as bytes both ways. Python (fork children): \
the bytes pickled through a `Pipe` both ways; a `SharedMemory` whose name is sent (the child \
opens it, reads two bytes, closes it); pickle protocol 5 with the buffer out of band, each side \
unpickling onto the segment's memory.\n\
- **copy references** (1 MiB messages, 256 per sample, the three alternating): a memcpy into a \
reused buffer (cache-resident, for context), a memcpy rotating over 2 × 96 MiB of buffers (not \
in the cache), and a cross-process copy: a child copies each message from its own buffer into \
one of two shared slots, the parent copies it out (two copies pipelined on two CPUs, the ideal \
shm pipe); beside them mp's shm pipe (`send_bytes` / `recv_bytes_into`).\n\
- **typed throughput**: as the other throughput rows, with `Connection<Vec<u8>>` `send`/`recv` \
(a new vector per message).\n\
- **Rust peers** (mp-bench's feature `peers`; each in a child started by mp's spawn, which \
then talks to the parent only through the peer's own channels): iceoryx2 0.10 (`ipc::Service`, \
signal handling off) and ipc-channel 0.23, under the benchmark names of the mp rows they stand \
beside and measured as those are. iceoryx2's 8-byte round trip is a publish-subscribe ping-pong \
of a `u64` over two services (a loaned sample each way), the median of 2000 timed round trips \
per sample as `shm.rtt8`; its receives busy-poll, as iceoryx2's own benchmarks do (its \
publish-subscribe ports have no blocking receive; mp's shm pipe spins, then sleeps); beside \
mp's spin-disabled row, the same ping-pong with each wait a look then a sleep on an event \
service (a notifier and a listener beside each publish-subscribe service). Its large \
payload is a loaned 64 MiB sample to the child and another back (first and last byte written \
and read in place; mean of 20 round trips, as `zc.64MiB`), and 1 MiB messages one way, copied \
by the child into loaned samples and out by the parent (256 per sample after 8, as \
`copy.1MiB`). ipc-channel: `IpcSender<u64>` round trips (mean of 2000 per sample), alternating \
batch by batch with mp's `Connection<u64>` (spin on, and spin off in both processes), and \
`Vec<u8>` messages one way as the `tput` rows, typed (serde writes a `Vec<u8>` as a sequence, \
decoded byte by byte) and through its bytes channel (`IpcBytesSender`, beside mp's \
`recv_bytes`); ipc-channel's receives always sleep. Busy \
polling reads well in a median and badly in a mean on a loaded machine: a poller that shares \
its CPU with the process it waits for holds the CPU until the scheduler takes it away \
(milliseconds), so the iceoryx2 rows measured as means (64 MiB round trip, 1 MiB rate) swing \
with the load far more than its round-trip median does. The other way round for mp's shm \
round trip on a loaded machine: it has two modes, set by where the scheduler puts the pair. On \
two CPUs the spin catches each reply (the figure of a quiet machine); on one CPU (the \
scheduler wakes a sleeper beside its waker, and keeps it there while other work fills the \
other CPU) the peer cannot answer while this end spins, so every reply costs a doorbell \
wake-up and two context switches. A busy-polling pair never sleeps, so the scheduler keeps \
it on two CPUs.\n\
- **scaling**: N = 1, 4, 16, 64, 256 (2 too for the pool); start N processes then join them \
all (total); `wait` over N pipe ends with one made ready (per call, 300 calls); 20 000 items put \
by N producer processes (starts included); `Pool(N).map(x*x)` over 20 000 items, chunksize 1.\n\
- **idle**: an idle `Pool(2)` (the parent with all its threads, and both workers), a spawned \
child blocked in `recv`, and a manager with no clients, idle at the same time for 10 s; the \
share of one CPU is their user + system time from `/proc/<pid>/stat` over the window (the \
clock tick is 10 ms, so a single tick over 10 s reads 0.1 %). RSS is `VmRSS` of the spawned \
child waiting in `recv`.\n";
