# The two set-up commands a newcomer runs: `make demo` and `make test`; each works alone.
PY      := .venv/bin/python
STAMP   := .venv/.installed
TORCH   := torch==2.13.0

.PHONY: demo test test-slow bench lint docs clean

$(STAMP): pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	# the CPU build first: an unpinned torch pulls a multi-GB CUDA build
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	.venv/bin/bayesirl demo --out demo-output --overwrite

test: $(STAMP)
	$(PY) -m pytest -n 2 -q

test-slow: $(STAMP)
	$(PY) -m pytest -n 2 -q -m slow

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# the documentation site (docs/), warnings as errors, every reference checked; a fresh build (-E)
# so that every page's warnings are reported; tests/test_docs.py runs the same build (a slow
# test; the default suite runs it with the dummy builder, which reads and resolves, writes nothing)
docs: $(STAMP)
	$(PY) -m sphinx -E -W --keep-going -n -q -b html docs docs/_build/html
	@echo "open docs/_build/html/index.html"

lint: $(STAMP)
	.venv/bin/ruff check bayesirl tests benchmarks

clean:
	rm -rf .venv demo-output .pytest_cache
