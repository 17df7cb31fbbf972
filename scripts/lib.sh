# Shared shell helpers for scripts/*. Sourced, not run.
# The one pinned kernel ABI of the test hosts (image, headers and source
# package 6.1.170-3 are all published for it).
KABI="${HOTFIX_KABI:-6.1.0-47}"
HOTFIX_CACHE="${HOTFIX_CACHE:-$HOME/.cache/hotfix}"
export KABI HOTFIX_CACHE
log() { printf '[hotfix] %s\n' "$*" >&2; }
die() { printf '[hotfix] error: %s\n' "$*" >&2; exit 1; }
