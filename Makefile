# Shortcuts; each target calls the same commands the README documents.
.PHONY: run test worker lint bench screenshots

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

# Browser tests in screenshot mode: $(SCREENSHOT_DIR)/*.png (needs PostgreSQL and Redis,
# as the test command's second pass does).
SCREENSHOT_DIR ?= docs/screenshots
screenshots:
	DATABASE_URL=postgres://postgres@127.0.0.1:5432/roomvoice REDIS_URL=redis://127.0.0.1:6379/11 \
	CHANNELS_PREFIX=roomvoice-screenshots ROOMVOICE_SCREENSHOT_DIR=$(SCREENSHOT_DIR) \
	.venv/bin/pytest -p no:cacheprovider -m "not embedded" tests/browser
