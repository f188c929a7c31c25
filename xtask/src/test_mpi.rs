//! `cargo xtask test-mpi`: the MPI pool's tests, on one host and across three hosts.
//!
//! 1. Installs what is missing (Debian packages `libopenmpi-dev openmpi-bin libclang-dev
//!    iproute2`), then builds `mp-mpi`'s tests and example.
//! 2. One host: the test binary alone (every pool spawns its ranks; the failure tests start
//!    their own `mpirun` jobs), under `mpirun -n 1` (spawn mode too), and under
//!    `mpirun --oversubscribe -n 2, 3, 5` (ranks 1.. serve as workers).
//! 3. Three hosts: three network namespaces, each its own network stack, joined by veth links
//!    to a bridge in the first. `mpirun` runs in the first namespace with a hostfile naming
//!    the three addresses, TCP only (`--mca btl tcp,self`, both the MPI traffic and Open
//!    MPI's runtime restricted to the namespaces' subnet), and an agent script in place of
//!    ssh (`--mca plm_rsh_agent`): Open MPI runs `<agent> <host> <orted command>`, and the
//!    agent runs the command inside the namespace that owns that address, with a temporary
//!    directory of that host's own (`TMPDIR`: Open MPI's session directories must not be
//!    shared between hosts). The tests check from inside each worker which namespace it ran
//!    in (`MP_MPI_EXPECT_HOSTS`); the example runs there too. The namespaces are removed
//!    afterwards, also on failure.
//!
//! Open MPI refuses to run as root unless told; CI runs as root, so `--allow-run-as-root` is
//! added to these commands when the effective user is root, never in the library.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{cargo, json, run_cmd, show};

/// One command's time limit: a hang fails the run instead of stalling it.
const LIMIT: &str = "600";
/// The time limit of one run over the three namespace hosts (they take seconds), and how
/// many times a run that hit it is tried (see `Hosts::mpirun`).
const NS_LIMIT: &str = "120";
const NS_TRIES: u32 = 3;

pub fn run(rest: &[String]) -> Result<()> {
    let skip_hosts = rest.iter().any(|a| a == "--no-namespaces");
    ensure_installed()?;
    let (tests, example) = build()?;
    let root_args = if is_root() {
        vec!["--allow-run-as-root".to_string()]
    } else {
        Vec::new()
    };
    let mut failures = Vec::new();
    let mut record = |what: &str, r: Result<()>| {
        if let Err(e) = r {
            eprintln!("xtask: {what} FAILED: {e:#}");
            failures.push(what.to_string());
        }
    };

    eprintln!("\n==== one host, no launcher (spawn mode; failure tests) ====");
    let mut alone = timed(&tests);
    alone
        .args(["--test-threads=1"])
        .env("MP_MPI_FAILURE_TESTS", "1")
        .env("MP_MPI_MPIRUN_ARGS", root_args.join(" "));
    record("alone", run_cmd(alone));

    for n in [1, 2, 3, 5] {
        eprintln!("\n==== one host, mpirun -n {n} ====");
        let mut c = timed(Path::new("mpirun"));
        c.args(&root_args)
            .args(["--oversubscribe", "-n", &n.to_string()]);
        if n > 1 {
            // Shared memory between the ranks of one job; a spawned group (n = 1) reaches
            // its parent over TCP, which Open MPI chooses itself.
            c.args(["--mca", "btl", "self,vader"]);
        }
        c.arg(&tests).arg("--test-threads=1");
        record(&format!("mpirun -n {n}"), run_cmd(c));
    }

    if skip_hosts {
        eprintln!("\n(three-host run skipped: --no-namespaces)");
    } else if !is_root() {
        eprintln!("\n(three-host run skipped: making network namespaces needs root)");
    } else {
        eprintln!("\n==== three hosts (network namespaces, TCP only) ====");
        match Hosts::create() {
            Ok(hosts) => {
                record(
                    "three hosts: tests",
                    hosts.mpirun(&root_args, 4, &tests, &["--test-threads=1"]),
                );
                record(
                    "three hosts: example",
                    hosts.mpirun(&root_args, 4, &example, &[]),
                );
                drop(hosts);
            }
            Err(e) => record("three hosts: setup", Err(e)),
        }
    }

    if failures.is_empty() {
        eprintln!("\ntest-mpi: every run passed");
        Ok(())
    } else {
        bail!("test-mpi: failed: {}", failures.join(", "))
    }
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `timeout LIMIT <program>`: a hung run is killed.
fn timed(program: &Path) -> Command {
    let mut c = Command::new("timeout");
    c.args(["--kill-after=20s", LIMIT]).arg(program);
    c
}

fn have(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Installs the Debian packages the MPI build and tests need, if something is missing.
pub fn ensure_installed() -> Result<()> {
    let libclang = Path::new("/usr/lib/llvm-14/lib").exists()
        || Command::new("sh")
            .args(["-c", "ls /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1"])
            .status()
            .is_ok_and(|s| s.success());
    let missing = !have("mpicc", "--showme:version")
        || !have("mpirun", "--version")
        || !have("ip", "-V")
        || !libclang;
    if !missing {
        return Ok(());
    }
    eprintln!("xtask: installing MPI (libopenmpi-dev openmpi-bin libclang-dev iproute2)");
    let packages = ["libopenmpi-dev", "openmpi-bin", "libclang-dev", "iproute2"];
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "--no-install-recommends"])
        .args(packages);
    install.env("DEBIAN_FRONTEND", "noninteractive");
    if run_cmd(install).is_ok() {
        return Ok(());
    }
    let mut update = Command::new("apt-get");
    update.arg("update");
    run_cmd(update)?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "--no-install-recommends"])
        .args(packages);
    install.env("DEBIAN_FRONTEND", "noninteractive");
    run_cmd(install)
}

