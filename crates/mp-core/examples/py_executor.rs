//! Twin of the `ProcessPoolExecutor` example of Python's `concurrent.futures`
//! documentation:
//!
//! ```python
//! import concurrent.futures
//! import math
//!
//! PRIMES = [
//!     112272535095293,
//!     112582705942171,
//!     112272535095293,
//!     115280095190773,
//!     115797848077099,
//!     1099726899285419]
//!
//! def is_prime(n):
//!     if n < 2:
//!         return False
//!     if n == 2:
//!         return True
//!     if n % 2 == 0:
//!         return False
//!
//!     sqrt_n = int(math.floor(math.sqrt(n)))
//!     for i in range(3, sqrt_n + 1, 2):
//!         if n % i == 0:
//!             return False
//!     return True
//!
//! def main():
//!     with concurrent.futures.ProcessPoolExecutor() as executor:
//!         for number, prime in zip(PRIMES, executor.map(is_prime, PRIMES)):
//!             print('%d is prime: %s' % (number, prime))
//!
//! if __name__ == '__main__':
//!     main()
//! ```
//!
//! plus `submit` and its future.
//!
//! Run with `cargo run -p mp-core --example py_executor`.

use mp_core::pool::ProcessPoolExecutor;

const PRIMES: [u64; 6] = [
    112272535095293,
    112582705942171,
    112272535095293,
    115280095190773,
    115797848077099,
    1099726899285419,
];

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n == 2 {
        return true;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let sqrt_n = (n as f64).sqrt().floor() as u64;
    (3..=sqrt_n).step_by(2).all(|i| !n.is_multiple_of(i))
}

fn main() {
    mp_core::main();

    // `with ProcessPoolExecutor() as executor:` — dropping it waits for the work.
    let executor = ProcessPoolExecutor::builder().build().expect("executor");
    let results = executor.map(is_prime, PRIMES).expect("map");
    let mut primes = Vec::new();
    for (number, prime) in PRIMES.iter().zip(results) {
        let prime = prime.expect("task");
        println!("{number} is prime: {prime}");
        primes.push(prime);
    }
    assert_eq!(primes, [true, true, true, true, true, false]);

    let future = executor.submit(is_prime, 97).expect("submit");
    println!("97 is prime: {}", future.result().expect("result"));
    executor.shutdown(true, false);
}
