//! Manager and proxy behaviours (MGR-* of the CPython checklist), with real server and client
//! processes, over local sockets and TCP on 127.0.0.1.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{bounded, eventually};
use mp_core::listener::Address;
use mp_core::manager::{
    ArrayProxy, DictProxy, ListProxy, Manager, ManagerError, NamespaceProxy, Proxy, QueueProxy,
    QueueProxyError, Registry, RemoteError, Service, Services, ValueProxy,
};
use mp_core::{get_context, Process, StartMethod};
use serde::{Deserialize, Serialize};

const SECS: Duration = Duration::from_secs(10);

fn remote_kind(e: ManagerError) -> String {
    match e {
        ManagerError::Remote(r) => r.kind,
        other => panic!("expected a remote error, got {other:?}"),
    }
}

#[test]
fn mgr_01_list_operations_and_nested_lists() {
    bounded(60, || {
        let m = Manager::start().unwrap();
        let a = m.list(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap();
        assert_eq!(a.to_vec().unwrap(), (0..10).collect::<Vec<_>>());
        assert_eq!(m.list::<i32>(&[]).unwrap().len().unwrap(), 0);
        assert_eq!(a.slice(2, 5).unwrap(), vec![2, 3, 4]);
        assert_eq!(a.slice(8, 100).unwrap(), vec![8, 9], "clamped past the end");
        assert_eq!(a.get(-1).unwrap(), 9);
        assert_eq!(remote_kind(a.get(10).unwrap_err()), "IndexError");
        a.extend(&[10, 11]).unwrap();
        assert_eq!(a.len().unwrap(), 12);
        let b = m.list(&[1, 2]).unwrap();
        b.repeat(2).unwrap();
        assert_eq!(b.to_vec().unwrap(), vec![1, 2, 1, 2]);
        let mut plus = b.to_vec().unwrap();
        plus.extend([3]);
        assert_eq!(
            plus,
            vec![1, 2, 1, 2, 3],
            "+ with a plain list gives a plain list"
        );

        // A list of list proxies keeps referring to the same remote lists.
        let inner = m.list::<String>(&[]).unwrap();
        let outer = m.list(std::slice::from_ref(&inner)).unwrap();
        outer.get(0).unwrap().append(&"hello".into()).unwrap();
        assert_eq!(inner.to_vec().unwrap(), vec!["hello".to_string()]);
        assert_eq!(outer.get(0).unwrap().get(0).unwrap(), "hello");
    });
}

#[test]
fn mgr_02_list_iteration_sees_changes() {
    bounded(30, || {
        let m = Manager::start().unwrap();
        let a = m.list(&[1, 2, 3]).unwrap();
        let mut it = a.iter();
        assert_eq!(it.next().unwrap().unwrap(), 1);
        a.set(1, &100).unwrap();
        assert_eq!(it.next().unwrap().unwrap(), 100);
        assert_eq!(it.next().unwrap().unwrap(), 3);
        assert!(it.next().is_none());
        assert!(it.next().is_none(), "an exhausted iterator stays exhausted");
    });
}

#[test]
fn mgr_03_list_of_list_proxies_and_self_reference() {
    bounded(30, || {
        let m = Manager::start().unwrap();
        let lists: Vec<ListProxy<i32>> = (0..3).map(|_| m.list(&[0, 1, 2]).unwrap()).collect();
        let outer = m.list(&lists).unwrap();
        outer.get(0).unwrap().set(-1, &55).unwrap();
        assert_eq!(lists[0].to_vec().unwrap(), vec![0, 1, 55]);
        assert_eq!(outer.get(1).unwrap().pop(None).unwrap(), 2);
        let lens: Vec<usize> = lists.iter().map(|l| l.len().unwrap()).collect();
        assert_eq!(lens, vec![3, 2, 3]);

        // A list that contains itself can be dropped without hanging or crashing.
        let me = m.list::<Node>(&[]).unwrap();
        me.append(&Node(me.clone())).unwrap();
        assert_eq!(me.get(0).unwrap().0.id(), me.id());
        drop(me);
        assert!(
            m.object_count().unwrap() > 0,
            "cycles are not collected, as in Python"
        );
    });
}

/// A list element that is a list of its own kind.
#[derive(Serialize, Deserialize)]
struct Node(ListProxy<Node>);

#[test]
fn mgr_04_dict_operations() {
    bounded(30, || {
        let m = Manager::start().unwrap();
        let d: DictProxy<i32, String> = m.dict().unwrap();
        for i in [5, 1, 3] {
            d.set(&i, &i.to_string()).unwrap();
        }
        assert_eq!(d.keys().unwrap(), vec![5, 1, 3], "insertion order");
        assert_eq!(d.values().unwrap(), vec!["5", "1", "3"]);
        assert_eq!(d.items().unwrap()[1], (1, "1".to_string()));
        let copy = d.copy().unwrap();
        assert_eq!(copy.len(), 3);
        assert_eq!(copy[&3], "3");
        assert!(d.contains_key(&5).unwrap());
        assert_eq!(d.get(&7).unwrap(), None);
        assert_eq!(d.setdefault(&7, &"seven".into()).unwrap(), "seven");
        assert_eq!(d.setdefault(&7, &"other".into()).unwrap(), "seven");
        assert_eq!(d.popitem().unwrap(), Some((7, "seven".to_string())));
        assert_eq!(d.pop(&5).unwrap(), Some("5".to_string()));
        d.update([(&9, &"nine".to_string())]).unwrap();
        assert_eq!(d.len().unwrap(), 3);
        assert!(d.remove(&9).unwrap());
        assert!(!d.remove(&9).unwrap());
        // Iteration is over a snapshot: clearing meanwhile does not disturb it.
        let keys = d.keys().unwrap();
        d.clear().unwrap();
        assert_eq!(keys.len(), 2);
        assert!(d.is_empty().unwrap());
    });
}

#[test]
fn mgr_05_nested_dicts_stay_shared() {
    bounded(30, || {
        let m = Manager::start().unwrap();
        let d: DictProxy<String, DictProxy<String, i32>> = m.dict().unwrap();
        let supplies: DictProxy<String, i32> = m.dict().unwrap();
        supplies.set(&"water".into(), &10).unwrap();
        d.set(&"supplies".into(), &supplies).unwrap();
        let fetched = d.get(&"supplies".into()).unwrap().unwrap();
        fetched.set(&"blankets".into(), &5).unwrap();
        assert_eq!(supplies.get(&"blankets".into()).unwrap(), Some(5));
        supplies.set(&"blankets".into(), &6).unwrap();
        assert_eq!(fetched.get(&"blankets".into()).unwrap(), Some(6));
        // Dropping the local proxies leaves the container's reference.
        let before = m.object_count().unwrap();
        drop(supplies);
        drop(fetched);
        assert_eq!(m.object_count().unwrap(), before);
        let again = d.get(&"supplies".into()).unwrap().unwrap();
        d.clear().unwrap();
        assert_eq!(
            again.get(&"water".into()).unwrap(),
            Some(10),
            "still works after clear"
        );
        // A plain list stored in a manager list comes back as a plain value.
        let l = m.list(&[vec![1, 2]]).unwrap();
        assert_eq!(l.get(0).unwrap(), vec![1, 2]);
    });
}

#[test]
fn mgr_06_nested_queue() {
    bounded(30, || {
        let m = Manager::start().unwrap();
        let q: QueueProxy<i32> = m.queue(0).unwrap();
        let l = m.list(&[q]).unwrap();
        l.get(0).unwrap().put(&123).unwrap();
        assert_eq!(l.get(0).unwrap().get().unwrap(), 123);
        let d: DictProxy<String, QueueProxy<i32>> = m.dict().unwrap();
        d.set(&"q".into(), &l.get(0).unwrap()).unwrap();
        d.get(&"q".into()).unwrap().unwrap().put(&456).unwrap();
        assert_eq!(d.get(&"q".into()).unwrap().unwrap().get().unwrap(), 456);
    });
}

#[test]
fn mgr_07_namespace() {
    bounded(30, || {
        let m = Manager::start().unwrap();
        let ns = m.namespace().unwrap();
        ns.set("name", &"Bob").unwrap();
        ns.set("job", &"Builder").unwrap();
        ns.set("_hidden", &"x").unwrap();
        assert_eq!(ns.get::<String>("name").unwrap().unwrap(), "Bob");
        assert!(ns.remove("job").unwrap());
        assert_eq!(ns.names().unwrap(), vec!["name".to_string()]);
        assert_eq!(ns.get::<String>("_hidden").unwrap().unwrap(), "x");
        assert_eq!(ns.get::<String>("job").unwrap(), None);
    });
}

fn child_uses_containers(arg: (ListProxy<i32>, DictProxy<String, i32>, NamespaceProxy)) {
    let (l, d, ns) = arg;
    assert_eq!(l.count(&1).unwrap(), 1);
    assert_eq!(l.index(&3).unwrap(), 2);
    l.sort().unwrap();
    l.reverse().unwrap();
    assert_eq!(l.to_vec().unwrap(), vec![5, 3, 2, 1]);
    l.repeat(2).unwrap();
    assert_eq!(l.len().unwrap(), 8);
    assert_eq!(l.pop(None).unwrap(), 1);
    l.clear().unwrap();
    assert_eq!(d.get(&"a".into()).unwrap(), Some(1));
    assert_eq!(d.keys().unwrap().len(), 2);
    assert!(d.popitem().unwrap().is_some());
    d.update([(&"c".to_string(), &3)]).unwrap();
    assert_eq!(d.pop(&"c".into()).unwrap(), Some(3));
    d.clear().unwrap();
    assert_eq!(ns.get::<i32>("x").unwrap(), Some(42));
}

#[test]
fn mgr_08_proxies_in_children_under_every_start_method() {
    common::for_each_context(60, |ctx| {
        let m = Manager::builder::<mp_core::manager::Builtins>()
            .context(ctx)
            .start()
            .unwrap();
        let l = m.list(&[2, 5, 3, 1]).unwrap();
        let d: DictProxy<String, i32> = m.dict().unwrap();
        d.set(&"a".into(), &1).unwrap();
        d.set(&"b".into(), &2).unwrap();
        let ns = m.namespace().unwrap();
        ns.set("x", &42).unwrap();
        let mut p = ctx.process(child_uses_containers, (l.clone(), d.clone(), ns.clone()));
        p.start().unwrap();
        p.join_timeout(SECS).unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert!(l.is_empty().unwrap());
        assert!(d.is_empty().unwrap());
    });
}

// A user service: a counter with a failing method; `Secret` stands for a method a client
// knows of but the server does not expose.
struct Counter(i64);

#[derive(Serialize, Deserialize)]
enum CounterOp {
    Add(i64),
    Get,
    Fail,
}

#[derive(Serialize, Deserialize)]
enum CounterOpWithSecret {
    Add(i64),
    Get,
    Fail,
    Secret,
}

impl Service for Counter {
    const NAME: &'static str = "Counter";
    type Init = i64;
    type Request = CounterOp;
    type Response = i64;
    fn create(start: i64) -> Result<Self, RemoteError> {
        Ok(Counter(start))
    }
    fn call(&mut self, op: CounterOp) -> Result<i64, RemoteError> {
        match op {
            CounterOp::Add(n) => self.0 += n,
            CounterOp::Get => {}
            CounterOp::Fail => return Err(RemoteError::new("ValueError", "asked to fail")),
        }
        Ok(self.0)
    }
}

/// The same type seen by a client that believes in an extra method.
struct CounterClient;

impl Service for CounterClient {
    const NAME: &'static str = "Counter";
    type Init = i64;
    type Request = CounterOpWithSecret;
    type Response = i64;
    fn create(_: i64) -> Result<Self, RemoteError> {
        Ok(CounterClient)
    }
    fn call(&mut self, _: CounterOpWithSecret) -> Result<i64, RemoteError> {
        unreachable!("client-side view only")
    }
}

enum MyServices {}

impl Services for MyServices {
    fn register(r: &mut Registry) {
        r.register::<Counter>();
    }
}

fn bump(c: Proxy<Counter>) {
    c.call(&CounterOp::Add(10)).unwrap();
}

#[test]
fn mgr_09_user_services() {
    bounded(30, || {
        let m = Manager::builder::<MyServices>().start().unwrap();
        let c = m.create::<Counter>(&5).unwrap();
        assert_eq!(c.call(&CounterOp::Add(2)).unwrap(), 7);
        let err = c.call(&CounterOp::Fail).unwrap_err();
        assert_eq!(
            err.to_string(),
            "remote error: ValueError: asked to fail",
            "the remote error keeps its kind"
        );
        let mut p = Process::new(bump, c.try_clone().unwrap());
        p.start().unwrap();
        p.join_timeout(SECS).unwrap();
        assert_eq!(c.call(&CounterOp::Get).unwrap(), 17);
        // A method the server does not expose.
        let other = m.create::<CounterClient>(&0).unwrap();
        assert_eq!(
            remote_kind(other.call(&CounterOpWithSecret::Secret).unwrap_err()),
            "RemoteError"
        );
        assert_eq!(other.call(&CounterOpWithSecret::Add(1)).unwrap(), 1);
        let _ = (CounterOpWithSecret::Get, CounterOpWithSecret::Fail);
        // An unregistered type.
        let plain = Manager::start().unwrap();
        assert_eq!(
            remote_kind(plain.create::<Counter>(&0).unwrap_err()),
            "KeyError"
        );
    });
}

// Python's `method_to_typeid`: a `Library` whose `Open` returns a proxy to a new `Book`
// object, sharing the library's pages; `Loose` is a type the server does not register.
#[derive(Default)]
struct Library(std::collections::HashMap<String, Pages>);

type Pages = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

struct Book(Pages);

struct Loose;

#[derive(Serialize, Deserialize)]
enum LibraryOp {
    Open(String),
    Titles,
    Stray,
}

#[derive(Debug, Serialize, Deserialize)]
enum LibraryReply {
    Book(Proxy<Book>),
    Titles(Vec<String>),
    Loose(Proxy<Loose>),
}

#[derive(Serialize, Deserialize)]
enum BookOp {
    Write(String),
    Read,
}

impl Service for Library {
    const NAME: &'static str = "Library";
    type Init = ();
    type Request = LibraryOp;
    type Response = LibraryReply;
    fn create(_: ()) -> Result<Self, RemoteError> {
        Ok(Library::default())
    }
    fn call(&mut self, op: LibraryOp) -> Result<LibraryReply, RemoteError> {
        Ok(match op {
            LibraryOp::Open(title) => {
                let pages = self.0.entry(title).or_default().clone();
                LibraryReply::Book(Proxy::serve(Book(pages)))
            }
            LibraryOp::Titles => LibraryReply::Titles(self.0.keys().cloned().collect()),
            LibraryOp::Stray => LibraryReply::Loose(Proxy::serve(Loose)),
        })
    }
}

impl Service for Book {
    const NAME: &'static str = "Book";
    type Init = ();
    type Request = BookOp;
    type Response = Vec<String>;
    fn create(_: ()) -> Result<Self, RemoteError> {
        Ok(Book(Pages::default()))
    }
    fn call(&mut self, op: BookOp) -> Result<Vec<String>, RemoteError> {
        let mut pages = self.0.lock().unwrap();
        if let BookOp::Write(page) = op {
            pages.push(page);
        }
        Ok(pages.clone())
    }
}

impl Service for Loose {
    const NAME: &'static str = "Loose";
    type Init = ();
    type Request = ();
    type Response = ();
    fn create(_: ()) -> Result<Self, RemoteError> {
        Ok(Loose)
    }
    fn call(&mut self, _: ()) -> Result<(), RemoteError> {
        Ok(())
    }
}

/// The library as a client that expects `Open` to return another type (`Journal`) sees it.
struct LibraryClient;

#[derive(Debug, Serialize, Deserialize)]
enum LibraryReplyClient {
    Book(Proxy<Journal>),
    Titles(Vec<String>),
    Loose(Proxy<Loose>),
}

struct Journal;

impl Service for Journal {
    const NAME: &'static str = "Journal";
    type Init = ();
    type Request = BookOp;
    type Response = Vec<String>;
    fn create(_: ()) -> Result<Self, RemoteError> {
        Ok(Journal)
    }
    fn call(&mut self, _: BookOp) -> Result<Vec<String>, RemoteError> {
        unreachable!("client-side view only")
    }
}

#[derive(Serialize, Deserialize)]
enum LibraryOpClient {
    Open(String),
    Titles,
    Stray,
    Burn,
}

impl Service for LibraryClient {
    const NAME: &'static str = "Library";
    type Init = ();
    type Request = LibraryOpClient;
    type Response = LibraryReplyClient;
    fn create(_: ()) -> Result<Self, RemoteError> {
        Ok(LibraryClient)
    }
    fn call(&mut self, _: LibraryOpClient) -> Result<LibraryReplyClient, RemoteError> {
        unreachable!("client-side view only")
    }
}

enum LibraryServices {}

impl Services for LibraryServices {
    fn register(r: &mut Registry) {
        r.register::<Library>().register::<Book>();
    }
}

fn open(library: &Proxy<Library>, title: &str) -> Proxy<Book> {
    match library.call(&LibraryOp::Open(title.into())).unwrap() {
        LibraryReply::Book(b) => b,
        _ => panic!("not a book"),
    }
}

/// A child opens a book through the library (a new object for it), writes, and leaves.
fn child_writes(library: Proxy<Library>) {
    let book = open(&library, "rust");
    book.call(&BookOp::Write("from the child".into())).unwrap();
}

/// A child handed a book proxy a method returned.
fn child_writes_in(book: Proxy<Book>) {
    book.call(&BookOp::Write("second page".into())).unwrap();
}

#[test]
fn mgr_09b_method_returning_a_new_shared_object() {
    bounded(60, || {
        let m = Manager::builder::<LibraryServices>().start().unwrap();
        let library = m.create::<Library>(&()).unwrap();
        assert_eq!(m.object_count().unwrap(), 1);

        // A child's new object is released when the child drops its proxy.
        let mut p = Process::new(child_writes, library.try_clone().unwrap());
        p.start().unwrap();
        p.join_timeout(SECS).unwrap();
        assert!(eventually(10, || m.object_count().unwrap() == 1));

        // Each call makes a new object, sharing what the service shares.
        let book = open(&library, "rust");
        assert_eq!(m.object_count().unwrap(), 2);
        assert_ne!(book.id(), library.id());
        assert_eq!(book.call(&BookOp::Read).unwrap(), ["from the child"]);
        let mut p = Process::new(child_writes_in, book.try_clone().unwrap());
        p.start().unwrap();
        p.join_timeout(SECS).unwrap();
        let again = open(&library, "rust");
        assert_eq!(m.object_count().unwrap(), 3);
        assert_eq!(
            again.call(&BookOp::Read).unwrap(),
            ["from the child", "second page"]
        );
        match library.call(&LibraryOp::Titles).unwrap() {
            LibraryReply::Titles(t) => assert_eq!(t, ["rust"]),
            _ => panic!("not titles"),
        }

        // Freed with its last proxy, as any object; the library is unaffected.
        let copy = book.try_clone().unwrap();
        drop(book);
        assert_eq!(m.object_count().unwrap(), 3);
        drop(copy);
        drop(again);
        assert_eq!(m.object_count().unwrap(), 1);

        // A new object of a type the server does not register: a typed error, nothing made.
        let err = library.call(&LibraryOp::Stray).unwrap_err();
        assert_eq!(remote_kind(err), "KeyError");
        assert_eq!(m.object_count().unwrap(), 1);

        // A client expecting another type of object: a decoding error, and the object the
        // server made for it is released.
        let other = m.create::<LibraryClient>(&()).unwrap();
        let err = other.call(&LibraryOpClient::Open("c".into())).unwrap_err();
        assert!(
            matches!(&err, ManagerError::Decode(mp_core::DecodeError::Refused(m)) if m.contains("\"Journal\"")),
            "{err:?}"
        );
        // A method the server does not have.
        let err = other.call(&LibraryOpClient::Burn).unwrap_err();
        assert_eq!(remote_kind(err), "RemoteError");
        drop(other);
        assert!(eventually(10, || m.object_count().unwrap() == 1));
        let _ = (LibraryOpClient::Titles, LibraryOpClient::Stray);

        // A proxy of `serve` outside a service's response cannot be sent or used.
        let loose = Proxy::serve(Loose);
        assert!(loose.call(&()).is_err());
        let lost = m.list::<Proxy<Loose>>(&[]).unwrap();
        assert!(matches!(lost.append(&loose), Err(ManagerError::Encode(_))));
    });
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Item {
    Text(String),
    None,
    Bool(bool),
    Float(f64),
    Bytes(Vec<u8>),
}

fn items() -> Vec<Item> {
    vec![
        Item::Text("hello world".into()),
        Item::Text("ĥéłłø wörld ✓".into()),
        Item::None,
        Item::Bool(true),
        Item::Float(2.25),
        Item::Bytes(vec![0, 255, 10]),
    ]
}

fn tcp_putter(arg: (Address, Vec<u8>, ListProxy<QueueProxy<Vec<Item>>>)) {
    let (address, key, board) = arg;
    let m = Manager::connect(&address, &key).unwrap();
    let q: QueueProxy<Vec<Item>> = m.queue(0).unwrap();
    q.put(&items()).unwrap();
    board.append(&q).unwrap();
}

fn tcp_wrong_key(arg: (Address, Vec<u8>)) {
    let e = Manager::connect(&arg.0, &arg.1).unwrap_err();
    assert!(e.is_authentication(), "{e:?}");
}

#[test]
fn mgr_10_remote_manager_over_tcp() {
    bounded(60, || {
        let key: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37)).collect();
        let m = Manager::builder::<mp_core::manager::Builtins>()
            .address("127.0.0.1:0".parse().unwrap())
            .authkey(&key)
            .start()
            .unwrap();
        assert!(matches!(m.address(), Address::Tcp(_)));
        let board: ListProxy<QueueProxy<Vec<Item>>> = m.list(&[]).unwrap();
        let mut p = Process::new(
            tcp_putter,
            (m.address().clone(), key.clone(), board.clone()),
        );
        p.start().unwrap();
        p.join_timeout(SECS).unwrap();
        assert_eq!(p.exitcode(), Some(0));
        // A second client, here, gets the values back.
        let other = Manager::connect(m.address(), &key).unwrap();
        let _ = other;
        assert_eq!(board.get(0).unwrap().get_timeout(SECS).unwrap(), items());
        // The wrong key, from another process: AuthenticationError, and the server goes on.
        let mut p = Process::new(
            tcp_wrong_key,
            (m.address().clone(), b"not the key".to_vec()),
        );
        p.start().unwrap();
        p.join_timeout(SECS).unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert_eq!(board.len().unwrap(), 1);
        // A value the serializer cannot handle is an error in the caller.
        let bad = m.list::<mp_core::Connection<()>>(&[]).unwrap();
        let (c, _c2) = mp_core::pipe::<()>().unwrap();
        assert!(matches!(bad.append(&c), Err(ManagerError::Encode(_))));
    });
}

