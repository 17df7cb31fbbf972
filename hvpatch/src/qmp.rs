//! A small synchronous QMP client over a Unix socket, typed where hotfix
//! needs it (run state, migration) and raw JSON elsewhere.
//!
//! Model: one connection = greeting, `qmp_capabilities`, then commands. Each
//! command carries a fresh numeric `id`; replies are matched by that id.
//! Asynchronous events (`{"event": ...}`) may arrive at any point, before or
//! between replies: they are queued, in order, and handed out by
//! [`Qmp::take_events`]. Every read has a deadline: a QEMU that stops
//! answering gives [`Error::Timeout`], never a hang. A partial line that timed
//! out is kept and completed by the next read.
//!
//! Why not the `qapi` crate: its types are generated from QEMU 9.1's schema
//! while Debian 12 ships QEMU 7.2 (the `migrate` and capability types differ),
//! it is marked passively maintained, and its synchronous API has no read
//! deadline. The dozen commands hotfix uses are typed here instead
//! (see `docs/drain.md`).

use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Default deadline of one command (reply) and of the greeting.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// An asynchronous QMP event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Event name, e.g. `MIGRATION`, `STOP`, `RESUME`.
    pub name: String,
    /// Its `data` member (`null` when absent).
    pub data: Value,
    /// QEMU's timestamp of the event (host wall clock).
    pub timestamp: SystemTime,
}

/// Reply of `query-status`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct StatusInfo {
    /// Run state: `running`, `paused`, `inmigrate`, `postmigrate`, ...
    pub status: String,
    /// Whether the vCPUs run.
    pub running: bool,
}

/// RAM statistics of `query-migrate`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", default)]
pub struct RamStats {
    /// Bytes transferred so far.
    pub transferred: u64,
    /// Bytes still to transfer (estimate).
    pub remaining: u64,
    /// Guest RAM size in bytes.
    pub total: u64,
    /// Guest page size.
    pub page_size: u64,
    /// Pages dirtied per second, as last measured.
    pub dirty_pages_rate: u64,
    /// Throughput in megabits per second.
    pub mbps: f64,
    /// Number of dirty-bitmap syncs (iterations).
    pub dirty_sync_count: u64,
    /// Bytes sent while the VM was stopped.
    pub downtime_bytes: u64,
}

/// Reply of `query-migrate` (the members hotfix uses; others are ignored).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", default)]
pub struct MigrationInfo {
    /// `none`, `setup`, `active`, `device`, `completed`, `failed`,
    /// `cancelling`, `cancelled`, ... (`None` before any migration).
    pub status: Option<String>,
    /// Milliseconds spent in setup.
    pub setup_time: Option<u64>,
    /// Total milliseconds (when completed; running time before).
    pub total_time: Option<u64>,
    /// Milliseconds the VM was stopped (when completed).
    pub downtime: Option<u64>,
    /// QEMU's downtime estimate while active.
    pub expected_downtime: Option<u64>,
    /// RAM statistics.
    pub ram: Option<RamStats>,
    /// Error description when failed.
    pub error_desc: Option<String>,
    /// Addresses a destination listens on (`migrate-incoming` with port 0).
    pub socket_address: Option<Vec<Value>>,
}

impl MigrationInfo {
    /// The status, `none` when absent.
    pub fn state(&self) -> &str {
        self.status.as_deref().unwrap_or("none")
    }
}

/// One QMP connection.
#[derive(Debug)]
pub struct Qmp {
    socket: PathBuf,
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    partial: Vec<u8>,
    next_id: u64,
    events: VecDeque<Event>,
    /// QEMU's version from the greeting (`major.minor.micro`).
    pub version: String,
    /// Deadline of each command.
    pub timeout: Duration,
}

