#!/bin/sh
# Turn a Debian 12 host into a capture appliance, as root, from a checkout of this repository:
#   sh provisioning/bootstrap.sh                 install, or upgrade in place (idempotent)
#   sh provisioning/bootstrap.sh --uninstall     remove it all but the config and the recordings
# Options (each also an environment variable):
#   --root DIR        APPLIANCE_ROOT        install into a Debian root file system (an image being built, a
#                                           chroot) instead of this host: the checkout is bind-mounted into it
#                                           read-only and this script runs there under chroot(8)
#   --wheelhouse DIR  APPLIANCE_WHEELHOUSE  install Python packages from the wheels in DIR only (no index)
#   --numba-cpu NAME  APPLIANCE_NUMBA_CPU   compile the numba kernels for the LLVM CPU model NAME (e.g.
#                                           x86-64-v2) instead of this machine's, and run the service with it
#                                           (numba keys its cache on the CPU: an image built on one machine and
#                                           booted on another would otherwise compile again on first start)
# What an install leaves: Debian's runtime packages (and the compiler for the XDP object), the package in a
# virtual environment at /opt/appliance (a wheel built from this checkout, never an editable install), the
# XDP object, sample capture and README under /opt/appliance/share/appliance, the system user `appliance`,
# /etc/appliance/appliance.toml (from the example, only if absent), /var/lib/appliance and
# /var/cache/appliance/numba (the compiled kernels), the systemd unit; `appliance tune apply --persist` when the
# config's capture interface exists here.  Each step prints one line; a failure is one sentence, exit 1.
set -eu

PREFIX=/opt/appliance
SHARE=$PREFIX/share/appliance
CONF_DIR=/etc/appliance
CONF=$CONF_DIR/appliance.toml
STATE=/var/lib/appliance
CACHE=/var/cache/appliance
NUMBA_CACHE=$CACHE/numba
UNIT=/etc/systemd/system/appliance.service
USER_NAME=appliance
# Runtime: the venv's interpreter, libbpf (loaded by ctypes), ip and ethtool (tune, lab), TLS roots for pip.
RUNTIME_DEBS="python3 python3-venv libbpf1 iproute2 ethtool ca-certificates"
# The XDP object is compiled here, so that it matches this host's libbpf headers.
BUILD_DEBS="clang make libbpf-dev linux-libc-dev libc6-dev"

say() { echo "bootstrap: $*"; }
changed() { CHANGES=$((CHANGES + 1)); say "$*"; }
die() { echo "bootstrap: $*" >&2; exit 1; }
CHANGES=0

ROOT=${APPLIANCE_ROOT:-/}
WHEELHOUSE=${APPLIANCE_WHEELHOUSE:-}
NUMBA_CPU=${APPLIANCE_NUMBA_CPU:-}
ACTION=install
while [ $# -gt 0 ]; do
    case "$1" in
        --uninstall) ACTION=uninstall ;;
        --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$2; shift ;;
        --root=*) ROOT=${1#--root=} ;;
        --wheelhouse) [ $# -ge 2 ] || die "--wheelhouse needs a directory"; WHEELHOUSE=$2; shift ;;
        --wheelhouse=*) WHEELHOUSE=${1#--wheelhouse=} ;;
        --numba-cpu) [ $# -ge 2 ] || die "--numba-cpu needs an LLVM CPU name"; NUMBA_CPU=$2; shift ;;
        --numba-cpu=*) NUMBA_CPU=${1#--numba-cpu=} ;;
        --print-packages) echo $RUNTIME_DEBS $BUILD_DEBS; exit 0 ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (--uninstall, --root DIR, --wheelhouse DIR, --numba-cpu NAME)" ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || die "run this as root (it installs Debian packages, a system user and a service)"
SRC=$(cd "$(dirname "$0")/.." && pwd)
[ -f "$SRC/pyproject.toml" ] && [ -d "$SRC/appliance" ] || die "$SRC is not a checkout of this repository"

