//! Test support: builds the C targets of `testkernels/proc` and patches for
//! them at test time, and runs targets under a guard that kills them.
//!
//! Patches are made the hand-written way (until a test uses the diff engine):
//! `gcc -c -O2 -ffunction-sections -fdata-sections` of a C file holding the
//! replacement functions, a `format::Meta` whose expected bytes come from the
//! target binary, attached with `objcopy --add-section .hotfix.meta=...`.
#![allow(dead_code)]

use goblin::elf::Elf;
use patchgen::format::{Binding, Func, Kind, Meta, Ref, Target};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// `testkernels/proc`.
pub fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testkernels/proc")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn build tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A build directory.
pub struct Build {
    /// The temporary directory.
    pub dir: tempfile::TempDir,
}

/// How a target is built.
#[derive(Debug, Clone, Copy, Default)]
pub struct TargetKind {
    /// Position-independent executable.
    pub pie: bool,
    /// Linked with libcalc.so.
    pub lib: bool,
}

impl Build {
    /// A fresh build directory.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Path of a file in the build directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Builds the target program.
    pub fn target(&self, kind: TargetKind) -> PathBuf {
        let out = self.path(if kind.pie {
            "target-pie"
        } else {
            "target-nopie"
        });
        let mut c = Command::new("gcc");
        c.args(["-O2", "-g", "-pthread", "-Wl,--build-id", "-o"])
            .arg(&out)
            .arg(src_dir().join("target.c"));
        if kind.pie {
            c.args(["-fPIE", "-pie"]);
        } else {
            c.args(["-fno-pie", "-no-pie"]);
        }
        if kind.lib {
            let lib = self.lib();
            c.arg("-Wl,--no-as-needed")
                .arg(&lib)
                .arg(format!("-Wl,-rpath,{}", self.dir.path().display()));
        }
        run(&mut c);
        out
    }

    /// Builds libcalc.so.
    pub fn lib(&self) -> PathBuf {
        let out = self.path("libcalc.so");
        if !out.exists() {
            run(Command::new("gcc")
                .args(["-O2", "-fPIC", "-shared", "-Wl,--build-id", "-o"])
                .arg(&out)
                .arg(src_dir().join("libcalc.c")));
        }
        out
    }

    /// Compiles a patch source (`patches/<src>`) to an object.
    pub fn patch_object(&self, src: &str, extra: &[&str]) -> PathBuf {
        let out = self.path(&format!(
            "{src}.{}.o",
            extra.join("").replace(['-', '='], "")
        ));
        run(Command::new("gcc")
            .args(["-c", "-O2", "-ffunction-sections", "-fdata-sections"])
            .args(extra)
            .arg("-o")
            .arg(&out)
            .arg(src_dir().join("patches").join(src)));
        out
    }

    /// Makes a patch file from `src` for `spec`.
    pub fn patch(&self, src: &str, spec: &Spec) -> PathBuf {
        let obj = self.patch_object(src, &spec.cflags);
        let meta = spec.meta(&obj);
        let metafile = self.path(&format!("{}.meta", spec.id));
        std::fs::write(&metafile, meta.encode()).expect("write meta");
        let out = self.path(&format!("{}.hfx", spec.id));
        run(Command::new("objcopy")
            .arg("--add-section")
            .arg(format!(".hotfix.meta={}", metafile.display()))
            .args(["--set-section-flags", ".hotfix.meta=readonly"])
            .arg(&obj)
            .arg(&out));
        out
    }
}

/// What a hand-made patch replaces and how its references resolve.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Patch id.
    pub id: String,
    /// The object holding the replaced functions (executable or library).
    pub object: PathBuf,
    /// Replaced functions: (name, binding, file).
    pub funcs: Vec<(String, Binding, Option<String>)>,
    /// Reference overrides: (symbol, binding, kind, file); others are global.
    pub refs: Vec<(String, Binding, Kind, Option<String>)>,
    /// New functions and data of the patch.
    pub new_funcs: Vec<String>,
    /// New data of the patch.
    pub new_data: Vec<String>,
    /// Build-id override.
    pub build_id: Option<String>,
    /// Expected-bytes override (hex).
    pub expected: Option<String>,
    /// Extra compiler flags for the patch source.
    pub cflags: Vec<&'static str>,
}

impl Spec {
    /// A patch `id` replacing global `funcs` of `object`.
    pub fn new(id: &str, object: &Path, funcs: &[&str]) -> Self {
        Self {
            id: id.into(),
            object: object.to_path_buf(),
            funcs: funcs
                .iter()
                .map(|f| (f.to_string(), Binding::Global, None))
                .collect(),
            refs: Vec::new(),
            new_funcs: Vec::new(),
            new_data: Vec::new(),
            build_id: None,
            expected: None,
            cflags: Vec::new(),
        }
    }

    /// Declares a reference to a local (static) symbol of `target.c`.
    pub fn local_ref(mut self, name: &str, kind: Kind) -> Self {
        self.refs
            .push((name.into(), Binding::Local, kind, Some("target.c".into())));
        self
    }

    /// Declares a thread-local reference.
    pub fn tls_ref(mut self, name: &str) -> Self {
        self.refs
            .push((name.into(), Binding::Global, Kind::Tls, None));
        self
    }

