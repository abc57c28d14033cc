package pktstat_bpf

import (
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/influxdata/telegraf/config"
	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/core/aggregate"
	"github.com/pktstat-bpf/pktstat-bpf/internal/configcases"
)

// loadInput reads one [[inputs.pktstat_bpf]] table through Telegraf's own
// loader and runs the input's Init the way Telegraf does.
func loadInput(t *testing.T, body string) (*PktstatBPF, error) {
	t.Helper()
	c := config.NewConfig()
	require.NoError(t, c.LoadConfigData([]byte("[[inputs.pktstat_bpf]]\n"+body), ""), body)
	require.Len(t, c.Inputs, 1)
	return c.Inputs[0].Input.(*PktstatBPF), c.Inputs[0].Init()
}

// TestSharedInvalidConfigs runs every bad config of internal/configcases
// through Telegraf's loader and Init; the receiver's TestSharedInvalidConfigs
// runs the same cases and expects the same text.
func TestSharedInvalidConfigs(t *testing.T) {
	cases, err := configcases.Invalid()
	require.NoError(t, err)
	require.NotEmpty(t, cases)
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			body, err := configcases.TOML(tc.Config)
			require.NoError(t, err)
			_, err = loadInput(t, body)
			require.EqualError(t, err, tc.Message(), body)
		})
	}
}

// durationFields finds every duration key of the input by type, keyed by its
// TOML name, so that a new one is covered without being listed here.
func durationFields(v reflect.Value) map[string]reflect.Value {
	keys := map[string]reflect.Value{}
	for i := range v.NumField() {
		f, fv := v.Type().Field(i), v.Field(i)
		switch {
		case f.Anonymous && f.Type.Kind() == reflect.Struct:
			maps.Copy(keys, durationFields(fv))
		case f.Type == reflect.TypeFor[config.Duration](), f.Type == reflect.TypeFor[aggregate.Duration]():
			keys[f.Tag.Get("toml")] = fv
		}
	}
	return keys
}

// TestDurationKeysTakeTelegrafDurations: every duration key reads what
// Telegraf's config.Duration reads, written the ways Telegraf's docs show,
// and gets the value config.Duration gets.
func TestDurationKeysTakeTelegrafDurations(t *testing.T) {
	keys := slices.Sorted(maps.Keys(durationFields(reflect.ValueOf(PktstatBPF{}))))
	require.Equal(t, []string{"idle_timeout", "series_idle_timeout"}, keys)
	for _, key := range keys {
		for _, tc := range []struct{ toml, text string }{
			{`120`, "120"},
			{`1.5`, "1.5"},
			{`"90s"`, "90s"},
			{`'2m30s'`, "2m30s"},
			{`"1d"`, "1d"},
			{`"1d12h"`, "1d12h"},
		} {
			t.Run(key+"="+tc.toml, func(t *testing.T) {
				var want config.Duration
				require.NoError(t, want.UnmarshalText([]byte(tc.text)))
				p, err := loadInput(t, key+" = "+tc.toml+"\n")
				require.NoError(t, err)
				got := durationFields(reflect.ValueOf(p).Elem())[key]
				require.Equal(t, time.Duration(want), time.Duration(got.Int()))
			})
		}
	}
}
