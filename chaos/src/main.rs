//! Chaos runs of mp: pool, executor, queue, manager and lock workloads under every start
//! method while random workers, producers, consumers and clients are killed with `SIGKILL`.
//!
//! ```text
//! mp-chaos --seconds <s> [--seed <n>]
//! ```
//!
//! Every round picks a workload and a start method, starts its processes, kills some of them
//! at random moments and then checks what the workload promises:
//!
//! - nothing lost but what a killed consumer held (at most one item each), no duplicate, no
//!   torn item (every payload is recomputed from its tag and sequence number);
//! - a killed pool or executor worker fails at most the task it was running (`WorkerDied`),
//!   every other task gives its right result, and the pool goes on working;
//! - a manager keeps serving after its clients die mid-call; each client's appends are a
//!   prefix of what it meant to append, in order, each once;
//! - a lock whose holder died is taken over (`OwnerDied`) and never held by two processes;
//!   a named segment whose creator died is unlinked by the resource tracker;
//! - no hang (a watchdog ends the run if a round outlives [`ROUND_LIMIT`]); no growth of this
//!   process's descriptors after the first cycle, and no `/dev/shm` entry of this run left.
//!
//! All randomness comes from one seed, printed first: the same seed makes the same choices
//! (workloads, sizes, which process is killed and when), though not the same interleavings.
//! `cargo xtask chaos` runs it for every process backend of mp-core.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mp_core::manager::{Builtins, ListProxy, Manager};
use mp_core::pool::ProcessPoolExecutor;
use mp_core::{
    get_all_start_methods, get_context, pipe_oneway, Array, Context, Pool, Process, Queue,
    SharedMemory, TaskError, Writer,
};

/// A round that takes longer than this is a hang: the run fails.
const ROUND_LIMIT: Duration = Duration::from_secs(120);
/// The timeout of every blocking call a round makes (far inside [`ROUND_LIMIT`]).
const CALL_LIMIT: Duration = Duration::from_secs(60);

/// splitmix64: small, seedable, good enough to choose things.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A number in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.next() as usize % items.len()]
    }
    fn sleep_up_to(&mut self, ms: u64) {
        std::thread::sleep(Duration::from_millis(self.range(0, ms)));
    }
}

