// Package connlimit bounds the connections a server holds for clients that
// have not proved who they are, so that sockets which never finish (or
// never start) their TLS handshake cannot use up the process's file
// descriptors and starve the clients that can authenticate.
//
// A [Listener] wraps the server's net.Listener. Every connection it hands
// out is counted from accept to close, and is "unauthenticated" until its
// handshake finished with a verified client certificate. [Credentials]
// wraps the gRPC server's TLS credentials and reports each finished
// handshake to the Listener ([Handshaken] does it for other servers).
//
// Invariants a reader can hold the code to:
//
//   - At most MaxConns connections are open at once, and at most
//     MaxUnauthenticated of them are unauthenticated, at most
//     MaxUnauthenticatedPerIP from one source (an IPv4 address, or an IPv6
//     /64, which one host usually owns whole).
//   - A new connection over its source's limit is closed at once (with a
//     reset, so no socket lingers). A new connection over the overall
//     limits takes the place of the oldest unauthenticated connection
//     still in its handshake, or if there is none the oldest past it
//     without a certificate, which is closed: a client that completes its
//     handshake in time gets in, and a gateway joining stays, even while
//     idle sockets from many addresses fill the table. Only when every
//     open connection is authenticated is the new one refused.
//   - A connection whose handshake has not finished HandshakeTimeout after
//     it was accepted is closed. One that finished it without a client
//     certificate (a gateway joining with a token) stays unauthenticated
//     for its whole life, and counts as such.
//   - Refusals, evictions and timeouts are counted ([Listener.Stats]) and
//     logged at most once per LogInterval.
package connlimit
