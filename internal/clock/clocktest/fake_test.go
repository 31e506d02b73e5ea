package clocktest

import (
	"testing"
	"time"
)

var epoch = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// fired reports whether c holds a value, without waiting.
func fired(c <-chan time.Time) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func TestFakeTimer(t *testing.T) {
	f := NewFake(epoch)
	tm := f.NewTimer(time.Second)
	f.Advance(999 * time.Millisecond)
	if fired(tm.C()) {
		t.Fatal("timer fired before its deadline")
	}
	f.Advance(time.Millisecond)
	if !fired(tm.C()) {
		t.Fatal("timer did not fire at its deadline")
	}
	f.Advance(time.Hour)
	if fired(tm.C()) {
		t.Fatal("timer fired twice")
	}
	// Reset re-arms from the fake now and drops an unreceived value.
	tm.Reset(time.Second)
	f.Advance(time.Second)
	tm.Reset(time.Second)
	if fired(tm.C()) {
		t.Fatal("Reset kept a stale value")
	}
	if !tm.Stop() || tm.Stop() {
		t.Fatal("Stop of a running timer, then of a stopped one")
	}
	f.Advance(time.Hour)
	if fired(tm.C()) {
		t.Fatal("a stopped timer fired")
	}
	if n, _ := f.Waiters(); n != 0 {
		t.Fatalf("%d waiters left", n)
	}
	if got := f.Now(); !got.Equal(epoch.Add(2*time.Hour + 2*time.Second)) {
		t.Fatalf("Now = %v", got)
	}
}

func TestFakeTicker(t *testing.T) {
	f := NewFake(epoch)
	tk := f.NewTicker(100 * time.Millisecond)
	defer tk.Stop()
	for i := range 3 {
		f.Advance(100 * time.Millisecond)
		select {
		case at := <-tk.C():
			if want := epoch.Add(time.Duration(i+1) * 100 * time.Millisecond); !at.Equal(want) {
				t.Fatalf("tick %d at %v, want %v", i, at, want)
			}
		default:
			t.Fatalf("tick %d missing", i)
		}
	}
	// A long advance delivers one tick, as a slow receiver of a real ticker gets.
	f.Advance(time.Second)
	if !fired(tk.C()) || fired(tk.C()) {
		t.Fatal("want exactly one tick after a long advance")
	}
	f.Advance(50 * time.Millisecond)
	if fired(tk.C()) {
		t.Fatal("ticked off its period")
	}
	f.Advance(50 * time.Millisecond)
	if !fired(tk.C()) {
		t.Fatal("missed the next period")
	}
	f.Advance(-time.Hour)
	if got := f.Now(); !got.Equal(epoch.Add(1400 * time.Millisecond)) {
		t.Fatalf("Now = %v after a negative advance", got)
	}
}
