# nsk: two commands on a fresh Debian machine, as root:
#   make up     install everything, then bring up topologies/quickstart.yaml and show it working
#   make test   install everything, then run the whole test suite
PYTHON ?= python3
VENV ?= .venv
NSK = $(VENV)/bin/nsk
# What nsk and its tests use: netlink and namespaces (iproute2 for people, tests and IPVS
# mode's kube-ipvs0), the proxy backends (ipvsadm and ipset for IPVS mode), and the tools
# labs use from inside Pods.
APT_PACKAGES = python3 python3-venv python3-pip iproute2 iptables nftables conntrack ipvsadm ipset curl dnsutils \
	iputils-ping procps iperf3 tcpdump netcat-openbsd sudo
# The VM-kernel tier (tests/vm/run): Debian's own kernel, booted in QEMU with virtme-ng
# (pyproject's test extra), has IPVS and the dummy link type where the host kernel may not.
VM_PACKAGES = qemu-system-x86 linux-image-amd64 busybox-static
# wait for another apt (unattended-upgrades on a fresh machine) instead of failing at once
APT = DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600
BENCH_PACKAGES = mininet bridge-utils hyperfine dnsperf dnsmasq-base util-linux
STAMP = .make

.PHONY: up test install deps venv bench clean

up: install
	@if [ -d /run/nsk/nsk ]; then $(NSK) down --cluster nsk; fi
	$(NSK) up topologies/quickstart.yaml
	$(NSK) get pods -o wide --cluster nsk
	@bash scripts/quickstart-check.sh $(NSK) nsk

test: install $(STAMP)/vm-deps
	$(VENV)/bin/ruff check nsk tests bench
	$(VENV)/bin/python -m pytest -ra tests
	tests/vm/run

bench: install $(STAMP)/bench-deps
	$(VENV)/bin/python bench/up_down.py --pods 50 200 --repeat 3
	$(VENV)/bin/python bench/proxy_sync.py --services 1000 10000 --repeat 3
	$(VENV)/bin/python bench/proxy_modes.py --services 1000 10000 --repeat 3 --changes 20
	$(VENV)/bin/python bench/datapath.py --changes 20
	$(VENV)/bin/python bench/dns.py --services 200 --seconds 10 --rounds 3
	$(VENV)/bin/python bench/scale.py --services 100 1000 --endpoints 20 --idle 60 --samples 20
	$(VENV)/bin/python bench/churn.py --seconds 30

install: deps venv
	ln -sf $(abspath $(NSK)) /usr/local/bin/nsk
	@# the editable install compiles nothing: every nsk command would compile its modules
	@# again where PYTHONDONTWRITEBYTECODE is set (50 ms of each CLI start)
	$(VENV)/bin/python -m compileall -q nsk

deps: $(STAMP)/deps
$(STAMP)/deps: Makefile
	$(APT) update -qq
	$(APT) install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null
	@mkdir -p $(STAMP) && touch $@

$(STAMP)/vm-deps: Makefile
	$(APT) install -y -qq --no-install-recommends $(VM_PACKAGES) >/dev/null
	@mkdir -p $(STAMP) && touch $@

$(STAMP)/bench-deps: Makefile
	$(APT) install -y -qq --no-install-recommends $(BENCH_PACKAGES) >/dev/null
	@mkdir -p $(STAMP) && touch $@

venv: $(STAMP)/venv
$(STAMP)/venv: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	@mkdir -p $(STAMP) && touch $@

clean:
	rm -rf $(VENV) $(STAMP) build *.egg-info
