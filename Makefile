# Targets:
#   make build   compile every package and bin/scalr-backup
#   make lint    gofmt (must list nothing), go vet, and golangci-lint with
#                .golangci.yml (layering, staticcheck, complexity); the
#                pinned golangci-lint is built once into the tool cache
#   make test    install test tools, run every test (integration required),
#                a short fuzz run of every fuzz target, then lint
#   make unit    fast tests only (go test -short: no tools, no services)
#   make rules   promtool check rules and promtool test rules on
#                deploy/prometheus (make test runs them too, in
#                nightly's TestPromtoolRules)

GO ?= go

.PHONY: build lint test unit demo bench rules

build:
	$(GO) build ./...
	$(GO) build -o bin/scalr-backup ./cmd/scalr-backup

lint:
	@unformatted=$$(gofmt -l .); \
	if [ -n "$$unformatted" ]; then \
		echo "gofmt -l lists files that need gofmt -w:"; echo "$$unformatted"; exit 1; \
	fi
	$(GO) vet ./...
	@lint=$$(bash scripts/install-lint.sh) && echo "$$lint run ./..." && "$$lint" run ./...

test:
	bash scripts/test-setup.sh
	SCALR_BACKUP_REQUIRE_INTEGRATION=1 $(GO) test -p 1 -count=1 -timeout 40m ./...
	bash scripts/fuzz-short.sh
	$(MAKE) lint

unit:
	$(GO) test -short ./...

rules:
	cd deploy/prometheus && promtool check rules scalr-backup.rules.yml && promtool test rules scalr-backup.rules.test.yml

# bench: scalr-backup side by side with restic 0.18.1 (local, S3, S3 with
# latency), then the per-stage Go benchmarks; see scripts/bench.sh.
bench:
	GO=$(GO) bash scripts/bench.sh

# The main job end to end on this machine: a private Docker engine with two
# scalr-*-db containers, an S3 server on loopback, the nightly pass, a
# damaged database restored, a drill; everything cleaned up afterwards.
demo:
	bash scripts/test-setup.sh
	SCALR_BACKUP_DEMO=1 $(GO) test -count=1 -timeout 30m -run '^TestDemo$$' -v ./internal/demo