impl Qmp {
    /// Connects to `socket`, reads the greeting and negotiates capabilities.
    ///
    /// QEMU's monitor serves one client at a time and may close a connection
    /// that arrives while it still tears down the previous one; a handshake
    /// closed by the peer is therefore retried (5 times, 100 ms apart).
    pub fn connect(socket: &Path) -> Result<Qmp> {
        let mut tries = 0;
        loop {
            match Qmp::connect_once(socket) {
                Err(Error::Io { source, .. })
                    if tries < 5
                        && matches!(
                            source.kind(),
                            ErrorKind::UnexpectedEof
                                | ErrorKind::BrokenPipe
                                | ErrorKind::ConnectionReset
                        ) =>
                {
                    tries += 1;
                    tracing::debug!(socket = %socket.display(), %source, "QMP handshake closed by peer, retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
                r => return r,
            }
        }
    }

    /// The pid of the QEMU process at the other end (`SO_PEERCRED`).
    pub fn peer_pid(&self) -> Option<i32> {
        nix::sys::socket::getsockopt(&self.stream, nix::sys::socket::sockopt::PeerCredentials)
            .ok()
            .map(|c| c.pid())
    }

    fn connect_once(socket: &Path) -> Result<Qmp> {
        let stream = UnixStream::connect(socket).map_err(|source| Error::Connect {
            socket: socket.to_path_buf(),
            source,
        })?;
        let io = |source| Error::Io {
            socket: socket.to_path_buf(),
            source,
        };
        let reader = BufReader::new(stream.try_clone().map_err(io)?);
        let mut q = Qmp {
            socket: socket.to_path_buf(),
            stream,
            reader,
            partial: Vec::new(),
            next_id: 1,
            events: VecDeque::new(),
            version: String::new(),
            timeout: DEFAULT_TIMEOUT,
        };
        let deadline = Instant::now() + q.timeout;
        let greeting = q.read_message(deadline, "QMP greeting")?;
        let Some(v) = greeting.get("QMP") else {
            return Err(q.protocol(format!("expected a QMP greeting, got {greeting}")));
        };
        let ver = &v["version"]["qemu"];
        q.version = format!("{}.{}.{}", ver["major"], ver["minor"], ver["micro"]);
        q.execute_raw("qmp_capabilities", None)?;
        Ok(q)
    }

    /// The socket this connection talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn protocol(&self, detail: String) -> Error {
        Error::Protocol {
            socket: self.socket.clone(),
            detail,
        }
    }

    /// Reads one JSON message (reply, event or greeting) before `deadline`.
    fn read_message(&mut self, deadline: Instant, what: &str) -> Result<Value> {
        loop {
            let now = Instant::now();
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() {
                return Err(Error::Timeout {
                    socket: self.socket.clone(),
                    what: what.to_string(),
                    after: self.timeout,
                });
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|source| Error::Io {
                    socket: self.socket.clone(),
                    source,
                })?;
            match self.reader.read_until(b'\n', &mut self.partial) {
                Ok(0) => {
                    return Err(Error::Io {
                        socket: self.socket.clone(),
                        source: std::io::Error::new(
                            ErrorKind::UnexpectedEof,
                            format!("connection closed while waiting for {what}"),
                        ),
                    });
                }
                Ok(_) if self.partial.ends_with(b"\n") => {
                    let line = std::mem::take(&mut self.partial);
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return serde_json::from_slice(&line).map_err(|e| {
                        self.protocol(format!(
                            "bad JSON ({e}): {}",
                            String::from_utf8_lossy(&line).trim_end()
                        ))
                    });
                }
                Ok(_) => continue, // partial line before EOF/timeout: read on
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(source) => {
                    return Err(Error::Io {
                        socket: self.socket.clone(),
                        source,
                    });
                }
            }
        }
    }

    fn queue_event(&mut self, msg: &Value) {
        let ts = &msg["timestamp"];
        let secs = ts["seconds"].as_u64().unwrap_or(0);
        let micros = ts["microseconds"].as_u64().unwrap_or(0);
        self.events.push_back(Event {
            name: msg["event"].as_str().unwrap_or_default().to_string(),
            data: msg.get("data").cloned().unwrap_or(Value::Null),
            timestamp: SystemTime::UNIX_EPOCH
                + Duration::from_secs(secs)
                + Duration::from_micros(micros),
        });
    }

    /// Executes `command` with `arguments`; returns the `return` member.
    pub fn execute_raw(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "execute": command, "id": id });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.stream
            .write_all(line.as_bytes())
            .map_err(|source| Error::Io {
                socket: self.socket.clone(),
                source,
            })?;
        let deadline = Instant::now() + self.timeout;
        let what = format!("reply to {command}");
        loop {
            let reply = self.read_message(deadline, &what)?;
            if reply.get("event").is_some() {
                self.queue_event(&reply);
                continue;
            }
            if reply.get("id").and_then(Value::as_u64) != Some(id) {
                // A reply to an earlier command that timed out: drop it.
                continue;
            }
            if let Some(err) = reply.get("error") {
                return Err(Error::Command {
                    socket: self.socket.clone(),
                    command: command.to_string(),
                    class: err["class"].as_str().unwrap_or("?").to_string(),
                    desc: err["desc"].as_str().unwrap_or("?").to_string(),
                });
            }
            return match reply.get("return") {
                Some(r) => Ok(r.clone()),
                None => Err(self.protocol(format!("reply to {command} has no return: {reply}"))),
            };
        }
    }

    /// Executes `command` and decodes its `return` member as `T`.
    pub fn execute<T: DeserializeOwned>(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<T> {
        let r = self.execute_raw(command, arguments)?;
        serde_json::from_value(r.clone())
            .map_err(|e| self.protocol(format!("unexpected reply to {command} ({e}): {r}")))
    }

    /// `query-status`.
    pub fn query_status(&mut self) -> Result<StatusInfo> {
        self.execute("query-status", None)
    }

    /// `query-migrate`.
    pub fn query_migrate(&mut self) -> Result<MigrationInfo> {
        self.execute("query-migrate", None)
    }

    /// Sets migration capabilities by name (`migrate-set-capabilities`).
    pub fn set_capabilities(&mut self, caps: &[(&str, bool)]) -> Result<()> {
        let list: Vec<Value> = caps
            .iter()
            .map(|(c, s)| json!({ "capability": c, "state": s }))
            .collect();
        self.execute_raw(
            "migrate-set-capabilities",
            Some(json!({ "capabilities": list })),
        )?;
        Ok(())
    }

    /// Sets migration parameters (`migrate-set-parameters`, JSON object).
    pub fn set_parameters(&mut self, params: Value) -> Result<()> {
        self.execute_raw("migrate-set-parameters", Some(params))?;
        Ok(())
    }

    /// Events received so far (in order), removing them from the queue.
    /// Also reads any event already waiting on the socket, without blocking
    /// longer than a millisecond.
    pub fn take_events(&mut self) -> Result<Vec<Event>> {
        let deadline = Instant::now() + Duration::from_millis(1);
        loop {
            match self.read_message(deadline, "event") {
                Ok(msg) if msg.get("event").is_some() => self.queue_event(&msg),
                Ok(_) => {}
                Err(Error::Timeout { .. }) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(self.events.drain(..).collect())
    }
}
