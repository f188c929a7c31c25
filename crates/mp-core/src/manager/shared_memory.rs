//! Python's `multiprocessing.managers.SharedMemoryManager`: a manager whose server keeps
//! the shared-memory segments made through it, and removes them when it shuts down.
//!
//! The segments are created by the caller (fast: no copy goes through the server) and then
//! handed to the server, which keeps them open (so on Windows, where a segment lives while
//! someone has it open, they outlive their creator as on POSIX) and registers them with its
//! own resource tracker (so they are unlinked even if the server is killed). Differences from
//! Python: there is no "not started" state to misuse ([`SharedMemoryManager::start`] makes a
//! started one); after [`shutdown`](SharedMemoryManager::shutdown) creating is an error.

use serde::{Deserialize, Serialize};

use super::{Manager, ManagerError, Proxy, RemoteError, Service};
use crate::shared::{ShareableList, SharedData, SharedError, SharedMemory};
use crate::sys;

/// The server side: the segments handed over, held open until shutdown.
pub(crate) struct SegmentKeeper {
    kept: Vec<SharedMemory>,
}

/// Calls on a [`SegmentKeeper`].
#[derive(Serialize, Deserialize)]
pub(crate) enum KeeperOp {
    /// Keep the segment of this name until `ReleaseAll`.
    Keep(String),
    /// Unlink and drop every kept segment; answers how many there were.
    ReleaseAll,
}

impl SegmentKeeper {
    fn release_all(&mut self) -> usize {
        let n = self.kept.len();
        for shm in self.kept.drain(..) {
            let _ = shm.unlink();
            sys::shm_untrack(shm.name());
        }
        n
    }
}

impl Service for SegmentKeeper {
    const NAME: &'static str = "mp.SharedMemoryServer";
    type Init = ();
    type Request = KeeperOp;
    type Response = usize;

    fn create(_: ()) -> Result<Self, RemoteError> {
        Ok(Self { kept: Vec::new() })
    }

    fn call(&mut self, op: KeeperOp) -> Result<usize, RemoteError> {
        match op {
            KeeperOp::Keep(name) => {
                let shm = SharedMemory::open(&name)
                    .map_err(|e| RemoteError::new("FileNotFoundError", e.to_string()))?;
                sys::shm_track(&name).map_err(|e| RemoteError::new("OSError", e.to_string()))?;
                self.kept.push(shm);
                Ok(self.kept.len())
            }
            KeeperOp::ReleaseAll => Ok(self.release_all()),
        }
    }
}

impl Drop for SegmentKeeper {
    fn drop(&mut self) {
        self.release_all();
    }
}

/// Errors of [`SharedMemoryManager`]: the segment or the manager failed.
#[derive(Debug, thiserror::Error)]
pub enum SharedMemoryManagerError {
    /// Creating or opening the segment failed.
    #[error(transparent)]
    Shared(#[from] SharedError),
    /// The manager failed (or was shut down: [`ManagerError::Connection`] or `Connect`).
    #[error(transparent)]
    Manager(#[from] ManagerError),
}

/// A manager that owns the shared-memory segments made through it and unlinks them at
/// [`shutdown`](Self::shutdown) (or drop): Python's `SharedMemoryManager`. The other
/// manager types are there too, through [`manager`](Self::manager).
///
/// ```
/// use mp_core::manager::SharedMemoryManager;
/// use mp_core::SharedMemory;
///
/// let mut smm = SharedMemoryManager::start().unwrap();
/// let shm = smm.shared_memory(64).unwrap();
/// let name = shm.name().to_string();
/// drop(shm);
/// assert!(SharedMemory::open(&name).is_ok()); // kept by the manager
/// smm.shutdown().unwrap();
/// # #[cfg(unix)]
/// assert!(SharedMemory::open(&name).is_err()); // gone with it
/// ```
#[derive(Debug)]
pub struct SharedMemoryManager {
    manager: Manager,
    keeper: Proxy<SegmentKeeper>,
}

impl SharedMemoryManager {
    /// Starts the server (a child process on a fresh local address).
    pub fn start() -> Result<Self, ManagerError> {
        Self::from_manager(Manager::start()?)
    }

    /// Serves segments from a manager started otherwise (e.g. with a
    /// [`ManagerBuilder`](super::ManagerBuilder) for another address or start method).
    pub fn from_manager(manager: Manager) -> Result<Self, ManagerError> {
        let keeper = manager.create::<SegmentKeeper>(&())?;
        Ok(Self { manager, keeper })
    }

    /// The underlying manager, for its other object types.
    pub fn manager(&self) -> &Manager {
        &self.manager
    }

    fn keep(&self, shm: &SharedMemory) -> Result<(), SharedMemoryManagerError> {
        if let Err(e) = self.keeper.call(&KeeperOp::Keep(shm.name().to_string())) {
            let _ = shm.unlink();
            return Err(e.into());
        }
        // The server answers for it now, not this process's tracker.
        shm.untrack();
        Ok(())
    }

    /// A new segment of `size` bytes (Python's `smm.SharedMemory(size)`).
    pub fn shared_memory(&self, size: usize) -> Result<SharedMemory, SharedMemoryManagerError> {
        let shm = SharedMemory::create(size)?;
        self.keep(&shm)?;
        Ok(shm)
    }

    /// A new list holding `items` (Python's `smm.ShareableList(sequence)`).
    pub fn shareable_list<T: SharedData>(
        &self,
        items: &[T],
    ) -> Result<ShareableList<T>, SharedMemoryManagerError> {
        let list = ShareableList::create(items)?;
        self.keep(list.shm())?;
        Ok(list)
    }

    /// Unlinks every segment made through this manager and stops the server. Mappings held
    /// open stay valid; the names are gone.
    pub fn shutdown(&mut self) -> Result<(), ManagerError> {
        let released = self.keeper.call(&KeeperOp::ReleaseAll).map(drop);
        let stopped = self.manager.shutdown();
        released.and(stopped)
    }
}

impl Drop for SharedMemoryManager {
    fn drop(&mut self) {
        if self.manager.process().is_some() {
            let _ = self.keeper.call(&KeeperOp::ReleaseAll);
        }
    }
}