#[test]
fn mgr_11_rapid_restart_on_the_same_address() {
    bounded(60, || {
        let key = b"restart".to_vec();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        for family in [Address::Tcp(port), Address::unique_local()] {
            for round in 0..2 {
                let mut m = Manager::builder::<mp_core::manager::Builtins>()
                    .address(family.clone())
                    .authkey(&key)
                    .start()
                    .unwrap_or_else(|e| panic!("{family} round {round}: {e}"));
                let v = m.value(&round).unwrap();
                assert_eq!(v.get().unwrap(), round);
                drop(v);
                m.shutdown().unwrap();
            }
        }
    });
}

#[test]
fn mgr_12_wrong_key_and_manager_gone() {
    bounded(30, || {
        let mut m = Manager::start().unwrap();
        let e = Manager::connect(m.address(), b"wrong").unwrap_err();
        assert!(e.is_authentication(), "{e:?}");
        let d: DictProxy<i32, i32> = m.dict().unwrap();
        let q: QueueProxy<i32> = m.queue(0).unwrap();
        d.set(&1, &1).unwrap();
        // A client blocked in a call when the manager goes away gets an error.
        let q2 = q.clone();
        let blocked = std::thread::spawn(move || q2.get());
        std::thread::sleep(Duration::from_millis(200));
        m.shutdown().unwrap();
        let t = Instant::now();
        assert!(d.get(&1).is_err());
        assert!(d.set(&1, &2).is_err());
        assert!(t.elapsed() < Duration::from_secs(2), "errors come promptly");
        assert!(matches!(
            blocked.join().unwrap(),
            Err(QueueProxyError::Manager(_))
        ));
        drop(d);
        drop(q);
    });
}

