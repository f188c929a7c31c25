//! Chooses the Unix flavour this crate compiles for: the one place where that is decided.
//!
//! Every OS primitive of mp on Unix (process-shared wait/wake, anonymous memory, the child
//! exit watch, close-on-exec, the parent-death signal) has one implementation per flavour,
//! selected with `#[cfg(mp_os = "...")]`:
//!
//! | `mp_os`   | when                                            |
//! |-----------|-------------------------------------------------|
//! | `linux`   | Linux and Android                               |
//! | `apple`   | macOS                                           |
//! | `freebsd` | FreeBSD                                         |
//! | `generic` | any other Unix, or any Unix with the `posix-generic` feature |
//!
//! `generic` uses POSIX calls only, so the feature `posix-generic` runs those code paths on
//! Linux, where the test suite runs.

fn main() {
    println!(
        "cargo::rustc-check-cfg=cfg(mp_os, values(\"linux\", \"apple\", \"freebsd\", \"generic\"))"
    );
    println!("cargo::rerun-if-changed=build.rs");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let flavour = if std::env::var_os("CARGO_FEATURE_POSIX_GENERIC").is_some() {
        "generic"
    } else {
        match var("CARGO_CFG_TARGET_OS").as_str() {
            "linux" | "android" => "linux",
            "macos" => "apple",
            "freebsd" => "freebsd",
            _ => "generic",
        }
    };
    println!("cargo::rustc-cfg=mp_os=\"{flavour}\"");
}
