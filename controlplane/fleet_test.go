package controlplane

import (
	"slices"
	"testing"
	"time"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestDriftOf(t *testing.T) {
	const sha = "ab"
	d := &outpostv1.NodeDesired{Release: "r2", Sha256: sha}
	ok := func(f func(o *outpostv1.NodeObservation)) *outpostv1.NodeObservation {
		o := &outpostv1.NodeObservation{Result: outpostv1.ObserveResult_OBSERVE_RESULT_OK, Release: "r2", ReleasePresent: true, Sha256: sha}
		if f != nil {
			f(o)
		}
		return o
	}
	running := func(r string) bool { return r == "r-run" }
	tests := []struct {
		name string
		d    *outpostv1.NodeDesired
		o    *outpostv1.NodeObservation
		want []outpostv1.DriftKind
	}{
		{"clean", d, ok(nil), nil},
		{"switched", d, ok(func(o *outpostv1.NodeObservation) { o.Release = "r1" }), []outpostv1.DriftKind{outpostv1.DriftKind_DRIFT_KIND_RELEASE_SWITCHED}},
		{"current elsewhere", d, ok(func(o *outpostv1.NodeObservation) { o.Release, o.CurrentOther = "", "/opt/x" }), []outpostv1.DriftKind{outpostv1.DriftKind_DRIFT_KIND_RELEASE_SWITCHED}},
		{"release gone", d, ok(func(o *outpostv1.NodeObservation) { o.ReleasePresent, o.Sha256 = false, "" }), []outpostv1.DriftKind{outpostv1.DriftKind_DRIFT_KIND_RELEASE_MISSING}},
		{"no current", d, ok(func(o *outpostv1.NodeObservation) { o.Release = "" }), []outpostv1.DriftKind{outpostv1.DriftKind_DRIFT_KIND_RELEASE_MISSING}},
		{"marker gone", d, ok(func(o *outpostv1.NodeObservation) { o.Sha256 = "" }), []outpostv1.DriftKind{outpostv1.DriftKind_DRIFT_KIND_DIGEST_MISSING}},
		{"marker changed", d, ok(func(o *outpostv1.NodeObservation) { o.Sha256 = "cd" }), []outpostv1.DriftKind{outpostv1.DriftKind_DRIFT_KIND_DIGEST_CHANGED}},
		{"in place has no marker", &outpostv1.NodeDesired{Release: "r2", Sha256: sha, Layout: outpostv1.Layout_LAYOUT_INPLACE}, ok(func(o *outpostv1.NodeObservation) { o.Sha256 = "" }), nil},
		{"stale lock", d, ok(func(o *outpostv1.NodeObservation) { o.LockHeld, o.LockRollout = true, "r-old" }), []outpostv1.DriftKind{outpostv1.DriftKind_DRIFT_KIND_STALE_LOCK}},
		{"lock of a running rollout", d, ok(func(o *outpostv1.NodeObservation) { o.LockHeld, o.LockRollout = true, "r-run" }), nil},
		{"lock with a live activation", d, ok(func(o *outpostv1.NodeObservation) { o.LockHeld, o.LockActive = true, true }), nil},
		{"unreachable", d, &outpostv1.NodeObservation{Result: outpostv1.ObserveResult_OBSERVE_RESULT_HOST_KEY}, []outpostv1.DriftKind{outpostv1.DriftKind_DRIFT_KIND_UNREACHABLE}},
		{"several", d, ok(func(o *outpostv1.NodeObservation) { o.Release, o.Sha256, o.LockHeld = "r1", "", true }),
			[]outpostv1.DriftKind{outpostv1.DriftKind_DRIFT_KIND_RELEASE_SWITCHED, outpostv1.DriftKind_DRIFT_KIND_DIGEST_MISSING, outpostv1.DriftKind_DRIFT_KIND_STALE_LOCK}},
	}
	for _, tc := range tests {
		if got := driftOf(tc.d, tc.o, running); !slices.Equal(got, tc.want) {
			t.Errorf("%s: driftOf = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestVerifyIntervalConfig(t *testing.T) {
	fc, err := ParseFileConfig([]byte("environments:\n  prod: {verify_interval: 5m}\n  lab: {verify_interval: \"0\"}\n  dev: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	envs, err := compileEnvironments(fc.Environments)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{envs: envs}
	for env, want := range map[string]time.Duration{"prod": 5 * time.Minute, "lab": 0, "dev": DefaultVerifyInterval, "undeclared": DefaultVerifyInterval} {
		if got := s.verifyInterval(env); got != want {
			t.Errorf("verifyInterval(%q) = %v, want %v", env, got, want)
		}
	}
	for _, bad := range []string{"1s", "-5m", "9999h", "soon", "59s"} {
		if _, err := ParseFileConfig([]byte("environments:\n  prod: {verify_interval: " + bad + "}\n")); err == nil {
			t.Errorf("verify_interval %q accepted", bad)
		}
	}
}

func TestJitterSpreadsNodes(t *testing.T) {
	const interval = 15 * time.Minute
	seen := map[time.Duration]bool{}
	for _, id := range []string{"srv-1", "srv-2", "srv-3", "srv-4"} {
		j := jitter(id, interval)
		if j < 0 || j >= interval/5 {
			t.Errorf("jitter(%s) = %v, want within [0, %v)", id, j, interval/5)
		}
		if j != jitter(id, interval) {
			t.Errorf("jitter(%s) is not fixed", id)
		}
		seen[j] = true
	}
	if len(seen) < 2 {
		t.Errorf("four nodes share one jitter: %v", seen)
	}
}
