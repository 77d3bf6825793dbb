PYTHON ?= python3
VENV ?= .venv
VPY = $(VENV)/bin/python
PORT ?= 8000

.PHONY: test serve demo interop test-browser soak bench bench-link venv clean

# The stdlib suite: no installs, no network beyond loopback.
test:
	$(PYTHON) -m unittest discover -s tests -v

# ALS mode in ./alsserve-web (created by alsserve itself); make serve PORT=8080
serve:
	$(PYTHON) -m alsserve --port $(PORT)

demo:
	$(PYTHON) -m alsserve --demo --port $(PORT)

$(VPY):
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip

venv: $(VPY)
	$(VPY) -m pip install -q -r tests/requirements-extra.txt

# Real peers: websockets, aiohttp, vermin, a QR decoder, a network namespace.
interop: venv
	$(VPY) -m unittest discover -s tests/interop -p 'interop_*.py' -v

test-browser: venv
	$(VPY) -m unittest discover -s tests/browser -p 'test_*.py' -v

soak:
	$(PYTHON) -m unittest discover -s tests/soak -p 'soak_*.py' -v

bench: venv
	$(VPY) tests/bench/run.py

# The shared Wi-Fi link case alone (root: a network namespace and tc).
bench-link: venv
	$(VPY) tests/bench/link.py

clean:
	rm -rf $(VENV) build alsserve-web
