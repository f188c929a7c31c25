//! SharedMemoryManager behaviours (SHM-11, SHM-12 of the acceptance list), with a real
//! manager server process and a child that opens the segments by name.

mod common;

use mp_core::manager::{SharedMemoryManager, SharedMemoryManagerError};
use mp_core::{Process, ShareableList, SharedError, SharedMemory};

fn open_both(names: (String, String)) {
    let shm = SharedMemory::open(&names.0).unwrap();
    assert!(shm.size() >= 32);
    let mut b = [0u8; 4];
    shm.read_at(0, &mut b);
    assert_eq!(&b, b"smm!");
    let list = ShareableList::<i64>::open(&names.1).unwrap();
    assert_eq!(list.to_vec(), [1, 2, 3, 4, 5]);
    list.set(4, 50).unwrap();
}

/// SHM-11: segments and lists made through the manager open by name elsewhere, outlive
/// the handles of their creator, and are gone once the manager shuts down; creating after
/// shutdown is an error.
#[test]
fn shm_11_segments_live_until_the_manager_shuts_down() {
    common::for_each_context(60, |ctx| {
        let mut smm = SharedMemoryManager::start().unwrap();
        let shm = smm.shared_memory(32).unwrap();
        shm.write_at(0, b"smm!");
        let list = smm.shareable_list(&[1i64, 2, 3, 4, 5]).unwrap();
        let names = (shm.name().to_string(), list.shm().name().to_string());
        let mut child = Process::new(open_both, names.clone()).with_context(ctx);
        child.start().unwrap();
        child.join().unwrap();
        assert_eq!(list.get(4).unwrap(), 50);
        drop((shm, list));
        // Kept by the server, not by their creator's handles.
        assert!(SharedMemory::open(&names.0).is_ok());
        assert_eq!(
            ShareableList::<i64>::open(&names.1).unwrap().to_vec(),
            [1, 2, 3, 4, 50]
        );

        smm.shutdown().unwrap();
        for name in [&names.0, &names.1] {
            assert!(
                matches!(SharedMemory::open(name), Err(SharedError::NotFound(_))),
                "{name} still exists after shutdown"
            );
        }
        assert!(matches!(
            smm.shared_memory(8),
            Err(SharedMemoryManagerError::Manager(_))
        ));
    });
}

/// SHM-11: dropping the manager (Python's leaving its `with` block) removes the segments too.
#[test]
fn shm_11_drop_removes_the_segments() {
    common::bounded(60, || {
        let smm = SharedMemoryManager::start().unwrap();
        let name = smm.shared_memory(64).unwrap().name().to_string();
        assert!(SharedMemory::open(&name).is_ok());
        drop(smm);
        assert!(matches!(
            SharedMemory::open(&name),
            Err(SharedError::NotFound(_))
        ));
    });
}

/// SHM-12: the server survives a SIGINT and keeps serving; ours is not touched.
#[cfg(unix)]
#[test]
fn shm_12_server_ignores_sigint() {
    common::bounded(60, || {
        let smm = SharedMemoryManager::start().unwrap();
        let first = smm.shareable_list(&[1u32]).unwrap();
        let server = smm.manager().process().unwrap();
        server.interrupt().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(server.is_alive());
        let second = smm.shareable_list(&[2u32, 3]).unwrap();
        assert_eq!((first.len(), second.len()), (1, 2));
        // SAFETY: reading this process's SIGINT disposition into a zeroed struct.
        let ours = unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGINT, std::ptr::null(), &mut old);
            old.sa_sigaction
        };
        assert_eq!(ours, libc::SIG_DFL);
    });
}