# --- into another root: run this very script there, the checkout (and wheelhouse) bind-mounted read-only ---
if [ "$ROOT" != / ]; then
    ROOT=$(cd "$ROOT" 2>/dev/null && pwd) || die "--root $ROOT is not a directory"
    [ -x "$ROOT/bin/sh" ] && [ -f "$ROOT/etc/debian_version" ] || die "$ROOT is not a Debian root file system"
    INNER=/run/appliance-bootstrap
    MOUNTS=""
    unmount() { for m in $MOUNTS; do umount -l "$m" 2>/dev/null || true; done; }
    trap unmount EXIT
    trap 'exit 130' INT TERM
    bind() {   # bind SOURCE TARGET [ro]
        mkdir -p "$2"
        mount --bind "$1" "$2" || die "cannot bind-mount $1 into $ROOT"
        MOUNTS="$2 $MOUNTS"
        [ "${3:-}" = ro ] && { mount -o remount,bind,ro "$2" || die "cannot make $2 read-only"; }
        return 0
    }
    bind "$SRC" "$ROOT$INNER/src" ro
    [ -d "$ROOT/proc/self" ] || { mount -t proc proc "$ROOT/proc" || die "cannot mount /proc in $ROOT"; MOUNTS="$ROOT/proc $MOUNTS"; }
    [ -e "$ROOT/dev/null" ] && [ -c "$ROOT/dev/null" ] || bind /dev "$ROOT/dev"
    set -- "--$ACTION"
    [ "$ACTION" = install ] && set --
    if [ -n "$WHEELHOUSE" ]; then
        bind "$(cd "$WHEELHOUSE" && pwd)" "$ROOT$INNER/wheelhouse" ro
        set -- "$@" --wheelhouse "$INNER/wheelhouse"
    fi
    [ -n "$NUMBA_CPU" ] && set -- "$@" --numba-cpu "$NUMBA_CPU"
    say "running in $ROOT (chroot)"
    # APPLIANCE_IN_IMAGE: the interfaces and the running systemd seen from in there are this host's, not the
    # appliance's, so the service is not started and the host is not tuned.
    status=0
    chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root APPLIANCE_IN_IMAGE=1 \
        /bin/sh "$INNER/src/provisioning/bootstrap.sh" "$@" || status=$?
    exit $status
