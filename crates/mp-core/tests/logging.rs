//! Logging over the `log` facade (issue #16, item 4): mp's records and `Logger`'s reach the
//! program's logger with the process name; children's records reach the parent when it
//! asks (`forward_child_logs`), under every start method, and are in when `join` returns.
//!
//! The logger is global to this test binary, so everything runs in one test.

mod common;

use std::sync::Mutex;

use log::kv::Key;
use mp_core::logging::{forward_child_logs, get_logger, LevelFilter};
use mp_core::{Context, Process};

#[derive(Debug, Clone)]
struct Rec {
    level: log::Level,
    target: String,
    message: String,
    process_name: Option<String>,
    pid: Option<String>,
}

struct Capture(Mutex<Vec<Rec>>);

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        let kv = r.key_values();
        self.0.lock().unwrap().push(Rec {
            level: r.level(),
            target: r.target().to_string(),
            message: r.args().to_string(),
            process_name: kv.get(Key::from_str("process_name")).map(|v| v.to_string()),
            pid: kv.get(Key::from_str("pid")).map(|v| v.to_string()),
        });
    }
    fn flush(&self) {}
}

fn find(message: &str) -> Option<Rec> {
    CAPTURE
        .0
        .lock()
        .unwrap()
        .iter()
        .find(|r| r.message.contains(message))
        .cloned()
}

fn child_logs(tag: String) {
    log::warn!("child's own log::warn! {tag}");
    get_logger().info(format!("child's Logger::info {tag}"));
    get_logger().debug(format!("below the level {tag}"));
}

fn parent_of_grandchild(tag: String) {
    let mut p = Process::new(child_logs, format!("{tag}-grandchild"));
    p.start().unwrap();
    p.join().unwrap();
}

#[test]
fn records_reach_the_facade_and_children_forward_theirs() {
    log::set_logger(&CAPTURE).unwrap();
    log::set_max_level(LevelFilter::Trace);

    // This process's records: Logger's and mp's own, with the process name and pid.
    get_logger().info("hello from the parent");
    let r = find("hello from the parent").expect("the record reached the logger");
    assert_eq!(r.level, log::Level::Info);
    assert_eq!(r.target, "mp_core");
    assert_eq!(r.process_name.as_deref(), Some("MainProcess"));
    assert_eq!(r.pid, Some(std::process::id().to_string()));

    // Nothing is gathered yet: a spawned child's records go nowhere (it has no logger).
    let mut quiet = Process::new(child_logs, "quiet".to_string());
    quiet.start().unwrap();
    quiet.join().unwrap();
    let started =
        find(&format!("started {}", quiet.name().unwrap())).expect("mp's own record of the start");
    assert_eq!(started.target, "mp_core::process");
    assert!(find("quiet").is_none_or(|r| r.message.starts_with("started")));

    forward_child_logs(Some(LevelFilter::Info));
    assert_eq!(get_logger().level(), LevelFilter::Info);
    common::for_each_context(60, |ctx: Context| {
        let tag = format!("{:?}", ctx.start_method());
        let mut p = ctx.process(child_logs, tag.clone());
        p.start().unwrap();
        p.join().unwrap();
        let name = p.name().unwrap().to_string();
        let pid = p.pid().unwrap().to_string();
        // In as soon as join returns.
        let r = find(&format!("child's Logger::info {tag}")).expect("forwarded");
        assert_eq!(r.process_name.as_deref(), Some(name.as_str()));
        assert_eq!(r.pid.as_deref(), Some(pid.as_str()));
        assert!(
            find(&format!("below the level {tag}")).is_none(),
            "level inherited"
        );
        let exit = CAPTURE.0.lock().unwrap().iter().any(|r| {
            r.message.contains("process exiting with exitcode 0")
                && r.pid.as_deref() == Some(pid.as_str())
        });
        assert!(exit, "mp's own records of the child");
        if ctx.start_method() != mp_core::StartMethod::Fork {
            // A spawned child's own `log::` records go through its forwarding logger; a
            // forked one keeps the logger it inherited (documented).
            let r = find(&format!("child's own log::warn! {tag}")).expect("forwarded");
            assert_eq!(r.level, log::Level::Warn);
            assert_eq!(r.target, module_path!());
            assert_eq!(r.process_name.as_deref(), Some(name.as_str()));
        }
    });

    // A grandchild's records come up through its parent, with its own name.
    let mut p = Process::new(parent_of_grandchild, "relay".to_string());
    p.start().unwrap();
    p.join().unwrap();
    let r = find("child's Logger::info relay-grandchild").expect("forwarded twice");
    let name = r.process_name.unwrap();
    assert!(
        name.starts_with(p.name().unwrap()) && name.contains(':'),
        "a grandchild's name, got {name}"
    );
    get_logger().set_level(LevelFilter::Trace);
    if std::env::var_os("MP_TEST_SHOW_LOGS").is_some() {
        for r in CAPTURE.0.lock().unwrap().iter() {
            eprintln!("{r:?}");
        }
    }
}
