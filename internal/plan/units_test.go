package plan

import (
	"strings"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{"30s", 30 * time.Second, ""},
		{" 2m ", 2 * time.Minute, ""},
		{"1h30m", 90 * time.Minute, ""},
		{"500ms", 500 * time.Millisecond, ""},
		{"", 0, `f: empty duration (write e.g. "30s" or "2m")`},
		{"30", 0, `f: "30": duration needs a unit (write e.g. "30s")`},
		{"0s", 0, `f: "0s": duration must be positive`},
		{"-1m", 0, `f: "-1m": duration must be positive`},
		{"2 minutes", 0, `f: "2 minutes": not a duration (write e.g. "30s", "2m" or "1h30m")`},
	}
	for _, tt := range tests {
		got, err := ParseDuration("f", tt.in)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("ParseDuration(%q) error = %v, want %s", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestParseBatch(t *testing.T) {
	tests := []struct {
		in      string
		want    Batch
		wantErr string
	}{
		{"1", Batch{Count: 1}, ""},
		{"50", Batch{Count: 50}, ""},
		{" 5 ", Batch{Count: 5}, ""},
		{"25%", Batch{Percent: 25}, ""},
		{"100%", Batch{Percent: 100}, ""},
		{"1%", Batch{Percent: 1}, ""},
		{"0", Batch{}, `b: "0": batch must be at least 1`},
		{"-1", Batch{}, `b: "-1": batch must be at least 1`},
		{"0%", Batch{}, `b: "0%": batch must be at least 1%`},
		{"101%", Batch{}, `b: "101%": batch cannot exceed 100%`},
		{"100001", Batch{}, `b: "100001": batch cannot exceed 100000`},
		{"2.5", Batch{}, `b: "2.5": batch must be a node count such as "5" or a percentage such as "25%"`},
		{"12.5%", Batch{}, `b: "12.5%": percentage must be a whole number from 1% to 100%`},
		{"%", Batch{}, `b: "%": percentage must be a whole number from 1% to 100%`},
		{"", Batch{}, `b: empty batch (write a node count such as "5" or a percentage such as "25%")`},
	}
	for _, tt := range tests {
		got, err := ParseBatch("b", tt.in)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("ParseBatch(%q) error = %v, want %s", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseBatch(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
		if s := got.String(); s != strings.TrimSpace(tt.in) {
			t.Errorf("ParseBatch(%q).String() = %q", tt.in, s)
		}
	}
}

func TestBatchSize(t *testing.T) {
	tests := []struct {
		b     Batch
		total int
		want  int
	}{
		{Batch{Count: 5}, 100, 5},
		{Batch{Count: 5}, 3, 3},
		{Batch{Count: 5}, 0, 0},
		{Batch{Percent: 25}, 100, 25},
		{Batch{Percent: 25}, 10, 3}, // rounds up
		{Batch{Percent: 1}, 10, 1},  // never zero
		{Batch{Percent: 100}, 7, 7},
	}
	for _, tt := range tests {
		if got := tt.b.Size(tt.total); got != tt.want {
			t.Errorf("%v.Size(%d) = %d, want %d", tt.b, tt.total, got, tt.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"1048576", 1 << 20, false},
		{"0", 0, false},
		{"512MiB", 512 << 20, false},
		{"512 mib", 512 << 20, false},
		{"1.5GiB", 3 << 29, false},
		{"2GB", 2e9, false},
		{"10kB", 10000, false},
		{"1TiB", 1 << 40, false},
		{"7B", 7, false},
		{"-1", 0, true},
		{"1 GiGs", 0, true},
		{"GiB", 0, true},
		{"1e9", 0, true},
		{"99999999TiB", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseSize("s", tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestLineOf(t *testing.T) {
	src := `app: web
strategy:
  type: canary   # a comment
  stages:
    - name: canary
      count: 1
    - name: rest
      bake: 2m
      selector:
        tier: "2"
    - {name: last, batch: 5}
targets:
  datacenters: [a, b]
nodes:
- id: one
  address: x
- id: two
`
	lines := strings.Split(src, "\n")
	tests := []struct {
		field string
		want  int
	}{
		{"app", 1},
		{"strategy", 2},
		{"strategy.type", 3},
		{"strategy.stages", 4},
		{"strategy.stages[0]", 5},
		{"strategy.stages[0].name", 5},
		{"strategy.stages[0].count", 6},
		{"strategy.stages[1].name", 7},
		{"strategy.stages[1].bake", 8},
		{"strategy.stages[1].selector.tier", 10},
		{"strategy.stages[2].batch", 11},
		{"strategy.stages[3]", 0},
		{"strategy.stages[0].bake", 0}, // not there: no line, not a neighbour's
		{"strategy.name", 0},           // ambiguous without the index
		{"targets.datacenters[1]", 13},
		{"nodes[1].id", 17},
		{"nodes[0].address", 16},
		{"deploy.path", 0},
	}
	for _, tt := range tests {
		if got := lineOf(lines, scanKeys(lines), tt.field); got != tt.want {
			t.Errorf("lineOf(%q) = %d, want %d", tt.field, got, tt.want)
		}
	}
}
