package pktstatbpfreceiver

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/confmap"

	"github.com/pktstat-bpf/pktstat-bpf/internal/configcases"
)

// TestSharedInvalidConfigs runs every bad config of internal/configcases
// through the collector's own decoding and validation; the Telegraf plugin's
// TestSharedInvalidConfigs runs the same cases and expects the same text.
func TestSharedInvalidConfigs(t *testing.T) {
	cases, err := configcases.Invalid()
	require.NoError(t, err)
	require.NotEmpty(t, cases)
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			cfg := createDefaultConfig().(*Config)
			require.NoError(t, confmap.NewFromStringMap(tc.Config).Unmarshal(cfg))
			require.EqualError(t, confmap.Validate(cfg), tc.Message())
		})
	}
}
