//! Twin of the examples of Python's `multiprocessing.shared_memory` documentation:
//!
//! ```python
//! >>> from multiprocessing import shared_memory
//! >>> shm_a = shared_memory.SharedMemory(create=True, size=10)
//! >>> buffer = shm_a.buf
//! >>> buffer[:4] = bytearray([22, 33, 44, 55])  # Modify multiple at once
//! >>> buffer[4] = 100                           # Modify single byte at a time
//! >>> # Attach to an existing shared memory block
//! >>> shm_b = shared_memory.SharedMemory(shm_a.name)
//! >>> bytes(shm_b.buf[:5])                      # Copy the data into a new bytes object
//! b'\x16!,7d'
//! >>> shm_b.buf[:5] = b'howdy'                  # Modify via shm_b using bytes
//! >>> bytes(shm_a.buf[:5])                      # Access via shm_a
//! b'howdy'
//! >>> shm_b.close()   # Close each SharedMemory instance
//! >>> shm_a.close()
//! >>> shm_a.unlink()  # Call unlink only once to release the shared memory
//!
//! >>> a = shared_memory.ShareableList(['howdy', b'HoWdY', -273.154, 100, None, True, 42])
//! >>> a[2] = -78.5
//! >>> b = shared_memory.ShareableList(name=a.shm.name)
//! >>> b[1] = 'hello'
//! ...
//! ```
//!
//! Here `shm_b` and `b` live in a child process that attaches by name. A `ShareableList` has
//! one element type: text goes in a [`ShortStr`] of fixed capacity.
//!
//! Run with `cargo run -p mp-core --example py_shared_memory`.

use mp_core::{Process, ShareableList, SharedMemory, ShortStr};

type S = ShortStr<8>;

fn attach((shm_name, list_name, floats): (String, String, ShareableList<f64>)) {
    // Attach to an existing shared memory block by its name.
    let shm_b = SharedMemory::open(&shm_name).expect("open");
    let mut first = [0u8; 5];
    shm_b.read_at(0, &mut first);
    println!("child sees {first:?}");
    assert_eq!(first, [22, 33, 44, 55, 100]);
    shm_b.write_at(0, b"howdy");
    shm_b.close();

    let b = ShareableList::<S>::open(&list_name).expect("open the list");
    b.set(1, S::new("hello").unwrap()).expect("set");
    // A list received as an argument is attached by name too.
    floats.set(0, -78.5).expect("set");
}

fn main() {
    mp_core::main();

    let shm_a = SharedMemory::create(10).expect("create");
    shm_a.write_at(0, &[22, 33, 44, 55]);
    shm_a.write_at(4, &[100]);

    let a = ShareableList::create(&[S::new("howdy").unwrap(), S::new("HoWdY").unwrap()])
        .expect("create the list");
    let floats = ShareableList::create(&[-273.154, 100.0, 42.0]).expect("create");
    // Too long for its slot: refused, instead of spilling into the next element.
    assert!(S::new("far too many").is_err());

    let args = (
        shm_a.name().to_string(),
        a.shm().name().to_string(),
        // Not `Clone`: a second handle is the list opened by name (it does not own the name).
        ShareableList::<f64>::open(floats.shm().name()).expect("open"),
    );
    let mut p = Process::new(attach, args);
    p.start().expect("start");
    p.join().expect("join");

    let mut five = [0u8; 5];
    shm_a.read_at(0, &mut five);
    println!("parent sees {:?}", String::from_utf8_lossy(&five));
    assert_eq!(&five, b"howdy");
    let words: Vec<String> = a
        .iter()
        .map(|s| s.as_str().unwrap_or("?").to_string())
        .collect();
    println!("list: {words:?}, floats: {:?}", floats.to_vec());
    assert_eq!(words, ["howdy", "hello"]);
    assert_eq!(floats.get(0).unwrap(), -78.5);

    // The creator unlinks, once (the resource tracker would do it if we died first).
    shm_a.unlink().expect("unlink");
    a.shm().unlink().expect("unlink");
    floats.shm().unlink().expect("unlink");
    #[cfg(unix)] // Windows has no names to remove: a segment ends with its last handle
    assert!(shm_a.unlink().is_err());
    println!("unlinked");
}
