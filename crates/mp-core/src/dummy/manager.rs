//! `multiprocessing.dummy.Manager()` and `dummy.Namespace`.
//!
//! Python's `dummy.Manager()` returns the `dummy` module itself, so `m.dict()` is a plain
//! dict and `m.Namespace()` a plain object. Here a program written against
//! [`crate::manager::Manager`] switches to threads by taking its manager from this module
//! instead: [`Manager`] runs the real manager server (the [`Server`] type) on a thread of
//! this process, over a fresh local address with a random key, and dereferences to a
//! [`crate::manager::Manager`] connected to it, so it hands out the very proxy types. Calls
//! still go through the server (serialized, over a local socket or named pipe): the
//! proxies behave exactly as with a server process, and they can even be passed to a child
//! process, which reaches the server in this process.

use std::any::Any;
use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::listener::Address;
use crate::manager::{Builtins, ManagerError, RemoteError, Server, Services};

/// How long [`Manager::shutdown`] (and dropping a [`Manager`]) waits for the server thread.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// A manager whose server runs on a thread of this process (Python's
/// `multiprocessing.dummy.Manager()`). It dereferences to a [`crate::manager::Manager`],
/// so every method of one (`dict`, `list`, `queue`, `lock`, `condition_with`, `namespace`,
/// `create`, ...) is there, with the same proxy types. Dropping it shuts the server down
/// (waiting at most [`DEFAULT_SHUTDOWN_TIMEOUT`] for its thread); proxies then fail with
/// [`ManagerError::Connection`] or [`ManagerError::Connect`].
///
/// ```
/// use mp_core::dummy::{Manager, Process};
///
/// let m = Manager::start().unwrap();
/// let d = m.dict::<String, u32>().unwrap();
/// let lock = m.lock().unwrap();
/// let mut workers = Vec::new();
/// for i in 0..3u32 {
///     let (d, lock) = (d.clone(), lock.clone());
///     let mut p = Process::from_closure(move || {
///         let _held = lock.guard().unwrap();
///         d.set(&format!("w{i}"), &i).unwrap();
///     });
///     p.start().unwrap();
///     workers.push(p);
/// }
/// for p in workers {
///     p.join().unwrap();
/// }
/// assert_eq!(d.len().unwrap(), 3);
/// ```
pub struct Manager {
    inner: crate::manager::Manager,
    thread: Option<JoinHandle<Result<(), ManagerError>>>,
}

impl Manager {
    /// Starts a server with the built-in types on a thread, and connects to it.
    pub fn start() -> Result<Self, ManagerError> {
        Self::start_with_services::<Builtins>()
    }

    /// Like [`start`](Self::start), with the user types of `S` as well.
    ///
    /// ```
    /// use mp_core::dummy::Manager;
    /// use mp_core::manager::Builtins;
    /// let m = Manager::start_with_services::<Builtins>().unwrap();
    /// assert_eq!(m.object_count().unwrap(), 0);
    /// ```
    pub fn start_with_services<S: Services>() -> Result<Self, ManagerError> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| {
            ManagerError::Start(format!("no random bytes for the manager's key: {e}"))
        })?;
        let server = Server::bind::<S>(&Address::unique_local(), &key)?;
        let address = server.address().clone();
        let thread = std::thread::Builder::new()
            .name("mp-dummy-manager".into())
            .spawn(move || server.serve_forever())
            .map_err(|e| ManagerError::Start(format!("cannot start the server thread: {e}")))?;
        match crate::manager::Manager::connect(&address, &key) {
            Ok(inner) => Ok(Self {
                inner,
                thread: Some(thread),
            }),
            Err(e) => {
                // The server thread serves until a shutdown request; without a client
                // there is nobody to send one: it is left to end with the process.
                drop(thread);
                Err(e)
            }
        }
    }

    /// Stops the server and waits at most [`DEFAULT_SHUTDOWN_TIMEOUT`] for its thread.
    pub fn shutdown(&mut self) -> Result<(), ManagerError> {
        self.shutdown_timeout(DEFAULT_SHUTDOWN_TIMEOUT)
    }

    /// Stops the server and waits at most `timeout` for its thread; a thread still running
    /// then is left behind and reported as a remote `TimeoutError`. Calling it again does
    /// nothing.
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut m = mp_core::dummy::Manager::start().unwrap();
    /// let q = m.queue::<u8>(0).unwrap();
    /// m.shutdown_timeout(Duration::from_secs(10)).unwrap();
    /// assert!(q.put(&1).is_err(), "the server is gone");
    /// ```
    pub fn shutdown_timeout(&mut self, timeout: Duration) -> Result<(), ManagerError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let asked = self.inner.shutdown();
        let deadline = mp_ipc::deadline::Deadline::after(timeout);
        while !thread.is_finished() {
            let step = deadline.remaining_capped(Duration::from_millis(10));
            if step.is_zero() {
                return Err(ManagerError::Remote(RemoteError::new(
                    "TimeoutError",
                    "the manager's server thread did not stop in time",
                )));
            }
            std::thread::sleep(step);
        }
        match thread.join() {
            Ok(served) => asked.and(served),
            Err(_) => Err(ManagerError::Remote(RemoteError::new(
                "RuntimeError",
                "the manager's server thread panicked",
            ))),
        }
    }
}