/// The payload of item `seq` of producer `tag`: its length and every byte follow from the
/// two numbers, so a torn or mixed-up item is recognised. One item in four is large (up to
/// 96 KiB, more than a shm ring holds at once), the others small.
fn payload(tag: u32, seq: u32) -> Vec<u8> {
    let mut r = Rng(((tag as u64) << 32 | seq as u64) ^ 0x5eed);
    let len = if r.next() & 3 == 0 {
        r.range(1024, 96 << 10)
    } else {
        r.range(0, 64)
    } as usize;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        v.extend_from_slice(&r.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

type Item = (u32, u32, Vec<u8>);

// ---------------------------------------------------------------------------------------------
// Queue: producers and consumers, some of each killed.

fn producer(arg: (Queue<Option<Item>>, u32, u32)) {
    let (q, tag, n) = arg;
    for seq in 0..n {
        if let Err(e) = q.put_timeout(Some((tag, seq, payload(tag, seq))), CALL_LIMIT) {
            eprintln!("producer {tag}: put failed: {e}");
            std::process::exit(3);
        }
        if seq % 16 == 0 {
            std::thread::yield_now();
        }
    }
}

fn consumer(arg: (Queue<Option<Item>>, Writer<Result<Item, String>>)) {
    let (q, out) = arg;
    loop {
        let r = match q.get_timeout(CALL_LIMIT) {
            Ok(Some(item)) => Ok(item),
            Ok(None) => return,
            Err(e) => Err(format!("get failed: {e}")),
        };
        let stop = r.is_err();
        if out.send(&r).is_err() || stop {
            std::process::exit(3);
        }
    }
}

fn queue_round(ctx: &Context, rng: &mut Rng) -> Result<String, String> {
    let producers = rng.range(2, 3) as u32;
    let consumers = rng.range(2, 3) as usize;
    let per_producer = rng.range(50, 300) as u32;
    let q: Queue<Option<Item>> = if rng.next() & 1 == 0 {
        Queue::new()
    } else {
        Queue::bounded(rng.range(consumers as u64 + 1, 32) as u32)
    }
    .map_err(|e| format!("Queue: {e}"))?;
    let mut prods: Vec<Process> = (0..producers)
        .map(|tag| ctx.process(producer, (q.clone(), tag, per_producer)))
        .collect();
    let mut cons = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..consumers {
        let (rx, tx) = pipe_oneway::<Result<Item, String>>().map_err(|e| e.to_string())?;
        cons.push(ctx.process(consumer, (q.clone(), tx)));
        readers.push(std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Ok(r) = rx.recv_timeout(CALL_LIMIT) {
                got.push(r);
            }
            got
        }));
    }
    for p in prods.iter_mut().chain(cons.iter_mut()) {
        p.start().map_err(|e| format!("start: {e}"))?;
    }
    // Kill one to three, at least one consumer always left alive.
    let mut killed_prod = vec![false; prods.len()];
    let mut killed_cons = vec![false; cons.len()];
    for _ in 0..rng.range(1, 3) {
        rng.sleep_up_to(150);
        if rng.next() & 1 == 0 {
            let i = rng.range(0, prods.len() as u64 - 1) as usize;
            prods[i].kill().map_err(|e| format!("kill: {e}"))?;
            killed_prod[i] = true;
        } else if killed_cons.iter().filter(|k| !**k).count() > 1 {
            let i = rng.range(0, cons.len() as u64 - 1) as usize;
            cons[i].kill().map_err(|e| format!("kill: {e}"))?;
            killed_cons[i] = true;
        }
    }
    for (i, p) in prods.iter().enumerate() {
        join(p, killed_prod[i], "producer")?;
    }
    for (i, _) in cons.iter().enumerate() {
        if !killed_cons[i] {
            q.put_timeout(None, CALL_LIMIT)
                .map_err(|_| "put of the end marker failed".to_string())?;
        }
    }
    for (i, p) in cons.iter().enumerate() {
        join(p, killed_cons[i], "consumer")?;
    }
    let mut items = Vec::new();
    for r in readers {
        for got in r.join().map_err(|_| "reader panicked")? {
            items.push(got.map_err(|e| format!("a consumer saw: {e}"))?);
        }
    }
    loop {
        match q.get_nowait() {
            Ok(Some(item)) => items.push(item),
            Ok(None) => {}
            Err(mp_core::GetError::Empty) => break,
            Err(e) => return Err(format!("draining: {e}")),
        }
    }
    // No torn item, no duplicate; each producer's items a prefix of its sequence, up to
    // one hole per killed consumer.
    let mut seen = HashSet::new();
    let mut by_tag: BTreeMap<u32, HashSet<u32>> = BTreeMap::new();
    for (tag, seq, bytes) in &items {
        if *tag >= producers || *seq >= per_producer || *bytes != payload(*tag, *seq) {
            return Err(format!(
                "torn item: tag {tag} seq {seq} len {}",
                bytes.len()
            ));
        }
        if !seen.insert((*tag, *seq)) {
            return Err(format!("duplicate item: tag {tag} seq {seq}"));
        }
        by_tag.entry(*tag).or_default().insert(*seq);
    }
    let mut missing = 0;
    for tag in 0..producers {
        let got = by_tag.remove(&tag).unwrap_or_default();
        let expected = if killed_prod[tag as usize] {
            got.iter().max().map_or(0, |m| m + 1)
        } else {
            per_producer
        };
        missing += (0..expected).filter(|s| !got.contains(s)).count();
    }
    let killed_c = killed_cons.iter().filter(|k| **k).count();
    if missing > killed_c {
        return Err(format!(
            "{missing} items lost, but only {killed_c} consumers were killed"
        ));
    }
    Ok(format!(
        "{} items, {} producers and {killed_c} consumers killed, {missing} held by them",
        items.len(),
        killed_prod.iter().filter(|k| **k).count()
    ))
}

