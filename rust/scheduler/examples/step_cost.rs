//! The bench step (`benches/common`) timed one by one: min, p10 and median microseconds over
//! 1400 steady-state steps per policy. Minimums are robust to a loaded machine.
//!
//! `cargo run --release -p suffixspec-scheduler --example step_cost`
#[path = "../benches/common/mod.rs"]
mod common;

use std::time::Instant;

use common::{decoding_scheduler, drafts, step, POLICIES};

fn main() {
    let trees = drafts();
    for (name, policy) in POLICIES {
        let base = decoding_scheduler(policy);
        let mut s = base.clone();
        let (mut micros, mut verify) = (Vec::new(), 0);
        for i in 0..1600u64 {
            if i % 200 == 0 {
                s = base.clone(); // restart so requests keep room to grow; the next step is warm-up
            }
            let start = Instant::now();
            verify = step(&mut s, &trees, i % 200 + 1);
            if i % 200 != 0 {
                micros.push(start.elapsed().as_secs_f64() * 1e6);
            }
        }
        micros.sort_by(f64::total_cmp);
        let (min, p10, median) = (micros[0], micros[micros.len() / 10], micros[micros.len() / 2]);
        println!("{name:9} min {min:6.1} us  p10 {p10:6.1} us  median {median:6.1} us  ({verify} tree nodes per step)");
    }
}
