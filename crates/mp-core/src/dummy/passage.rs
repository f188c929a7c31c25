//! How a queue or connection of the threads backend survives being serialized: it is parked
//! in a process-wide table and the serialized form is a ticket for it, claimed once when
//! deserialized in the same process.
//!
//! The threads backend never serializes its own arguments; this exists so that its types
//! satisfy the same `Serialize + DeserializeOwned` bounds as the process backend's (see
//! [`crate::api::Flavor`]). A ticket deserialized in another process, or twice, is an
//! error; an object serialized and never deserialized stays parked until the process ends.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

static PARKED: Mutex<BTreeMap<u64, Box<dyn Any + Send>>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(1);

#[derive(Serialize, Deserialize)]
struct Ticket {
    pid: u32,
    id: u64,
}

/// Parks `value` and serializes a ticket for it.
pub(crate) fn serialize<S: Serializer, V: Any + Send>(value: V, s: S) -> Result<S::Ok, S::Error> {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    PARKED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, Box::new(value));
    Ticket {
        pid: std::process::id(),
        id,
    }
    .serialize(s)
}

/// Reads a ticket and claims the value parked for it.
pub(crate) fn deserialize<'de, D: Deserializer<'de>, V: Any>(
    d: D,
    what: &str,
) -> Result<V, D::Error> {
    let t = Ticket::deserialize(d)?;
    if t.pid != std::process::id() {
        return Err(D::Error::custom(format!(
            "a threads-backend {what} cannot be passed to another process (use the process backend's)"
        )));
    }
    let parked = PARKED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&t.id);
    match parked.map(|b| b.downcast::<V>()) {
        Some(Ok(v)) => Ok(*v),
        Some(Err(_)) => Err(D::Error::custom(format!(
            "this ticket is not for a {what} of this type"
        ))),
        None => Err(D::Error::custom(format!(
            "this threads-backend {what} was already deserialized once"
        ))),
    }
}
