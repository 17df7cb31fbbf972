#!/usr/bin/env bash
# Builds seed corpora for the fuzz targets from small C files compiled now
# (no binaries are committed): objects for `inspect`, patches (objects with a
# .hotfix.meta, made by `hotfix diff`) for `read_meta`, and object pairs
# (4-byte little-endian length of the first object, then both) for `diff`.
# Usage: fuzz/seeds.sh HOTFIX_BINARY   (writes fuzz/corpus/<target>/)
set -euo pipefail
hotfix="${1:?usage: fuzz/seeds.sh path/to/hotfix}"
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$here/corpus/inspect" "$here/corpus/read_meta" "$here/corpus/diff"
mkdir -p "$here/corpus/signature" "$here/corpus/trust_files"
mkdir -p "$tmp/orig" "$tmp/patched"
cat >"$tmp/orig/vcpu.c" <<'C'
extern int printf(const char *, ...);
extern void inject_gp(int);
static int reads;
static unsigned long long regs[64];
const char *names[] = { "a", "b", "c" };
__thread int tls_counter;
static __attribute__((noinline)) int trace(int v, const char *s) { return printf("%d %s %d\n", v, s, ++reads); }
int msr_read(int v, unsigned msr, unsigned long long *val)
{
    if (msr >= 0x800 && msr <= 0xbff) { *val = regs[msr & 63]; return trace(v, "rd"); }
    inject_gp(v);
    return -1;
}
int decode(int op) { switch (op) { case 0: return 1; case 1: return trace(op, names[op]);
    case 2: return 7; case 3: return tls_counter++; case 4: return 9; default: return -1; } }
C
sed -e 's/0xbff/0x8ff/' -e 's/case 2: return 7/case 2: return 8/' "$tmp/orig/vcpu.c" >"$tmp/patched/vcpu.c"
pair() { # $1 orig.o $2 patched.o $3 out
    python3 - "$1" "$2" "$3" <<'P'
import sys, struct
a = open(sys.argv[1], 'rb').read(); b = open(sys.argv[2], 'rb').read()
open(sys.argv[3], 'wb').write(struct.pack('<I', len(a)) + a + b)
P
}
n=0
for opt in -O1 -O2 -O3 -Os "-O2 -fPIC" "-O2 -fPIE"; do
    n=$((n + 1))
    # shellcheck disable=SC2086
    (cd "$tmp/orig" && gcc -c $opt -ffunction-sections -fdata-sections vcpu.c -o ../a$n.o)
    (cd "$tmp/patched" && gcc -c $opt -ffunction-sections -fdata-sections vcpu.c -o ../b$n.o)
    cp "$tmp/a$n.o" "$here/corpus/inspect/obj$n.o"
    pair "$tmp/a$n.o" "$tmp/b$n.o" "$here/corpus/diff/pair$n"
    if "$hotfix" diff "$tmp/a$n.o" "$tmp/b$n.o" -o "$tmp/p$n.o" >/dev/null; then
        cp "$tmp/p$n.o" "$here/corpus/read_meta/patch$n.o"
        cp "$tmp/p$n.o" "$here/corpus/inspect/patch$n.o"
    fi
done
# Trust readers: a key made by minisign, signatures (hotfix's trusted
# comment, and the tool's default) of the message the `signature` target
# verifies ("patch"), a revocation list and a chained audit log written by
# hotfix (two failed reverts of a payload that does not exist).
minisign -G -W -p "$tmp/k.pub" -s "$tmp/k.key" >/dev/null
printf patch >"$tmp/m.hfx"
sha="$(sha256sum "$tmp/m.hfx" | cut -d' ' -f1)"
minisign -S -s "$tmp/k.key" -m "$tmp/m.hfx" -x "$tmp/hotfix.minisig" \
    -t "{\"hotfix\":1,\"kind\":\"hfx\",\"file\":\"m.hfx\",\"sha256\":\"$sha\",\"id\":\"m\",\"target\":\"00\"}" >/dev/null
{ cat "$tmp/k.pub"; echo "--"; cat "$tmp/hotfix.minisig"; } >"$here/corpus/signature/hotfix"
minisign -S -s "$tmp/k.key" -m "$tmp/m.hfx" -x "$tmp/tool.minisig" -t "timestamp:1" >/dev/null
{ cat "$tmp/k.pub"; echo "--"; cat "$tmp/tool.minisig"; } >"$here/corpus/signature/tool"
cp "$tmp/k.pub" "$here/corpus/trust_files/key.pub"
printf '# revoked\n%s\n' "$(sed -n '1s/.* //p' "$tmp/k.pub")" >"$here/corpus/trust_files/revoked"
HOTFIX_AUDIT_LOG="$tmp/audit.jsonl" "$hotfix" revert no-such-payload --xen >/dev/null 2>&1 || true
HOTFIX_AUDIT_LOG="$tmp/audit.jsonl" "$hotfix" revert no-such-payload --xen >/dev/null 2>&1 || true
cp "$tmp/audit.jsonl" "$here/corpus/trust_files/audit.jsonl"
echo "seeds: $(ls "$here/corpus/inspect" | wc -l) inspect, $(ls "$here/corpus/read_meta" | wc -l) read_meta, $(ls "$here/corpus/diff" | wc -l) diff, $(ls "$here/corpus/signature" | wc -l) signature, $(ls "$here/corpus/trust_files" | wc -l) trust_files"
