package gateway

import (
	"testing"
)

func TestJobOfCarriesTheLockTakeover(t *testing.T) {
	a := assignment("a-2", nodeName(1), digestOf([]byte("x")))
	a.TakeoverLockOf = "a-1"
	job, err := jobOf(a, "gw-1")
	if err != nil {
		t.Fatal(err)
	}
	if job.AssignmentID != "a-2" || job.TakeoverLockOf != "a-1" {
		t.Errorf("job names assignment %q and may take over %q, want a-2 and a-1", job.AssignmentID, job.TakeoverLockOf)
	}
	a.TakeoverLockOf = ""
	if job, _ := jobOf(a, "gw-1"); job.TakeoverLockOf != "" {
		t.Errorf("job may take over %q without being told to", job.TakeoverLockOf)
	}
}
