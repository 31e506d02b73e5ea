// Package e2e tests Outpost end to end on one machine: a control plane
// with its embedded etcd, real gateways (gateway.New and Run, in this
// process) and an in-process SSH fleet, talking real gRPC on loopback.
// Tests assert on what each host holds afterwards (its current release,
// its .outpost/history lines, its health endpoint) as well as on the API.
//
// Helpers shared with the fleet benchmark live in e2e/e2etest.
package e2e
