package pktstat_bpf

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/influxdata/telegraf/config"
	_ "github.com/influxdata/telegraf/plugins/inputs/execd"
	_ "github.com/influxdata/telegraf/plugins/outputs/file"
	_ "github.com/influxdata/telegraf/plugins/parsers/influx"
	_ "github.com/influxdata/telegraf/plugins/serializers/influx"
	"github.com/stretchr/testify/require"
)

// TestExampleConfigs loads the telegraf.conf files that `make run-telegraf`
// and the README use, through Telegraf's own loader.
func TestExampleConfigs(t *testing.T) {
	for _, name := range []string{"telegraf.conf", "telegraf/execd.conf"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join("..", "..", "testdata", name)
			data, err := os.ReadFile(path)
			require.NoError(t, err)
			c := config.NewConfig()
			require.NoError(t, c.LoadConfigData(data, path))
			require.Len(t, c.Inputs, 1)
			require.NoError(t, c.Inputs[0].Init())
			require.Len(t, c.Outputs, 1)
		})
	}
}
