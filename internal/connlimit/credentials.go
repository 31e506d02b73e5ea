package connlimit

import (
	"net"

	"google.golang.org/grpc/credentials"
)

// Credentials returns tc with its server side reporting each finished
// handshake to the Listener that accepted the connection (see
// Handshaken): a connection whose TLS handshake verified a client
// certificate is authenticated. Pair it with grpc.ConnectionTimeout, which
// bounds the HTTP/2 preface that follows the handshake.
func Credentials(tc credentials.TransportCredentials) credentials.TransportCredentials {
	return creds{tc}
}

type creds struct {
	credentials.TransportCredentials
}

var _ credentials.TransportCredentials = creds{}

// ServerHandshake implements credentials.TransportCredentials.
func (c creds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err == nil {
		Handshaken(raw, verified(info))
	}
	return conn, info, err
}

// Clone implements credentials.TransportCredentials.
func (c creds) Clone() credentials.TransportCredentials {
	return creds{c.TransportCredentials.Clone()}
}

// verified reports whether info is TLS that verified a client certificate.
func verified(info credentials.AuthInfo) bool {
	ti, ok := info.(credentials.TLSInfo)
	return ok && len(ti.State.VerifiedChains) > 0
}