fn mark_initialized(v: mp_core::Value<u32>) {
    *v.lock().unwrap() += 1;
}

#[test]
fn mgr_13_initializer_runs_once_in_the_server() {
    bounded(30, || {
        let counter = mp_core::Value::new(0u32).unwrap();
        let m = Manager::builder::<mp_core::manager::Builtins>()
            .start_with_initializer(mark_initialized, counter.clone())
            .unwrap();
        assert_eq!(*counter.lock().unwrap(), 1);
        drop(m);
        assert_eq!(*counter.lock().unwrap(), 1);
    });
}

fn hold_and_drop(arg: (ListProxy<i32>, DictProxy<i32, ListProxy<i32>>)) {
    let (l, d) = arg;
    let inner = d.get(&1).unwrap().unwrap();
    inner.append(&1).unwrap();
    l.append(&2).unwrap();
}

#[test]
fn mgr_14_no_objects_left_when_proxies_are_gone() {
    bounded(60, || {
        let m = Manager::start().unwrap();
        let child = {
            let l = m.list(&[1]).unwrap();
            let d: DictProxy<i32, ListProxy<i32>> = m.dict().unwrap();
            d.set(&1, &m.list(&[]).unwrap()).unwrap();
            let q: QueueProxy<ListProxy<i32>> = m.queue(0).unwrap();
            q.put(&l).unwrap();
            let _back = q.get().unwrap();
            let _sync = (m.lock().unwrap(), m.event().unwrap(), m.barrier(2).unwrap());
            let mut p = Process::new(hold_and_drop, (l.clone(), d.clone()));
            p.start().unwrap();
            p.join_timeout(SECS).unwrap();
            assert_eq!(p.exitcode(), Some(0));
            assert_eq!(l.to_vec().unwrap(), vec![1, 2]);
            assert!(m.object_count().unwrap() >= 4);
            p.pid().unwrap()
        };
        assert!(
            eventually(5, || m.object_count().unwrap() == 0),
            "objects left: {}",
            m.object_count().unwrap()
        );
        // Tests run in parallel, so other tests' children may be running too: the one this
        // test started has been reaped, its manager is still there.
        let kids = mp_core::active_children();
        assert!(kids.iter().all(|k| k.pid != child), "{kids:?}");
        let me = m.process().unwrap().pid().unwrap();
        assert!(kids.iter().any(|k| k.pid == me));
    });
}

