package aggregate

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/pktstat-bpf/pktstat-bpf/core"
)

// Port folding modes, as in the fold_ports config key.
const (
	FoldOff       = "off"
	FoldEphemeral = "ephemeral"
	FoldHigher    = "higher"
)

// Other is the value of an address outside every CIDR group when
// ungrouped_as_other is set; a group may not take this name.
const Other = "other"

// Defaults applied by Config.withDefaults.
const (
	// DefaultEphemeralPortMin is the start of Linux's default
	// net.ipv4.ip_local_port_range (32768-60999).
	DefaultEphemeralPortMin = 32768
	// DefaultSeriesIdleTimeout matches the kernel table's idle timeout so
	// that a series of one flow lives as long as the flow does.
	DefaultSeriesIdleTimeout = core.DefaultIdleTimeout
)

// Config chooses how flow records become series. The zero value keeps the
// default dimensions and reports one series per distinct key. Both agents
// use these keys: embed it in the Telegraf plugin struct (its TOML decoder
// squashes anonymous structs) and in the receiver config with
// `mapstructure:",squash"`.
type Config struct {
	// Dimensions lists the key parts kept as tags; records that differ
	// only in the others are summed. Empty means DefaultDimensions.
	Dimensions []Dimension `toml:"dimensions" mapstructure:"dimensions"`
	// FoldPorts is off, ephemeral or higher; empty means off.
	FoldPorts string `toml:"fold_ports" mapstructure:"fold_ports"`
	// EphemeralPortMin is the lowest port folded by fold_ports =
	// "ephemeral"; zero means DefaultEphemeralPortMin.
	EphemeralPortMin int `toml:"ephemeral_port_min" mapstructure:"ephemeral_port_min"`
	// CIDRGroups name address ranges; an address is reported as the name
	// of the most specific group that contains it.
	CIDRGroups []CIDRGroup `toml:"cidr_groups" mapstructure:"cidr_groups"`
	// UngroupedAsOther reports addresses outside every group as "other".
	UngroupedAsOther bool `toml:"ungrouped_as_other" mapstructure:"ungrouped_as_other"`
	// TopN keeps own series for the N keys with the most bytes in an
	// interval; the rest are summed into the other series. Zero means all.
	TopN int `toml:"top_n" mapstructure:"top_n"`
	// MaxSeries caps the series reported per interval, the other series
	// included and the overflow series not. Zero means no cap.
	MaxSeries int `toml:"max_series" mapstructure:"max_series"`
	// SeriesIdleTimeout is how long a series keeps being reported after
	// its counters last grew; zero means DefaultSeriesIdleTimeout.
	SeriesIdleTimeout Duration `toml:"series_idle_timeout" mapstructure:"series_idle_timeout"`
}

// CIDRGroup is one named address range.
type CIDRGroup struct {
	Name string `toml:"name" mapstructure:"name"`
	CIDR string `toml:"cidr" mapstructure:"cidr"`
}

// Duration is a duration config value. Telegraf's TOML decoder cannot fill a
// plain time.Duration, and both it and the Collector's mapstructure hooks
// call UnmarshalText.
type Duration time.Duration

// daysRe finds the day counts ("1d", "1.5d") Telegraf allows in a duration.
var daysRe = regexp.MustCompile(`(\d+(?:\.\d+)?)d`)

