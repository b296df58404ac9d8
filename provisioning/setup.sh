#!/bin/sh
# Set up this checkout on a Debian 12 host (as root) and run one job:
#   sh provisioning/setup.sh demo   replay the bundled sample capture, then capture it live (validate)
#   sh provisioning/setup.sh test   run the whole test suite
#   sh provisioning/setup.sh image  build the bootable appliance image, build/image/appliance.qcow2
#   sh provisioning/setup.sh deps   only install what is missing
# Idempotent: Debian packages are installed only when missing, the virtual environment is rebuilt only
# when pyproject.toml changed, and numba's compiled kernels are cached beside the sources.
set -eu
cd "$(dirname "$0")/.."
job=${1:-demo}

DEBS="python3 python3-venv python3-dev gcc make gzip tshark tcpreplay clang llvm libbpf-dev libxdp-dev
      xdp-tools bpftool ethtool iproute2 netsniff-ng tcpdump"
# The tests scrape the metrics endpoint with a real Prometheus server (and check it with promtool); they start
# their own on a loopback port, so the package's own service is stopped and disabled if this installs it.
# The NATS publisher's tests start nats-server (JetStream) on a free loopback port with a temporary store, likewise.
# tests/test_bootstrap.py builds a throwaway Debian 12 root with mmdebstrap and runs provisioning/bootstrap.sh in it;
# tests/test_vagrantfile.py runs `vagrant validate` (vagrant-libvirt checks the libvirt provider's settings).
# `setup.sh image` builds the appliance image (provisioning/image/build.sh): a Debian root, a FAT EFI partition, a
# GPT disk.  tests/test_image.py builds it too, then boots it in a QEMU guest: software emulation, UEFI firmware.
IMAGE_DEBS="mmdebstrap e2fsprogs dosfstools mtools fdisk qemu-utils"
[ "$job" = test ] && DEBS="$DEBS prometheus nats-server vagrant vagrant-libvirt qemu-system-x86 ovmf $IMAGE_DEBS"
[ "$job" = image ] && DEBS="$DEBS $IMAGE_DEBS"
missing=""
for p in $DEBS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: Debian packages missing:$missing; run this as root to install them" >&2
        exit 1
    fi
    echo "setup: installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture; answer no without a prompt.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -qq || true
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
    for unit in prometheus nats-server; do
        case " $missing " in
            *" $unit "*) [ -d /run/systemd/system ] && systemctl disable --now $unit >/dev/null 2>&1 || true ;;
        esac
    done
fi
make -s --no-print-directory -C xdp      # the XDP steering program, xdp/build/feed_steer.bpf.o

VENV=.venv
stamp=$VENV/.installed
if [ ! -x $VENV/bin/python ] || [ ! -f $stamp ] || [ pyproject.toml -nt $stamp ]; then
    echo "setup: building the virtual environment in $VENV"
    /usr/bin/python3 -m venv $VENV
    $VENV/bin/pip install -q --upgrade pip >/dev/null
    $VENV/bin/pip install -q -e ".[test,bench]"
    touch $stamp
fi

case "$job" in
    demo)
        $VENV/bin/appliance replay pcaps/sample.pcap --out out/demo
        echo
        echo "== live: the same feed sent through a veth pair in a namespace, captured with AF_XDP =="
        exec $VENV/bin/appliance validate pcaps/sample.pcap --engine xdp --out out/demo-live ;;
    test)
        exec $VENV/bin/python -m pytest -q -ra --durations=15 tests ;;
    image)
        exec sh provisioning/image/build.sh build/image ;;
    deps)
        exit 0 ;;
    *)
        echo "setup: unknown job '$job' (demo, test, image or deps)" >&2; exit 2 ;;
esac
