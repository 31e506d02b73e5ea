package plan

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// MaxBatch is the largest batch count a plan may ask for.
const MaxBatch = 100000

// ParseDuration parses a plan duration such as "30s", "2m" or "1h30m". It
// must be positive. Errors name field.
func ParseDuration(field, s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, &FieldError{Field: field, Err: fmt.Errorf("empty duration (write e.g. \"30s\" or \"2m\")")}
	}
	d, err := time.ParseDuration(t)
	if err != nil {
		if _, nerr := strconv.ParseFloat(t, 64); nerr == nil {
			return 0, &FieldError{Field: field, Err: fmt.Errorf("%q: duration needs a unit (write e.g. \"%ss\")", s, t)}
		}
		return 0, &FieldError{Field: field, Err: fmt.Errorf("%q: not a duration (write e.g. \"30s\", \"2m\" or \"1h30m\")", s)}
	}
	if d <= 0 {
		return 0, &FieldError{Field: field, Err: fmt.Errorf("%q: duration must be positive", s)}
	}
	return d, nil
}

// Batch is a batch size: a node count, or a percentage of a stage's nodes.
// Exactly one of Count and Percent is non-zero.
type Batch struct {
	// Count is the number of nodes per batch, 1..MaxBatch; 0 when Percent is used.
	Count int
	// Percent is the share of the stage's nodes per batch, 1..100; 0 when Count is used.
	Percent int
}

// Size returns the number of nodes per batch for a stage of total nodes:
// a percentage rounds up, and a non-empty stage always gets at least one
// node per batch.
func (b Batch) Size(total int) int {
	if total <= 0 {
		return 0
	}
	n := b.Count
	if b.Percent > 0 {
		n = (total*b.Percent + 99) / 100
	}
	return max(1, min(n, total))
}

// String returns the batch as written in a plan ("5", "25%").
func (b Batch) String() string {
	if b.Percent > 0 {
		return strconv.Itoa(b.Percent) + "%"
	}
	return strconv.Itoa(b.Count)
}

// ParseBatch parses a batch size: a count ("5") or a percentage ("25%").
// Zero, negative, fractional and above-100% sizes are refused.
func ParseBatch(field, s string) (Batch, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return Batch{}, &FieldError{Field: field, Err: fmt.Errorf("empty batch (write a node count such as \"5\" or a percentage such as \"25%%\")")}
	}
	if pct, ok := strings.CutSuffix(t, "%"); ok {
		n, err := strconv.Atoi(strings.TrimSpace(pct))
		switch {
		case err != nil:
			return Batch{}, &FieldError{Field: field, Err: fmt.Errorf("%q: percentage must be a whole number from 1%% to 100%%", s)}
		case n < 1:
			return Batch{}, &FieldError{Field: field, Err: fmt.Errorf("%q: batch must be at least 1%%", s)}
		case n > 100:
			return Batch{}, &FieldError{Field: field, Err: fmt.Errorf("%q: batch cannot exceed 100%%", s)}
		}
		return Batch{Percent: n}, nil
	}
	n, err := strconv.Atoi(t)
	switch {
	case err != nil:
		return Batch{}, &FieldError{Field: field, Err: fmt.Errorf("%q: batch must be a node count such as \"5\" or a percentage such as \"25%%\"", s)}
	case n < 1:
		return Batch{}, &FieldError{Field: field, Err: fmt.Errorf("%q: batch must be at least 1", s)}
	case n > MaxBatch:
		return Batch{}, &FieldError{Field: field, Err: fmt.Errorf("%q: batch cannot exceed %d", s, MaxBatch)}
	}
	return Batch{Count: n}, nil
}

var sizeRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)$`)

var sizeUnits = map[string]float64{
	"":    1,
	"b":   1,
	"kb":  1e3,
	"mb":  1e6,
	"gb":  1e9,
	"tb":  1e12,
	"kib": 1 << 10,
	"mib": 1 << 20,
	"gib": 1 << 30,
	"tib": 1 << 40,
}

// ParseSize parses a byte size: a count ("1048576") or a number with a
// unit: B, kB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of
// 1024), case-insensitive ("1.5GiB", "512 MiB").
func ParseSize(field, s string) (int64, error) {
	m := sizeRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, &FieldError{Field: field, Err: fmt.Errorf("%q: not a size (write bytes such as \"1048576\" or a size such as \"512MiB\" or \"2GB\")", s)}
	}
	unit, ok := sizeUnits[strings.ToLower(m[2])]
	if !ok {
		return 0, &FieldError{Field: field, Err: fmt.Errorf("%q: unknown unit %q (use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB)", s, m[2])}
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, &FieldError{Field: field, Err: fmt.Errorf("%q: not a size", s)}
	}
	b := math.Ceil(n * unit)
	if b > math.MaxInt64/2 {
		return 0, &FieldError{Field: field, Err: fmt.Errorf("%q: too large", s)}
	}
	return int64(b), nil
}

var (
	// nameRE is for ids and names that end up in paths, keys and logs:
	// node ids, app, environment, datacenter, stage names.
	nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	// labelKeyRE allows an optional DNS-like prefix ("example.com/tier").
	labelKeyRE   = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$`)
	labelValueRE = regexp.MustCompile(`^(?:[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$`)
)

// checkName reports whether s is a valid id or name, as an error naming field.
func checkName(field, s string) error {
	if s == "" {
		return &FieldError{Field: field, Err: fmt.Errorf("required")}
	}
	if !nameRE.MatchString(s) {
		return &FieldError{Field: field, Err: fmt.Errorf("%q: must be 1 to 63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit", s)}
	}
	return nil
}

// checkLabels validates label keys and values (selectors and node labels).
func checkLabels(field string, labels map[string]string, p *problems) {
	for _, k := range sortedStringKeys(labels) {
		if !labelKeyRE.MatchString(k) {
			p.add(join(field, k), "%q: label key must be 1 to 63 letters, digits, '.', '_', '/' or '-', starting and ending with a letter or digit", k)
			continue
		}
		if v := labels[k]; !labelValueRE.MatchString(v) {
			p.add(join(field, k), "%q: label value must be at most 63 letters, digits, '.', '_' or '-', starting and ending with a letter or digit", v)
		}
	}
}
