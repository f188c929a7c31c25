//! SharedMemory and ShareableList behaviours (SHM-* of the CPython checklist).

mod common;

use std::time::Duration;

use common::for_each_context;
use mp_core::{pipe_oneway, Context, ShareableList, SharedError, SharedMemory, ShortStr, Writer};

/// A fresh name, short enough for macOS (30 bytes without the leading `/`).
fn unique(tag: &str) -> String {
    format!("mpt_{tag}_{:x}{:08x}", std::process::id(), rand_u32())
}

fn rand_u32() -> u32 {
    use std::time::SystemTime;
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    t.subsec_nanos() ^ (t.as_secs() as u32)
}

#[test]
fn shm_01_02_create_write_open_by_name() {
    let name = unique("basics");
    let shm = SharedMemory::create_named(&name, 512).unwrap();
    assert_eq!(shm.name(), name);
    assert!(shm.size() >= 512);
    let text = shm.to_string();
    assert!(text.contains(&name) && text.contains("512"), "{text}");
    shm.write_at(0, &[42]);
    let other = SharedMemory::open(&name).unwrap();
    let mut b = [0u8];
    other.read_at(0, &mut b);
    assert_eq!(b, [42]);
    #[cfg(target_os = "linux")]
    {
        assert_eq!(other.size(), 512);
        let small = SharedMemory::create(100).unwrap();
        assert_eq!(small.size(), 100);
        small.unlink().unwrap();
    }
    // Writes through either handle show in the other.
    other.write_at(511, &[7]);
    shm.read_at(511, &mut b);
    assert_eq!(b, [7]);
    shm.unlink().unwrap();
}

#[test]
fn shm_03_04_bad_sizes_names_and_existing_or_missing_names() {
    assert!(matches!(
        SharedMemory::create(0),
        Err(SharedError::InvalidSize)
    ));
    for bad in ["", "a\0b", "a/b", &"x".repeat(251)] {
        assert!(matches!(
            SharedMemory::open(bad),
            Err(SharedError::InvalidName(..))
        ));
        assert!(matches!(
            SharedMemory::create_named(bad, 10),
            Err(SharedError::InvalidName(..))
        ));
    }
    let name = unique("exists");
    let shm = SharedMemory::create_named(&name, 64).unwrap();
    assert!(matches!(
        SharedMemory::create_named(&name, 64),
        Err(SharedError::AlreadyExists(_))
    ));
    shm.unlink().unwrap();
    assert!(matches!(
        SharedMemory::open(&unique("missing")),
        Err(SharedError::NotFound(_))
    ));
}

#[test]
fn shm_05_generated_names_are_distinct() {
    let a = SharedMemory::create(16).unwrap();
    let b = SharedMemory::create(16).unwrap();
    assert_ne!(a.name(), b.name());
    a.unlink().unwrap();
    b.unlink().unwrap();
}

#[cfg(unix)]
#[test]
fn shm_06_unlink_once_mappings_survive() {
    let shm = SharedMemory::create(64).unwrap();
    let name = shm.name().to_string();
    shm.unlink().unwrap();
    assert!(matches!(shm.unlink(), Err(SharedError::NotFound(_))));
    assert!(matches!(
        SharedMemory::open(&name),
        Err(SharedError::NotFound(_))
    ));
    shm.write_at(0, b"still here");
    let mut b = [0u8; 10];
    shm.read_at(0, &mut b);
    assert_eq!(&b, b"still here");
}

#[test]
fn shm_07_serialized_handle_reopens_or_fails_with_not_found() {
    let shm = SharedMemory::create(64).unwrap();
    let bytes = postcard::to_stdvec(&shm).unwrap();
    let again: SharedMemory = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(again.name(), shm.name());
    again.write_at(3, b"x");
    let mut b = [0u8];
    shm.read_at(3, &mut b);
    assert_eq!(&b, b"x");
    drop(again);
    shm.unlink().unwrap();
    drop(shm);
    #[cfg(unix)]
    {
        // (postcard drops the message; the open itself fails with NotFound, see shm_06.)
        assert!(postcard::from_bytes::<SharedMemory>(&bytes).is_err());
    }
}

fn write_by_name(arg: (String, Writer<()>)) {
    let shm = SharedMemory::open(&arg.0).unwrap();
    shm.write_at(0, b"howdy");
    arg.1.send(&()).unwrap();
}

fn write_through_handle(shm: SharedMemory) {
    shm.write_at(0, b"HELLO");
}

#[test]
fn shm_08_a_child_writes_by_name_and_through_the_handle() {
    for_each_context(30, |ctx: Context| {
        let shm = SharedMemory::create(64).unwrap();
        let (rx, tx) = pipe_oneway::<()>().unwrap();
        let mut p = ctx.process(write_by_name, (shm.name().to_string(), tx));
        p.start().unwrap();
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        p.join().unwrap();
        let mut b = [0u8; 5];
        shm.read_at(0, &mut b);
        assert_eq!(&b, b"howdy");
        let mut p = ctx.process(
            write_through_handle,
            SharedMemory::open(shm.name()).unwrap(),
        );
        p.start().unwrap();
        p.join().unwrap();
        shm.read_at(0, &mut b);
        assert_eq!(&b, b"HELLO");
        shm.unlink().unwrap();
    });
}

