//! How a task function reaches a worker: a [`FnId`] (see [`crate::fn_id`]) of a trampoline
//! that runs a whole chunk of items, or an initializer.
//!
//! A task function `F` is zero-sized (a `fn` item or a closure that captures nothing), so
//! its behaviour is fixed by its type. For each `(F, A, R)` the compiler makes one
//! [`chunk_trampoline`], which checks the type name before running anything.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::fn_id::{check_type, fn_kind, FnId};
use crate::ChildPanic;

/// Runs one chunk: decodes `count` items from `items`, runs the function on each, appends
/// each outcome (`Result<R, WireError>`, postcard) to `out`. An `Err` fails the whole chunk
/// (wrong function, undecodable argument).
pub(crate) type ChunkFn =
    fn(type_name: &str, items: &[u8], count: u32, out: &mut Vec<u8>) -> Result<(), WireError>;

/// Runs an initializer: decodes its argument and calls it.
pub(crate) type InitFn = fn(type_name: &str, arg: &[u8]) -> Result<(), WireError>;

fn_kind!(
    /// Pool task functions (chunk runners).
    Task,
    crate::fn_id::TAG_TASK,
    ChunkFn
);
fn_kind!(
    /// Pool initializers.
    Init,
    crate::fn_id::TAG_INIT,
    InitFn
);

/// The chunk runner of task function `T` over `A -> R`.
pub(crate) fn task_id<T, A, R>() -> FnId<Task>
where
    T: TaskFn<A, R>,
    A: DeserializeOwned,
    R: Serialize,
{
    FnId::<Task>::new(
        chunk_trampoline::<T, A, R>,
        std::any::type_name::<(T, A, R)>(),
    )
}

/// The initializer runner of `F(A)`.
pub(crate) fn init_id<F, A>() -> FnId<Init>
where
    F: Fn(A) + Copy + Send + 'static,
    A: DeserializeOwned,
{
    FnId::<Init>::new(init_trampoline::<F, A>, std::any::type_name::<(F, A)>())
}

/// A task's failure as it crosses from the worker to the parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum WireError {
    Panicked {
        message: String,
        location: String,
        backtrace: String,
    },
    Encode(String),
    Decode(String),
}

impl From<WireError> for super::TaskError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Panicked {
                message,
                location,
                backtrace,
            } => Self::Panicked(ChildPanic {
                message,
                location,
                backtrace,
            }),
            WireError::Encode(m) => Self::Encode(m),
            WireError::Decode(m) => Self::Decode(m),
        }
    }
}

/// A function a pool can run on one item: implemented by wrappers around zero-sized `fn`
/// items and closures.
pub(crate) trait TaskFn<A, R>: Copy + Send + 'static {
    /// Runs the function on one item.
    fn call_task(self, arg: A) -> R;
}

/// `f(x)`: the wrapper `map`, `apply`, `imap` use.
#[derive(Clone, Copy)]
pub(crate) struct Plain<F>(pub(crate) F);

impl<F, A, R> TaskFn<A, R> for Plain<F>
where
    F: Fn(A) -> R + Copy + Send + 'static,
{
    fn call_task(self, arg: A) -> R {
        (self.0)(arg)
    }
}

/// `f(*args)`: the wrapper `starmap` uses; `Args` is a tuple.
#[derive(Clone, Copy)]
pub(crate) struct Star<F>(pub(crate) F);

/// A function taking the fields of the tuple `Args` as separate arguments (`starmap`).
pub trait StarFn<Args, R>: Copy + Send + 'static {
    /// Calls the function with the tuple spread into arguments.
    fn call_star(self, args: Args) -> R;
}

macro_rules! star_fn {
    ($($t:ident),+) => {
        impl<F, R, $($t),+> StarFn<($($t,)+), R> for F
        where
            F: Fn($($t),+) -> R + Copy + Send + 'static,
        {
            #[allow(non_snake_case)]
            fn call_star(self, ($($t,)+): ($($t,)+)) -> R {
                self($($t),+)
            }
        }
    };
}
star_fn!(A1);
star_fn!(A1, A2);
star_fn!(A1, A2, A3);
star_fn!(A1, A2, A3, A4);
star_fn!(A1, A2, A3, A4, A5);
star_fn!(A1, A2, A3, A4, A5, A6);

impl<F, Args, R> TaskFn<Args, R> for Star<F>
where
    F: StarFn<Args, R>,
{
    fn call_task(self, args: Args) -> R {
        self.0.call_star(args)
    }
}

