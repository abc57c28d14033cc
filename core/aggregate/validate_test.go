package aggregate

import (
	"testing"
	"time"

	"github.com/pktstat-bpf/pktstat-bpf/core"
)

func TestValidateJoinsCaptureAndAggregation(t *testing.T) {
	cases := []struct {
		name    string
		capture core.Config
		agg     Config
		want    string // empty: valid
	}{
		{"defaults", core.Config{}, Config{}, ""},
		{"process dimensions in cgroup mode", core.Config{Mode: core.ModeCgroup}, Config{Dimensions: []Dimension{DimPID, DimComm, DimCgroup}}, ""},
		{"pid in the default mode", core.Config{}, Config{Dimensions: []Dimension{DimProto, DimPID}},
			`dimensions: "pid" needs mode "cgroup" or "kprobe", but mode is "tc": remove it or change mode`},
		{"container_id in xdp mode", core.Config{Mode: core.ModeXDP}, Config{Dimensions: []Dimension{DimContainerID}},
			`dimensions: "container_id" needs mode "cgroup" or "kprobe", but mode is "xdp": remove it or change mode`},
		{"capture, aggregation and joint errors in that order",
			core.Config{MaxFlows: 1}, Config{TopN: -1, Dimensions: []Dimension{DimPodUID}},
			"max_flows 1 is out of range [16, 16777216]\n" +
				"top_n -1 is negative: use 0 to keep every series\n" +
				`dimensions: "pod_uid" needs mode "cgroup" or "kprobe", but mode is "tc": remove it or change mode`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate(tc.capture, tc.agg)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || err.Error() != tc.want):
				t.Fatalf("error %v\nwant %s", err, tc.want)
			}
		})
	}
}

func TestWithCaptureSeriesTimeoutFollowsIdleTimeout(t *testing.T) {
	if got := WithCapture(Config{}, core.Config{IdleTimeout: 30 * time.Second}).SeriesIdleTimeout; got != Duration(30*time.Second) {
		t.Errorf("unset series_idle_timeout with idle_timeout 30s: %v", time.Duration(got))
	}
	if got := WithCapture(Config{SeriesIdleTimeout: Duration(time.Hour)}, core.Config{IdleTimeout: 30 * time.Second}).SeriesIdleTimeout; got != Duration(time.Hour) {
		t.Errorf("explicit series_idle_timeout: %v", time.Duration(got))
	}
	// Neither set: Config.withDefaults applies DefaultSeriesIdleTimeout.
	if got := WithCapture(Config{}, core.Config{}).SeriesIdleTimeout; got != 0 {
		t.Errorf("both unset: %v", time.Duration(got))
	}
}

// TestDurationText: the forms of Telegraf's config.Duration (the Telegraf
// plugin's test checks them against it through the real TOML decoder).
func TestDurationText(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"":       0,
		"120":    120 * time.Second,
		"1.5":    1500 * time.Millisecond,
		"90s":    90 * time.Second,
		"2m30s":  150 * time.Second,
		"1d":     24 * time.Hour,
		"1.5d2h": 38 * time.Hour,
		"-5s":    -5 * time.Second,
	} {
		var d Duration
		if err := d.UnmarshalText([]byte(in)); err != nil || time.Duration(d) != want {
			t.Errorf("%q: %v, %v; want %v", in, time.Duration(d), err, want)
		}
	}
	var d Duration
	err := d.UnmarshalText([]byte("5 minutes"))
	want := `duration "5 minutes": write it like "90s", "2m" or "1d", or as a number of seconds: time: unknown unit " minutes" in duration "5 minutes"`
	if err == nil || err.Error() != want {
		t.Errorf("bad text: %v\nwant %s", err, want)
	}
}