/// Joins a process: a killed one must have died of `SIGKILL` or finished; any other must
/// have exited with 0.
fn join(p: &Process, killed: bool, what: &str) -> Result<(), String> {
    match p.join_timeout(CALL_LIMIT) {
        Ok(()) => Ok(()),
        Err(mp_core::ProcessError::Failed { exitcode: -9 }) if killed => Ok(()),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Pool and executor: tasks while workers are killed.

fn work(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(x % 7));
    x * x + 1
}

fn check_task(x: u64, r: Result<u64, TaskError>, died: &mut usize) -> Result<(), String> {
    match r {
        Ok(v) if v == work_value(x) => Ok(()),
        Ok(v) => Err(format!("task {x} gave {v}")),
        Err(TaskError::WorkerDied { .. }) => {
            *died += 1;
            Ok(())
        }
        Err(e) => Err(format!("task {x}: {e}")),
    }
}

fn work_value(x: u64) -> u64 {
    x * x + 1
}

fn kill_pid(pid: u32) {
    // SAFETY: SIGKILL to a worker of ours; a pid that already went away makes it fail.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
}

fn pool_round(ctx: &Context, rng: &mut Rng) -> Result<String, String> {
    let pool = Pool::builder()
        .processes(rng.range(2, 3) as usize)
        .context(*ctx)
        .build()
        .map_err(|e| format!("Pool: {e}"))?;
    let n = rng.range(30, 80);
    let results: Vec<_> = (0..n)
        .map(|x| pool.apply_async(work, x).map(|r| (x, r)))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("apply_async: {e}"))?;
    let kills = rng.range(1, 2) as usize;
    for _ in 0..kills {
        rng.sleep_up_to(100);
        let pids = pool.worker_pids();
        kill_pid(rng.pick(&pids));
    }
    let mut died = 0;
    for (x, r) in results {
        check_task(x, r.get_timeout(CALL_LIMIT), &mut died)?;
    }
    if died > kills {
        return Err(format!("{died} tasks failed for {kills} killed workers"));
    }
    // The pool replaced its workers and goes on.
    let v = pool
        .map(work, 0..16u64)
        .map_err(|e| format!("map after the kills: {e}"))?;
    if v != (0..16).map(work_value).collect::<Vec<_>>() {
        return Err("map after the kills gave wrong results".into());
    }
    pool.close();
    pool.join().map_err(|e| format!("join: {e}"))?;
    Ok(format!(
        "{n} tasks, {kills} workers killed, {died} tasks failed"
    ))
}

fn executor_round(ctx: &Context, rng: &mut Rng) -> Result<String, String> {
    let ex = ProcessPoolExecutor::builder()
        .max_workers(rng.range(2, 3) as usize)
        .context(*ctx)
        .build()
        .map_err(|e| format!("executor: {e}"))?;
    let n = rng.range(30, 80);
    let futures: Vec<_> = (0..n)
        .map(|x| ex.submit(work, x).map(|f| (x, f)))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("submit: {e}"))?;
    let kills = rng.range(1, 2) as usize;
    let mut done_kills = 0;
    for _ in 0..kills {
        rng.sleep_up_to(100);
        let pids = ex.worker_pids();
        if !pids.is_empty() {
            kill_pid(rng.pick(&pids));
            done_kills += 1;
        }
    }
    let mut died = 0;
    for (x, f) in futures {
        check_task(x, f.result_timeout(CALL_LIMIT), &mut died)?;
    }
    if died > done_kills {
        return Err(format!(
            "{died} tasks failed for {done_kills} killed workers"
        ));
    }
    let f = ex.submit(work, 12).map_err(|e| format!("submit: {e}"))?;
    if f.result_timeout(CALL_LIMIT) != Ok(work_value(12)) {
        return Err("a task after the kills failed".into());
    }
    ex.shutdown(true, false);
    Ok(format!(
        "{n} tasks, {done_kills} workers killed, {died} tasks failed"
    ))
}

// ---------------------------------------------------------------------------------------------
// Manager: clients appending while some are killed.

fn client(arg: (ListProxy<(u32, u32)>, u32, u32)) {
    let (list, tag, n) = arg;
    for seq in 0..n {
        if let Err(e) = list.append(&(tag, seq)) {
            eprintln!("client {tag}: append failed: {e}");
            std::process::exit(3);
        }
    }
}

