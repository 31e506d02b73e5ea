package cli

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/outposthq/outpost/gateway/artifactcache"
	"github.com/outposthq/outpost/internal/plan"
)

// cacheSizeFlag is --artifact-cache-size: a positive size in bytes,
// written as plan sizes are ("20GiB", "500MB", "1073741824").
type cacheSizeFlag int64

func newCacheSizeFlag() *cacheSizeFlag {
	v := cacheSizeFlag(artifactcache.DefaultMaxBytes)
	return &v
}

// String prints the size in the largest IEC unit that divides it, so
// that --help shows the default as it would be written.
func (v *cacheSizeFlag) String() string {
	n := int64(*v)
	for _, u := range []struct {
		name string
		size int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

// Set refuses zero: a cache that keeps nothing once a deployment ends
// would fetch the artifact again for every batch of a rollout and could
// never send a delta, which is a misconfiguration, not a mode. A limit
// above the disk's size is accepted; the gateway warns at start.
func (v *cacheSizeFlag) Set(s string) error {
	n, err := plan.ParseSize("size", s)
	if fe := (*plan.FieldError)(nil); errors.As(err, &fe) {
		return fe.Err
	}
	if err != nil {
		return err
	}
	if n <= 0 {
		return fmt.Errorf("%q: the artifact cache needs a positive limit such as \"20GiB\" (artifacts being deployed are kept whatever the limit)", s)
	}
	*v = cacheSizeFlag(n)
	return nil
}

// Type names the value in --help.
func (v *cacheSizeFlag) Type() string { return "SIZE" }
