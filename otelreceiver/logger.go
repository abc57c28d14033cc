package pktstatbpfreceiver

import "log/slog"

// slogLogger hands core, which logs through log/slog, the collector's zap
// core so attach and detach events land in the collector's log.
func slogLogger(h slog.Handler) *slog.Logger { return slog.New(h) }
