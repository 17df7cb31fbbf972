//! Diff throughput figures (not a test: `#[ignore]`, prints numbers, asserts
//! nothing about time). Run in release:
//!
//! ```sh
//! cargo test --release -p patchgen --test bench_figures -- --ignored --nocapture
//! ```
//!
//! Generates C with N functions (each with a static, a static local, a
//! string literal, a jump table and a call), compiles original and patched
//! (one function changed) with gcc -O2 and function/data sections, and
//! reports per diff: wall time (best of R) and CPU time (user+sys from
//! /proc/self/stat, averaged), with MB/s of object input (both objects).

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Instant;

fn source(n: usize) -> String {
    let mut s = String::from("#include <stdio.h>\n");
    for i in 0..n {
        let prev = i.saturating_sub(1);
        s.push_str(&format!(
            "static int st_{i};\n__attribute__((noinline)) int fn_{i}(int x) {{\n\
             static int calls; calls++; st_{i} += x;\n\
             if (x > {i}) printf(\"fn_{i} big %d\\n\", x);\n\
             switch (x & 7) {{ case 0: return x + {i}; case 1: return x * 3; case 2: return x ^ {i}; \
             case 3: return x - 1; case 4: return fn_{prev}(x - 1) + 2; case 5: return x << 2; \
             case 6: return calls; default: return st_{i}; }}\n}}\n"
        ));
    }
    s
}

/// CPU seconds (user + system) used by this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5) (utime, stime), counted from after the
    // command name: indices 11 and 12 here; clock ticks of 1/100 s.
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

fn figures(n: usize, rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let src = source(n);
    let changed = src.replace(
        &format!("return x ^ {};", n / 2),
        &format!("return x ^ {};", n / 2 + 1),
    );
    let (po, pp) = (dir.path().join("o.c"), dir.path().join("p.c"));
    std::fs::write(&po, &src).unwrap();
    std::fs::write(&pp, &changed).unwrap();
    let o = std::fs::read(common::gcc(
        &po,
        &dir.path().join("orig"),
        "big",
        &["-O2"],
        true,
    ))
    .unwrap();
    let p = std::fs::read(common::gcc(
        &pp,
        &dir.path().join("patched"),
        "big",
        &["-O2"],
        true,
    ))
    .unwrap();
    let mb = (o.len() + p.len()) as f64 / 1e6;
    for (what, b) in [("one function changed", &p), ("no change", &o)] {
        let mut best = f64::MAX;
        let c0 = cpu_seconds();
        for _ in 0..rounds {
            let t = Instant::now();
            let r = patchgen::diff_objects(&o, "o", b, "p", &Default::default());
            best = best.min(t.elapsed().as_secs_f64());
            assert!(r.is_ok() || matches!(r, Err(patchgen::Error::NoChange { .. })));
        }
        let cpu = (cpu_seconds() - c0) / rounds as f64;
        println!(
            "{n:>5} functions, {:>5.2} MB per object, {what:<20}: wall best {:>7.1} ms ({:>4.0} MB/s), cpu {:>7.1} ms ({:>4.0} MB/s)",
            o.len() as f64 / 1e6,
            best * 1e3,
            mb / best,
            cpu * 1e3,
            mb / cpu
        );
    }
}

#[test]
#[ignore = "prints benchmark figures; run with --release --ignored --nocapture"]
fn diff_throughput() {
    figures(700, 40);
    figures(5000, 10);
}
