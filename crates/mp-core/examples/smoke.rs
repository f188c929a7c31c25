use mp_core::*;
use std::time::Duration;

fn greet(conn: Connection<String>) {
    let name = conn.recv().unwrap();
    conn.send(&format!("hello, {name} from {}", current_process().name))
        .unwrap();
}

fn boom(_: ()) {
    panic!("boom in child");
}

fn main() {
    for m in get_all_start_methods() {
        let ctx = get_context(m).unwrap();
        let t = std::time::Instant::now();
        let (a, b) = pipe::<String>().unwrap();
        let mut p = ctx.process(greet, b);
        p.start().unwrap();
        a.send(&"bob".into()).unwrap();
        println!("{m:?}: {}", a.recv_timeout(Duration::from_secs(5)).unwrap());
        p.join().unwrap();
        println!("  exit {:?} in {:?}", p.exitcode(), t.elapsed());
        let mut q = ctx.process(boom, ());
        q.start().unwrap();
        match q.join() {
            Err(e) => println!("  panic: {e}"),
            Ok(()) => println!("  no panic??"),
        }
    }
}
