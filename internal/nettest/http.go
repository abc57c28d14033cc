package nettest

import (
	"context"
	"net"
	"net/http"
	"time"
)

// HTTPClient talks to servers on the loopback of the namespace at nsPath:
// every connection is dialled from inside it.
func HTTPClient(nsPath string) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
				var conn net.Conn
				err := Do(nsPath, func() (err error) {
					conn, err = (&net.Dialer{}).DialContext(ctx, network, address)
					return err
				})
				return conn, err
			},
		},
	}
}
