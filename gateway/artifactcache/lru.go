package artifactcache

import (
	"cmp"
	"container/list"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"time"
)

// entry is one artifact file in the index. Its fields are guarded by
// Cache.mu.
type entry struct {
	digest string
	size   int64
	// pins counts the Pins not yet released; a pinned entry is never
	// evicted.
	pins int
	// verified reports whether this process hashed the file (or fetched
	// it); false for a file found on disk at start until its first Get.
	verified bool
	// elem is the entry's place in Cache.lru; nil once it left the index
	// (evicted, or found damaged).
	elem *list.Element
}

// Pin is a cached artifact kept on disk for its user: the cache does not
// evict it until Release. Every Pin must be released, once; later calls
// do nothing.
type Pin struct {
	c        *Cache
	e        *entry
	path     string
	released atomic.Bool
}

// Path is the artifact's file. It must not be modified, and must not be
// opened after Release.
func (p *Pin) Path() string { return p.path }

// Release lets the cache evict the artifact again, at once if the cache is
// over its limit and nothing else uses it.
func (p *Pin) Release() {
	if !p.released.CompareAndSwap(false, true) {
		return
	}
	c := p.c
	c.mu.Lock()
	p.e.pins--
	victims := c.evictLocked()
	c.mu.Unlock()
	c.removeEvicted(victims)
}

// pinLocked pins e as most recently used. The caller touches the file
// (touch) after unlocking.
func (c *Cache) pinLocked(e *entry) *Pin {
	e.pins++
	if e.elem != nil {
		c.lru.MoveToFront(e.elem)
	}
	return &Pin{c: c, e: e, path: filepath.Join(c.blobDir, e.digest)}
}

// touch records a use in the file's modification time, which orders the
// files found at the next start. Access times are no use: many systems
// mount with noatime or relatime. p keeps the file from being evicted
// meanwhile. A failure only costs the order after a restart.
func (c *Cache) touch(p *Pin) {
	now := c.cfg.Now()
	if err := os.Chtimes(p.path, time.Time{}, now); err != nil {
		c.cfg.Logger.Debug("cannot record the artifact's use", "sha256", p.e.digest, "error", err)
	}
}

// addLocked puts a verified file of size bytes in the index as most
// recently used, replacing any entry of the same digest, and pins it.
func (c *Cache) addLocked(digest string, size int64) *Pin {
	if old := c.entries[digest]; old != nil {
		c.dropLocked(old)
	}
	e := &entry{digest: digest, size: size, verified: true}
	e.elem = c.lru.PushFront(e)
	c.entries[digest] = e
	c.total += size
	if size > c.cfg.MaxBytes {
		c.cfg.Logger.Warn("artifact is larger than the cache limit: it is kept only while in use, and fetched again afterwards; raise the limit",
			"sha256", digest, "bytes", size, "limit_bytes", c.cfg.MaxBytes)
	}
	return c.pinLocked(e)
}

// dropLocked takes e out of the index without touching its file.
func (c *Cache) dropLocked(e *entry) {
	if e.elem == nil {
		return
	}
	c.lru.Remove(e.elem)
	e.elem = nil
	delete(c.entries, e.digest)
	c.total -= e.size
	c.account()
}