fn create_and_wait(arg: (String, Writer<()>)) {
    let shm = SharedMemory::create_named(&arg.0, 4096).unwrap();
    shm.write_at(0, b"mine");
    arg.1.send(&()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

fn create_and_exit(name: String) {
    let shm = SharedMemory::create_named(&name, 4096).unwrap();
    std::mem::forget(shm);
}

#[cfg(unix)]
fn create_untracked_and_exit(name: String) {
    SharedMemory::create_named(&name, 4096).unwrap().untrack();
}

#[cfg(unix)]
fn open_and_exit(name: String) {
    let shm = SharedMemory::open(&name).unwrap();
    shm.write_at(0, b"seen");
}

/// On Windows a segment lives while a handle to it is open, so a dead creator's segment
/// goes with its last handle; on Unix the creator's resource tracker unlinks it.
#[test]
fn shm_09_17_segments_of_a_killed_creator_are_reclaimed() {
    for_each_context(60, |ctx: Context| {
        let name = unique("killed");
        let (rx, tx) = pipe_oneway::<()>().unwrap();
        let mut p = ctx.process(create_and_wait, (name.clone(), tx));
        p.start().unwrap();
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(SharedMemory::open(&name).is_ok());
        p.kill().unwrap();
        p.join().unwrap_err();
        assert!(
            common::eventually(5, || matches!(
                SharedMemory::open(&name),
                Err(SharedError::NotFound(_))
            )),
            "segment {name} of a SIGKILLed creator still exists"
        );
        #[cfg(target_os = "linux")]
        assert!(!std::path::Path::new(&format!("/dev/shm/{name}")).exists());

        // A creator that exits without unlinking: reclaimed too (Python warns of a leak).
        let name = unique("exited");
        let mut p = ctx.process(create_and_exit, name.clone());
        p.start().unwrap();
        p.join().unwrap();
        assert!(common::eventually(5, || matches!(
            SharedMemory::open(&name),
            Err(SharedError::NotFound(_))
        )));
    });
}

#[cfg(unix)]
#[test]
fn shm_10_attachers_do_not_unlink_and_untracked_segments_outlive_their_creator() {
    for_each_context(60, |ctx: Context| {
        let name = unique("untracked");
        let mut p = ctx.process(create_untracked_and_exit, name.clone());
        p.start().unwrap();
        p.join().unwrap();
        std::thread::sleep(Duration::from_millis(600));
        let shm = SharedMemory::open(&name).expect("an untracked segment outlives its creator");
        let mut p = ctx.process(open_and_exit, name.clone());
        p.start().unwrap();
        p.join().unwrap();
        std::thread::sleep(Duration::from_millis(600));
        let again = SharedMemory::open(&name).expect("an attacher does not unlink");
        let mut b = [0u8; 4];
        again.read_at(0, &mut b);
        assert_eq!(&b, b"seen");
        shm.unlink().unwrap();
    });
}

type S8 = ShortStr<8>;

fn edit_list(arg: (ShareableList<i64>, ShareableList<S8>)) {
    let (nums, words) = arg;
    nums.set(4, 880).unwrap();
    words.set(0, S8::new("adios").unwrap()).unwrap();
}

#[test]
fn shm_13_16_shareable_list() {
    for_each_context(30, |ctx: Context| {
        let nums = ShareableList::<i64>::create(&[-273, 100, 42, 7, 0, 42]).unwrap();
        assert_eq!(nums.len(), 6);
        assert_eq!(nums.get(1).unwrap(), 100);
        assert!(matches!(
            nums.get(6),
            Err(SharedError::IndexOutOfRange { index: 6, len: 6 })
        ));
        assert!(nums.set(6, 1).is_err());
        assert_eq!(nums.index(&100), Some(1));
        assert_eq!(nums.index(&101), None);
        assert_eq!(nums.count(&42), 2);
        let words =
            ShareableList::create(&[S8::new("howdy").unwrap(), S8::from_bytes(b"HoWdY").unwrap()])
                .unwrap();
        // Oversized values are refused; exactly 8 bytes fit without touching the neighbour.
        assert!(matches!(
            S8::new("far too many"),
            Err(SharedError::TooLong { len: 12, max: 8 })
        ));
        assert!(S8::new("123456789").is_err());
        words.set(0, S8::new("12345678").unwrap()).unwrap();
        assert_eq!(words.get(1).unwrap().as_bytes(), b"HoWdY");
        assert_eq!(words.get(0).unwrap().as_str(), Some("12345678"));

        // A second handle by name shares writes; a child given the lists edits them.
        let by_name = ShareableList::<i64>::open(nums.shm().name()).unwrap();
        let mut p = ctx.process(edit_list, (by_name, words_handle(&words)));
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(nums.to_vec(), vec![-273, 100, 42, 7, 880, 42]);
        assert_eq!(words.get(0).unwrap().as_str(), Some("adios"));

        // The element type is checked on opening.
        assert!(matches!(
            ShareableList::<i32>::open(nums.shm().name()),
            Err(SharedError::Mismatch(_))
        ));
        // Serialized, a list is its name: the same size for 10 or 400 elements.
        let a = ShareableList::create(&[0u64; 10]).unwrap();
        let b = ShareableList::create(&[0u64; 400]).unwrap();
        assert_eq!(
            postcard::to_stdvec(&a).unwrap().len(),
            postcard::to_stdvec(&b).unwrap().len()
        );
        let empty = ShareableList::<u64>::create(&[]).unwrap();
        assert_eq!(
            (empty.len(), empty.count(&0), empty.index(&0)),
            (0, 0, None)
        );
        for shm in [nums.shm(), words.shm(), a.shm(), b.shm(), empty.shm()] {
            shm.unlink().unwrap();
        }
        #[cfg(unix)]
        {
            let bytes = postcard::to_stdvec(&a).unwrap();
            assert!(postcard::from_bytes::<ShareableList<u64>>(&bytes).is_err());
        }
    });
}

fn words_handle(words: &ShareableList<S8>) -> ShareableList<S8> {
    ShareableList::open(words.shm().name()).unwrap()
}
