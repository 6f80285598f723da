#!/usr/bin/env bash
# Proves the README's `cargo run --release -- serve` and `cargo test` build on a fresh Debian
# bookworm machine that has a Rust toolchain and `build-essential` but NO other -dev packages
# (no libssl-dev, libsasl2-dev, zlib1g-dev, pkg-config, cmake).
#
# It debootstraps a minbase bookworm chroot (reused when already built), bind-mounts the host's
# Rust toolchain and cargo registry into it, copies this work tree (uncommitted changes included),
# then inside the chroot, with a fresh CARGO_TARGET_DIR:
#   cargo build --release; cargo test --no-run; runs `serve` and asks /readyz;
#   asserts ldd shows no libsasl2/libssl/libcrypto and that only libc/compiler -dev packages exist.
#
# Usage (as root):  deploy/dev/fresh-machine-check.sh
# Environment:
#   DLQ_FRESH_ROOT   chroot directory            (default /var/tmp/dlq-fresh-root)
#   DEBIAN_MIRROR    Debian mirror for debootstrap (default: derived from this machine's apt sources)
#   DLQ_CHECK_PORT   port for the `serve` check  (default 18080)
#   KEEP_TARGET=1    keep the chroot's target dir from a previous run (default: start fresh)
set -euo pipefail

ROOT=${DLQ_FRESH_ROOT:-/var/tmp/dlq-fresh-root}
ROOT=${ROOT%/}
PORT=${DLQ_CHECK_PORT:-18080}
SUITE=bookworm
HOST_RUSTUP=${RUSTUP_HOME:-$HOME/.rustup}
HOST_CARGO=${CARGO_HOME:-$HOME/.cargo}
SRC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IN_SRC=/build/src          # paths as seen inside the chroot
IN_TARGET=/build/target
BIN=$IN_TARGET/release/workflow-dlq

step() { printf '\n==> [%(%H:%M:%S)T] %s\n' -1 "$*"; }
info() { printf '    %s\n' "$*"; }
die() { printf '\nFAIL: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot, mount)"
[[ -n $ROOT && $ROOT != / ]] || die "DLQ_FRESH_ROOT must not be /"
for tool in debootstrap chroot mount umount git tar; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y debootstrap)"
done
[[ -x $HOST_CARGO/bin/cargo ]] || die "no cargo at $HOST_CARGO/bin/cargo"
[[ -d $HOST_RUSTUP/toolchains ]] || die "no rustup toolchains at $HOST_RUSTUP"

