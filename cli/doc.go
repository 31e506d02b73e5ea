// Package cli is the `outpost` command: a tree of verbs, each in its own
// file with its test beside it. Main parses, runs one verb with a context
// cancelled by SIGINT/SIGTERM, and turns the result into an exit code in
// one place. Verbs write to the Env's streams, never to os.Stdout, so tests
// run them in-process and compare output with golden files.
package cli
