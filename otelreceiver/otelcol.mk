# otelcol-pktstat: the OpenTelemetry Collector distribution with the
# pktstatbpf receiver, built by ocb from builder-config.yaml.

OCB_VERSION := v0.165.0
OCB := $(HOME)/go/bin/builder
OTELCOL := $(BUILD)/otelcol-pktstat
OTELCOL_SRC := $(BUILD)/otelcol-pktstat-src
# Everything the distribution compiles from this repository.
OTELCOL_INPUTS := builder-config.yaml go.mod go.sum \
	$(shell find otelreceiver core bpf -type f \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' -o -name '*.o' \) -not -name '*_test.go' 2>/dev/null)

DEPS_TARGETS += deps-otelcol
BUILD_TARGETS += $(OTELCOL)
TEST_TARGETS += test-otelcol
BENCH_TARGETS += bench-otelcol
RUN_TARGET := run-otelcol

.PHONY: deps-otelcol otelcol test-otelcol test-otelcol-unit bench-otelcol run-otelcol

## deps-otelcol: install ocb (the collector builder) at the pinned release, and Debian's prometheus
## (2.42, with promtool) for the dashboard and alert tests; without recommends, so no node exporter
## comes along, and nothing is started (the tests run their own on 127.0.0.1)
deps-otelcol:
	@$(OCB) version 2>&1 | grep -q 'ocb version $(OCB_VERSION)$$' || { \
		echo "installing ocb $(OCB_VERSION)"; \
		GOBIN=$(dir $(OCB)) $(GO) install go.opentelemetry.io/collector/cmd/builder@$(OCB_VERSION); }
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
		&& { ! systemctl is-active -q prometheus 2>/dev/null || systemctl disable -q --now prometheus; }; }

otelcol: $(OTELCOL)

# ocb writes go.mod and the sources, then its own `go mod tidy` fails:
# fileexporter's tests import otlpencodingextension v0.165.1, which the Go
# proxy does not serve. That one failure is expected and tolerated (any other
# ocb error stops the build); `go mod tidy -e` then records everything the
# binary needs and skips that test-only module, and go build compiles.
$(OTELCOL): $(OTELCOL_INPUTS) | deps-otelcol
	@mkdir -p $(BUILD)
	@echo "$(OCB) --config builder-config.yaml --skip-compilation"
	@$(OCB) --config builder-config.yaml --skip-compilation >$(BUILD)/ocb.log 2>&1 || { \
		grep -q 'failed to update go.mod' $(BUILD)/ocb.log && grep -q 'otlpencodingextension' $(BUILD)/ocb.log \
			|| { cat $(BUILD)/ocb.log >&2; exit 1; }; \
		echo "  (expected: ocb's go mod tidy stopped at fileexporter's unserved test-only dependency)"; }
	@# Without its own go.mod the go command would tidy the enclosing root module.
	@test -f $(OTELCOL_SRC)/go.mod || { echo "ocb wrote no $(OTELCOL_SRC)/go.mod: see $(BUILD)/ocb.log" >&2; exit 1; }
	cd $(OTELCOL_SRC) && $(GO) mod tidy -e 2>tidy.log || { cat tidy.log >&2; exit 1; }
	cd $(OTELCOL_SRC) && CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $(OTELCOL) .
	@! (cd $(OTELCOL_SRC) && $(GO) list -m all | grep -q influxdata/telegraf) || { echo "otelcol-pktstat pulls in Telegraf" >&2; exit 1; }

## test-otelcol: receiver unit tests, real netns/veth tests and the end-to-end distribution tests
test-otelcol: $(OTELCOL)
	cd otelreceiver && OTELCOL_PKTSTAT=$(OTELCOL) $(GO) test -count=1 -p 1 -timeout 10m ./...

## test-otelcol-unit: the receiver tests that need no privileges
test-otelcol-unit:
	cd otelreceiver && PKTSTAT_REQUIRE_BPF= $(GO) test -count=1 -short ./...

## bench-otelcol: the receiver's conversion cost per flow and scrape
bench-otelcol:
	cd otelreceiver && $(GO) test -run '^$$' -bench . -benchmem ./...

## run-otelcol: the collector with the receiver on the default-route interface (needs root)
run-otelcol: $(OTELCOL)
	$(OTELCOL) --config testdata/otelcol.yaml
