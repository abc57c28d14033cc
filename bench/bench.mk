# bench/bench.mk: `make bench` part for per-packet BPF cost, drain and
# conversion cost, end-to-end throughput and agent CPU (see bench/README.md).

BENCH_TARGETS += bench-pktstat
DEPS_TARGETS += deps-bench

# Extra flags for the bench command, e.g. BENCH_ARGS="-rounds 9 -strict".
BENCH_ARGS ?=

.PHONY: bench-pktstat deps-bench

## deps-bench: trafgen (Debian netsniff-ng) for the end-to-end bench
deps-bench:
	@command -v trafgen >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq netsniff-ng >/dev/null; }

## bench-pktstat: the one-table bench; needs root, builds the agents if stale
bench-pktstat: deps-bench $(BUILD)/otelcol-pktstat $(BUILD)/telegraf
	$(GO) run ./bench -root $(CURDIR) $(BENCH_ARGS)
