// Package e2etest holds what Outpost's end-to-end tests and its fleet
// benchmark share: an in-process SSH fleet with the key and known_hosts a
// gateway needs, its node inventory, a gRPC client of the control plane,
// and readers of what deployments left on each host (current release,
// history lines, health), so tests assert on the hosts themselves and not
// only on what the API says. For tests of Outpost as it runs in
// production (procs.go): the outpost binary built from the tree, a control
// plane and gateways as outpost processes, and real OpenSSH nodes each
// with a home of its own.
//
// It starts nothing that outlives the test or benchmark that called it.
package e2etest
