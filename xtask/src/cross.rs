//! Cross builds with Debian's Rust toolchain: `rustc-web` and `cargo-web` (installed as
//! `/usr/bin/rustc` and `/usr/bin/cargo`) build any target's standard library from the
//! sources of `rust-web-src` (`-Zbuild-std`, which `RUSTC_BOOTSTRAP=1` allows on a stable
//! compiler). No rustup target and no SDK is needed for `cargo check`; running needs the
//! target's linker and OS (Wine for Windows: `test-windows`).
//!
//! Used by `check-targets` and `test-windows`; this is the one place such a cargo command is
//! put together.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{metadata, root, run_cmd};

/// The Debian packages of the cross toolchain.
pub const PACKAGES: &[&str] = &["rustc-web", "cargo-web", "rust-web-src"];

/// Installs those of `packages` that are missing (`apt-get`, as root, serialized with other
/// installs by `flock /tmp/apt.lock`), or fails saying what to install.
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg")
                .args(["-s", p])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let root_user = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if !root_user || Command::new("apt-get").arg("--version").output().is_err() {
        bail!(
            "missing Debian packages {missing:?}; install them with\n  apt-get install -y {}",
            missing.join(" ")
        );
    }
    let apt = |args: &[&str]| {
        let mut c = Command::new("flock");
        c.args(["/tmp/apt.lock", "apt-get"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    run_cmd(apt(&["update", "-q"]))?;
    let mut install = apt(&["install", "-y", "-q"]);
    install.args(&missing);
    run_cmd(install)
}

/// The directory of cross builds named `name` (one per target and purpose, so that each
/// stays incremental): `<workspace target dir>/<name>`.
pub fn target_dir(name: &str) -> Result<PathBuf> {
    let meta = metadata()?;
    let base = meta
        .get("target_directory")
        .and_then(crate::json::Json::as_str)
        .context("cargo metadata has no target_directory")?;
    Ok(PathBuf::from(base).join(name))
}

/// `cargo <sub> -Zbuild-std=std,panic_abort,test --target <target>` with Debian's toolchain,
/// building into [`target_dir`]`(dir)`. Add the package, feature and target selection.
pub fn cargo(sub: &str, target: &str, dir: &str) -> Result<Command> {
    let mut c = Command::new("/usr/bin/cargo");
    c.current_dir(root())
        .env("RUSTC", "/usr/bin/rustc")
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", target_dir(dir)?)
        // A wrapper or flags meant for the host toolchain do not apply here.
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTFLAGS")
        .args([sub, "-Zbuild-std=std,panic_abort,test", "--target", target]);
    Ok(c)
}