fn manager_round(ctx: &Context, rng: &mut Rng) -> Result<String, String> {
    let mut m = Manager::builder::<Builtins>()
        .context(*ctx)
        .start()
        .map_err(|e| format!("Manager: {e}"))?;
    let list: ListProxy<(u32, u32)> = m.list(&[]).map_err(|e| format!("list: {e}"))?;
    let clients = rng.range(2, 4) as u32;
    let n = rng.range(20, 120) as u32;
    let mut procs: Vec<Process> = (0..clients)
        .map(|tag| ctx.process(client, (list.clone(), tag, n)))
        .collect();
    for p in &mut procs {
        p.start().map_err(|e| format!("start: {e}"))?;
    }
    let mut killed = vec![false; procs.len()];
    for _ in 0..rng.range(1, 2) {
        rng.sleep_up_to(200);
        let i = rng.range(0, procs.len() as u64 - 1) as usize;
        procs[i].kill().map_err(|e| format!("kill: {e}"))?;
        killed[i] = true;
    }
    for (i, p) in procs.iter().enumerate() {
        join(p, killed[i], "client")?;
    }
    let items = list.to_vec().map_err(|e| format!("to_vec: {e}"))?;
    let mut next = vec![0u32; clients as usize];
    for (tag, seq) in &items {
        let want = next
            .get_mut(*tag as usize)
            .ok_or(format!("torn entry ({tag}, {seq})"))?;
        if *seq != *want {
            return Err(format!(
                "client {tag}: entry {seq} where {want} was due (duplicate or lost)"
            ));
        }
        *want += 1;
    }
    for (tag, got) in next.iter().enumerate() {
        if !killed[tag] && *got != n {
            return Err(format!("client {tag} appended {n}, the list has {got}"));
        }
    }
    // The server still serves.
    list.append(&(u32::MAX, 0))
        .map_err(|e| format!("append after the kills: {e}"))?;
    if list.len().map_err(|e| e.to_string())? != items.len() + 1 {
        return Err("the list's length is wrong".into());
    }
    m.shutdown().map_err(|e| format!("shutdown: {e}"))?;
    Ok(format!(
        "{} entries, {} clients killed",
        items.len(),
        killed.iter().filter(|k| **k).count()
    ))
}

// ---------------------------------------------------------------------------------------------
// Lock: counters kept consistent under a lock whose holders are killed.

/// A segment name unique to this run, round and child.
fn shm_name(run: u32, round: u64, idx: usize) -> String {
    format!("mpchaos_{run}_{round}_{idx}")
}

fn locker(arg: (Array<u64>, usize, u32, String)) {
    let (arr, idx, n, name) = arg;
    // A named segment that only the resource tracker removes if this process is killed.
    let seg = SharedMemory::create_named(&name, 4096).unwrap_or_else(|e| {
        eprintln!("locker {idx}: create_named: {e}");
        std::process::exit(3)
    });
    let last = arr.len() - 1;
    for _ in 0..n {
        let mut g = match arr.lock() {
            Ok(g) => g,
            Err(died) => {
                // The holder died between its two writes, or not: recount.
                let mut g = died.into_inner();
                g[last] = g[..last].iter().sum();
                g
            }
        };
        if g[last] != g[..last].iter().sum::<u64>() {
            eprintln!("locker {idx}: two holders at once: {:?}", &g[..]);
            std::process::exit(4);
        }
        g[idx] += 1;
        std::thread::yield_now();
        g[last] += 1;
    }
    let _ = seg.unlink();
}

fn lock_round(ctx: &Context, rng: &mut Rng, round: u64) -> Result<String, String> {
    let children = rng.range(2, 4) as usize;
    let n = rng.range(200, 2000) as u32;
    let arr = Array::<u64>::zeroed(children + 1).map_err(|e| format!("Array: {e}"))?;
    let run = std::process::id();
    let mut procs: Vec<Process> = (0..children)
        .map(|i| ctx.process(locker, (arr.clone(), i, n, shm_name(run, round, i))))
        .collect();
    for p in &mut procs {
        p.start().map_err(|e| format!("start: {e}"))?;
    }
    let mut killed = vec![false; children];
    for _ in 0..rng.range(1, 2) {
        rng.sleep_up_to(100);
        let i = rng.range(0, children as u64 - 1) as usize;
        procs[i].kill().map_err(|e| format!("kill: {e}"))?;
        killed[i] = true;
    }
    for (i, p) in procs.iter().enumerate() {
        join(p, killed[i], "locker")?;
    }
    let g = match arr.lock() {
        Ok(g) => g,
        Err(died) => {
            let mut g = died.into_inner();
            let last = g.len() - 1;
            g[last] = g[..last].iter().sum();
            g
        }
    };
    let last = g.len() - 1;
    if g[last] != g[..last].iter().sum::<u64>() {
        return Err(format!("counters disagree: {:?}", &g[..]));
    }
    for i in 0..children {
        if !killed[i] && g[i] != n as u64 {
            return Err(format!("locker {i} counted {} of {n}", g[i]));
        }
    }
    Ok(format!(
        "{} increments, {} holders killed",
        g[last],
        killed.iter().filter(|k| **k).count()
    ))
}

// ---------------------------------------------------------------------------------------------
// Resources and the run.

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn fd_list() -> Vec<String> {
    let Ok(d) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    d.flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            format!(
                "{} -> {}",
                e.file_name().to_string_lossy(),
                target.display()
            )
        })
        .collect()
}