fi
IN_IMAGE=${APPLIANCE_IN_IMAGE:-}
export DEBIAN_FRONTEND=noninteractive
LOG=$(mktemp /tmp/appliance-bootstrap.XXXXXX)
WORK=""
cleanup() { rm -f "$LOG"; [ -z "$WORK" ] || rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
last_line() { tail -n 1 "$LOG" | tr -s ' \t' ' '; }
run() {   # run WHAT COMMAND...: the command's output goes to the log; its last line joins a failure's sentence
    what=$1; shift
    "$@" >"$LOG" 2>&1 || die "$what failed: $(last_line)"
}

systemd_running() { [ -z "$IN_IMAGE" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }
appliance() { "$PREFIX/bin/appliance" "$@"; }
# The values bootstrap needs from the config (read by the installed package's own loader): "interface",
# "keep" (directories of recordings and tables, never removed) one per line.
config_values() {
    "$PREFIX/bin/python" - "$CONF" <<'EOF'
import sys
from appliance.service import config
try:
    c = config.load(sys.argv[1])
    print("interface", c.capture.interface)
    dirs = [c.recording.directory] + [o.directory for o in c.outputs if hasattr(o, "directory")]
except Exception:               # a config that does not load: the defaults' directories are kept
    dirs = [config.STATE_DIRECTORY + "/recordings", config.STATE_DIRECTORY + "/tables"]
for d in dirs:
    print("keep", d)
EOF
}

# --- uninstall ----------------------------------------------------------------------------------------------
do_uninstall() {
    keep="$STATE/recordings $STATE/tables"
    if [ -x "$PREFIX/bin/python" ] && [ -f "$CONF" ]; then
        keep=$(config_values | sed -n 's/^keep //p')
    fi
    if systemd_running && [ -f "$UNIT" ]; then
        systemctl disable --now appliance >/dev/null 2>&1 || true
        changed "service stopped and disabled"
    elif [ -f "$UNIT" ] && command -v systemctl >/dev/null; then
        systemctl disable appliance >/dev/null 2>&1 || true
    fi
    if [ -f "$STATE/tune-state.json" ] && [ -x "$PREFIX/bin/appliance" ]; then
        run "appliance tune revert" appliance tune revert
        changed "host tuning reverted (appliance tune revert)"
    fi
    if [ -f "$CPU_DROPIN" ]; then
        rm -f "$CPU_DROPIN"
        rmdir "$(dirname "$CPU_DROPIN")" 2>/dev/null || true
        changed "removed $CPU_DROPIN"
    fi
    if [ -f "$UNIT" ]; then
        rm -f "$UNIT"
        systemd_running && systemctl daemon-reload
        changed "removed $UNIT"
    fi
    for d in "$PREFIX" "$CACHE"; do
        [ -e "$d" ] && { rm -rf "$d"; changed "removed $d"; }
    done
    if [ -d "$STATE" ]; then
        for entry in "$STATE"/* "$STATE"/.[!.]*; do
            [ -e "$entry" ] || continue
            case " $(echo $keep) " in *" $entry "*) say "kept $entry"; continue ;; esac
            rm -rf "$entry"
            changed "removed $entry"
        done
        rmdir "$STATE" 2>/dev/null || true
    fi
    if id "$USER_NAME" >/dev/null 2>&1; then
        run "userdel $USER_NAME" userdel "$USER_NAME"
        changed "removed the user $USER_NAME"
    fi
    if getent group "$USER_NAME" >/dev/null; then
        run "groupdel $USER_NAME" groupdel "$USER_NAME"
        changed "removed the group $USER_NAME"
    fi
    [ -f "$CONF" ] && say "kept $CONF"
    say "Debian packages left installed ($RUNTIME_DEBS $BUILD_DEBS): other software may use them"
}

# --- install ------------------------------------------------------------------------------------------------
debian_packages() {
    [ -f /etc/debian_version ] || die "this is not a Debian system (no /etc/debian_version)"
    missing=""
    for p in $RUNTIME_DEBS $BUILD_DEBS; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    if [ -z "$missing" ]; then
        say "Debian packages: all $(echo $RUNTIME_DEBS $BUILD_DEBS | wc -w) present"
        return
    fi
    run "apt-get update" apt-get update -q
    run "apt-get install of$missing" apt-get install -y -q --no-install-recommends $missing
    changed "Debian packages installed:$missing"
}

system_user() {
    if id "$USER_NAME" >/dev/null 2>&1; then
        say "user $USER_NAME exists"
        return
    fi
    run "useradd $USER_NAME" useradd --system --user-group --home-dir "$STATE" --no-create-home \
        --shell /usr/sbin/nologin --comment "capture appliance" "$USER_NAME"
    changed "created the system user $USER_NAME"
}

# The wheel is rebuilt only when the sources that go into it changed: their hash is kept beside the venv.
source_hash() {
    (cd "$SRC" && find pyproject.toml appliance provisioning xdp -type f ! -path '*/__pycache__/*' ! -name '*.pyc' \
        ! -path 'xdp/build/*' | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)
}

python_package() {
    hash=$(source_hash)
    if [ -x "$PREFIX/bin/appliance" ] && [ "$(cat "$PREFIX/.source-hash" 2>/dev/null)" = "$hash" ]; then
        say "package: $(appliance --version) in $PREFIX is this checkout's build"
        PACKAGE_CHANGED=""
        return
    fi
    [ -x "$PREFIX/bin/python" ] || run "python3 -m venv $PREFIX" python3 -m venv "$PREFIX"
    pip="$PREFIX/bin/pip --disable-pip-version-check --no-input --no-cache-dir"
    from=""
    [ -n "$WHEELHOUSE" ] && from="--no-index --find-links $WHEELHOUSE"
    # The checkout may be read-only (a bind mount): setuptools writes build/ and egg-info beside the sources.
    WORK=$(mktemp -d /tmp/appliance-wheel.XXXXXX)
    (cd "$SRC" && tar --exclude=__pycache__ -cf - pyproject.toml appliance provisioning README.md) | tar -C "$WORK" -xf - \
        || die "copying the sources from $SRC failed"
    run "pip wheel (building the package)" $pip wheel -q --no-deps $from -w "$WORK/dist" "$WORK"
    wheel=$(ls "$WORK"/dist/appliance-*.whl)
    run "pip install of $(basename "$wheel")" $pip install -q $from "$wheel"
    # Same version number, new build: the dependencies stay, the package itself is replaced.
    run "pip reinstall of $(basename "$wheel")" $pip install -q --force-reinstall --no-deps $from "$wheel"
    echo "$hash" > "$PREFIX/.source-hash"
    rm -rf "$WORK"; WORK=""
    PACKAGE_CHANGED=1
    changed "package: $(appliance --version) installed into $PREFIX from $(basename "$wheel")"
}

# install_file SOURCE TARGET MODE: copy when absent or different; one line either way.
install_file() {
    if [ -f "$2" ] && cmp -s "$1" "$2"; then
        say "$2 is up to date"
    else
        install -D -m "$3" "$1" "$2"
        changed "installed $2"
    fi
}

shared_files() {
    # Built from a copy at a fixed path, outside the (possibly read-only) checkout: clang -g records the
    # directory in the object's debug info, so the same sources give the same bytes wherever the checkout is.
    built=$PREFIX/build/xdp
    rm -rf "$built"
    mkdir -p "$built"
    cp "$SRC/xdp/Makefile" "$SRC/xdp/feed_steer.bpf.c" "$SRC/xdp/feed_steer.h" "$built/"
    run "building the XDP program (make -C xdp)" make -C "$built"
    install_file "$built/build/feed_steer.bpf.o" "$SHARE/feed_steer.bpf.o" 0644
    rm -rf "$PREFIX/build"
    install_file "$SRC/pcaps/sample.pcap" "$SHARE/sample.pcap" 0644
    install_file "$SRC/README.md" "$PREFIX/README.md" 0644
    found=$("$PREFIX/bin/python" -c 'from appliance.ring import steer; print(steer.ensure_built())' 2>"$LOG") \
        || die "the installed package cannot find its XDP program: $(last_line)"
    [ "$found" = "$SHARE/feed_steer.bpf.o" ] || die "the installed package looks for its XDP program at $found, not $SHARE"
}

config_file() {
    if [ -f "$CONF" ]; then
        say "config $CONF kept as it is"
    else
        install -d -m 0755 "$CONF_DIR"
        install -m 0640 -g "$USER_NAME" "$SRC/provisioning/appliance.toml.example" "$CONF"
        changed "config $CONF written from provisioning/appliance.toml.example (edit [capture] interface and [feeds])"
    fi
    if appliance config check "$CONF" >"$LOG" 2>&1; then
        CONFIG_OK=1
        say "config check: $CONF is valid"
    else
        CONFIG_OK=""
        say "config check: $(last_line) (fix it, then run this again)"
    fi
}

directories() {
    for d in "$STATE" "$CACHE" "$NUMBA_CACHE"; do
        if [ -d "$d" ] && [ "$(stat -c %U:%G "$d")" = "$USER_NAME:$USER_NAME" ]; then
            say "$d exists, owned by $USER_NAME"
        else
            install -d -m 0750 -o "$USER_NAME" -g "$USER_NAME" "$d"
            changed "$d made, owned by $USER_NAME"
        fi
    done
}

# numba keys its cache on the installed sources' paths and times: a new build compiles afresh, so the old
# cache goes; then the kernels are compiled once, as the service's user, by replaying the sample.
# With --numba-cpu, the CPU model is kept in $NUMBA_CACHE/.cpu and given to the service by a drop-in.
CPU_DROPIN=/etc/systemd/system/appliance.service.d/numba-cpu.conf
numba_cache() {
    cpu_env=""
    [ -n "$NUMBA_CPU" ] && cpu_env="NUMBA_CPU_NAME=$NUMBA_CPU NUMBA_CPU_FEATURES="
    if [ -n "$PACKAGE_CHANGED" ] || [ "$(cat "$NUMBA_CACHE/.cpu" 2>/dev/null)" != "$NUMBA_CPU" ]; then
        find "$NUMBA_CACHE" -mindepth 1 -delete
    elif [ -n "$(find "$NUMBA_CACHE" -name '*.nbi' -print -quit)" ]; then
        say "numba kernels already compiled in $NUMBA_CACHE${NUMBA_CPU:+ (CPU model $NUMBA_CPU)}"
        return
    fi
    out=$(mktemp -d /tmp/appliance-warm.XXXXXX)
    chown "$USER_NAME:$USER_NAME" "$out"
    start=$(date +%s%N)
    run "compiling the numba kernels (appliance replay of $SHARE/sample.pcap as $USER_NAME)" \
        runuser -u "$USER_NAME" -- env NUMBA_CACHE_DIR="$NUMBA_CACHE" HOME="$STATE" $cpu_env \
        "$PREFIX/bin/appliance" replay "$SHARE/sample.pcap" --out "$out/replay" -q
    # ... and what only a capture runs: the ring kernels (AF_XDP's once per queue count: 1 up to this machine's
    # CPU count, at least 4, at most 8) and the cold side's; a first start under systemd then only loads them.
    queues=$(nproc 2>/dev/null || echo 4)
    [ "$queues" -ge 4 ] || queues=4
    [ "$queues" -le 8 ] || queues=8
    run "compiling the capture's kernels (appliance warm --xdp-queues 1-$queues as $USER_NAME)" \
        runuser -u "$USER_NAME" -- env NUMBA_CACHE_DIR="$NUMBA_CACHE" HOME="$STATE" TMPDIR="$out" $cpu_env \
        "$PREFIX/bin/appliance" warm --xdp-queues "1-$queues" -q
    rm -rf "$out"
    [ -z "$NUMBA_CPU" ] || { echo "$NUMBA_CPU" > "$NUMBA_CACHE/.cpu"; chown "$USER_NAME:$USER_NAME" "$NUMBA_CACHE/.cpu"; }
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    changed "numba kernels compiled into $NUMBA_CACHE in $((ms / 1000)).$((ms % 1000 / 100)) s${NUMBA_CPU:+ for CPU model $NUMBA_CPU}"
}

numba_cpu_dropin() {
    if [ -z "$NUMBA_CPU" ]; then
        [ -f "$CPU_DROPIN" ] && { rm -f "$CPU_DROPIN"; changed "removed $CPU_DROPIN (kernels for this CPU)"; }
        return 0
    fi
    tmp=$(mktemp)
    printf '# Written by provisioning/bootstrap.sh --numba-cpu: the kernels in the cache were compiled for this model.\n[Service]\nEnvironment=NUMBA_CPU_NAME=%s NUMBA_CPU_FEATURES=\n' "$NUMBA_CPU" > "$tmp"
    install_file "$tmp" "$CPU_DROPIN" 0644
    rm -f "$tmp"
}

interface_present() { [ -n "$INTERFACE" ] && [ -e "/sys/class/net/$INTERFACE" ]; }

systemd_unit() {
    install_file "$SRC/provisioning/systemd/appliance.service" "$UNIT" 0644
    if [ -n "$IN_IMAGE" ] || ! systemd_running; then
        if command -v systemctl >/dev/null && [ -n "$IN_IMAGE" ]; then
            if systemctl is-enabled appliance >/dev/null 2>&1; then
                say "service enabled for the next boot"
            else
                run "systemctl enable appliance" systemctl enable appliance
                changed "service enabled for the next boot (not started: building a root file system)"
            fi
        else
            say "systemd is not running here (PID 1 is $(cat /proc/1/comm 2>/dev/null || echo unknown)): the unit is installed, not enabled or started"
        fi
        return
    fi
    run "systemctl daemon-reload" systemctl daemon-reload
    if systemctl is-enabled appliance >/dev/null 2>&1; then
        say "service enabled"
    else
        run "systemctl enable appliance" systemctl enable appliance
        changed "service enabled"
    fi
    if ! interface_present || [ -z "$CONFIG_OK" ]; then
        say "service not started: the config's interface '${INTERFACE:-?}' is not here, or the config does not check"
    elif systemctl is-active appliance >/dev/null 2>&1; then
        if [ -n "$PACKAGE_CHANGED" ]; then
            run "systemctl restart appliance" systemctl restart appliance
            changed "service restarted on the new package"
        else
            say "service running"
        fi
    else
        run "systemctl start appliance" systemctl start appliance
        changed "service started"
    fi
}

host_tuning() {
    if [ -n "$IN_IMAGE" ]; then
        say "host tuning skipped: building a root file system (run 'appliance tune apply --persist' on the appliance)"
    elif ! interface_present; then
        say "host tuning skipped: the config's capture interface '${INTERFACE:-?}' is not on this host"
    else
        run "appliance tune apply --iface $INTERFACE --persist" appliance tune apply --iface "$INTERFACE" --persist
        say "host tuned for $INTERFACE (appliance tune apply --persist; 'appliance tune verify' checks it)"
    fi
}

do_install() {
    debian_packages
    system_user
    python_package
    shared_files
    config_file
    directories
    INTERFACE=""
    [ -n "$CONFIG_OK" ] && INTERFACE=$(config_values | sed -n 's/^interface //p')
    numba_cache
    numba_cpu_dropin
    systemd_unit
    host_tuning
}

if [ "$ACTION" = uninstall ]; then do_uninstall; else do_install; fi
if [ "$CHANGES" = 0 ]; then say "done: nothing to change"; else say "done: $CHANGES changed"; fi
