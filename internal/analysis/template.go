package analysis

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
)

// Bounds of a query template and what it renders.
const (
	// MaxQueryBytes bounds a query template in a plan.
	MaxQueryBytes = 4096
	// MaxRenderedBytes bounds a rendered query (a template ranging over
	// thousands of nodes renders long).
	MaxRenderedBytes = 64 << 10
)

// nothingRegex matches no label value, not even the empty one: the regex
// of an empty node list, so a query over "no nodes" finds no series (an
// inconclusive result) instead of the series without the label.
const nothingRegex = `[^\s\S]`

// TemplateData is what a query template sees. Every string in it is
// escaped for the inside of a double-quoted PromQL string, so a node name
// or label value cannot end the string and add PromQL of its own:
// write {{.Release}} inside quotes (release="{{.Release}}").
type TemplateData struct {
	// Nodes are the stage's node ids, sorted.
	Nodes []string
	// NodesRegex is a regex alternation matching exactly those ids, for
	// node=~"{{.NodesRegex}}".
	NodesRegex string
	// Addresses are the stage's node addresses (host or host:port), sorted.
	Addresses []string
	// AddressesRegex matches exactly those addresses.
	AddressesRegex string
	// BaselineNodes are the rollout's nodes still on the previous release
	// (not deployed by it yet), sorted; BaselineRegex matches them.
	BaselineNodes []string
	BaselineRegex string
	// Release is the release id being deployed; App the plan's app.
	Release string
	App     string
	// Labels are the labels every node of the stage has, with the same value.
	Labels map[string]string
}

// NewTemplateData builds the escaped data of a query template.
func NewTemplateData(nodes, addresses, baseline []string, release, app string, labels map[string]string) TemplateData {
	d := TemplateData{
		Nodes:          escapeAll(nodes),
		NodesRegex:     regexOf(nodes),
		Addresses:      escapeAll(addresses),
		AddressesRegex: regexOf(addresses),
		BaselineNodes:  escapeAll(baseline),
		BaselineRegex:  regexOf(baseline),
		Release:        Escape(release),
		App:            Escape(app),
		Labels:         map[string]string{},
	}
	for k, v := range labels {
		d.Labels[k] = Escape(v)
	}
	return d
}

// Escape returns s escaped for the inside of a double-quoted PromQL
// string (PromQL strings take Go's escapes).
func Escape(s string) string {
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

func escapeAll(in []string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = Escape(s)
	}
	sort.Strings(out)
	return out
}

// regexOf returns an RE2 alternation matching exactly the values (PromQL
// anchors label regexes), escaped for a double-quoted string.
func regexOf(values []string) string {
	if len(values) == 0 {
		return Escape(nothingRegex)
	}
	q := make([]string, len(values))
	for i, v := range values {
		q[i] = regexp.QuoteMeta(v)
	}
	sort.Strings(q)
	return Escape(strings.Join(q, "|"))
}

// ParseQuery parses a query template. It refuses an empty or oversized
// template and one that names a field TemplateData lacks.
func ParseQuery(text string) (*template.Template, error) {
	switch {
	case strings.TrimSpace(text) == "":
		return nil, errors.New("required")
	case len(text) > MaxQueryBytes:
		return nil, fmt.Errorf("%d bytes: at most %d", len(text), MaxQueryBytes)
	}
	t, err := template.New("query").Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("not a valid template: %s", strings.TrimPrefix(err.Error(), "template: "))
	}
	// define, block and template calls would allow recursion: a template
	// that calls itself runs a hundred thousand levels deep before it
	// fails, at every CreateRollout. A query needs none of them.
	if len(t.Templates()) > 1 || callsTemplate(t.Tree.Root) {
		return nil, errors.New("not a valid template: define, block and template are not allowed in a query")
	}
	// Render once with sample data so a misspelt field ({{.Node}}) is
	// refused now, not at the first measurement. Which labels the nodes
	// share is known only then: a missing one renders empty here (and is
	// an error, so inconclusive, at a measurement).
	lenient, err := t.Clone()
	if err != nil {
		return nil, err
	}
	sample := NewTemplateData([]string{"n1"}, []string{"h1"}, []string{"n2"}, "r1", "app", map[string]string{})
	if _, err := Render(lenient.Option("missingkey=zero"), sample); err != nil {
		return nil, err
	}
	return t, nil
}

// callsTemplate reports whether the tree under n calls a template.
func callsTemplate(n parse.Node) bool {
	switch n := n.(type) {
	case *parse.TemplateNode:
		return true
	case *parse.ListNode:
		if n == nil {
			return false
		}
		for _, c := range n.Nodes {
			if callsTemplate(c) {
				return true
			}
		}
	case *parse.IfNode:
		return callsTemplate(n.List) || callsTemplate(n.ElseList)
	case *parse.RangeNode:
		return callsTemplate(n.List) || callsTemplate(n.ElseList)
	case *parse.WithNode:
		return callsTemplate(n.List) || callsTemplate(n.ElseList)
	}
	return false
}

// Render executes a query template.
func Render(t *template.Template, d TemplateData) (string, error) {
	var b limitedBuilder
	if err := t.Execute(&b, d); err != nil {
		if errors.Is(err, errTooLong) {
			return "", fmt.Errorf("renders to more than %d bytes", MaxRenderedBytes)
		}
		return "", fmt.Errorf("cannot render: %s", strings.TrimPrefix(err.Error(), "template: "))
	}
	q := strings.TrimSpace(b.String())
	if q == "" {
		return "", errors.New("renders to an empty query")
	}
	return q, nil
}

var errTooLong = errors.New("too long")

type limitedBuilder struct{ strings.Builder }

func (b *limitedBuilder) Write(p []byte) (int, error) {
	if b.Len()+len(p) > MaxRenderedBytes {
		return 0, errTooLong
	}
	return b.Builder.Write(p)
}
