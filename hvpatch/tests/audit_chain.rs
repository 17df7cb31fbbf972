//! The audit log's chain: records appended by concurrent writers verify,
//! an edited line is named, a rotated log continues the chain.

use hvpatch::audit::{self, Event, Log};
use std::path::Path;

fn ev(i: usize) -> Event<'static> {
    Event {
        step: "apply",
        what: format!("event {i}"),
        target: Some(format!("pid {i}")),
        key_id: Some("0123456789ABCDEF".into()),
        result: "ok",
        status: Some(0),
        ..Event::default()
    }
}

#[test]
fn concurrent_writers_keep_one_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("log/audit.jsonl");
    std::thread::scope(|s| {
        for t in 0..4 {
            let p = p.clone();
            s.spawn(move || {
                let mut log = Log::open(&p).expect("open");
                for i in 0..25 {
                    log.event(&ev(t * 100 + i)).expect("append");
                }
            });
        }
    });
    let sum = trust::chain::verify_files(std::slice::from_ref(&p)).expect("chain verifies");
    assert_eq!(sum.lines, 100);
    let recs = audit::read(&p).expect("read");
    assert_eq!(recs[0].prev, trust::chain::GENESIS);
    assert_eq!(recs[5].key_id.as_deref(), Some("0123456789ABCDEF"));
    assert_eq!(recs[5].status, Some(0));
}

fn edit_line(p: &Path, n: usize, from: &str, to: &str) {
    let text = std::fs::read_to_string(p).expect("read");
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines[n - 1] = lines[n - 1].replacen(from, to, 1);
    std::fs::write(p, lines.join("\n") + "\n").expect("write");
}

#[test]
fn an_edited_line_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("audit.jsonl");
    let mut log = Log::open(&p).expect("open");
    for i in 0..6 {
        log.event(&ev(i)).expect("append");
    }
    edit_line(&p, 3, r#""result":"ok""#, r#""result":"refused""#);
    let e = trust::chain::verify_files(std::slice::from_ref(&p)).expect_err("broken");
    assert!(matches!(e, trust::Error::Chain { line: 4, .. }), "{e}");
    assert!(e.to_string().contains("audit.jsonl: line 4"), "{e}");
}

#[test]
fn a_rotated_log_continues_the_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("audit.jsonl");
    let mut log = Log::open(&p).expect("open");
    for i in 0..3 {
        log.event(&ev(i)).expect("append");
    }
    std::fs::rename(&p, audit::rotated(&p)).expect("rotate");
    for i in 3..5 {
        log.event(&ev(i)).expect("append");
    }
    let files = [audit::rotated(&p), p.clone()];
    let sum = trust::chain::verify_files(&files).expect("chain across rotation");
    assert_eq!(sum.lines, 5);
    // The new file alone verifies too (it starts mid-chain), but not in the
    // wrong order.
    trust::chain::verify_files(std::slice::from_ref(&p)).expect("new file alone");
    let wrong = [p.clone(), audit::rotated(&p)];
    assert!(trust::chain::verify_files(&wrong).is_err());
}
