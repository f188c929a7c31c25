//! Twin of "Sharing state between processes: Shared memory" in Python's `multiprocessing`
//! documentation:
//!
//! ```python
//! from multiprocessing import Process, Value, Array
//!
//! def f(n, a):
//!     n.value = 3.1415927
//!     for i in range(len(a)):
//!         a[i] = -a[i]
//!
//! if __name__ == '__main__':
//!     num = Value('d', 0.0)
//!     arr = Array('i', range(10))
//!
//!     p = Process(target=f, args=(num, arr))
//!     p.start()
//!     p.join()
//!
//!     print(num.value)
//!     print(arr[:])
//! ```
//!
//! The typecodes become Rust types: `'d'` is `f64`, `'i'` is `i32`.
//!
//! Run with `cargo run -p mp-core --example py_shared_value`.

use mp_core::{Array, Process, RawValue, Value};

/// The value Python's example writes: pi to 7 decimals.
#[allow(clippy::approx_constant)]
const PI_7: f64 = 3.1415927;

fn f((n, a): (Value<f64>, Array<i32>)) {
    n.set(PI_7);
    // One lock acquisition for the whole loop (Python takes it per element).
    let mut a = a.lock().expect("lock");
    for x in a.iter_mut() {
        *x = -*x;
    }
}

fn main() {
    mp_core::main();

    let num = Value::new(0.0f64).expect("value");
    let arr = Array::from_slice(&(0..10).collect::<Vec<i32>>()).expect("array");

    let mut p = Process::new(f, (num.clone(), arr.clone()));
    p.start().expect("start");
    p.join().expect("join");

    println!("{}", num.get());
    println!("{:?}", arr.to_vec());
    assert_eq!(num.get(), PI_7);
    assert_eq!(arr.to_vec(), [0, -1, -2, -3, -4, -5, -6, -7, -8, -9]);

    // A read-modify-write holds the lock for its whole duration.
    *num.lock().expect("lock") += 1.0;
    // RawValue: no lock at all (Python's RawValue / Value(lock=False)).
    let raw = RawValue::new(7u64).expect("raw value");
    raw.set(raw.get() * 6);
    println!("num + 1 = {}, raw = {}", num.get(), raw.get());
}
