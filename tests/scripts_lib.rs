//! `scripts/lib.sh`'s `ensure_deb_src`, run by bash under the scripts' own
//! `set -euo pipefail` against apt configurations laid out in a temporary
//! directory (`HOTFIX_APT_ETC`): the one-line `sources.list` of a pristine
//! mmdebstrap root, the deb822 `debian.sources` of a Debian cloud image, a
//! configuration that already has deb-src entries, and one with no `deb`
//! entry at all. The first layout failed silently before (a glob that matched
//! nothing reached `cat` under pipefail), which only a pristine root showed.

#![allow(clippy::panic, missing_docs)]

use std::path::Path;
use std::process::{Command, Output};

fn ensure_deb_src(etc: &Path) -> Output {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib.sh");
    Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -euo pipefail; . '{}'; ensure_deb_src; ensure_deb_src; echo done",
            lib.display()
        ))
        .env("HOTFIX_APT_ETC", etc)
        .output()
        .unwrap_or_else(|e| panic!("bash: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn one_line_sources_list_gets_a_deb_src_twin() {
    let etc = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir(etc.path().join("sources.list.d")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        etc.path().join("sources.list"),
        "deb http://deb.debian.org/debian bookworm main\n\
         # deb http://example.invalid/commented bookworm main\n\
         deb http://deb.debian.org/debian-security bookworm-security main\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let o = ensure_deb_src(etc.path());
    assert!(
        o.status.success() && text(&o).contains("done"),
        "{}",
        text(&o)
    );
    assert_eq!(
        read(&etc.path().join("sources.list.d/hotfix-src.list")),
        "deb-src http://deb.debian.org/debian bookworm main\n\
         deb-src http://deb.debian.org/debian-security bookworm-security main\n"
    );
    assert!(
        !etc.path()
            .join("sources.list.d/hotfix-src.sources")
            .exists()
    );
}

#[test]
fn deb822_sources_get_a_deb_src_twin() {
    let etc = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = etc.path().join("sources.list.d");
    std::fs::create_dir(&d).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        d.join("debian.sources"),
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        d.join("other.sources"),
        "Types: deb\nEnabled: no\nURIs: x\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let o = ensure_deb_src(etc.path());
    assert!(
        o.status.success() && text(&o).contains("done"),
        "{}",
        text(&o)
    );
    let twin = read(&d.join("hotfix-src.sources"));
    assert!(
        twin.starts_with("Types: deb-src\nURIs: http://deb.debian.org/debian\n"),
        "{twin}"
    );
    assert!(
        !twin.contains("URIs: x"),
        "a disabled entry was copied: {twin}"
    );
    // Added once: the second call found it.
    assert_eq!(
        text(&o).matches("added deb-src entries").count(),
        1,
        "{}",
        text(&o)
    );
}

#[test]
fn existing_deb_src_is_left_alone_and_no_deb_entry_is_an_error() {
    let etc = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir(etc.path().join("sources.list.d")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        etc.path().join("sources.list"),
        "deb http://a.invalid/ x main\ndeb-src http://a.invalid/ x main\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let o = ensure_deb_src(etc.path());
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read_dir(etc.path().join("sources.list.d"))
            .map(|d| d.count())
            .ok(),
        Some(0)
    );

    let empty = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let o = ensure_deb_src(empty.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no 'deb' entry"), "{}", text(&o));
}
