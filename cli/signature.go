package cli

import (
	"flag"
	"fmt"

	"github.com/outposthq/outpost/internal/signature"
)

// readBundle reads a signature bundle for rollout create, refusing one
// over signature.MaxBundleBytes before reading it, and one that is not a
// bundle the control plane and the gateways could verify.
func readBundle(name string) ([]byte, error) {
	data, err := readLimited(name, signature.MaxBundleBytes, "signature bundle")
	if err != nil {
		return nil, fmt.Errorf("signature: %w", err)
	}
	if err := signature.CheckBundle(data); err != nil {
		return nil, fmt.Errorf("signature %s: %w", name, err)
	}
	return data, nil
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