thread_local! {
    /// Set while a task runs on this thread: the panic hook records instead of printing.
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
    /// The last panic of a task on this thread.
    static LAST_PANIC: RefCell<Option<WireError>> = const { RefCell::new(None) };
}

/// Installs (once per process) a panic hook that records panics of running tasks, with the
/// backtrace, and leaves every other panic to the previous hook.
pub(crate) fn install_task_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        crate::process::panics::chain_panic_hook(|info, next| {
            if !IN_TASK.with(|t| t.get()) {
                return next(info);
            }
            let (message, location, backtrace) = crate::process::child::describe_panic(info);
            LAST_PANIC.with(|p| {
                *p.borrow_mut() = Some(WireError::Panicked {
                    message,
                    location,
                    backtrace,
                })
            });
        });
    });
}

/// Runs `f`, turning a panic into its recorded [`WireError`].
pub(crate) fn run_caught<T>(f: impl FnOnce() -> T) -> Result<T, WireError> {
    IN_TASK.with(|t| t.set(true));
    let r = panic::catch_unwind(AssertUnwindSafe(f));
    IN_TASK.with(|t| t.set(false));
    r.map_err(|payload| {
        LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| WireError::Panicked {
                message: if let Some(s) = payload.downcast_ref::<&str>() {
                    (*s).to_string()
                } else if let Some(s) = payload.downcast_ref::<String>() {
                    s.clone()
                } else {
                    "Box<dyn Any>".to_string()
                },
                location: String::new(),
                backtrace: String::new(),
            })
    })
}

/// `Extend<u8>` over a borrowed vector, for `postcard::to_extend`.
pub(crate) struct Ext<'a>(pub(crate) &'a mut Vec<u8>);

impl Extend<u8> for Ext<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        self.0.extend(iter)
    }
}

impl<'b> Extend<&'b u8> for Ext<'_> {
    fn extend<I: IntoIterator<Item = &'b u8>>(&mut self, iter: I) {
        self.0.extend(iter)
    }
}

/// Appends `value` to `out`; on failure `out` is left as it was.
pub(crate) fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let start = out.len();
    match postcard::to_extend(value, Ext(out)) {
        Ok(_) => Ok(()),
        Err(e) => {
            out.truncate(start);
            Err(crate::handles::explain(&e))
        }
    }
}

fn type_check(asked: &str, found: &'static str) -> Result<(), WireError> {
    check_type(asked, found).map_err(|m| WireError::Decode(format!("task {m}")))
}

fn chunk_trampoline<T, A, R>(
    type_name: &str,
    mut items: &[u8],
    count: u32,
    out: &mut Vec<u8>,
) -> Result<(), WireError>
where
    T: TaskFn<A, R>,
    A: DeserializeOwned,
    R: Serialize,
{
    type_check(type_name, std::any::type_name::<(T, A, R)>())?;
    const { assert!(std::mem::size_of::<T>() == 0) };
    // SAFETY: T is zero-sized (checked at compile time): it has exactly one value and no
    // bytes, so conjuring it re-creates the caller's fn item or capture-free closure.
    let f: T = unsafe { std::mem::zeroed() };
    for _ in 0..count {
        let (arg, rest) = crate::codec::take::<A>(items)
            .map_err(|e| WireError::Decode(format!("cannot decode a task argument: {e}")))?;
        items = rest;
        match run_caught(move || f.call_task(arg)) {
            Ok(value) => {
                if let Err(e) = encode_into(&Ok::<&R, WireError>(&value), out) {
                    let err = WireError::Encode(format!(
                        "cannot encode the result of type {}: {e}",
                        std::any::type_name::<R>()
                    ));
                    encode_into(&Err::<(), _>(err), out).map_err(WireError::Encode)?;
                }
                // A panicking Drop of the result is the task's business, not the worker's.
                let _ = run_caught(move || drop(value));
            }
            Err(e) => encode_into(&Err::<(), _>(e), out).map_err(WireError::Encode)?,
        }
    }
    Ok(())
}

fn init_trampoline<F, A>(type_name: &str, arg: &[u8]) -> Result<(), WireError>
where
    F: Fn(A) + Copy + Send + 'static,
    A: DeserializeOwned,
{
    type_check(type_name, std::any::type_name::<(F, A)>())?;
    const { assert!(std::mem::size_of::<F>() == 0) };
    let arg: A = crate::codec::decode(arg)
        .map_err(|e| WireError::Decode(format!("cannot decode the initializer argument: {e}")))?;
    // SAFETY: as in `chunk_trampoline`.
    let f: F = unsafe { std::mem::zeroed() };
    run_caught(move || f(arg))
}
