# Developer shortcuts; the README's two commands work without make.
.PHONY: demo test deps bench clean
demo:
	sh provisioning/setup.sh demo
test:
	sh provisioning/setup.sh test
deps:
	sh provisioning/setup.sh deps
bench: deps
	.venv/bin/python bench/replay_vs_itch_book.py
clean:
	rm -rf .venv out build *.egg-info
