# Shortcuts; each target calls the same commands the README documents.
.PHONY: run test worker lint bench

run:
	python3 scripts/dev.py run

test:
	python3 scripts/dev.py test

worker:
	.venv/bin/celery -A roomvoice worker -Q tools --loglevel INFO

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy .

bench:
	@ls bench/*.py >/dev/null 2>&1 && for f in bench/*.py; do .venv/bin/python $$f; done || echo "no benchmarks yet"