// evictLocked takes the least recently used unpinned entries out of the
// index until the cache is within its limit, and moves their files into
// tmp, whose names it returns for removeEvicted to delete outside the
// lock. The rename happens under the lock so that a new fetch of the same
// digest cannot be renamed into place first and then lost. When every
// entry left is pinned the cache stays over its limit until a Release.
func (c *Cache) evictLocked() []string {
	var victims []string
	for el := c.lru.Back(); el != nil && c.total+c.reserved > c.cfg.MaxBytes; {
		e := el.Value.(*entry)
		el = el.Prev()
		if e.pins > 0 {
			continue
		}
		c.dropLocked(e)
		c.evictions.Inc()
		c.evictSeq++
		src := filepath.Join(c.blobDir, e.digest)
		dst := filepath.Join(c.tmpDir, e.digest+"."+strconv.FormatUint(c.evictSeq, 10)+".evicted")
		if err := os.Rename(src, dst); err != nil {
			// Untracked now: a later Get fetches it again over the file.
			c.cfg.Logger.Warn("cannot evict cached artifact", "sha256", e.digest, "error", err)
			continue
		}
		c.cfg.Logger.Info("artifact evicted from the cache", "sha256", e.digest, "bytes", e.size,
			"cache_bytes", c.total, "limit_bytes", c.cfg.MaxBytes)
		victims = append(victims, dst)
	}
	over := c.total+c.reserved > c.cfg.MaxBytes
	if over && !c.over {
		c.cfg.Logger.Warn("artifact cache is over its limit: every artifact left is in use; it shrinks as deployments finish",
			"cache_bytes", c.total, "fetching_bytes", c.reserved, "limit_bytes", c.cfg.MaxBytes)
	}
	c.over = over
	c.account()
	return victims
}

// reserve adds n (negative: removes) to the bytes of fetches in progress
// and evicts to make room for them.
func (c *Cache) reserve(n int64) {
	if n == 0 {
		return
	}
	c.mu.Lock()
	c.reserved += n
	victims := c.evictLocked()
	c.mu.Unlock()
	c.removeEvicted(victims)
}

// removeEvicted deletes the files evictLocked moved aside. A failure
// leaves a file in tmp, removed at the next start.
func (c *Cache) removeEvicted(names []string) {
	for _, n := range names {
		if err := os.Remove(n); err != nil {
			c.cfg.Logger.Warn("cannot remove evicted artifact", "file", n, "error", err)
		}
	}
}

// account publishes the index's size.
func (c *Cache) account() {
	c.bytes.Set(float64(c.total))
	c.count.Set(float64(len(c.entries)))
}

// scan indexes the artifact files an earlier process left, oldest use
// last, then trims the cache to its limit. The files are not hashed here:
// each is hashed at its first Get.
func (c *Cache) scan() error {
	des, err := os.ReadDir(c.blobDir)
	if err != nil {
		return fmt.Errorf("artifactcache: %w", err)
	}
	type found struct {
		digest string
		size   int64
		mtime  time.Time
	}
	var files []found
	for _, de := range des {
		if !de.Type().IsRegular() || !ValidDigest(de.Name()) {
			c.cfg.Logger.Warn("ignoring a file in the artifact cache that is not an artifact", "file", filepath.Join(c.blobDir, de.Name()))
			continue
		}
		fi, err := de.Info()
		if err != nil {
			return fmt.Errorf("artifactcache: %w", err)
		}
		files = append(files, found{de.Name(), fi.Size(), fi.ModTime()})
	}
	slices.SortFunc(files, func(a, b found) int {
		return cmp.Or(a.mtime.Compare(b.mtime), cmp.Compare(a.digest, b.digest))
	})
	c.mu.Lock()
	for _, f := range files {
		e := &entry{digest: f.digest, size: f.size}
		e.elem = c.lru.PushFront(e)
		c.entries[f.digest] = e
		c.total += f.size
	}
	indexed := len(c.entries)
	victims := c.evictLocked()
	total := c.total
	c.mu.Unlock()
	c.removeEvicted(victims)
	if disk, ok := diskSize(c.blobDir); ok && c.cfg.MaxBytes > disk {
		c.cfg.Logger.Warn("the artifact cache's limit is larger than its file system: the disk fills before the cache evicts anything",
			"limit_bytes", c.cfg.MaxBytes, "filesystem_bytes", disk)
	}
	c.cfg.Logger.Info("artifact cache opened", "dir", c.cfg.Dir, "artifacts", indexed-len(victims),
		"bytes", total, "limit_bytes", c.cfg.MaxBytes, "evicted", len(victims))
	return nil
}
