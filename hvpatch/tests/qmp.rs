//! The QMP client against a scripted peer on a Unix socket: replies matched
//! by id with events interleaved before and between them, QMP errors, a peer
//! that stops answering (deadline, not a hang), garbage and a closed socket.
//! (The client's use against real QEMU is covered by `drain.rs`.)

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

use hvpatch::Error;
use hvpatch::qmp::Qmp;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}"#;

/// Serves one connection: greeting, then for each command read, `script`
/// writes raw lines (it gets the command and its id).
fn serve(
    script: impl Fn(&Value, &mut UnixStream) + Send + 'static,
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qmp.sock");
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        writeln!(s, "{GREETING}").unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            let cmd: Value = serde_json::from_str(&line).unwrap();
            line.clear();
            if cmd["execute"] == "qmp_capabilities" {
                writeln!(s, "{}", json!({"return": {}, "id": cmd["id"]})).unwrap();
                continue;
            }
            script(&cmd, &mut s);
        }
    });
    (dir, path)
}

fn event(name: &str, secs: u64) -> String {
    json!({"event": name, "timestamp": {"seconds": secs, "microseconds": 500}, "data": {"status": "x"}})
        .to_string()
}

#[test]
fn events_before_and_between_replies_are_queued_in_order() {
    let (_d, path) = serve(|cmd, s| {
        // A stale reply with another id, two events, then the reply in two writes.
        writeln!(s, "{}", json!({"return": {"status": "stale"}, "id": 9999})).unwrap();
        writeln!(s, "{}", event("STOP", 1)).unwrap();
        writeln!(s, "{}", event("MIGRATION", 2)).unwrap();
        let reply = json!({"return": {"status": "running", "running": true, "singlestep": false}, "id": cmd["id"]}).to_string();
        let (a, b) = reply.split_at(10);
        s.write_all(a.as_bytes()).unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        writeln!(s, "{b}").unwrap();
        writeln!(s, "{}", event("RESUME", 3)).unwrap();
    });
    let mut q = Qmp::connect(&path).unwrap();
    assert_eq!(q.version, "7.2.22");
    let st = q.query_status().unwrap();
    assert_eq!(st.status, "running");
    assert!(st.running);
    std::thread::sleep(Duration::from_millis(50));
    let ev = q.take_events().unwrap();
    let names: Vec<&str> = ev.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["STOP", "MIGRATION", "RESUME"]);
    assert_eq!(
        ev[0].timestamp,
        std::time::UNIX_EPOCH + Duration::from_secs(1) + Duration::from_micros(500)
    );
    assert_eq!(ev[1].data["status"], "x");
    assert!(q.take_events().unwrap().is_empty());
}

#[test]
fn qmp_error_names_socket_command_and_class() {
    let (_d, path) = serve(|cmd, s| {
        writeln!(
            s,
            "{}",
            json!({"error": {"class": "GenericError", "desc": "no migration"}, "id": cmd["id"]})
        )
        .unwrap();
    });
    let mut q = Qmp::connect(&path).unwrap();
    let e = q.execute_raw("migrate_cancel", None).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Command { .. }));
    assert!(
        msg.contains(&path.display().to_string())
            && msg.contains("migrate_cancel")
            && msg.contains("GenericError: no migration"),
        "{msg}"
    );
}

#[test]
fn silent_peer_times_out_instead_of_hanging() {
    let (_d, path) = serve(|_, _| {});
    let mut q = Qmp::connect(&path).unwrap();
    q.timeout = Duration::from_millis(300);
    let t = Instant::now();
    let e = q.query_migrate().unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("reply to query-migrate"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn garbage_and_unexpected_replies_are_protocol_errors() {
    let (_d, path) = serve(|cmd, s| match cmd["execute"].as_str() {
        Some("query-status") => {
            writeln!(s, "{}", json!({"return": {"status": 5}, "id": cmd["id"]})).unwrap()
        }
        Some("query-migrate") => writeln!(s, "{}", json!({"id": cmd["id"]})).unwrap(),
        _ => writeln!(s, "this is not json").unwrap(),
    });
    let mut q = Qmp::connect(&path).unwrap();
    let e = q.query_status().unwrap_err();
    assert!(
        matches!(e, Error::Protocol { .. }) && e.to_string().contains("query-status"),
        "{e}"
    );
    let e = q.query_migrate().unwrap_err();
    assert!(
        matches!(e, Error::Protocol { .. }) && e.to_string().contains("has no return"),
        "{e}"
    );
    let e = q.execute_raw("cont", None).unwrap_err();
    assert!(
        matches!(e, Error::Protocol { .. }) && e.to_string().contains("bad JSON"),
        "{e}"
    );
}

#[test]
fn closed_socket_and_wrong_greeting_are_clear_errors() {
    let (_d, path) = serve(|_, s| {
        let _ = s.shutdown(std::net::Shutdown::Both);
    });
    let mut q = Qmp::connect(&path).unwrap();
    let e = q.query_status().unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    assert!(e.to_string().contains("connection closed"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("not-qmp.sock");
    let l = UnixListener::bind(&p).unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        writeln!(s, "{{\"hello\": 1}}").unwrap();
        std::thread::sleep(Duration::from_secs(1));
    });
    let e = Qmp::connect(&p).unwrap_err();
    assert!(e.to_string().contains("expected a QMP greeting"), "{e}");
    let e = Qmp::connect(&dir.path().join("absent.sock")).unwrap_err();
    assert!(
        matches!(e, Error::Connect { .. }) && e.to_string().contains("absent.sock"),
        "{e}"
    );
}
