// Command outpost is Outpost's single binary: the control plane, the
// gateway, the one-machine dev mode, and the client verbs.
package main

import (
	"os"

	"github.com/outposthq/outpost/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:])) }