/// Takes the lock, says so (`held`), and keeps it until told to let go (`release`): it
/// kept it for 300 ms, which a loaded machine outlasted before the parent's `try_acquire`.
fn lock_then_flag(
    arg: (
        mp_core::manager::LockProxy,
        mp_core::manager::EventProxy,
        mp_core::manager::EventProxy,
    ),
) {
    let (lock, held, release) = arg;
    let _g = lock.guard().unwrap();
    held.set().unwrap();
    assert!(release.wait(Some(SECS)).unwrap());
}

#[test]
fn sync_types_through_a_manager() {
    bounded(60, || {
        let m = Manager::start().unwrap();
        // Lock held by a child: we wait for it.
        let (lock, ev, release) = (m.lock().unwrap(), m.event().unwrap(), m.event().unwrap());
        let mut p = Process::new(lock_then_flag, (lock.clone(), ev.clone(), release.clone()));
        p.start().unwrap();
        assert!(ev.wait(Some(SECS)).unwrap());
        assert!(!lock.try_acquire().unwrap());
        release.set().unwrap();
        assert!(lock.acquire_timeout(SECS).unwrap());
        lock.release().unwrap();
        assert_eq!(remote_kind(lock.release().unwrap_err()), "RuntimeError");
        p.join().unwrap();
        // RLock: recursive for its owner.
        let r = m.rlock().unwrap();
        r.acquire().unwrap();
        assert!(r.try_acquire().unwrap());
        r.release().unwrap();
        r.release().unwrap();
        // Semaphores.
        let s = m.bounded_semaphore(1).unwrap();
        s.acquire().unwrap();
        assert!(!s.try_acquire().unwrap());
        s.release(1).unwrap();
        assert_eq!(remote_kind(s.release(1).unwrap_err()), "ValueError");
        // Event timeout.
        let e = m.event().unwrap();
        let t = Instant::now();
        assert!(!e.wait(Some(Duration::from_millis(200))).unwrap());
        assert!(t.elapsed() >= Duration::from_millis(180));
        // Condition: notify wakes a waiter.
        let c = m.condition().unwrap();
        let c2 = c.clone();
        let waiter = std::thread::spawn(move || {
            c2.acquire().unwrap();
            let woken = c2.wait(Some(SECS)).unwrap();
            c2.release().unwrap();
            woken
        });
        std::thread::sleep(Duration::from_millis(200));
        c.acquire().unwrap();
        c.notify(1).unwrap();
        c.release().unwrap();
        assert!(waiter.join().unwrap());
        // Barrier of 2.
        let b = m.barrier(2).unwrap();
        let b2 = b.clone();
        let other = std::thread::spawn(move || b2.wait(Some(SECS)).unwrap());
        let mine = b.wait(Some(SECS)).unwrap();
        let theirs = other.join().unwrap();
        assert_eq!(mine + theirs, 1);
        assert!(matches!(
            b.wait(Some(Duration::from_millis(100))),
            Err(ManagerError::BrokenBarrier)
        ));
        // Queue with maxsize.
        let q: QueueProxy<i32> = m.queue(1).unwrap();
        q.put(&1).unwrap();
        assert!(matches!(q.put_nowait(&2), Err(QueueProxyError::Full)));
        assert_eq!(q.get().unwrap(), 1);
        assert!(matches!(
            q.get_timeout(Duration::from_millis(100)),
            Err(QueueProxyError::Empty)
        ));
        // Value.
        let v = m.value(&String::from("a")).unwrap();
        assert_eq!(v.swap(&"b".into()).unwrap(), "a");
        assert_eq!(v.get().unwrap(), "b");
    });
}

