package pktstat_bpf

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/influxdata/telegraf"
)

// telegrafHandler sends core's slog records to the plugin's Telegraf logger,
// so attach and detach events appear in Telegraf's log with the plugin name.
type telegrafHandler struct {
	log   telegraf.Logger
	attrs string
}

func newSlogLogger(log telegraf.Logger) *slog.Logger {
	return slog.New(&telegrafHandler{log: log})
}

func (h *telegrafHandler) Enabled(_ context.Context, level slog.Level) bool {
	switch {
	case level >= slog.LevelError:
		return h.log.Level() >= telegraf.Error
	case level >= slog.LevelWarn:
		return h.log.Level() >= telegraf.Warn
	case level >= slog.LevelInfo:
		return h.log.Level() >= telegraf.Info
	}
	return h.log.Level() >= telegraf.Debug
}

func (h *telegrafHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	b.WriteString(h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	msg := b.String()
	switch {
	case r.Level >= slog.LevelError:
		h.log.Error(msg)
	case r.Level >= slog.LevelWarn:
		h.log.Warn(msg)
	case r.Level >= slog.LevelInfo:
		h.log.Info(msg)
	default:
		h.log.Debug(msg)
	}
	return nil
}

func (h *telegrafHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.attrs)
	for _, a := range attrs {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
	}
	return &telegrafHandler{log: h.log, attrs: b.String()}
}

// WithGroup is flattened: core logs a handful of plain attributes.
func (h *telegrafHandler) WithGroup(string) slog.Handler { return h }
