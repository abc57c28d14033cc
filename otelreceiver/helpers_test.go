package pktstatbpfreceiver

import (
	"regexp"

	"go.opentelemetry.io/collector/confmap"
)

func regexpQuote(s string) string { return regexp.QuoteMeta(s) }

func confmapFromMap(m map[string]any) *confmap.Conf { return confmap.NewFromStringMap(m) }
