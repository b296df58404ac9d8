#!/bin/sh
# Build the appliance's bootable disk image (qcow2) from Debian's archive:   make image
#   sh provisioning/image/build.sh [OUTPUT_DIR]        (default build/image; as root)
# What the image is: Debian 12 (mmdebstrap) with Debian's kernel, booted by systemd-boot from an EFI system
# partition (UEFI; serial console on ttyS0), the appliance installed by provisioning/bootstrap.sh (the wheel in
# /opt/appliance, the XDP object, the `appliance` user, the unit enabled) with the numba kernels compiled here,
# natively in the build root, for the CPU model x86-64-v2 (numba keys its cache on the CPU: compiled for this
# build host they would be compiled again on the first start, which takes many minutes in an emulated guest).
# The feed NIC is named feed0 (10-feed0.link: the NIC in PCI slot 5, as `qemu -device virtio-net-pci,addr=5`
# puts it; edit the match for other hardware), the first other NIC takes DHCP (systemd-networkd) and carries the
# metrics endpoint (0.0.0.0:9108); qemu-guest-agent answers on its virtio port.  /etc/appliance/appliance.toml
# is provisioning/image/appliance.toml (the demo feed's lines on feed0).  Root has no password: log in with the
# guest agent, or add an SSH key to the image.
#
# Incremental: the Debian root (a tarball keyed by the package list) and the wheelhouse (keyed by pyproject.toml)
# are cached under ${XDG_CACHE_HOME:-~/.cache}/appliance-image, and the bootstrapped root is kept there too:
# bootstrap.sh runs again on it and only rebuilds the wheel and recompiles the kernels when the sources changed.
# The disk is assembled again (about a minute) only when the root or the sources changed.  Prints the image's
# path and size at the end.
set -eu
cd "$(dirname "$0")/../.."
SRC=$(pwd)
OUT=${1:-build/image}
SUITE=bookworm
MIRROR=${APPLIANCE_MIRROR:-http://deb.debian.org/debian}
NUMBA_CPU=x86-64-v2
ROOT_FREE_MB=4096            # room on the root file system for recordings, tables and state
ESP_MB=128
HOME=${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}       # unset under some CI runners and cron
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/appliance-image
# The image's own packages (kernel, init, boot loader, networking, guest agent), then bootstrap's.
IMAGE_DEBS="linux-image-amd64 initramfs-tools systemd systemd-sysv udev dbus kmod systemd-boot-efi
            qemu-guest-agent e2fsprogs procps less"

say() { echo "image: $*"; }
die() { echo "image: $*" >&2; exit 1; }
# A kept root is removed only with nothing mounted under it: bootstrap --root bind-mounts the checkout, /dev and
# /proc into it and unmounts them when it exits, but a build killed outright (SIGKILL) leaves them.
# Before the root is used or removed, what an earlier build left mounted in it is unmounted.
# (mountinfo's 5th field is the mount point, canonical, a space written \040, a backslash \134; $CACHE is made
# canonical below so that it compares.)
mounts_under() {
    awk -v d="$1" '{ m = $5; gsub(/\\040/, " ", m); gsub(/\\011/, "\t", m); gsub(/\\134/, "\\", m)
                     if (m == d || index(m, d "/") == 1) print m }' /proc/self/mountinfo | sort -r
}
clear_mounts() {
    mounts_under "$1" | while IFS= read -r m; do umount -l "$m" || exit 1; done \
        || die "cannot unmount what an earlier build left mounted under $1"
    [ -z "$(mounts_under "$1")" ] || die "something is still mounted under $1; unmount it, then build again"
}
remove_root() { clear_mounts "$1"; rm -rf --one-file-system "$1"; }
[ "$(id -u)" = 0 ] || die "run this as root (chroot, mounts, device nodes in the root)"
for tool in mmdebstrap mke2fs mkfs.vfat mcopy sfdisk qemu-img chroot; do
    command -v $tool >/dev/null || die "$tool is missing (apt-get install mmdebstrap e2fsprogs dosfstools mtools fdisk qemu-utils)"
