//! What a process runs, and how a spawned child finds the same function in its own copy of
//! the binary.
//!
//! A target `F` is a `fn` item or a non-capturing closure, so `F` is a zero-sized type whose
//! behaviour is fixed by its type alone. For each `(F, A)` the compiler makes one
//! [`trampoline`] that decodes an `A`, conjures the zero-sized `F` and calls it. The parent
//! sends the trampoline's address as an offset from [`anchor`], a function in this crate;
//! since the child runs the very same executable, `anchor + offset` is the same trampoline
//! there, whatever address-space layout randomisation did. The type name travels too and is
//! checked by the trampoline before it decodes anything.

use mp_ipc::handle::{OwnedHandle, RawHandle};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ProcessError;

/// The signature every trampoline has: decode the argument (with its handles) and run.
pub(crate) type EntryFn = fn(&EntryId, &[u8], Vec<OwnedHandle>) -> Result<(), String>;

/// Identifies a trampoline across processes of the same executable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EntryId {
    offset: i64,
    type_name: String,
}

/// The fixed point offsets are measured from.
#[inline(never)]
fn anchor() {}

/// Decodes the argument of `F` and calls it.
fn trampoline<F, A>(id: &EntryId, args: &[u8], handles: Vec<OwnedHandle>) -> Result<(), String>
where
    F: Fn(A) + Copy + Send + 'static,
    A: DeserializeOwned,
{
    if id.type_name != std::any::type_name::<(F, A)>() {
        return Err(format!(
            "target mismatch: asked for {}, found {}",
            id.type_name,
            std::any::type_name::<(F, A)>()
        ));
    }
    let args: A = crate::handles::decode_with_handles(args, handles)
        .map_err(|e| format!("cannot decode the argument: {e}"))?;
    const { assert!(std::mem::size_of::<F>() == 0) };
    // SAFETY: F is zero-sized (checked at compile time), so it has exactly one value and no
    // bytes to initialise; conjuring it is how a capture-free closure is re-created.
    let f: F = unsafe { std::mem::zeroed() };
    f(args);
    Ok(())
}

impl EntryId {
    /// The identity of the trampoline for `(F, A)`.
    pub(crate) fn of<F, A>() -> Self
    where
        F: Fn(A) + Copy + Send + 'static,
        A: DeserializeOwned,
    {
        let entry: EntryFn = trampoline::<F, A>;
        Self {
            offset: entry as *const () as usize as i64 - anchor as *const () as usize as i64,
            type_name: std::any::type_name::<(F, A)>().to_string(),
        }
    }

    /// The trampoline in this process.
    ///
    /// # Safety
    /// `self` must come from [`EntryId::of`] in a process running the same executable.
    pub(crate) unsafe fn resolve(&self) -> EntryFn {
        let address = (anchor as *const () as usize as i64).wrapping_add(self.offset) as usize;
        // SAFETY: per the contract, `address` is a trampoline of this executable.
        unsafe { std::mem::transmute::<usize, EntryFn>(address) }
    }
}

/// An argument serialized for a child, with the raw handles of the connections inside it.
pub(crate) struct Encoded {
    pub(crate) entry: EntryId,
    pub(crate) bytes: Vec<u8>,
    pub(crate) handles: Vec<RawHandle>,
}

/// A target with its argument, waiting to be started.
pub(crate) trait Task: Send {
    /// The argument serialized for a spawned or fork-server child.
    fn encode(&self) -> Result<Encoded, ProcessError>;
    /// Runs the target right here (in a forked child).
    fn run(self: Box<Self>);
    /// The handles the argument holds, if they can be known (not for closures).
    fn handles(&self) -> Option<Vec<RawHandle>> {
        crate::shared::encode_unsent(|| self.encode())
            .ok()
            .map(|e| e.handles)
    }
}

/// A `fn` target and its argument: runs under every start method.
pub(crate) struct FnTask<F, A> {
    pub(crate) f: F,
    pub(crate) args: A,
}

impl<F, A> Task for FnTask<F, A>
where
    F: Fn(A) + Copy + Send + 'static,
    A: Serialize + DeserializeOwned + Send + 'static,
{
    fn encode(&self) -> Result<Encoded, ProcessError> {
        let (bytes, handles) = crate::handles::encode_with_handles(&self.args)
            .map_err(|e| ProcessError::Encode(e.to_string()))?;
        Ok(Encoded {
            entry: EntryId::of::<F, A>(),
            bytes,
            handles,
        })
    }

    fn run(self: Box<Self>) {
        (self.f)(self.args)
    }
}

/// A capturing closure: runs only in a forked child.
pub(crate) struct ClosureTask<C>(pub(crate) C);

impl<C: FnOnce() + Send + 'static> Task for ClosureTask<C> {
    fn encode(&self) -> Result<Encoded, ProcessError> {
        Err(ProcessError::NeedsFork(crate::get_start_method()))
    }

    fn run(self: Box<Self>) {
        (self.0)()
    }
}
