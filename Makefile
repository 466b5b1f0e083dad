# nanochat-arms: the two commands a newcomer needs are `make lab` and `make test`.
SHELL := /bin/bash
ROOT := $(abspath .)
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
# ansible.cfg is ignored from a world-writable cwd: always name it
export ANSIBLE_CONFIG := $(ROOT)/ansible.cfg
PYTEST_ARGS ?=

.PHONY: help venv lab lab-pilot lab-up lab-down lab-status test unit lint clean

help:
	@echo "make lab       bring up the local lab (3 SSH hosts, Azurite, stand-in nanochat) and run site.yml in it"
	@echo "make lab-pilot the lab's pilot: top16.5 and random16.5 at seeds 42, 43, 44 (four arms, two per host), then its noise band"
	@echo "make test      the whole test suite (installs what it needs, brings the lab up)"
	@echo "make lab-down  stop the lab and remove its users"
	@echo "make lint      ruff + ansible-lint (production profile)"

# The controller venv: Python 3.11 (ansible-core 2.19 is the newest that runs on it).
$(VENV)/.installed: pyproject.toml
	@bash scripts/check_controller.sh
	@test -x $(PY) || $$(command -v python3.11 || command -v python3) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev,data,train]'
	@touch $@

venv: $(VENV)/.installed

lab-up: venv
	bash scripts/lab.sh up

# the whole experiment in the lab, then (once the short lab runs end) their results side by side
lab: lab-up
	set -a; . .lab/secrets.env; set +a; \
	  time $(VENV)/bin/ansible-playbook site.yml -i inventory/lab/ && \
	  $(VENV)/bin/ansible-playbook playbooks/collect.yml -i inventory/lab/ -e arms_collect_wait=true

# the pilot-first workflow in the lab: -e arms_profile=pilot runs the experiment small (inventory/lab-pilot:
# the random arm at three seeds, four arms packed two per GPU-less host), then collect writes the table
# with the noise band (results/lab-top-vs-random-pilot/)
lab-pilot: lab-up
	set -a; . .lab/secrets.env; set +a; \
	  time $(VENV)/bin/ansible-playbook site.yml -i inventory/lab-pilot/ -e arms_profile=pilot && \
	  $(VENV)/bin/ansible-playbook playbooks/collect.yml -i inventory/lab-pilot/ -e arms_profile=pilot -e arms_collect_wait=true

lab-down:
	bash scripts/lab.sh down

lab-status:
	bash scripts/lab.sh status

# pytest's exit code 5 (no tests collected) must not pass
test: lab-up
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	$(VENV)/bin/ansible-lint --offline --profile production -q
	@set +e; $(VENV)/bin/pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

unit: venv
	@set +e; $(VENV)/bin/pytest tests/unit $(PYTEST_ARGS); rc=$$?; [ $$rc -ne 5 ] || exit 1; exit $$rc

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ansible-lint --offline --profile production

clean: lab-down
	rm -rf $(VENV) .pytest_cache .ruff_cache
