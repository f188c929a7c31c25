//! Value and Array behaviours (SHV-* of the CPython checklist) across real processes.

mod common;

use common::for_each_context;
use mp_core::{Array, Context, RawArray, RawValue, SharedData, Value};

type Scalars = (Value<i32>, Value<f64>, Value<i16>, Value<i64>, Value<u8>);
type RawScalars = (
    RawValue<i32>,
    RawValue<f64>,
    RawValue<i16>,
    RawValue<i64>,
    RawValue<u8>,
);

fn write_scalars(v: Scalars) {
    v.0.set(24234);
    v.1.set(-4.25);
    v.2.set(234);
    v.3.set(1 << 34);
    v.4.set(b'y');
}

fn write_raw_scalars(v: RawScalars) {
    v.0.set(24234);
    v.1.set(-4.25);
    v.2.set(234);
    v.3.set(1 << 34);
    v.4.set(b'y');
}

#[test]
fn shv_01_values_and_raw_values_written_by_a_child() {
    for_each_context(30, |ctx: Context| {
        let v: Scalars = (
            Value::new(4343).unwrap(),
            Value::new(3.625).unwrap(),
            Value::new(-232).unwrap(),
            Value::new(1 << 33).unwrap(),
            Value::new(b'x').unwrap(),
        );
        assert_eq!(
            (v.0.get(), v.1.get(), v.2.get(), v.3.get(), v.4.get()),
            (4343, 3.625, -232, 1 << 33, b'x')
        );
        let mut p = ctx.process(write_scalars, v.clone());
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(
            (v.0.get(), v.1.get(), v.2.get(), v.3.get(), v.4.get()),
            (24234, -4.25, 234, 1 << 34, b'y')
        );

        let r: RawScalars = (
            RawValue::new(4343).unwrap(),
            RawValue::new(3.625).unwrap(),
            RawValue::new(-232).unwrap(),
            RawValue::new(1 << 33).unwrap(),
            RawValue::new(b'x').unwrap(),
        );
        let mut p = ctx.process(write_raw_scalars, r.clone());
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(
            (r.0.get(), r.1.get(), r.2.get(), r.3.get(), r.4.get()),
            (24234, -4.25, 234, 1 << 34, b'y')
        );
    });
}

fn running_sums(a: Array<i64>) {
    let mut s = a.lock().unwrap();
    for i in 1..s.len() {
        s[i] += s[i - 1];
    }
}

fn raw_running_sums(a: RawArray<i64>) {
    for i in 1..a.len() {
        a.set(i, a.get(i).unwrap() + a.get(i - 1).unwrap());
    }
}

#[test]
fn shv_02_lock_accessors() {
    let lock = mp_core::Lock::new().unwrap();
    let a = Value::with_lock(1u32, lock.clone()).unwrap();
    let b = Array::from_slice_with_lock(&[1u32, 2], lock.clone()).unwrap();
    let _g = a.get_lock().acquire().unwrap();
    assert!(lock.is_locked() && b.get_lock().is_locked());
    // get_obj() is the same memory without the lock.
    a.get_obj().set(5);
    b.get_obj().set(1, 7);
    drop(_g);
    assert_eq!((a.get(), b.to_vec()), (5, vec![1, 7]));
}

#[test]
fn shv_03_array_indexing_slicing_and_running_sums_in_a_child() {
    for_each_context(30, |ctx: Context| {
        let seq: Vec<i64> = vec![681, 626, -822, -1, 300, 0, 82, 101, -11, 3];
        let a = Array::from_slice(&seq).unwrap();
        assert_eq!(a.len(), 10);
        {
            let mut s = a.lock().unwrap();
            assert_eq!(s[3], seq[3]);
            assert_eq!(&s[2..7], &seq[2..7]);
            s[4..8].copy_from_slice(&seq[4..8]);
        }
        let mut expect = seq.clone();
        for i in 1..expect.len() {
            expect[i] += expect[i - 1];
        }
        let mut p = ctx.process(running_sums, a.clone());
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(a.to_vec(), expect);

        let r = RawArray::from_slice(&seq).unwrap();
        let mut p = ctx.process(raw_running_sums, r.clone());
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(r.to_vec(), expect);
    });
}

