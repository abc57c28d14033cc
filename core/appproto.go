package core

// appProtoNames maps enum app_proto (bpf/flow.h) to the names reported as
// app_proto and network.protocol.name. The detection tests exercise every
// entry, so a drift from the C enum fails them.
var appProtoNames = [...]string{
	0:  "", // undecided: no payload seen yet
	1:  "", // decided: no known protocol
	2:  "http",
	3:  "http2",
	4:  "tls",
	5:  "dtls",
	6:  "quic",
	7:  "ssh",
	8:  "rdp",
	9:  "postgresql",
	10: "mqtt",
	11: "wireguard",
	12: "memcached",
	13: "dns",
}

const appNone = 1

func appProtoName(v uint8) string {
	if int(v) < len(appProtoNames) {
		return appProtoNames[v]
	}
	return ""
}

// mergeAppProto combines the decisions in one flow's values (one per CPU in
// a per-CPU table; the shared flow tables have one): a value that
// recognised a protocol wins over ones that saw nothing or gave up.
func mergeAppProto(vals []counters) uint8 {
	var app uint8
	for i := range vals {
		if v := vals[i].AppProto; v > appNone {
			return v
		} else if v == appNone {
			app = appNone
		}
	}
	return app
}
