// Package bench holds Outpost's comparative benchmarks: each measures
// Outpost and the tool users run today (OpenSSH scp and sftp, a hand-written
// script over an ssh ControlMaster connection, the leanest script: one ssh
// per server running every step) in the same run against the same real
// sshd on loopback, so the ratio means something on a noisy machine. `make bench` runs them and writes BENCHMARKS.md.
package bench