# --- mounts: tracked so the EXIT trap unmounts exactly what we mounted --------------------------
MOUNTED=()
SERVE_PID=
mounts_under() { # mount points at or below $1 (field 5 of mountinfo)
    awk -v r="${1%/}" '$5 == r || index($5, r "/") == 1 { print $5 }' /proc/self/mountinfo
}
mounts_under_root() { mounts_under "$ROOT"; }
cleanup() {
    local rc=$? i
    if [[ -n $SERVE_PID ]] && kill -0 "$SERVE_PID" 2>/dev/null; then
        kill "$SERVE_PID" 2>/dev/null || true
        wait "$SERVE_PID" 2>/dev/null || true
    fi
    if ((${#MOUNTED[@]})); then
        step "unmounting"
        for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
            umount -R "${MOUNTED[i]}" 2>/dev/null || umount -R -l "${MOUNTED[i]}" \
                || echo "    could not unmount ${MOUNTED[i]}" >&2
        done
    fi
    local left
    left=$(mounts_under_root)
    [[ -z $left ]] || printf '    WARNING: still mounted under %s:\n%s\n' "$ROOT" "$left" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bind() { # bind SRC DST [ro]
    local src=$1 dst=$ROOT$2
    mkdir -p "$dst"
    mount --bind "$src" "$dst"
    MOUNTED+=("$dst")
    mount --make-rslave "$dst"
    if [[ ${3:-} == ro ]]; then mount -o remount,bind,ro "$dst"; fi
    info "bind $src -> $2${3:+ ($3)}"
}

# Never rm -rf a directory while something (e.g. the host's cargo registry) is mounted below it.
safe_rm() {
    local d left
    for d in "$@"; do
        left=$(mounts_under "$d")
        [[ -z $left ]] || die "refusing to delete $d: still mounted below it: $left"
    done
    rm -rf -- "$@"
}

# --- Debian mirror: the one this machine's apt uses --------------------------------------------
derive_mirror() {
    local f uri
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $f ]] || continue
        # one-line format: deb [opts] URI SUITE COMPONENTS...
        uri=$(awk -v s="$SUITE" '$1 == "deb" {
                i = 2; if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == s) { print $i; exit } }' "$f")
        [[ -n $uri ]] && { echo "$uri"; return; }
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        # deb822 format: paragraphs with Types:, URIs:, Suites:, optional Enabled:
        uri=$(awk -v s="$SUITE" 'BEGIN { RS = ""; FS = "\n" } {
                types = ""; uris = ""; suites = ""; enabled = "yes"
                for (i = 1; i <= NF; i++) {
                    l = $i; if (l ~ /^[ \t]*#/) continue
                    if (match(l, /^[A-Za-z-]+:/)) {
                        k = tolower(substr(l, 1, RLENGTH - 1)); v = substr(l, RLENGTH + 1)
                        gsub(/^[ \t]+|[ \t]+$/, "", v)
                        if (k == "types") types = v; else if (k == "uris") uris = v
                        else if (k == "suites") suites = v; else if (k == "enabled") enabled = tolower(v)
                    }
                }
                if (enabled != "no" && (" " types " ") ~ / deb / && (" " suites " ") ~ (" " s " ")) {
                    split(uris, u, /[ \t]+/); print u[1]; exit
                } }' "$f")
        [[ -n $uri ]] && { echo "$uri"; return; }
    done
}

# =================================================================================================
step "1/8 Debian $SUITE minbase chroot at $ROOT"
MARKER=$ROOT/.dlq-fresh-root-complete
if [[ -f $MARKER ]]; then
    info "reusing existing chroot (built $(cat "$MARKER"))"
else
    MIRROR=${DEBIAN_MIRROR:-$(derive_mirror)}
    [[ -n $MIRROR ]] || die "no '$SUITE' deb source in /etc/apt/sources.list{,.d/*}; set DEBIAN_MIRROR"
    info "mirror (from this machine's apt sources): $MIRROR"
    [[ -e $ROOT ]] && { info "removing incomplete $ROOT"; safe_rm "$ROOT"; }
    t0=$SECONDS
    debootstrap --variant=minbase --include=build-essential,ca-certificates \
        "$SUITE" "$ROOT" "$MIRROR"
    date -u +%FT%TZ >"$MARKER"
    info "debootstrap took $((SECONDS - t0)) s"
fi

# =================================================================================================
step "2/8 mounts: /proc, /dev, Rust toolchain (rustup ro), cargo registry (shared rw)"
[[ -z $(mounts_under_root) ]] || die "something is already mounted under $ROOT (another run?): $(mounts_under_root)"
mkdir -p "$ROOT/proc"
mount -t proc proc "$ROOT/proc"; MOUNTED+=("$ROOT/proc"); info "proc -> /proc"
mkdir -p "$ROOT/dev"
mount --rbind /dev "$ROOT/dev"; MOUNTED+=("$ROOT/dev"); mount --make-rslave "$ROOT/dev"; info "rbind /dev -> /dev"
bind "$HOST_RUSTUP" /root/.rustup ro
bind "$HOST_CARGO/bin" /root/.cargo/bin ro
mkdir -p "$HOST_CARGO/registry"
bind "$HOST_CARGO/registry" /root/.cargo/registry
[[ -d $HOST_CARGO/git ]] && bind "$HOST_CARGO/git" /root/.cargo/git
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" # crates not yet in the registry are downloaded

# =================================================================================================
step "3/8 copying the work tree of $SRC_DIR (tracked + untracked, not ignored; uncommitted changes included)"
safe_rm "$ROOT$IN_SRC"
mkdir -p "$ROOT$IN_SRC"
( cd "$SRC_DIR" && git ls-files -z -co --exclude-standard \
    | while IFS= read -r -d '' f; do [[ -e $f || -L $f ]] && printf '%s\0' "$f"; done \
    | tar --null -T - -cf - ) | tar -xf - -C "$ROOT$IN_SRC"
info "$(find "$ROOT$IN_SRC" -type f | wc -l) files: HEAD $(git -C "$SRC_DIR" rev-parse --short HEAD)\
 + $(git -C "$SRC_DIR" status --porcelain | wc -l) changed/untracked paths"
if [[ ${KEEP_TARGET:-0} != 1 ]]; then safe_rm "$ROOT$IN_TARGET"; fi
mkdir -p "$ROOT$IN_TARGET"

in_chroot() { # runs bash -c "$1" in the chroot with a clean environment
    chroot "$ROOT" /usr/bin/env -i HOME=/root USER=root TERM=dumb LANG=C.UTF-8 \
        PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        RUSTUP_HOME=/root/.rustup CARGO_HOME=/root/.cargo CARGO_TARGET_DIR="$IN_TARGET" \
        CARGO_TERM_COLOR=never RUSTUP_AUTO_INSTALL=0 \
        /bin/bash -c "$1"
}

# =================================================================================================
step "4/8 chroot has no -dev packages beyond libc/compiler ones, no pkg-config, no cmake"
DEV_PKGS=$(in_chroot "dpkg -l | awk '\$1 == \"ii\" { print \$2 \" \" \$3 }' | grep -- '-dev' || true")
printf '%s\n' "$DEV_PKGS" | sed 's/^/    /'
# libc6-dev pulls libcrypt-dev, libnsl-dev, libtirpc-dev; libc-dev-bin and dpkg-dev are tools.
ALLOWED='^(libc6-dev|libc-dev-bin|linux-libc-dev|libcrypt-dev|libnsl-dev|libtirpc-dev|libgcc-[0-9]+-dev|libstdc\+\+-[0-9]+-dev|dpkg-dev)(:[a-z0-9]+)? '
BAD=$(printf '%s\n' "$DEV_PKGS" | grep -Ev "$ALLOWED" || true)
[[ -z $BAD ]] || die "unexpected -dev packages in the chroot: $BAD"
in_chroot '! command -v pkg-config && ! command -v pkgconf && ! command -v cmake' >/dev/null \
    || die "pkg-config or cmake present in the chroot"
in_chroot 'for h in /usr/include/openssl /usr/include/sasl /usr/include/zlib.h; do [[ ! -e $h ]] || { echo "$h exists"; exit 1; }; done' \
    || die "system headers present in the chroot"
info "OK: only libc/compiler -dev packages; no pkg-config, cmake, openssl/sasl/zlib headers"
in_chroot 'echo "    toolchain: $(rustc --version), $(cargo --version), $(cc --version | head -1)"'

# =================================================================================================
step "5/8 cargo build --release   (nice -n 19, fresh CARGO_TARGET_DIR=$IN_TARGET)"
t0=$SECONDS
in_chroot "cd $IN_SRC && nice -n 19 cargo build --release" || die "cargo build --release failed in the chroot"
BUILD_RELEASE_S=$((SECONDS - t0))
info "cargo build --release: OK in ${BUILD_RELEASE_S} s"

step "6/8 cargo test --no-run   (nice -n 19)"
t0=$SECONDS
in_chroot "cd $IN_SRC && nice -n 19 cargo test --no-run" || die "cargo test --no-run failed in the chroot"
BUILD_TEST_S=$((SECONDS - t0))
info "cargo test --no-run: OK in ${BUILD_TEST_S} s"

# =================================================================================================
step "7/8 workflow-dlq serve --http-addr 127.0.0.1:$PORT, then GET /readyz"
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then die "port $PORT already in use; set DLQ_CHECK_PORT"; fi
SERVE_LOG=$ROOT/build/serve.log
# A fixed token: a generated one would be printed into the log.
in_chroot "DLQ_API_TOKEN=fresh-machine-check-token exec $BIN serve --http-addr 127.0.0.1:$PORT" >"$SERVE_LOG" 2>&1 &
SERVE_PID=$!
READY=
for _ in $(seq 1 60); do
    sleep 1
    kill -0 "$SERVE_PID" 2>/dev/null || { sed 's/^/    | /' "$SERVE_LOG"; die "serve exited early"; }
    # bash /dev/tcp inside the chroot (no curl there)
    ANSWER=$(in_chroot "exec 3<>/dev/tcp/127.0.0.1/$PORT && printf 'GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3 && timeout 5 cat <&3" 2>/dev/null || true)
    if [[ $ANSWER == "HTTP/1.1 200"* ]]; then READY=1; break; fi
done
info "serve log (head):"; head -n 15 "$SERVE_LOG" | sed 's/^/    | /'
info "/readyz answer:"; printf '%s\n' "${ANSWER:-<no answer>}" | tr -d '\r' | sed 's/^/    < /'
[[ -n $READY ]] || die "/readyz did not answer 200 within 60 s"
kill "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true; SERVE_PID=
info "OK: /readyz 200"

# =================================================================================================
step "8/8 ldd $BIN"
LDD=$(in_chroot "ldd $BIN")
printf '%s\n' "$LDD" | sed 's/^/    /'
! grep -q 'not found' <<<"$LDD" || die "unresolved shared libraries"
! grep -Eq 'libsasl2|libssl|libcrypto' <<<"$LDD" || die "release binary links libsasl2/libssl/libcrypto"
info "OK: no libsasl2, libssl or libcrypto"

step "ALL PASSED: build --release ${BUILD_RELEASE_S} s, test --no-run ${BUILD_TEST_S} s, /readyz 200, ldd clean, -dev clean"
