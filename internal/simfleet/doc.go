// Package simfleet runs a simulated fleet of SSH servers in one process:
// the fleet `outpost dev` and `make demo` deploy to, and that tests and
// benchmarks use. It is part of the product (compiled into the binary for
// `outpost dev`), so its name says what it is, not who uses it.
//
// Each host has its own loopback IP (a random block 127.R.x.y, never
// 127.0.0.1), its own ed25519 host key, SSH with exec and SFTP on ip:SSHPort,
// and an HTTP health endpoint on ip:HealthPort that follows the simulated
// service contract (see HealthHandler and BuildRelease). A host's Root
// directory is its home and working directory: relative paths in exec
// commands and SFTP resolve against it. Commands really run, as the
// process's user, through /bin/sh, or, with Config.Shell ShellInterp, in
// this process (see interp.go); the fleet is a simulation of separate
// machines, not a sandbox.
//
// The fleet is built to hold thousands of hosts: the only per-host
// goroutines are the two listeners, and nothing runs on a per-host timer.
// Close stops every listener, connection, command and goroutine it started.
//
// Faults (SetFaults) let tests make single hosts misbehave: corrupt or cut
// uploads, refuse connections, or answer slowly.
package simfleet
