//! What a process runs, and how a spawned child finds the same function in its own copy of
//! the binary.
//!
//! A target `F` is a `fn` item or a non-capturing closure, so `F` is a zero-sized type whose
//! behaviour is fixed by its type alone. For each `(F, A)` the compiler makes one
//! [`trampoline`] that decodes an `A`, conjures the zero-sized `F` and calls it; the child
//! finds it through an [`EntryId`] (see [`crate::fn_id`]), and the trampoline checks the
//! type name before it decodes anything.

use mp_ipc::handle::{OwnedHandle, RawHandle};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::fn_id::{check_type, fn_kind, FnId};
use crate::ProcessError;

/// The signature every trampoline has: check the type name, decode the argument (with its
/// handles) and run.
pub(crate) type EntryFn = fn(&str, &[u8], Vec<OwnedHandle>) -> Result<(), String>;

fn_kind!(
    /// Process targets.
    Target,
    crate::fn_id::TAG_TARGET,
    EntryFn
);

/// Identifies a process target's trampoline across processes of the same executable.
pub(crate) type EntryId = FnId<Target>;

/// Decodes the argument of `F` and calls it.
fn trampoline<F, A>(type_name: &str, args: &[u8], handles: Vec<OwnedHandle>) -> Result<(), String>
where
    F: Fn(A) + Copy + Send + 'static,
    A: DeserializeOwned,
{
    check_type(type_name, std::any::type_name::<(F, A)>())?;
    let args: A = crate::handles::decode_with_handles(args, handles)
        .map_err(|e| format!("cannot decode the argument: {e}"))?;
    const { assert!(std::mem::size_of::<F>() == 0) };
    // SAFETY: F is zero-sized (checked at compile time), so it has exactly one value and no
    // bytes to initialise; conjuring it is how a capture-free closure is re-created.
    let f: F = unsafe { std::mem::zeroed() };
    f(args);
    Ok(())
}

/// The identity of the trampoline for `(F, A)`.
pub(crate) fn entry_of<F, A>() -> EntryId
where
    F: Fn(A) + Copy + Send + 'static,
    A: DeserializeOwned,
{
    FnId::<Target>::new(trampoline::<F, A>, std::any::type_name::<(F, A)>())
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
            entry: entry_of::<F, A>(),
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