done
# pip and tomllib from this checkout's environment (provisioning/setup.sh deps), else the system's Python.
PYTHON=python3
[ -x .venv/bin/python ] && PYTHON=.venv/bin/python
$PYTHON -m pip --version >/dev/null 2>&1 || die "no pip for $PYTHON (run 'sh provisioning/setup.sh deps' first)"
mkdir -p "$CACHE" "$OUT"
OUT=$(cd "$OUT" && pwd)
CACHE=$(cd -P "$CACHE" && pwd -P)
# One build at a time per cache: a second one (another job, `make image` beside the tests) waits.
exec 9>"$CACHE/lock"
flock -n 9 || { say "waiting for another build that uses $CACHE"; flock 9; }
trap 'exit 143' TERM
trap 'exit 130' INT
started=$(date +%s)

# --- the Debian root: mmdebstrap, once per package list ---------------------------------------------------------
packages=$(echo $IMAGE_DEBS $(sh provisioning/bootstrap.sh --print-packages) | tr ' ' '\n' | LC_ALL=C sort -u | tr '\n' ',')
key=$(echo "$SUITE $MIRROR $packages" | sha256sum | cut -c1-16)
base=$CACHE/base-$key.tar
if [ ! -f "$base" ]; then
    say "building the Debian root with mmdebstrap (a few minutes, about 700 MB from $MIRROR the first time)"
    partial=$CACHE/base-$key.partial.tar       # mmdebstrap picks its output format by the name's ending
    rm -rf "$partial"
    mmdebstrap --quiet --variant=minbase --include="${packages%,}" $SUITE "$partial" "$MIRROR" \
        || die "mmdebstrap failed"
    mv "$partial" "$base"
    for stale in "$CACHE"/base-*.tar; do [ "$stale" = "$base" ] || rm -rf "$stale"; done
fi

# --- the wheelhouse: the package's dependencies as wheels, once per pyproject.toml ------------------------------
wheels=$CACHE/wheels-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -d "$wheels" ]; then
    say "downloading the Python dependencies into a wheelhouse"
    deps=$($PYTHON -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); print(" ".join(p["project"]["dependencies"] + p["build-system"]["requires"] + ["wheel"]))')
    rm -rf "$wheels.partial"
    $PYTHON -m pip download -q --only-binary=:all: -d "$wheels.partial" $deps 2>"$CACHE/pip.log" \
        || die "pip download of the wheelhouse failed: $(tail -n 1 "$CACHE/pip.log")"
    mv "$wheels.partial" "$wheels"
fi

# --- the root, kept between builds (keyed by the Debian root it came from) --------------------------------------
root=$CACHE/root-$key
if [ ! -f "$root/.from-$key" ]; then
    for old in "$CACHE"/root-*; do [ -e "$old" ] && remove_root "$old"; done
    mkdir -p "$root"
    tar -C "$root" --numeric-owner -xf "$base"
    date +%s.%N > "$root/.from-$key"          # which extraction: a root extracted again makes a new disk
    say "root extracted from $(basename "$base")"
fi
clear_mounts "$root"
# The image's own files, before bootstrap (which keeps a config that is there).
install -D -m 0644 provisioning/image/appliance.toml "$root/etc/appliance/appliance.toml"
install -D -m 0644 provisioning/image/10-feed0.link "$root/etc/systemd/network/10-feed0.link"
install -D -m 0644 provisioning/image/20-feed0.network "$root/etc/systemd/network/20-feed0.network"
install -D -m 0644 provisioning/image/30-management.network "$root/etc/systemd/network/30-management.network"
echo appliance > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tappliance\n' > "$root/etc/hosts"
printf 'LABEL=appliance-root\t/\text4\terrors=remount-ro\t0\t1\n' > "$root/etc/fstab"
chroot "$root" systemctl enable -q systemd-networkd || die "cannot enable systemd-networkd in the root"
: > "$root/etc/machine-id"                     # made on first boot: each appliance its own
sh provisioning/bootstrap.sh --root "$root" --wheelhouse "$wheels" --numba-cpu "$NUMBA_CPU" \
    || die "bootstrap.sh in the image's root failed (above)"
# bootstrap left the root clean of mounts; the config it kept must still be the image's
cmp -s provisioning/image/appliance.toml "$root/etc/appliance/appliance.toml" || die "the image's config was changed"

