# Telegraf input inputs.pktstat_bpf: a Telegraf with the plugin compiled in,
# the execd shim for stock Telegraf, InfluxDB for the end-to-end test, and the
# tests. Included by the root Makefile.

TELEGRAF_VERSION := 1.39.3
INFLUXD_VERSION := 1.8.10
TELEGRAF_PLUGIN := $(CURDIR)/telegrafplugin
# Telegraf's source is copied here from the module cache (gitignored): it is
# built, never forked.
TELEGRAF_SRC := $(TELEGRAF_PLUGIN)/.telegraf-src
INFLUXD := $(HOME)/go/bin/influxd
# Plugins of the custom Telegraf: ours, a few core inputs, execd (to run
# other external plugins), and the common outputs with their serializers.
TELEGRAF_TAGS := custom,inputs.pktstat_bpf,inputs.cpu,inputs.mem,inputs.net,inputs.netstat,inputs.disk,inputs.diskio,inputs.system,inputs.internal,inputs.execd,outputs.file,outputs.discard,outputs.influxdb,outputs.influxdb_v2,outputs.prometheus_client,parsers.influx,serializers.influx,serializers.json,serializers.prometheus
# Telegraf panics at start on a version that is not semver.
TELEGRAF_LDFLAGS := -s -w -X github.com/influxdata/telegraf/internal.Version=$(TELEGRAF_VERSION)+pktstat-bpf
# -mod=mod for the plugin module: its go.sum must also cover the root
# module's requirements (pulled in through the replace), and those change
# with core; `go mod tidy` in telegrafplugin/ records them for good.
TELEGRAF_GOFLAGS := -buildvcs=false -mod=mod
TELEGRAF_PLUGIN_SOURCES := $(shell find $(CURDIR)/core $(CURDIR)/bpf $(TELEGRAF_PLUGIN)/pktstat_bpf $(TELEGRAF_PLUGIN)/cmd \
	\( -name '*.go' -o -name '*.o' -o -name '*.conf' \) -not -name '*_test.go' 2>/dev/null) \
	$(CURDIR)/go.mod $(TELEGRAF_PLUGIN)/go.mod

BUILD_TARGETS += $(BUILD)/telegraf $(BUILD)/telegraf-pktstat-bpf
DEPS_TARGETS += deps-telegraf
TEST_TARGETS += test-telegraf
BENCH_TARGETS += bench-telegraf

.PHONY: deps-telegraf test-telegraf test-telegraf-unit bench-telegraf run-telegraf telegraf-src clean-telegraf

## deps-telegraf: install InfluxDB $(INFLUXD_VERSION) for the end-to-end test and setcap/setpriv for the least-privilege test, if missing
deps-telegraf:
	@command -v setcap >/dev/null && command -v setpriv >/dev/null || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libcap2-bin util-linux >/dev/null; }
	@test -x $(INFLUXD) || { echo "installing influxd $(INFLUXD_VERSION) (about 1.5 min)"; \
		GOTOOLCHAIN=local GOFLAGS= $(GO) install github.com/influxdata/influxdb/cmd/influxd@v$(INFLUXD_VERSION); }

# The copy of Telegraf's module, plus the one file that registers our input
# and a go.work that joins it with this repository's modules.
$(TELEGRAF_SRC)/go.work: $(TELEGRAF_PLUGIN)/telegraf.mk $(TELEGRAF_PLUGIN)/go.mod
	rm -rf $(TELEGRAF_SRC)
	mkdir -p $(TELEGRAF_SRC)
	dir=$$(cd $(TELEGRAF_PLUGIN) && GOWORK=off GOFLAGS=-mod=mod $(GO) mod download -json github.com/influxdata/telegraf@v$(TELEGRAF_VERSION) \
		| sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p') && test -n "$$dir" && cp -r "$$dir" $(TELEGRAF_SRC)/telegraf
	chmod -R u+w $(TELEGRAF_SRC)/telegraf
	printf '%s\n' '//go:build !custom || inputs || inputs.pktstat_bpf' '' 'package all' '' \
		'import _ "github.com/pktstat-bpf/pktstat-bpf/telegrafplugin/pktstat_bpf" // register plugin' \
		> $(TELEGRAF_SRC)/telegraf/plugins/inputs/all/pktstat_bpf.go
	printf '%s\n' 'go 1.26.0' '' 'use (' '	./telegraf' '	..' '	../..' ')' > $(TELEGRAF_SRC)/go.work.tmp
	mv $(TELEGRAF_SRC)/go.work.tmp $@

telegraf-src: $(TELEGRAF_SRC)/go.work

## build/telegraf: Telegraf $(TELEGRAF_VERSION) with inputs.pktstat_bpf compiled in (2-3 min cold)
$(BUILD)/telegraf: $(TELEGRAF_SRC)/go.work $(TELEGRAF_PLUGIN_SOURCES)
	@mkdir -p $(BUILD)
	cd $(TELEGRAF_SRC)/telegraf && GOWORK=$(TELEGRAF_SRC)/go.work GOFLAGS=-buildvcs=false CGO_ENABLED=0 \
		$(GO) build -tags "$(TELEGRAF_TAGS)" -ldflags "$(TELEGRAF_LDFLAGS)" -o $@ ./cmd/telegraf

## build/telegraf-pktstat-bpf: the execd shim for a stock Telegraf
$(BUILD)/telegraf-pktstat-bpf: $(TELEGRAF_PLUGIN_SOURCES)
	@mkdir -p $(BUILD)
	cd $(TELEGRAF_PLUGIN) && GOWORK=off GOFLAGS="$(TELEGRAF_GOFLAGS)" CGO_ENABLED=0 \
		$(GO) build -ldflags "-s -w" -o $@ ./cmd/telegraf-pktstat-bpf

## test-telegraf: the plugin's unit tests, then the real tests of both binaries in netns/veth pairs and into InfluxDB
test-telegraf: $(BUILD)/telegraf $(BUILD)/telegraf-pktstat-bpf deps-telegraf
	cd $(TELEGRAF_PLUGIN) && GOWORK=off GOFLAGS="$(TELEGRAF_GOFLAGS)" PKTSTAT_BUILD=$(BUILD) INFLUXD=$(INFLUXD) \
		$(GO) test -count=1 -p 1 -timeout 10m ./...

## test-telegraf-unit: the plugin's tests that need no privileges or binaries
test-telegraf-unit:
	cd $(TELEGRAF_PLUGIN) && GOWORK=off GOFLAGS="$(TELEGRAF_GOFLAGS)" PKTSTAT_REQUIRE_BPF= $(GO) test -count=1 -short ./...

## bench-telegraf: the plugin's cost per flow when it turns a drain into metrics
bench-telegraf:
	cd $(TELEGRAF_PLUGIN) && GOWORK=off GOFLAGS="$(TELEGRAF_GOFLAGS)" $(GO) test -run '^$$' -bench . -benchmem ./pktstat_bpf/

## run-telegraf: build/telegraf counting on the default-route interface, metrics to stdout (needs root)
run-telegraf: $(BUILD)/telegraf
	$(BUILD)/telegraf --config $(CURDIR)/testdata/telegraf.conf

clean-telegraf:
	rm -rf $(TELEGRAF_SRC) $(BUILD)/telegraf $(BUILD)/telegraf-pktstat-bpf
