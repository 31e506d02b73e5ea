// Package analysis is the control plane's side of canary analysis: the
// metric providers an admin declares (named Prometheus endpoints, with
// TLS and a bearer token read from files) and the client that runs a
// rendered query against one. A plan names a provider, never a URL, so a
// plan cannot make the control plane call an address of its choosing.
//
// Secrets (the bearer token, the client key) are read from their files
// when a query is sent and never logged, traced or stored in etcd; errors
// name the file, not its content.
package analysis
