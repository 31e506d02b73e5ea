package rollout

import "testing"

func TestOverBudget(t *testing.T) {
	// The budget is "more than max_fail_percent of the stage's nodes":
	// failing exactly at the budget continues.
	tests := []struct {
		failed, total, max int
		want               bool
	}{
		{0, 10, 0, false},
		{1, 10, 0, true},
		{1, 10, 10, false}, // 10% is not more than 10%
		{2, 10, 10, true},  // 20% > 10%
		{10, 100, 10, false},
		{11, 100, 10, true},
		{1, 3, 33, true}, // 33.3% > 33%
		{1, 3, 34, false},
		{3, 3, 100, false},
		{1, 1, 99, true},
	}
	for _, tt := range tests {
		if got := OverBudget(tt.failed, tt.total, tt.max); got != tt.want {
			t.Errorf("OverBudget(%d, %d, %d) = %v, want %v", tt.failed, tt.total, tt.max, got, tt.want)
		}
	}
}

func TestPercent(t *testing.T) {
	tests := []struct {
		failed, total int
		want          string
	}{
		{2, 10, "20%"},
		{1, 3, "33.3%"},
		{101, 1000, "10.1%"},
		{0, 7, "0%"},
	}
	for _, tt := range tests {
		if got := percent(tt.failed, tt.total); got != tt.want {
			t.Errorf("percent(%d, %d) = %q, want %q", tt.failed, tt.total, got, tt.want)
		}
	}
}