# --- the disk: an EFI system partition (systemd-boot, kernel, initrd) and the root, GPT --------------------------
# Assembled only when what goes into it changed: the Debian root (its key and its extraction), the hash of the
# sources bootstrap installed (pyproject.toml, appliance/, provisioning/ -- this script and the image's files with
# it -- and xdp/) and the two files it copies besides (the sample capture and the README).
inputs="$key $(cat "$root/.from-$key") $(cat "$root/opt/appliance/.source-hash")"
inputs="$inputs $(cat pcaps/sample.pcap README.md | sha256sum | cut -c1-16)"
image=$OUT/appliance.qcow2
if [ "$(cat "$OUT/.inputs" 2>/dev/null)" = "$inputs" ] && [ -f "$image" ] && [ -f "$OUT/image.json" ]; then
    say "$image: up to date, $(du -m "$image" | cut -f1) MB on disk (nothing that goes into it changed;" \
        "checked in $(( $(date +%s) - started )) s)"
    exit 0
fi
rm -f "$OUT/.inputs"
kernel=$(ls "$root"/boot/vmlinuz-* | sort -V | tail -n 1)
initrd=$root/boot/initrd.img-${kernel##*/vmlinuz-}
[ -f "$initrd" ] || die "no initrd for $(basename "$kernel") in the root"
work=$(mktemp -d /tmp/appliance-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
used_mb=$(du -sxm --exclude=./proc --exclude=./sys "$root" | cut -f1)
root_mb=$((used_mb + used_mb / 5 + ROOT_FREE_MB))
mke2fs -q -t ext4 -L appliance-root -d "$root" -E root_owner=0:0 "$work/root.img" "${root_mb}M" \
    || die "mke2fs of the root file system failed"
mkfs.vfat -C -n APPLIANCE "$work/esp.img" $((ESP_MB * 1024)) >/dev/null || die "mkfs.vfat failed"
cat > "$work/loader.conf" <<EOF
default appliance.conf
timeout 0
EOF
cat > "$work/appliance.conf" <<EOF
title   capture appliance ($(basename "$kernel"))
linux   /vmlinuz
initrd  /initrd.img
options root=LABEL=appliance-root rw console=tty0 console=ttyS0,115200
EOF
export MTOOLS_SKIP_CHECK=1
mmd -i "$work/esp.img" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries
mcopy -i "$work/esp.img" "$root/usr/lib/systemd/boot/efi/systemd-bootx64.efi" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$work/esp.img" "$work/loader.conf" ::/loader/loader.conf
mcopy -i "$work/esp.img" "$work/appliance.conf" ::/loader/entries/appliance.conf
mcopy -i "$work/esp.img" "$kernel" ::/vmlinuz
mcopy -i "$work/esp.img" "$initrd" ::/initrd.img
disk=$work/disk.raw
truncate -s $((1 + ESP_MB + root_mb + 1))M "$disk"
sfdisk -q "$disk" <<EOF || die "sfdisk failed"
label: gpt
start=1MiB, size=${ESP_MB}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp
start=$((1 + ESP_MB))MiB, size=${root_mb}MiB, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=appliance-root
EOF
dd if="$work/esp.img" of="$disk" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$work/root.img" of="$disk" bs=1M seek=$((1 + ESP_MB)) conv=notrunc,sparse status=none
qemu-img convert -q -O qcow2 -c "$disk" "$image.partial" || die "qemu-img convert failed"
mv "$image.partial" "$image"
cp "$kernel" "$OUT/vmlinuz"                    # for a direct kernel boot (qemu -kernel), which skips the firmware
cp "$initrd" "$OUT/initrd.img"
# What went in, for the boot test and for people: the package build and the kernel.
printf '{"kernel": "%s", "source_hash": "%s", "numba_cpu": "%s", "root_mb": %s}\n' "$(basename "$kernel")" \
    "$(cat "$root/opt/appliance/.source-hash")" "$NUMBA_CPU" "$root_mb" > "$OUT/image.json"
echo "$inputs" > "$OUT/.inputs"
say "$image: $(du -m "$image" | cut -f1) MB on disk, $(( (1 + ESP_MB + root_mb + 1) / 1024 )) GiB virtual ($(basename "$kernel"); built in $(( $(date +%s) - started )) s)"
