# Developer shortcuts; the README's two commands work without make.
.PHONY: demo test deps bench clean test-bootstrap image test-image
demo:
	sh provisioning/setup.sh demo
test:
	sh provisioning/setup.sh test
deps:
	sh provisioning/setup.sh deps
# provisioning/bootstrap.sh in a throwaway Debian 12 root (opt-in: minutes, and a Debian download the first time).
test-bootstrap: deps
	APPLIANCE_TEST_BOOTSTRAP=1 .venv/bin/python -m pytest -q -s tests/test_bootstrap.py
# The bootable appliance image, build/image/appliance.qcow2 (provisioning/image/build.sh; as root; minutes).
image:
	sh provisioning/setup.sh image
# Build it (or find it up to date), boot it in a QEMU guest, check the service, tune and a captured session
# (tests/test_image.py; the whole suite runs it too).
test-image: image
	.venv/bin/python -m pytest -q -s tests/test_image.py
bench: deps
	.venv/bin/python bench/replay_vs_itch_book.py
clean:
	rm -rf .venv out build *.egg-info
