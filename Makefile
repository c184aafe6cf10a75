# The seed stacks' operator verbs, on Docker Compose (deploy/compose) and the keel binary.
# make up | down | ps | logs [svc=api] | build | migrate | health | backup | restore file=... | test
COMPOSE ?= docker compose --project-directory deploy/compose --env-file deploy/compose/.env -f deploy/compose/compose.yaml
PROFILE ?= full
WORKERS ?= 2
KEEL ?= $(COMPOSE) exec -T api keel
BACKUP_DIR ?= backups

.PHONY: up down ps logs build migrate health backup restore test secrets

up: deploy/compose/.env
	$(COMPOSE) --profile $(PROFILE) up -d --scale worker=$(WORKERS)

down:
	$(COMPOSE) --profile $(PROFILE) down

ps:
	$(COMPOSE) --profile $(PROFILE) ps

logs:
	$(COMPOSE) --profile $(PROFILE) logs -f --tail=200 $(svc)

build:
	docker build -t $${KEEL_IMAGE:-ghcr.io/keel-platform/keel:0.1.0} .

migrate:
	$(COMPOSE) --profile core run --rm migrate

health:
	$(KEEL) health

backup:
	mkdir -p $(BACKUP_DIR)
	$(KEEL) backup --output - > $(BACKUP_DIR)/keel-$$(date -u +%Y%m%dT%H%M%SZ).dump

restore:
	@test -n "$(file)" || { echo "make restore file=backups/keel-....dump" >&2; exit 2; }
	$(KEEL) restore --input - --yes < $(file)

test:
	./scripts/test

secrets:
	@swift run -c release keel secrets generate

deploy/compose/.env:
	@echo "deploy/compose/.env is missing: cp deploy/compose/.env.example deploy/compose/.env and fill it (make secrets prints strong values)" >&2
	@exit 2