impl Deref for Manager {
    type Target = crate::manager::Manager;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("dummy::Manager")
            .field("address", self.inner.address())
            .field("running", &self.thread.is_some())
            .finish()
    }
}

/// A namespace shared by the threads holding a clone of it (Python's
/// `multiprocessing.dummy.Namespace`, a plain object with attributes), with the methods of
/// [`NamespaceProxy`](crate::manager::NamespaceProxy), so that code written against a
/// manager's namespace with concrete types works on it unchanged. Values are kept as they
/// are, not encoded: `set` takes any `Send` value, and `get` returns a clone (a manager
/// proxy stored in it is cloned too, taking its own reference); asking for another type
/// than the one stored is a remote-style `TypeError`.
///
/// ```
/// use mp_core::dummy::{Namespace, Process};
/// let ns = Namespace::new();
/// let ns2 = ns.clone();
/// let mut p = Process::from_closure(move || ns2.set("x", &41u32).unwrap());
/// p.start().unwrap();
/// p.join().unwrap();
/// assert_eq!(ns.get::<u32>("x").unwrap(), Some(41));
/// assert!(ns.get::<String>("x").is_err(), "another type");
/// assert_eq!(ns.names().unwrap(), ["x"]);
/// assert!(ns.remove("x").unwrap());
/// assert_eq!(ns.get::<u32>("x").unwrap(), None);
/// ```
#[derive(Clone, Default)]
pub struct Namespace(Arc<Mutex<BTreeMap<String, Box<dyn Any + Send>>>>);

impl Namespace {
    /// An empty namespace.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Box<dyn Any + Send>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `ns.name`, if set (a clone of the value).
    pub fn get<T: Clone + 'static>(&self, name: &str) -> Result<Option<T>, ManagerError> {
        match self.map().get(name) {
            None => Ok(None),
            Some(v) => match v.downcast_ref::<T>() {
                Some(v) => Ok(Some(v.clone())),
                None => Err(ManagerError::Remote(RemoteError::new(
                    "TypeError",
                    format!("{name:?} does not hold a {}", std::any::type_name::<T>()),
                ))),
            },
        }
    }

    /// `ns.name = v` (a clone of `v`).
    pub fn set<T: Clone + Send + 'static>(&self, name: &str, v: &T) -> Result<(), ManagerError> {
        let old = self.map().insert(name.to_string(), Box::new(v.clone()));
        // Dropped outside the lock (a proxy's drop talks to its server).
        drop(old);
        Ok(())
    }

    /// `del ns.name`; whether it was set.
    pub fn remove(&self, name: &str) -> Result<bool, ManagerError> {
        let old = self.map().remove(name);
        Ok(old.is_some())
    }

    /// The public attribute names (not starting with `_`), sorted.
    pub fn names(&self) -> Result<Vec<String>, ManagerError> {
        Ok(self
            .map()
            .keys()
            .filter(|k| !k.starts_with('_'))
            .cloned()
            .collect())
    }
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Namespace")
            .field(&self.names().unwrap_or_default())
            .finish()
    }
}
