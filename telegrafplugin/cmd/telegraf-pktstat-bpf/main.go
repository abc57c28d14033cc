// Command telegraf-pktstat-bpf runs the pktstat_bpf input as an external
// plugin of a stock Telegraf, through [[inputs.execd]].
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/influxdata/telegraf/plugins/common/shim"

	"github.com/pktstat-bpf/pktstat-bpf/telegrafplugin/pktstat_bpf"
)

var (
	configFile   = flag.String("config", "", "path to the plugin's config file, with one [[inputs.pktstat_bpf]] table (default: the plugin's defaults)")
	pollInterval = flag.Duration("poll_interval", 10*time.Second, "how often to drain and emit flows on the shim's own schedule")
	pollDisabled = flag.Bool("poll_interval_disabled", false,
		"emit only when Telegraf asks with a newline on stdin (inputs.execd signal = \"STDIN\")")
	unpin = flag.Bool("unpin", false,
		"remove for good what the config's pin_path keeps in the kernel (pinned maps and links, legacy tc filters), then exit; "+
			"refused while an instance runs with that pin_path")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "telegraf-pktstat-bpf: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q: the only inputs are the flags", flag.Args())
	}
	input, err := loadInput(*configFile)
	if err != nil {
		return err
	}
	if *unpin {
		return input.RemovePinned()
	}
	s := shim.New()
	// AddInput runs Init, which validates the values.
	if err := s.AddInput(input); err != nil {
		return err
	}
	interval := *pollInterval
	if *pollDisabled {
		interval = shim.PollIntervalDisabled
	}
	return s.Run(interval)
}

// pluginFile is the shape of the plugin's config file.
type pluginFile struct {
	Inputs map[string][]toml.Primitive `toml:"inputs"`
}

// loadInput reads the plugin's config file. Unlike shim.LoadConfig it
// rejects keys the plugin does not know, as Telegraf itself does: a typo
// such as max_flow must not silently fall back to a default.
func loadInput(path string) (*pktstat_bpf.PktstatBPF, error) {
	input := &pktstat_bpf.PktstatBPF{}
	if path == "" {
		return input, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	var f pluginFile
	md, err := toml.Decode(expandEnv(string(b)), &f)
	if err != nil {
		return nil, fmt.Errorf("parse config %s: %w", path, err)
	}
	var errs []error
	for name, tables := range f.Inputs {
		switch {
		case name != "pktstat_bpf":
			errs = append(errs, fmt.Errorf("config %s: unknown input %q: this binary runs only [[inputs.pktstat_bpf]]", path, name))
		case len(tables) != 1:
			errs = append(errs, fmt.Errorf("config %s: %d [[inputs.pktstat_bpf]] tables: run one process per table", path, len(tables)))
		default:
			if err := md.PrimitiveDecode(tables[0], input); err != nil {
				errs = append(errs, fmt.Errorf("config %s: %w", path, err))
			}
		}
	}
	if len(f.Inputs) == 0 && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("config %s: no [[inputs.pktstat_bpf]] table", path))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, 0, len(undecoded))
		for _, k := range undecoded {
			keys = append(keys, k.String())
		}
		slices.Sort(keys)
		return nil, fmt.Errorf("config %s: unknown keys %s: fix the spelling or remove them (see the plugin's sample.conf)",
			path, strings.Join(keys, ", "))
	}
	return input, nil
}

// expandEnv substitutes $VAR and ${VAR} as the shim does, escaping quotes
// and backslashes so a value cannot break out of its TOML string.
func expandEnv(s string) string {
	esc := strings.NewReplacer(`"`, `\"`, `\`, `\\`)
	return os.Expand(s, func(k string) string { return esc.Replace(os.Getenv(k)) })
}