/// Builds mp-mpi's test binary and example; returns their paths.
fn build() -> Result<(PathBuf, PathBuf)> {
    let tests = built(
        &["test", "-p", "mp-mpi", "--test", "mpi_pool", "--no-run"],
        "mpi_pool",
    )?;
    let example = built(
        &["build", "-p", "mp-mpi", "--example", "cluster_pool"],
        "cluster_pool",
    )?;
    Ok((tests, example))
}

/// Runs a cargo build command; returns the executable of target `name`.
fn built(args: &[&str], name: &str) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(args)
        .arg("--message-format=json-render-diagnostics");
    eprintln!("$ {}", show(&cmd));
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("could not run {}", show(&cmd)))?;
    if !out.status.success() {
        bail!("{} failed", show(&cmd));
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = json::parse(line) else { continue };
        let Some(exe) = msg.get("executable").and_then(|e| e.as_str()) else {
            continue;
        };
        let target = msg
            .get("target")
            .and_then(|t| t.get("name"))
            .and_then(|n| n.as_str());
        if target == Some(name) {
            return Ok(PathBuf::from(exe));
        }
    }
    bail!("cargo did not report the executable of {name}")
}

/// Three network namespaces joined by veth links to a bridge in the first, with a
/// hostfile and an rsh agent for Open MPI; removed on drop.
pub struct Hosts {
    names: [String; 3],
    addrs: [String; 3],
    subnet: String,
    dir: PathBuf,
}

fn ip(args: &[&str]) -> Result<()> {
    let mut c = Command::new("ip");
    c.args(args);
    run_cmd(c)
}

impl Hosts {
    pub fn create() -> Result<Self> {
        // Unique names, so that a concurrent run does not collide; the addresses live only
        // inside these namespaces.
        let tag = std::process::id();
        let names = ["a", "b", "c"].map(|h| format!("mpi{tag}{h}"));
        let octet = 20 + tag % 200;
        let subnet = format!("10.251.{octet}.0/24");
        let addrs = [1, 2, 3].map(|k| format!("10.251.{octet}.{k}"));
        let dir = std::env::temp_dir().join(format!("mp-test-mpi-{tag}"));
        let hosts = Self {
            names,
            addrs,
            subnet,
            dir,
        };
        hosts.setup().inspect_err(|_| hosts.teardown())?;
        Ok(hosts)
    }

