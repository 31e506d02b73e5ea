package gateway

import (
	"sync"

	"github.com/outposthq/outpost/gateway/artifactcache"
)

// basePins hands the deployer the cached artifacts it asks for as delta
// bases (deployer.Job.Base) and keeps them pinned until release, at the
// end of the deployment, so that none is evicted while it is read.
type basePins struct {
	cache artifactGetter
	mu    sync.Mutex
	pins  []*artifactcache.Pin // guarded by mu
}

func (b *basePins) get(sha256 string) (string, bool) {
	p, ok := b.cache.Cached(sha256)
	if !ok {
		return "", false
	}
	b.mu.Lock()
	b.pins = append(b.pins, p)
	b.mu.Unlock()
	return p.Path(), true
}

func (b *basePins) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.pins {
		p.Release()
	}
	b.pins = nil
}
