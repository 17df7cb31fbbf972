# Shared shell helpers for scripts/*. Sourced, not run.
# The one pinned kernel ABI of the test hosts (image, headers and source
# package 6.1.170-3 are all published for it).
KABI="${HOTFIX_KABI:-6.1.0-47}"
HOTFIX_CACHE="${HOTFIX_CACHE:-$HOME/.cache/hotfix}"
export KABI HOTFIX_CACHE
log() { printf '[hotfix] %s\n' "$*" >&2; }
die() { printf '[hotfix] error: %s\n' "$*" >&2; exit 1; }

# The one place that makes apt know Debian's source packages (for
# `apt-get source`): if no deb-src entry is configured, adds a deb-src twin of
# every enabled `deb` entry (deb822 `.sources` files and one-line
# `sources.list` entries alike) in /etc/apt/sources.list.d/hotfix-src.*, then
# updates the package lists. Idempotent: a no-op once source indexes exist.
# HOTFIX_APT_ETC=DIR (tests): read and write the entries under DIR instead of
# /etc/apt, and stop there (no apt-get update).
ensure_deb_src() {
    apt_lock
    _ensure_deb_src
    apt_unlock
}

# One apt operation of hotfix's scripts at a time (tests run in parallel:
# two `apt-get update`s at once fail on apt's own lock).
apt_lock() {
    mkdir -p "$HOTFIX_CACHE"
    exec 7>"$HOTFIX_CACHE/.apt.lock"
    flock 7
}
apt_unlock() { flock -u 7 2>/dev/null || true; }

_ensure_deb_src() {
    local etc="${HOTFIX_APT_ETC:-/etc/apt}" f added=0
    local d="$etc/sources.list.d" lists=() deb822=()
    # Only files that exist: an unmatched glob must not reach grep, cat or sed
    # (under pipefail, a missing file fails the whole script).
    [[ -f "$etc/sources.list" ]] && lists+=("$etc/sources.list")
    for f in "$d"/*.list; do [[ -f "$f" && "$f" != "$d/hotfix-src.list" ]] && lists+=("$f"); done
    for f in "$d"/*.sources; do [[ -f "$f" && "$f" != "$d/hotfix-src.sources" ]] && deb822+=("$f"); done
    if ! { [[ -f "$d/hotfix-src.sources" || -f "$d/hotfix-src.list" ]] ||
        grep -Eqs '^[[:space:]]*Types:.*deb-src|^[[:space:]]*deb-src[[:space:]]' \
            "${lists[@]}" "${deb822[@]}" /dev/null; }; then
        rm -f "$d/hotfix-src.sources.tmp"
        mkdir -p "$d"
        for f in "${deb822[@]}"; do
            grep -Eqs '^Enabled:[[:space:]]*no' "$f" && continue
            grep -Eq '^Types:.*\bdeb\b' "$f" || continue
            sed -E 's/^Types:.*$/Types: deb-src/' "$f" >>"$d/hotfix-src.sources.tmp"
            printf '\n' >>"$d/hotfix-src.sources.tmp"
            added=1
        done
        if ((added)); then mv "$d/hotfix-src.sources.tmp" "$d/hotfix-src.sources"; fi
        if ((${#lists[@]})) && grep -Eqs '^[[:space:]]*deb[[:space:]]' "${lists[@]}"; then
            sed -nE 's/^[[:space:]]*deb([[:space:]])/deb-src\1/p' "${lists[@]}" >"$d/hotfix-src.list"
            added=1
        fi
        ((added)) || die "apt has no 'deb' entry to derive deb-src entries from ($etc/sources.list, $d/)"
        log "added deb-src entries ($d/hotfix-src.*)"
        [[ -n "${HOTFIX_APT_ETC:-}" ]] || rm -f /var/lib/apt/lists/*_Sources* 2>/dev/null || true
    fi
    [[ -z "${HOTFIX_APT_ETC:-}" ]] || return 0 # a test of the entries alone
    if ! compgen -G '/var/lib/apt/lists/*_Sources*' >/dev/null; then
        log "apt-get update (source package indexes)"
        apt-get update -qq >/dev/null ||
            die "apt-get update failed: Debian's archive is not reachable (needed for source packages)"
        compgen -G '/var/lib/apt/lists/*_Sources*' >/dev/null ||
            die "apt-get update fetched no source indexes: check the deb-src entries in $d/"
    fi
}

# apt_source DIR PKG=VERSION: downloads the source package PKG at VERSION
# into DIR (--download-only), refreshing the package lists once if the
# version is not known yet; dies naming the package if the archive does not
# carry it.
apt_source() {
    local dir="$1" spec="$2"
    apt_lock
    _ensure_deb_src
    mkdir -p "$dir"
    if ! (cd "$dir" && apt-get source --download-only -qq "$spec" >/dev/null 2>&1); then
        apt-get update -qq >/dev/null 2>&1 || true
        (cd "$dir" && apt-get source --download-only -qq "$spec" >/dev/null) ||
            die "apt-get source $spec failed: Debian's archive does not carry it (or is not reachable)"
    fi
    apt_unlock
}