    fn setup(&self) -> Result<()> {
        let [a, b, c] = &self.names;
        for n in &self.names {
            ip(&["netns", "add", n])?;
            ip(&["-n", n, "link", "set", "lo", "up"])?;
        }
        ip(&["-n", a, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            a,
            "addr",
            "add",
            &format!("{}/24", self.addrs[0]),
            "dev",
            "br0",
        ])?;
        ip(&["-n", a, "link", "set", "br0", "up"])?;
        for (k, n) in [(1, b), (2, c)] {
            let near = format!("to{k}");
            ip(&[
                "link", "add", &near, "netns", a, "type", "veth", "peer", "name", "eth0", "netns",
                n,
            ])?;
            ip(&["-n", a, "link", "set", &near, "master", "br0"])?;
            ip(&["-n", a, "link", "set", &near, "up"])?;
            ip(&[
                "-n",
                n,
                "addr",
                "add",
                &format!("{}/24", self.addrs[k]),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", n, "link", "set", "eth0", "up"])?;
        }
        std::fs::create_dir_all(&self.dir)?;
        // Rank 0 and one worker on the first host, one worker on each other host.
        let hostfile = format!(
            "{} slots=2\n{} slots=1\n{} slots=1\n",
            self.addrs[0], self.addrs[1], self.addrs[2]
        );
        std::fs::write(self.dir.join("hostfile"), hostfile)?;
        // Open MPI's rsh launcher runs `<agent> <host> <command>`: run the command inside the
        // namespace that owns the address, as ssh would on that host.
        //
        // Each host gets a temporary directory of its own, as real hosts have. The namespaces
        // share this machine's file system and host name, so without it every daemon makes
        // its session directory under the same `/tmp/ompi.<hostname>.<uid>/jf.<job>/`, all
        // at once; Open MPI's mkdir of that tree is not safe against a concurrent one, and
        // now and then a daemon fails with "mkdir ... File exists" (or crashes writing its
        // topology into the shared directory) before it reports to mpirun. A daemon started
        // with `--daemonize` (what `plm_rsh_no_tree_spawn` adds) has already told the agent
        // it succeeded, so mpirun then waited for it for ever: the three-host hang.
        let mut agent = String::from("#!/bin/sh\nhost=\"$1\"\nshift\ncase \"$host\" in\n");
        for (addr, name) in self.addrs.iter().zip(&self.names) {
            agent.push_str(&format!("  {addr}) ns={name} ;;\n"));
        }
        agent.push_str("  *) echo \"agent: unknown host $host\" >&2; exit 1 ;;\nesac\n");
        let tmp = self.dir.join("tmp");
        for name in &self.names {
            std::fs::create_dir_all(tmp.join(name))?;
        }
        agent.push_str(&format!(
            "TMPDIR='{}'/\"$ns\"\nexport TMPDIR\n",
            tmp.display()
        ));
        agent.push_str("exec ip netns exec \"$ns\" /bin/sh -c \"$*\"\n");
        let agent_path = self.dir.join("agent.sh");
        std::fs::write(&agent_path, agent)?;
        let mut chmod = Command::new("chmod");
        chmod.arg("755").arg(&agent_path);
        run_cmd(chmod)
    }

    /// `mpirun` inside the first namespace over the three hosts.
    ///
    /// A run that hangs is cut after [`NS_LIMIT`], what is left of it is killed, and it is
    /// tried again, at most [`NS_TRIES`] times; each retry is printed. Any other failure
    /// fails at once. (Runs used to hang now and then, one host's daemon missing: daemons
    /// racing to make the same session directory in the shared `/tmp`, see `setup`; each
    /// host has its own `TMPDIR` since, and a daemon that fails to start is reported by
    /// mpirun, as it is no longer started with `--daemonize`. The retry stays as a guard.)
    fn mpirun(&self, root_args: &[String], n: u32, program: &Path, args: &[&str]) -> Result<()> {
        for attempt in 1..=NS_TRIES {
            let mut c = self.mpirun_cmd_within(root_args, n, program, args, NS_LIMIT);
            let line = show(&c);
            eprintln!("$ {line}");
            let status = c
                .status()
                .with_context(|| format!("could not run {line}"))?;
            if status.success() {
                return Ok(());
            }
            // `timeout` exits 124 when it stopped the program (137 if it had to kill it).
            let hung = matches!(status.code(), Some(124) | Some(137));
            if !hung || attempt == NS_TRIES {
                bail!("{line}: {status}");
            }
            eprintln!(
                "xtask: three hosts: mpirun did not finish within {NS_LIMIT} s (a host's \
                 daemon never started?); killing what is left, try {}/{NS_TRIES}",
                attempt + 1
            );
            self.kill_all();
        }
        unreachable!("the last try returns")
    }

    /// The command [`mpirun`](Self::mpirun) runs, with the general time limit.
    pub fn mpirun_cmd(
        &self,
        root_args: &[String],
        n: u32,
        program: &Path,
        args: &[&str],
    ) -> Command {
        self.mpirun_cmd_within(root_args, n, program, args, LIMIT)
    }

    /// [`mpirun_cmd`](Self::mpirun_cmd) cut after `limit` seconds.
    fn mpirun_cmd_within(
        &self,
        root_args: &[String],
        n: u32,
        program: &Path,
        args: &[&str],
        limit: &str,
    ) -> Command {
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &self.names[0],
            "timeout",
            "--kill-after=20s",
            limit,
        ])
        .arg("mpirun")
        .args(root_args)
        .arg("--hostfile")
        .arg(self.dir.join("hostfile"))
        .args(["--mca", "plm_rsh_agent"])
        .arg(self.dir.join("agent.sh"))
        .args(["--mca", "btl", "tcp,self"])
        .args(["--mca", "btl_tcp_if_include", &self.subnet])
        .args(["--mca", "oob_tcp_if_include", &self.subnet])
        .args(["-n", &n.to_string()])
        .arg(program)
        .args(args)
        .env("MP_MPI_EXPECT_HOSTS", self.names.join(","))
        .env("TMPDIR", self.dir.join("tmp").join(&self.names[0]));
        c
    }

    /// Kills whatever runs in the namespaces (a hung run's daemons and ranks).
    fn kill_all(&self) {
        for n in &self.names {
            let pids = Command::new("ip")
                .args(["netns", "pids", n])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for pid in pids.split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
    }

    fn teardown(&self) {
        // Whatever still runs in the namespaces goes with them.
        self.kill_all();
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.teardown();
    }
}