#[test]
fn shv_04_array_from_size_is_zeroed() {
    for _ in 0..3 {
        let a = Array::<i32>::zeroed(10).unwrap();
        assert_eq!(a.to_vec(), vec![0; 10]);
        a.lock()
            .unwrap()
            .copy_from_slice(&(0..10).collect::<Vec<_>>());
        assert_eq!(a.to_vec(), (0..10).collect::<Vec<_>>());
        drop(a);
    }
    assert_eq!(RawArray::<u64>::zeroed(10).unwrap().to_vec(), vec![0; 10]);
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
struct Point {
    x: i32,
    y: f64,
}
// SAFETY: repr(C); i32 and f64 take any bits (padding is never read as data).
unsafe impl SharedData for Point {}

type Doubles = (
    Value<i32>,
    Value<f64>,
    Value<i64>,
    Value<Point>,
    Array<f64>,
    Array<u8>,
);

fn double_all(v: Doubles) {
    let (i, d, l, p, arr, text) = v;
    *i.lock().unwrap() *= 2;
    *d.lock().unwrap() *= 2.0;
    *l.lock().unwrap() *= 2;
    {
        let mut p = p.lock().unwrap();
        p.x *= 2;
        p.y *= 2.0;
    }
    for x in arr.lock().unwrap().iter_mut() {
        *x *= 2.0;
    }
    // A C string: double it in place.
    let mut s = text.lock().unwrap();
    let n = s.iter().position(|&b| b == 0).unwrap();
    s.copy_within(0..n, n);
}

#[test]
fn shv_05_a_child_doubles_scalars_a_struct_and_arrays() {
    for_each_context(30, |ctx: Context| {
        let mut text = [0u8; 20];
        text[..5].copy_from_slice(b"hello");
        let v: Doubles = (
            Value::new(7).unwrap(),
            Value::new(1.0 / 3.0).unwrap(),
            Value::new(1 << 33).unwrap(),
            Value::new(Point { x: 3, y: 2.0 }).unwrap(),
            Array::from_slice(&[0.0, 1.0, 2.0, 3.0, 4.0]).unwrap(),
            Array::from_slice(&text).unwrap(),
        );
        let copy = v.3.get();
        let mut p = ctx.process(double_all, v.clone());
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(v.0.get(), 14);
        assert_eq!(v.1.get(), 2.0 / 3.0);
        assert_eq!(v.2.get(), 1 << 34);
        assert_eq!(v.3.get(), Point { x: 6, y: 4.0 });
        assert_eq!(v.4.to_vec(), vec![0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(&v.5.to_vec()[..11], b"hellohello\0");
        // A copy of a shared struct is independent of later writes.
        assert_eq!(copy, Point { x: 3, y: 2.0 });
    });
}

const INCREMENTS: u64 = 2000;

fn increment(v: Value<u64>) {
    for _ in 0..INCREMENTS {
        *v.lock().unwrap() += 1;
    }
}

#[test]
fn shv_06_n_processes_times_m_locked_increments_lose_nothing() {
    for_each_context(60, |ctx: Context| {
        let v = Value::new(0u64).unwrap();
        let mut ps: Vec<_> = (0..4).map(|_| ctx.process(increment, v.clone())).collect();
        for p in &mut ps {
            p.start().unwrap();
        }
        for p in &ps {
            p.join().unwrap();
        }
        assert_eq!(v.get(), 4 * INCREMENTS);
    });
}

#[test]
fn an_array_travels_inside_a_message() {
    let a = Array::<u8>::zeroed(4).unwrap();
    let (rx, tx) = mp_core::pipe_oneway::<Array<u8>>().unwrap();
    tx.send(&a).unwrap();
    assert_eq!(rx.recv().unwrap().len(), 4);
}

fn bump_under_get_lock(arg: (Value<u32>, mp_core::Event)) {
    let (v, done) = arg;
    let _held = v.get_lock().acquire().unwrap();
    // Python's `with v.get_lock(): v.value += 1`: get and set take the lock again.
    v.set(v.get() + 1);
    done.set();
}

/// Python's default: a `Value` or `Array` made without a lock gets a recursive one, so
/// `get`/`set` while holding `get_lock()` work, in the parent and in a child; the child's
/// lock is the parent's (it waits while the parent holds it).
#[test]
fn value_and_array_locks_are_recursive_by_default() {
    for_each_context(30, |ctx: Context| {
        let v = Value::new(1u32).unwrap();
        assert!(v.get_lock().is_recursive());
        {
            let _held = v.get_lock().acquire().unwrap();
            v.set(v.get() + 1);
        }
        assert_eq!(v.get(), 2);

        let a = Array::from_slice(&[1u8, 2]).unwrap();
        assert!(a.get_lock().is_recursive());
        {
            let _held = a.get_lock().acquire().unwrap();
            a.set(0, a.get(0).unwrap() + 10);
            assert_eq!(a.to_vec(), [11, 2]);
            let mut g = a.lock().unwrap(); // a data guard inside a plain level is fine
            g[1] = 20;
        }
        assert_eq!(a.to_vec(), [11, 20]);

        let done = mp_core::Event::new().unwrap();
        let held = v.get_lock().acquire().unwrap();
        let mut p = ctx.process(bump_under_get_lock, (v.clone(), done.clone()));
        p.start().unwrap();
        // The child cannot have the lock while we hold it.
        assert!(!done.wait_timeout(std::time::Duration::from_millis(200)));
        drop(held);
        assert!(done.wait_timeout(std::time::Duration::from_secs(20)));
        p.join().unwrap();
        assert_eq!(v.get(), 3);
    });
}

/// With a plain lock (Python's `lock=Lock()`), the lock is what was given.
#[test]
fn value_with_a_plain_lock() {
    let lock = mp_core::Lock::new().unwrap();
    let v = Value::with_lock(5i64, lock.clone()).unwrap();
    assert!(!v.get_lock().is_recursive());
    let g = v.lock().unwrap();
    assert!(lock.is_locked());
    drop(g);
    assert_eq!(v.get(), 5);
}

/// A data guard hands out `&mut`: reading the value another way from the same thread while
/// it lives panics (as `RefCell` does) instead of aliasing it, and leaves the lock usable.
#[test]
fn value_guard_is_not_aliased_by_get_set_or_a_second_guard() {
    let v = Value::new(1u16).unwrap();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut g = v.lock().unwrap();
        *g += 1;
        v.get()
    }));
    let msg = *panicked.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("guard"), "{msg}");
    assert!(
        !v.get_lock().is_locked(),
        "the unwinding released every level"
    );
    assert_eq!(v.get(), 2);

    let a = Array::<u8>::zeroed(3).unwrap();
    let second = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _g = a.lock().unwrap();
        let _h = a.lock();
    }));
    assert!(second.is_err());
    let set = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _g = a.lock().unwrap();
        a.set(0, 1);
    }));
    assert!(set.is_err());
    assert!(!a.get_lock().is_locked());
    a.set(0, 1);
    assert_eq!(a.to_vec(), [1, 0, 0]);
}