// UnmarshalText reads the forms Telegraf's config.Duration reads, so that
// every duration key of the Telegraf plugin takes the same values: a Go
// duration ("90s", "2m"), one with days ("1d", "1d12h"), or a bare number of
// seconds (120, 1.5), which Telegraf's decoder passes on as its text.
func (d *Duration) UnmarshalText(b []byte) error {
	s := string(b)
	if s == "" {
		*d = 0
		return nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		*d = Duration(time.Duration(n) * time.Second)
		return nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		*d = Duration(f * float64(time.Second))
		return nil
	}
	hours := daysRe.ReplaceAllStringFunc(s, func(m string) string {
		days, _ := strconv.ParseFloat(strings.TrimSuffix(m, "d"), 64)
		return strconv.FormatFloat(days*24, 'f', -1, 64) + "h"
	})
	v, err := time.ParseDuration(hours)
	if err != nil {
		return fmt.Errorf("duration %q: write it like \"90s\", \"2m\" or \"1d\", or as a number of seconds: %w", b, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration the way UnmarshalText reads it.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(time.Duration(d).String()), nil
}

// Validate checks the configuration and names every mistake it finds.
func (c Config) Validate() error {
	var errs []error
	var dims dimSet
	for _, d := range c.Dimensions {
		bit := dimBit(d)
		switch {
		case bit == 0:
			errs = append(errs, fmt.Errorf("dimensions: unknown dimension %q; valid dimensions are %s", d, dimensionNames()))
		case dims&bit != 0:
			errs = append(errs, fmt.Errorf("dimensions: %q is listed twice", d))
		}
		dims |= bit
	}
	if len(c.Dimensions) == 0 {
		dims = defaultDimSet()
	}

	switch c.FoldPorts {
	case "", FoldOff, FoldEphemeral, FoldHigher:
	default:
		errs = append(errs, fmt.Errorf("fold_ports %q is not one of off, ephemeral, higher", c.FoldPorts))
	}
	if c.EphemeralPortMin != 0 {
		if c.EphemeralPortMin < 1 || c.EphemeralPortMin > 65535 {
			errs = append(errs, fmt.Errorf("ephemeral_port_min %d is out of range [1, 65535]", c.EphemeralPortMin))
		}
		if c.FoldPorts != FoldEphemeral {
			errs = append(errs, fmt.Errorf("ephemeral_port_min is set but fold_ports is %q: set fold_ports = \"ephemeral\" or remove ephemeral_port_min", c.withDefaults().FoldPorts))
		}
	}
	if (c.FoldPorts == FoldEphemeral || c.FoldPorts == FoldHigher) && !dims.has(DimSrcPort) && !dims.has(DimDstPort) {
		errs = append(errs, fmt.Errorf("fold_ports %q has no effect because dimensions lists neither src_port nor dst_port: add one or remove fold_ports", c.FoldPorts))
	}

	errs = append(errs, validateGroups(c.CIDRGroups)...)
	if c.UngroupedAsOther && len(c.CIDRGroups) == 0 {
		errs = append(errs, errors.New("ungrouped_as_other is set but cidr_groups is empty: add groups or remove ungrouped_as_other"))
	}
	if len(c.CIDRGroups) > 0 && !dims.has(DimSrcIP) && !dims.has(DimDstIP) {
		errs = append(errs, errors.New("cidr_groups has no effect because dimensions lists neither src_ip nor dst_ip: add one or remove cidr_groups"))
	}

	if c.TopN < 0 {
		errs = append(errs, fmt.Errorf("top_n %d is negative: use 0 to keep every series", c.TopN))
	}
	if c.MaxSeries < 0 {
		errs = append(errs, fmt.Errorf("max_series %d is negative: use 0 for no cap", c.MaxSeries))
	}
	if c.SeriesIdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("series_idle_timeout %s is negative", time.Duration(c.SeriesIdleTimeout)))
	}
	return errors.Join(errs...)
}

func validateGroups(groups []CIDRGroup) []error {
	var errs []error
	byName := map[string]int{}
	byPrefix := map[netip.Prefix]int{}
	for i, g := range groups {
		switch {
		case g.Name == "":
			errs = append(errs, fmt.Errorf("cidr_groups[%d]: name is empty", i))
		case g.Name == Other:
			errs = append(errs, fmt.Errorf("cidr_groups[%d]: name %q is reserved for addresses outside every group", i, g.Name))
		case isAddr(g.Name):
			errs = append(errs, fmt.Errorf("cidr_groups[%d]: name %q is an IP address and would be mistaken for an ungrouped address", i, g.Name))
		default:
			if j, dup := byName[g.Name]; dup {
				errs = append(errs, fmt.Errorf("cidr_groups[%d]: name %q is already used by cidr_groups[%d]", i, g.Name, j))
			} else {
				byName[g.Name] = i
			}
		}
		p, err := parseGroupCIDR(g.CIDR)
		if err != nil {
			errs = append(errs, fmt.Errorf("cidr_groups[%d] %q: %w", i, g.Name, err))
			continue
		}
		if j, dup := byPrefix[p]; dup {
			errs = append(errs, fmt.Errorf("cidr_groups[%d] %q: cidr %q is already group %q (cidr_groups[%d])", i, g.Name, g.CIDR, groups[j].Name, j))
			continue
		}
		byPrefix[p] = i
	}
	return errs
}

// parseGroupCIDR is strict where netip.ParsePrefix is lenient, because a
// host-bits typo such as 10.1.2.3/16 usually means the operator had a
// different range in mind.
func parseGroupCIDR(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, errors.New("cidr is empty")
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		if a, aerr := netip.ParseAddr(s); aerr == nil {
			return netip.Prefix{}, fmt.Errorf("cidr %q has no prefix length: write \"%s/%d\" for a single address", s, s, a.BitLen())
		}
		return netip.Prefix{}, fmt.Errorf("cidr %q is invalid: %w", s, err)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("cidr %q has host bits set: write %q", s, p.Masked().String())
	}
	if p.Addr().Is4In6() {
		// Addresses are unmapped before matching, so this could never
		// match. A masked prefix keeps the ::ffff: marker only when it is
		// at least 96 bits long, so the IPv4 form always exists.
		v4 := netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		return netip.Prefix{}, fmt.Errorf("cidr %q is an IPv4-mapped IPv6 range, which never matches: write %q", s, v4.String())
	}
	return p, nil
}

func isAddr(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

func defaultDimSet() dimSet {
	var s dimSet
	for _, d := range DefaultDimensions {
		s |= dimBit(d)
	}
	return s
}

// withDefaults returns c with every empty field set to its default.
func (c Config) withDefaults() Config {
	if len(c.Dimensions) == 0 {
		c.Dimensions = append([]Dimension(nil), DefaultDimensions...)
	}
	if c.FoldPorts == "" {
		c.FoldPorts = FoldOff
	}
	if c.EphemeralPortMin == 0 {
		c.EphemeralPortMin = DefaultEphemeralPortMin
	}
	if c.SeriesIdleTimeout == 0 {
		c.SeriesIdleTimeout = Duration(DefaultSeriesIdleTimeout)
	}
	return c
}