fn value_and_array_in_child(arg: (ValueProxy<i32>, ArrayProxy<i32>)) {
    let (v, a) = arg;
    assert_eq!(v.get().unwrap(), 1);
    v.set(&2).unwrap();
    assert_eq!(a.len().unwrap(), 2);
    assert_eq!((a.get(0).unwrap(), a.get(-1).unwrap()), (0, 1));
    assert_eq!(a.to_vec().unwrap(), [0, 1]);
    a.set(1, &10).unwrap();
}

/// SHV-07: a manager Value and Array used from a child, under every start method.
#[test]
fn shv_07_manager_value_and_array() {
    common::for_each_context(60, |ctx| {
        let m = Manager::start().unwrap();
        let v = m.value(&1i32).unwrap();
        let a = m.array(&[0i32, 1]).unwrap();
        let mut p =
            Process::new(value_and_array_in_child, (v.clone(), a.clone())).with_context(ctx);
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(v.get().unwrap(), 2);
        assert_eq!(a.to_vec().unwrap(), [0, 10]);
        assert_eq!(remote_kind(a.set(2, &0).unwrap_err()), "IndexError");
        assert_eq!(remote_kind(a.get(-3).unwrap_err()), "IndexError");
    });
}

#[test]
fn slow_client_does_not_block_others() {
    bounded(90, || {
        let m = Manager::start().unwrap();
        let q: QueueProxy<i32> = m.queue(0).unwrap();
        let d: DictProxy<i32, i32> = m.dict().unwrap();
        let q2 = q.clone();
        // Several threads block in the server, far longer than the other client needs.
        let blocked: Vec<_> = (0..4)
            .map(|_| {
                let q = q2.clone();
                std::thread::spawn(move || q.get_timeout(Duration::from_secs(60)))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        for i in 0..200 {
            d.set(&i, &i).unwrap();
        }
        // The other client was served while they still wait (none of them has returned).
        assert!(blocked.iter().all(|b| !b.is_finished()));
        for _ in 0..4 {
            q.put(&1).unwrap();
        }
        for b in blocked {
            assert_eq!(b.join().unwrap().unwrap(), 1);
        }
    });
}

fn manager_port(m: &Manager) -> std::net::SocketAddr {
    match m.address() {
        Address::Tcp(a) => *a,
        _ => unreachable!(),
    }
}

#[test]
fn bad_input_from_the_network() {
    bounded(90, || {
        let key = b"net key".to_vec();
        let m = Manager::builder::<mp_core::manager::Builtins>()
            .address("127.0.0.1:0".parse().unwrap())
            .authkey(&key)
            .start()
            .unwrap();
        let addr = manager_port(&m);
        let d: DictProxy<i32, i32> = m.dict().unwrap();
        d.set(&0, &0).unwrap();

        // Garbage bytes, an oversized length, a truncated frame: each such client is
        // disconnected; the server stays up.
        for payload in [
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            u64::MAX.to_le_bytes().to_vec(),
            [&100u64.to_le_bytes()[..], &[1, 2, 3]].concat(),
        ] {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(SECS)).unwrap();
            let _ = s.write_all(&payload);
            drop(s);
            d.set(&1, &1).unwrap();
        }

        // A client that connects and says nothing does not hold anybody up.
        let silent: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let t = Instant::now();
        let c2 = Manager::connect(m.address(), &key).unwrap();
        let d2: DictProxy<i32, i32> = c2.dict().unwrap();
        d2.set(&1, &2).unwrap();
        assert!(t.elapsed() < Duration::from_secs(2));

        // A flood of connections: the established clients keep working, none of their data
        // is lost, and once the flood ends new clients get in.
        let mut flood = Vec::new();
        for _ in 0..300 {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(s) => flood.push(s),
                Err(_) => break,
            }
        }
        for i in 0..100 {
            d.set(&i, &i).unwrap();
        }
        assert_eq!(d.len().unwrap(), 100);
        drop(flood);
        drop(silent);
        let t = Instant::now();
        let mut ok = None;
        while t.elapsed() < Duration::from_secs(15) {
            match Manager::connect(m.address(), &key) {
                Ok(c) => {
                    ok = Some(c);
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        let c3 = ok.expect("a new client gets in after the flood");
        let d3: DictProxy<i32, i32> = c3.dict().unwrap();
        d3.set(&5, &5).unwrap();
        assert_eq!(d.get(&99).unwrap(), Some(99));

        // An authenticated client that sends an undecodable request gets an error reply and
        // keeps its connection.
        let conn = mp_core::Client::connect::<()>(m.address(), Some(&key)).unwrap();
        conn.send_bytes(&[0xff, 0xff, 0xff]).unwrap();
        let reply = conn.recv_bytes_timeout(SECS).unwrap();
        assert!(!reply.is_empty());
        conn.send_bytes(&[0xff]).unwrap();
        assert!(conn.recv_bytes_timeout(SECS).is_ok());
        drop(conn);
        assert_eq!(d.get(&0).unwrap(), Some(0));
        let _ = get_context(StartMethod::Spawn);
    });
}

fn append_many(l: mp_core::manager::ListProxy<u32>) {
    for i in 1000..1200 {
        l.append(&i).unwrap();
    }
}

/// Manager pieces of issue #16: a dict from a mapping, slice assignment, a sort that loses
/// nothing to concurrent writers, and a proxy clone that does not panic once the manager
/// is gone.
#[test]
fn dict_from_slices_atomic_sort_and_clone_after_shutdown() {
    common::bounded(120, || {
        let mut m = mp_core::manager::Manager::start().unwrap();
        let d = m
            .dict_from(vec![("a".to_string(), 1), ("b".to_string(), 2)])
            .unwrap();
        assert_eq!(d.len().unwrap(), 2);
        assert_eq!(d.get(&"a".to_string()).unwrap(), Some(1));

        let l = m.list(&[5u32, 4, 3, 2, 1]).unwrap();
        l.set_slice(1, 3, &[40, 41, 42]).unwrap();
        assert_eq!(l.to_vec().unwrap(), [5, 40, 41, 42, 2, 1]);
        l.set_slice(-2, 100, &[]).unwrap();
        assert_eq!(l.to_vec().unwrap(), [5, 40, 41, 42]);
        l.set_slice(0, 0, &[9]).unwrap();
        assert_eq!(l.to_vec().unwrap(), [9, 5, 40, 41, 42]);

        // A writer appends while this process sorts again and again: every element is kept.
        let mut p = mp_core::Process::new(append_many, l.clone());
        p.start().unwrap();
        while p.is_alive() {
            l.sort().unwrap();
        }
        p.join().unwrap();
        l.sort().unwrap();
        let v = l.to_vec().unwrap();
        assert_eq!(v.len(), 5 + 200, "no append was lost to a sort");
        assert!(v.windows(2).all(|w| w[0] <= w[1]));
        l.sort_by(|a, b| b.cmp(a)).unwrap();
        assert_eq!(l.get(0).unwrap(), 1199);

        m.shutdown().unwrap();
        let c = l.clone(); // the manager is gone: no panic
        assert!(c.len().is_err());
        assert!(l.try_clone().is_err());
    });
}

fn wait_at(b: mp_core::manager::BarrierProxy) {
    b.wait(None).unwrap();
}

/// Python's `m.Barrier(parties, timeout=t)`: `wait(None)` uses the barrier's timeout.
#[test]
fn manager_barrier_with_a_default_timeout() {
    common::bounded(60, || {
        let m = mp_core::manager::Manager::start().unwrap();
        let b = m.barrier_with_timeout(2, Duration::from_secs(30)).unwrap();
        let mut p = Process::new(wait_at, b.clone());
        p.start().unwrap();
        assert!(b.wait(None).unwrap() <= 1);
        p.join().unwrap();
        let lonely = m
            .barrier_with_timeout(2, Duration::from_millis(100))
            .unwrap();
        assert!(matches!(
            lonely.wait(None),
            Err(mp_core::manager::ManagerError::BrokenBarrier)
        ));
        assert!(lonely.broken().unwrap());
    });
}

/// The waiter of `condition_over_a_lock_across_processes`: holds the condition, says so,
/// waits until the notifier (holding the plain lock) sets the state.
fn cond_waiter(
    arg: (
        mp_core::manager::LockProxy,
        mp_core::manager::LockProxy,
        ValueProxy<i32>,
    ),
) {
    let (cond, lock, state) = arg;
    cond.acquire().unwrap();
    state.set(&10).unwrap();
    assert!(cond
        .wait_for(|| state.get().unwrap() == 1, Some(SECS))
        .unwrap());
    // Back from the wait, the condition holds the lock again: the shared one.
    assert!(lock.locked().unwrap());
    state.set(&2).unwrap();
    cond.release().unwrap();
}

/// The notifier: takes the plain lock (free only while the waiter waits), then notifies
/// through the condition, which needs that very lock held by this caller.
fn cond_notifier(
    arg: (
        mp_core::manager::LockProxy,
        mp_core::manager::LockProxy,
        ValueProxy<i32>,
    ),
) {
    let (cond, lock, state) = arg;
    assert!(lock.acquire_timeout(SECS).unwrap());
    assert_eq!(
        state.get().unwrap(),
        10,
        "the waiter released the lock in wait"
    );
    state.set(&1).unwrap();
    cond.notify(1).unwrap();
    lock.release().unwrap();
}

/// `m.Condition(lock)`: a condition over a manager lock, used by two client processes, one
/// through the condition, the other through the lock: they contend for one server lock.
#[test]
fn condition_over_a_lock_across_processes() {
    bounded(60, || {
        let m = Manager::start().unwrap();
        let lock = m.lock().unwrap();
        let cond = m.condition_with(&lock).unwrap();
        let state = m.value(&0i32).unwrap();
        let mut waiter = Process::new(cond_waiter, (cond.clone(), lock.clone(), state.clone()));
        waiter.start().unwrap();
        assert!(eventually(10, || state.get().unwrap() == 10));
        let mut notifier = Process::new(cond_notifier, (cond.clone(), lock.clone(), state.clone()));
        notifier.start().unwrap();
        waiter.join_timeout(SECS).unwrap();
        notifier.join_timeout(SECS).unwrap();
        assert_eq!(waiter.exitcode(), Some(0));
        assert_eq!(notifier.exitcode(), Some(0));
        assert_eq!(state.get().unwrap(), 2);
        assert!(!lock.locked().unwrap());
    });
}

/// Two conditions over one lock share the lock but not their waiters; an rlock's levels
/// survive a wait; a lock of another manager is refused.
#[test]
fn conditions_over_one_lock_have_their_own_waiters() {
    bounded(60, || {
        let m = Manager::start().unwrap();
        let lock = m.rlock().unwrap();
        let c1 = m.condition_with(&lock).unwrap();
        let c2 = m.condition_with(&lock).unwrap();
        let flag = m.value(&0i32).unwrap();
        let (c2b, flagb) = (c2.clone(), flag.clone());
        let waiter = std::thread::spawn(move || {
            c2b.acquire().unwrap();
            c2b.acquire().unwrap();
            flagb.set(&1).unwrap();
            // Only a notify of c2 wakes this wait; the first times out.
            let first = c2b.wait(Some(Duration::from_secs(2))).unwrap();
            flagb.set(&2).unwrap();
            let second = c2b.wait(Some(SECS)).unwrap();
            c2b.release().unwrap();
            // Both levels were restored: one release left.
            assert!(lock_still_held(&c2b));
            c2b.release().unwrap();
            (first, second)
        });
        assert!(eventually(10, || flag.get().unwrap() == 1));
        // Free only once the waiter waits (it holds the lock until then).
        c1.acquire().unwrap();
        c1.notify_all().unwrap();
        c1.release().unwrap();
        assert!(eventually(10, || flag.get().unwrap() == 2));
        c2.acquire().unwrap();
        c2.notify(1).unwrap();
        c2.release().unwrap();
        assert_eq!(waiter.join().unwrap(), (false, true));
        assert!(!lock.locked().unwrap());

        let other = Manager::start().unwrap();
        assert_eq!(
            remote_kind(other.condition_with(&lock).unwrap_err()),
            "ValueError"
        );
    });
}

fn lock_still_held(c: &mp_core::manager::LockProxy) -> bool {
    c.locked().unwrap()
}
