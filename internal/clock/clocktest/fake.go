// Package clocktest provides a clock.Clock that moves only when a test
// advances it, so timeouts, grace periods and tickers are tested without
// sleeping.
package clocktest

import (
	"sort"
	"sync"
	"time"

	"github.com/outposthq/outpost/internal/clock"
)

// Fake is a clock.Clock whose time moves only by Advance. Timers and
// tickers fire during Advance, in deadline order, with the fake time; like
// the real ones, a ticker whose tick was not received drops the next.
// Safe for concurrent use.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	waiters map[*waiter]struct{}
	changed chan struct{} // closed and replaced when waiters change
}

var _ clock.Clock = (*Fake)(nil)

// NewFake returns a fake clock that reads now.
func NewFake(now time.Time) *Fake {
	return &Fake{now: now, waiters: map[*waiter]struct{}{}, changed: make(chan struct{})}
}

// waiter is a timer (period 0) or a ticker.
type waiter struct {
	f      *Fake
	c      chan time.Time
	at     time.Time
	period time.Duration
}

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// NewTimer returns a timer that fires once Advance reaches now+d.
func (f *Fake) NewTimer(d time.Duration) clock.Timer {
	return f.add(d, 0)
}

// NewTicker returns a ticker that fires every d of advanced time; d must
// be positive, as for time.NewTicker.
func (f *Fake) NewTicker(d time.Duration) clock.Ticker {
	if d <= 0 {
		panic("clocktest: non-positive interval for NewTicker")
	}
	return fakeTicker{f.add(d, d)}
}

func (f *Fake) add(d, period time.Duration) *waiter {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := &waiter{f: f, c: make(chan time.Time, 1), at: f.now.Add(d), period: period}
	f.waiters[w] = struct{}{}
	f.notifyLocked()
	return w
}

func (f *Fake) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// Waiters returns how many timers and tickers are running, and a channel
// closed when that may have changed: a test waits with it until the code
// under test armed its timers, then advances.
func (f *Fake) Waiters() (int, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.waiters), f.changed
}

// Unreceived returns how many timers and tickers fired but were not yet
// received from: 0 after an Advance means the code under test took every
// tick it fired.
func (f *Fake) Unreceived() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for w := range f.waiters {
		n += len(w.c)
	}
	return n
}

// Advance moves the time forward by d and fires every timer and ticker
// due by then, earliest first. A negative d is ignored.
func (f *Fake) Advance(d time.Duration) {
	if d < 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	var due []*waiter
	for w := range f.waiters {
		if !w.at.After(f.now) {
			due = append(due, w)
		}
	}
	sort.Slice(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, w := range due {
		select {
		case w.c <- w.at:
		default: // not received yet: dropped, as a real ticker does
		}
		if w.period == 0 {
			delete(f.waiters, w)
			continue
		}
		// Skip the ticks that fell within this one Advance.
		n := f.now.Sub(w.at)/w.period + 1
		w.at = w.at.Add(n * w.period)
	}
	if len(due) > 0 {
		f.notifyLocked()
	}
}

func (w *waiter) C() <-chan time.Time { return w.c }

// fakeTicker is a waiter with a ticker's Stop.
type fakeTicker struct{ w *waiter }

func (t fakeTicker) C() <-chan time.Time { return t.w.c }
func (t fakeTicker) Stop()               { t.w.Stop() }

// Stop stops the timer or ticker; it reports whether it was running.
func (w *waiter) Stop() bool {
	w.f.mu.Lock()
	defer w.f.mu.Unlock()
	_, ok := w.f.waiters[w]
	delete(w.f.waiters, w)
	if ok {
		w.f.notifyLocked()
	}
	return ok
}

// Reset re-arms the timer to fire d after the fake now and drains a
// value not yet received, as time.Timer.Reset does since Go 1.23; it
// reports whether the timer was running.
func (w *waiter) Reset(d time.Duration) bool {
	w.f.mu.Lock()
	defer w.f.mu.Unlock()
	_, ok := w.f.waiters[w]
	select {
	case <-w.c:
	default:
	}
	w.at = w.f.now.Add(d)
	w.f.waiters[w] = struct{}{}
	w.f.notifyLocked()
	return ok
}