/// `/dev/shm` entries of this run.
fn shm_left() -> Vec<String> {
    let prefix = format!("mpchaos_{}_", std::process::id());
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `cond` for up to ten seconds (reaping and the resource tracker work in the
/// background).
fn settles(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

const WORKLOADS: &[&str] = &["queue", "pool", "executor", "manager", "lock"];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut seconds = 60u64;
    let mut seed = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().and_then(|v| v.parse::<u64>().ok());
        match a.as_str() {
            "--seconds" => seconds = value().expect("--seconds <n>"),
            "--seed" => seed = Some(value().expect("--seed <n>")),
            other => {
                eprintln!("usage: mp-chaos --seconds <s> [--seed <n>] (unknown {other:?})");
                std::process::exit(2);
            }
        }
    }
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!("chaos: seed {seed} ({seconds} s); reproduce the choices with --seed {seed}");
    let mut rng = Rng(seed);

    // The watchdog: a round that outlives ROUND_LIMIT is a hang.
    let round_started = Arc::new(AtomicU64::new(0));
    let epoch = Instant::now();
    {
        let started = round_started.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            let s = started.load(Ordering::Relaxed);
            if s != 0 && epoch.elapsed().as_secs().saturating_sub(s) > ROUND_LIMIT.as_secs() {
                eprintln!("chaos: FAILED: a round hung for over {ROUND_LIMIT:?} (seed {seed})");
                // SAFETY: ends this process at once, without exit hooks that could wait on
                // the very children that hang.
                unsafe { libc::_exit(3) };
            }
        });
    }

    let methods: Vec<Context> = get_all_start_methods()
        .into_iter()
        .map(|m| get_context(m).expect("a listed start method"))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let cycle = WORKLOADS.len() * methods.len();
    let fds_at_start = fd_count();
    let mut fd_baseline = None;
    let mut round = 0u64;
    let mut failures = 0;
    let mut per_kind: BTreeMap<&str, usize> = BTreeMap::new();
    // The first cycle runs every (workload, method) once whatever the time; then random
    // ones until the time is up.
    while (round as usize) < cycle || Instant::now() < deadline {
        let (kind, ctx) = if (round as usize) < cycle {
            (
                WORKLOADS[round as usize % WORKLOADS.len()],
                &methods[round as usize / WORKLOADS.len()],
            )
        } else {
            (
                rng.pick(WORKLOADS),
                &methods[rng.range(0, methods.len() as u64 - 1) as usize],
            )
        };
        round += 1;
        round_started.store(epoch.elapsed().as_secs().max(1), Ordering::Relaxed);
        let t = Instant::now();
        let r = match kind {
            "queue" => queue_round(ctx, &mut rng),
            "pool" => pool_round(ctx, &mut rng),
            "executor" => executor_round(ctx, &mut rng),
            "manager" => manager_round(ctx, &mut rng),
            _ => lock_round(ctx, &mut rng, round),
        };
        round_started.store(0, Ordering::Relaxed);
        let what = format!("round {round}: {kind:<8} {:?}", ctx.start_method());
        match r {
            Ok(summary) => {
                println!("chaos: {what:<32} ok   {summary} ({:.1?})", t.elapsed());
                *per_kind.entry(kind).or_default() += 1;
            }
            Err(e) => {
                println!("chaos: {what:<32} FAILED: {e}");
                failures += 1;
            }
        }
        if round as usize == cycle {
            // Everything started lazily (fork server, resource tracker) exists by now; what
            // the rounds' children held is given back once they are reaped.
            std::thread::sleep(Duration::from_secs(1));
            fd_baseline = Some(fd_count());
        } else if let Some(base) = fd_baseline {
            if !settles(|| fd_count() <= base) {
                println!(
                    "chaos: {what}: FAILED: {} descriptors open, {base} after the first cycle:\n  {}",
                    fd_count(),
                    fd_list().join("\n  ")
                );
                failures += 1;
                fd_baseline = Some(fd_count());
            }
        }
    }
    if !settles(|| shm_left().is_empty()) {
        println!("chaos: FAILED: /dev/shm entries left: {:?}", shm_left());
        failures += 1;
    }
    let total: usize = per_kind.values().sum();
    println!(
        "chaos: {round} rounds in {:.0?} ({per_kind:?}); descriptors {fds_at_start} at start, {:?} after the first cycle, {} at the end",
        epoch.elapsed(),
        fd_baseline,
        fd_count()
    );
    // The closing line in the form CI reads.
    println!("chaos: {total} passed, {failures} failed");
    if failures > 0 {
        println!("chaos: reproduce the choices with --seed {seed}");
        std::process::exit(1);
    }
}
