//! Twin of the queue example at the end of Python's `multiprocessing` documentation
//! ("An example showing how to use queues to feed tasks to a collection of worker
//! processes and collect the results"):
//!
//! ```python
//! def worker(input, output):
//!     for func, args in iter(input.get, 'STOP'):
//!         result = calculate(func, args)
//!         output.put(result)
//!
//! def calculate(func, args):
//!     result = func(*args)
//!     return '%s says that %s%s = %s' % \
//!         (current_process().name, func.__name__, args, result)
//!
//! def mul(a, b):
//!     time.sleep(0.5*random.random())
//!     return a * b
//!
//! def plus(a, b):
//!     time.sleep(0.5*random.random())
//!     return a + b
//!
//! def test():
//!     NUMBER_OF_PROCESSES = 4
//!     TASKS1 = [(mul, (i, 7)) for i in range(20)]
//!     TASKS2 = [(plus, (i, 8)) for i in range(10)]
//!     task_queue = Queue()
//!     done_queue = Queue()
//!     for task in TASKS1:
//!         task_queue.put(task)
//!     for i in range(NUMBER_OF_PROCESSES):
//!         Process(target=worker, args=(task_queue, done_queue)).start()
//!     print('Unordered results:')
//!     for i in range(len(TASKS1)):
//!         print('\t', done_queue.get())
//!     for task in TASKS2:
//!         task_queue.put(task)
//!     for i in range(len(TASKS2)):
//!         print('\t', done_queue.get())
//!     for i in range(NUMBER_OF_PROCESSES):
//!         task_queue.put('STOP')
//!
//! if __name__ == '__main__':
//!     freeze_support()
//!     test()
//! ```
//!
//! Functions cannot travel in a message, so a task is an enum naming the operation;
//! `'STOP'` is a variant too. The sleeps are shortened tenfold.
//!
//! Run with `cargo run -p mp-core --example py_workers`.

use std::time::Duration;

use mp_core::{current_process, Process, Queue};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum Task {
    Mul(i64, i64),
    Plus(i64, i64),
    Stop,
}

/// A small random sleep (0 to 50 ms), without a random-number crate.
fn nap(seed: i64) {
    let x = (seed as u64 ^ u64::from(std::process::id())).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    std::thread::sleep(Duration::from_millis((x >> 58) % 50));
}

fn calculate(task: Task) -> String {
    let (name, a, b, result) = match task {
        Task::Mul(a, b) => ("mul", a, b, a * b),
        Task::Plus(a, b) => ("plus", a, b, a + b),
        Task::Stop => unreachable!("STOP is not calculated"),
    };
    nap(a);
    format!(
        "{} says that {name}({a}, {b}) = {result}",
        current_process().name
    )
}

fn worker((input, output): (Queue<Task>, Queue<String>)) {
    // iter(input.get, 'STOP')
    while let Ok(task) = input.get() {
        if let Task::Stop = task {
            break;
        }
        output.put(calculate(task)).expect("put");
    }
}

fn main() {
    // freeze_support() and the __main__ guard in one.
    mp_core::main();

    const NUMBER_OF_PROCESSES: usize = 4;
    let tasks1: Vec<Task> = (0..20).map(|i| Task::Mul(i, 7)).collect();
    let tasks2: Vec<Task> = (0..10).map(|i| Task::Plus(i, 8)).collect();

    let task_queue = Queue::new().expect("queue");
    let done_queue = Queue::new().expect("queue");
    for &task in &tasks1 {
        task_queue.put(task).expect("put");
    }
    let mut workers = Vec::new();
    for _ in 0..NUMBER_OF_PROCESSES {
        let mut p = Process::new(worker, (task_queue.clone(), done_queue.clone()));
        p.start().expect("start");
        workers.push(p);
    }

    println!("Unordered results:");
    for _ in 0..tasks1.len() {
        println!("\t {}", done_queue.get().expect("get"));
    }
    for &task in &tasks2 {
        task_queue.put(task).expect("put");
    }
    for _ in 0..tasks2.len() {
        println!("\t {}", done_queue.get().expect("get"));
    }
    for _ in 0..NUMBER_OF_PROCESSES {
        task_queue.put(Task::Stop).expect("put");
    }
    for p in &workers {
        p.join().expect("join");
    }
    println!("all {} tasks done", tasks1.len() + tasks2.len());
}
