# Two entry points, each doing all set-up on a fresh machine:
#   make study   - run the whole study, write reports/
#   make test    - run the test suite (the long checks stay out: make test-slow)
#   make readme  - rewrite README.md's answer block, docs/answer.png and docs/glossary.md from reports/results.json
# The posteriordb models need no set-up: the study reads the data and gold-draw summaries shipped in
# models/posteriordb/. POSTERIORDB_PATH (or `make study POSTERIORDB_PATH=...`) only adds a full clone.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

export POSTERIORDB_PATH

.PHONY: setup study quick test test-slow readme clean

setup: $(STAMP)

# torch/torchvision first and pinned: laplace-torch needs torchvision, and this pair is
# the one pip resolves on Python 3.11 without pulling a second torch.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# The study exits 1 when it wrote everything but some fit failed or was flagged (the report
# says which and why): that is a finding, not a broken run, so make goes on. Exit 2 (bad
# input), 130 (interrupted) and anything else stop make.
COMPARE = status=0; $(PY) -m study.compare $(1) $(ARGS) || status=$$?; \
	if [ $$status -eq 1 ]; then echo "study: report written; some fits failed or were flagged (see the report's diagnostics)"; \
	elif [ $$status -ne 0 ]; then exit $$status; fi

study: $(STAMP)
	@$(call COMPARE,)

quick: $(STAMP)
	@$(call COMPARE,--quick)

# The README's answer comes from the default study's results; the study runs first when
# there are none (after code changes: make study readme).
readme: $(STAMP)
	test -f reports/results.json || $(PY) -m study.compare --out reports
	$(PY) -m study.report.readme --results reports/results.json --readme README.md --docs docs

test: $(STAMP)
	$(PY) -m pytest -m "not slow" $(ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(ARGS)

clean:
	rm -rf $(VENV) reports/*.csv reports/*.json reports/report.md reports/*.html reports/idata reports/figures reports/cache
