//! Diff throughput benchmark: times [`patchgen::diff_objects`] on object
//! pairs given on the command line and prints ms per pair and MB/s.
//!
//! Run through `scripts/bench-diff`, which builds the pairs (a generated C
//! file with thousands of functions, and SQLite's amalgamation, each with a
//! small change) and calls
//! `cargo bench -p patchgen --bench diff -- NAME=ORIG.o,PATCHED.o ...`.
//!
//! Model: each pair is diffed a few times untimed (warm caches), then timed
//! until at least 10 runs and 3 s have passed (at most 200 runs); the median
//! and the minimum are reported. Throughput counts the bytes of both input
//! objects, the way the diff reads them. Reading the files is not timed.
//!
//! Besides wall-clock time, the CPU time of the benchmark thread over the
//! timed runs is reported (from `/proc/thread-self/stat`, 10 ms ticks, summed
//! over all runs): on a shared machine the wall time includes waiting for a
//! core, the CPU time does not. Throughput is given for both.

use patchgen::{DiffOptions, diff_objects};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pairs: Vec<String> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .cloned()
        .collect();
    // `cargo test --all-targets` runs this binary without `--bench` and
    // without pairs: there is nothing to time then.
    if pairs.is_empty() && !args.iter().any(|a| a == "--bench") {
        println!("diff bench: no pairs given, nothing to time (run scripts/bench-diff)");
        return;
    }
    if pairs.is_empty() {
        eprintln!("usage: diff NAME=ORIG.o,PATCHED.o ... (see scripts/bench-diff)");
        std::process::exit(2);
    }
    println!(
        "| pair | orig.o | patched.o | result | wall median ms | wall min ms | CPU ms per run | runs | MB/s wall (both inputs) | MB/s CPU (both inputs) | CPU ms per MB of orig.o |"
    );
    println!("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for spec in &pairs {
        let Some((name, files)) = spec.split_once('=') else {
            eprintln!("bad pair {spec:?}: want NAME=ORIG.o,PATCHED.o");
            std::process::exit(2);
        };
        let Some((orig_path, patched_path)) = files.split_once(',') else {
            eprintln!("bad pair {spec:?}: want NAME=ORIG.o,PATCHED.o");
            std::process::exit(2);
        };
        let read = |p: &str| {
            std::fs::read(p).unwrap_or_else(|e| {
                eprintln!("{p}: {e}");
                std::process::exit(1)
            })
        };
        let (orig, patched) = (read(orig_path), read(patched_path));
        let opts = DiffOptions::default();
        let run = || diff_objects(&orig, orig_path, &patched, patched_path, &opts);
        let result = match run() {
            Ok(r) => format!(
                "{} changed, {} new fn, {} new data",
                r.changed.len(),
                r.new_funcs.len(),
                r.new_data.len()
            ),
            Err(e) => format!("error (status {}): {e}", e.status() as u8),
        };
        for _ in 0..2 {
            let _ = std::hint::black_box(run());
        }
        let mut times = Vec::new();
        let cpu_start = thread_cpu_seconds();
        let start = Instant::now();
        while times.len() < 200 && (times.len() < 10 || start.elapsed() < Duration::from_secs(3)) {
            let t = Instant::now();
            let _ = std::hint::black_box(run());
            times.push(t.elapsed());
        }
        let cpu = (thread_cpu_seconds() - cpu_start) / times.len() as f64;
        times.sort();
        let median = times[times.len() / 2].as_secs_f64();
        let min = times[0].as_secs_f64();
        let mb = |n: usize| n as f64 / 1e6;
        println!(
            "| {name} | {:.2} MB | {:.2} MB | {result} | {:.1} | {:.1} | {:.1} | {} | {:.0} | {:.0} | {:.1} |",
            mb(orig.len()),
            mb(patched.len()),
            median * 1e3,
            min * 1e3,
            cpu * 1e3,
            times.len(),
            mb(orig.len() + patched.len()) / median,
            mb(orig.len() + patched.len()) / cpu,
            cpu * 1e3 / mb(orig.len()),
        );
    }
}

/// CPU time (user + system) of the calling thread, in seconds; 0 when
/// `/proc` is unavailable. Resolution: one clock tick (10 ms).
fn thread_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line, i.e. the 12th and 13th after it.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    // USER_HZ is 100 on Linux x86-64.
    f.iter().sum::<u64>() as f64 / 100.0
}