    /// The metadata for patch object `obj`.
    pub fn meta(&self, obj: &Path) -> Meta {
        let tbytes = std::fs::read(&self.object).expect("read target object");
        let telf = Elf::parse(&tbytes).expect("parse target");
        let mut build_id = String::new();
        for n in telf
            .iter_note_headers(&tbytes)
            .into_iter()
            .flatten()
            .flatten()
        {
            if n.n_type == goblin::elf::note::NT_GNU_BUILD_ID {
                build_id = hex::encode(n.desc);
            }
        }
        let funcs = self
            .funcs
            .iter()
            .map(|(name, binding, file)| {
                let s = telf
                    .syms
                    .iter()
                    .chain(telf.dynsyms.iter())
                    .find(|s| {
                        let tab = telf
                            .strtab
                            .get_at(s.st_name)
                            .or_else(|| telf.dynstrtab.get_at(s.st_name));
                        tab == Some(name.as_str()) && s.st_type() == goblin::elf::sym::STT_FUNC
                    })
                    .expect("function in target");
                let ph = telf
                    .program_headers
                    .iter()
                    .find(|p| {
                        p.p_type == goblin::elf::program_header::PT_LOAD
                            && s.st_value >= p.p_vaddr
                            && s.st_value < p.p_vaddr + p.p_filesz
                    })
                    .expect("segment");
                let off = (s.st_value - ph.p_vaddr + ph.p_offset) as usize;
                let n = (s.st_size as usize).clamp(9, 16);
                let expected = self
                    .expected
                    .clone()
                    .unwrap_or_else(|| hex::encode(&tbytes[off..off + n]));
                let len = expected.len() / 2;
                Func {
                    name: name.clone(),
                    file: file.clone(),
                    sympos: 0,
                    binding: *binding,
                    old_size: s.st_size,
                    new_symbol: name.clone(),
                    target: 0,
                    expected,
                    expected_mask: "ff".repeat(len),
                }
            })
            .collect();
        let pbytes = std::fs::read(obj).expect("read patch object");
        let pelf = Elf::parse(&pbytes).expect("parse patch object");
        let mut refs = Vec::new();
        for s in pelf.syms.iter() {
            if s.st_shndx != 0 || s.st_name == 0 {
                continue;
            }
            let name = pelf.strtab.get_at(s.st_name).unwrap_or("").to_string();
            if name.is_empty()
                || name == "_GLOBAL_OFFSET_TABLE_"
                || refs.iter().any(|r: &Ref| r.symbol == name)
            {
                continue;
            }
            let over = self.refs.iter().find(|r| r.0 == name);
            refs.push(Ref {
                symbol: name.clone(),
                name,
                binding: over.map(|o| o.1).unwrap_or(Binding::Global),
                kind: over.map(|o| o.2).unwrap_or(Kind::Notype),
                file: over.and_then(|o| o.3.clone()),
                sympos: 0,
                target: 0,
            });
        }
        Meta {
            id: self.id.clone(),
            description: format!("test patch {}", self.id),
            source_hash: "00".repeat(32),
            targets: vec![Target {
                build_id: self.build_id.clone().unwrap_or(build_id),
                name: self.object.display().to_string(),
            }],
            funcs,
            new_funcs: self.new_funcs.clone(),
            new_data: self.new_data.clone(),
            refs,
        }
    }
}

/// A running target, killed on drop.
pub struct Running {
    /// The process id.
    pub pid: i32,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Running {
    /// Starts `bin` with `args` and waits for its `ready` line.
    pub fn start(bin: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start target");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let pid = child.id() as i32;
        let mut r = Self {
            pid,
            child,
            stdin,
            stdout,
        };
        let line = r.line();
        assert!(line.starts_with("ready"), "target said {line:?}");
        r
    }

    /// A second handle on the target's stdin (for another thread).
    pub fn stdin_handle(&self) -> std::fs::File {
        use std::os::fd::AsFd;
        std::fs::File::from(self.stdin.as_fd().try_clone_to_owned().expect("dup stdin"))
    }

    /// Reads one reply line.
    pub fn line(&mut self) -> String {
        let mut s = String::new();
        self.stdout.read_line(&mut s).expect("read target stdout");
        s.trim().to_string()
    }

    /// Sends a command line, returns the reply line.
    pub fn cmd(&mut self, c: &str) -> String {
        writeln!(self.stdin, "{c}").expect("write to target");
        self.stdin.flush().expect("flush");
        let r = self.line();
        assert!(!r.is_empty(), "target died (command {c:?})");
        r
    }

    /// `call X` as a number.
    pub fn call(&mut self, x: i32) -> i64 {
        self.cmd(&format!("call {x}")).parse().expect("number")
    }

    /// Whether the process is still alive.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// A field `key=value` of the `status` reply.
    pub fn status(&mut self, key: &str) -> i64 {
        let s = self.cmd("status");
        field(&s, key)
    }
}

/// The value of `key=` in a `k=v k=v` line.
pub fn field(line: &str, key: &str) -> i64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1)
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns true or `secs` pass.
pub fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
