package plan

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	yamlv2 "go.yaml.in/yaml/v2"
	yamlv3 "go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"sigs.k8s.io/yaml"
)

// decodeYAML turns a YAML document into a JSON object, strictly: duplicate
// keys are refused. doc names the document in errors ("plan").
//
// Its cost is bounded by the size of data: the YAML library refuses
// nesting deeper than 10,000 levels and documents made mostly of alias
// expansions, and a document that its aliases would expand beyond
// MaxYAMLExpansion times its size is refused before it is turned into
// JSON (aliases of a long string are cheap to decode, each use is not).
func decodeYAML(doc string, data []byte) (map[string]any, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, &FieldError{Field: doc, Err: fmt.Errorf("empty document")}
	}
	yamlError := func(err error) error {
		// The YAML library's messages carry the line ("yaml: line 3: ...").
		return &FieldError{Field: doc, Err: fmt.Errorf("%s", clip(strings.TrimPrefix(err.Error(), "error converting YAML to JSON: "), 200))}
	}
	// An alias (*name) needs an anchor (&name); a document without both
	// characters has none and is decoded once.
	if bytes.IndexByte(data, '&') >= 0 && bytes.IndexByte(data, '*') >= 0 {
		var raw any
		if err := yamlv2.UnmarshalStrict(data, &raw); err != nil {
			return nil, yamlError(err)
		}
		limit := MaxYAMLExpansion*len(data) + yamlExpansionSlack
		if n := expandedSize(raw, limit); n > limit {
			return nil, &FieldError{Field: doc, Err: fmt.Errorf("its anchors and aliases expand it to more than %d bytes (%d times its size): write the repeated parts out", limit, MaxYAMLExpansion)}
		}
	}
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, yamlError(err)
	}
	d := json.NewDecoder(bytes.NewReader(j))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, &FieldError{Field: doc, Err: err}
	}
	obj, ok := v.(map[string]any)
	if !ok {
		if v == nil {
			return nil, &FieldError{Field: doc, Err: fmt.Errorf("empty document")}
		}
		return nil, &FieldError{Field: doc, Err: fmt.Errorf("must be a mapping of keys to values, not %s", kindOf(v))}
	}
	var tree yamlv3.Node
	if yamlv3.Unmarshal(data, &tree) == nil {
		if _, err := keepYAML11Words(&tree, obj); err != nil {
			return nil, &FieldError{Field: doc, Err: err}
		}
	}
	return obj, nil
}

// yaml11Word is a plain scalar that YAML 1.1, which the decoder speaks,
// reads as a boolean although YAML 1.2 reads it as text: yes, no, on, off,
// y, n. Where the schema wants text (a label value, a selector) it is
// kept as written: `country: no` selects "no", not "false". Where it
// wants true or false it is the boolean.
type yaml11Word struct {
	word string
	b    bool
}

var yaml11Words = []string{"yes", "no", "on", "off", "y", "n"}

func isYAML11Word(n *yamlv3.Node) bool {
	quoted := yamlv3.DoubleQuotedStyle | yamlv3.SingleQuotedStyle | yamlv3.LiteralStyle | yamlv3.FoldedStyle
	return n.Kind == yamlv3.ScalarNode && n.Style&quoted == 0 && n.Tag == "!!str" &&
		slices.Contains(yaml11Words, strings.ToLower(n.Value))
}

// keepYAML11Words walks the YAML tree n beside v, its JSON conversion,
// and marks each of v's booleans written as a YAML 1.1 word, and restores
// mapping keys written so ("no:" became "false"). Where the two trees do
// not line up (merge keys), v is left as converted. Two keys of one
// mapping that the conversion made one ("on:" and "true:") are refused:
// one of them was lost.
func keepYAML11Words(n *yamlv3.Node, v any) (any, error) {
	for depth := 0; n.Kind == yamlv3.AliasNode && n.Alias != nil && depth < 100; depth++ {
		n = n.Alias
	}
	var err error
	switch n.Kind {
	case yamlv3.DocumentNode:
		if len(n.Content) == 1 {
			return keepYAML11Words(n.Content[0], v)
		}
	case yamlv3.MappingNode:
		m, ok := v.(map[string]any)
		if !ok {
			return v, nil
		}
		// What each key became: a YAML 1.1 word its boolean's text.
		converted := map[string]*yamlv3.Node{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind != yamlv3.ScalarNode || k.Tag == "!!merge" {
				continue
			}
			c := k.Value
			if isYAML11Word(k) {
				c = strconv.FormatBool(slices.Contains([]string{"yes", "on", "y"}, strings.ToLower(k.Value)))
			}
			if prev, ok := converted[c]; ok {
				return nil, fmt.Errorf("line %d: keys %q (line %d) and %q both read as %q in YAML 1.1: write them in quotes",
					k.Line, clip(prev.Value, 64), prev.Line, clip(k.Value, 64), c)
			}
			converted[c] = k
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if k.Kind != yamlv3.ScalarNode || k.Tag == "!!merge" {
				continue
			}
			key := k.Value
			if isYAML11Word(k) {
				c := strconv.FormatBool(slices.Contains([]string{"yes", "on", "y"}, strings.ToLower(k.Value)))
				if cv, ok := m[c]; ok {
					delete(m, c)
					m[key] = cv
				}
			}
			if cv, ok := m[key]; ok {
				if m[key], err = keepYAML11Words(val, cv); err != nil {
					return nil, err
				}
			}
		}
	case yamlv3.SequenceNode:
		l, ok := v.([]any)
		if !ok || len(l) != len(n.Content) {
			return v, nil
		}
		for i, e := range n.Content {
			if l[i], err = keepYAML11Words(e, l[i]); err != nil {
				return nil, err
			}
		}
	case yamlv3.ScalarNode:
		if b, ok := v.(bool); ok && isYAML11Word(n) {
			return yaml11Word{word: n.Value, b: b}, nil
		}
	}
	return v, nil
}

// normalize walks a JSON object decoded from YAML against message md and
// returns a copy protojson accepts. It refuses unknown keys and values of
// the wrong shape with errors that name the field, and turns YAML scalars
// written without quotes into strings where the schema wants a string
// (batch: 50, tier: 2, min_free_bytes: 1048576), because protojson accepts
// only JSON strings there. Nulls (a key with no value) are dropped: the
// field keeps its zero value.
func normalize(md protoreflect.MessageDescriptor, obj map[string]any, path string, p *problems) map[string]any {
	out := make(map[string]any, len(obj))
	seen := map[protoreflect.Name]string{}
	for _, key := range sortedKeys(obj) {
		v := obj[key]
		fd := md.Fields().ByName(protoreflect.Name(key))
		if fd == nil {
			fd = md.Fields().ByJSONName(key)
		}
		where := path
		if where == "" {
			where = "plan"
		}
		if fd == nil {
			msg := fmt.Sprintf("unknown field %q", clip(key, 64))
			if s := suggest(key, md); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			p.errs = append(p.errs, &FieldError{Field: where, Err: fmt.Errorf("%s", msg), key: key})
			continue
		}
		field := join(path, string(fd.Name()))
		if prev, ok := seen[fd.Name()]; ok {
			p.add(field, "set twice (as %q and %q)", prev, key)
			continue
		}
		seen[fd.Name()] = key
		if v == nil {
			continue
		}
		if nv, ok := normalizeField(fd, v, field, p); ok {
			out[key] = nv
		}
	}
	return out
}

func normalizeField(fd protoreflect.FieldDescriptor, v any, field string, p *problems) (any, bool) {
	switch {
	case fd.IsMap():
		m, ok := v.(map[string]any)
		if !ok {
			p.add(field, "must be a mapping of keys to values, not %s", kindOf(v))
			return nil, false
		}
		out := make(map[string]any, len(m))
		for _, k := range sortedKeys(m) {
			mv := m[k]
			if mv == nil {
				// "tier:" with no value means the empty string.
				mv = ""
			}
			if nv, ok := normalizeSingular(fd.MapValue(), mv, field+"."+clip(k, 64), p); ok {
				out[k] = nv
			}
		}
		return out, true
	case fd.IsList():
		l, ok := v.([]any)
		if !ok {
			p.add(field, "must be a list, not %s (write [%v])", kindOf(v), clip(scalarText(v), 1024))
			return nil, false
		}
		out := make([]any, 0, len(l))
		for i, e := range l {
			if e == nil {
				p.add(index(field, i), "empty list item")
				continue
			}
			if nv, ok := normalizeSingular(fd, e, index(field, i), p); ok {
				out = append(out, nv)
			}
		}
		return out, true
	default:
		return normalizeSingular(fd, v, field, p)
	}
}

func normalizeSingular(fd protoreflect.FieldDescriptor, v any, field string, p *problems) (any, bool) {
	if w, ok := v.(yaml11Word); ok {
		switch fd.Kind() {
		case protoreflect.StringKind:
			return w.word, true
		case protoreflect.BoolKind:
			v = w.b
		}
	}
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		m, ok := v.(map[string]any)
		if !ok {
			p.add(field, "must be a mapping of keys to values, not %s", kindOf(v))
			return nil, false
		}
		return normalize(fd.Message(), m, field, p), true
	case protoreflect.StringKind:
		switch v := v.(type) {
		case string:
			return v, true
		case json.Number:
			return v.String(), true
		case bool:
			return strconv.FormatBool(v), true
		}
		p.add(field, "must be a single value, not %s", kindOf(v))
		return nil, false
	case protoreflect.BoolKind:
		if b, ok := v.(bool); ok {
			return b, true
		}
		p.add(field, "%s: must be true or false", quoteValue(v))
		return nil, false
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind,
		protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		var text string
		switch v := v.(type) {
		case json.Number:
			text = v.String()
		case string:
			text = strings.TrimSpace(v)
		default:
			p.add(field, "%s: must be a whole number", quoteValue(v))
			return nil, false
		}
		bits := 32
		if k := fd.Kind(); k == protoreflect.Int64Kind || k == protoreflect.Sint64Kind || k == protoreflect.Sfixed64Kind ||
			k == protoreflect.Uint64Kind || k == protoreflect.Fixed64Kind {
			bits = 64
		}
		n, err := strconv.ParseInt(text, 10, 64)
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrSyntax {
			// 5.0 or 1e3: YAML's other ways of writing a whole number.
			if f, ferr := strconv.ParseFloat(text, 64); ferr == nil && f == math.Trunc(f) && math.Abs(f) <= 1<<53 {
				n, err = int64(f), nil
			}
		}
		if err == nil && bits == 32 && (n < math.MinInt32 || n > math.MaxInt32) {
			err = &strconv.NumError{Err: strconv.ErrRange}
		}
		unsigned := fd.Kind() == protoreflect.Uint32Kind || fd.Kind() == protoreflect.Fixed32Kind ||
			fd.Kind() == protoreflect.Uint64Kind || fd.Kind() == protoreflect.Fixed64Kind
		if err == nil && unsigned && n < 0 {
			err = &strconv.NumError{Err: strconv.ErrRange}
		}
		if err != nil {
			if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
				p.add(field, "%q: out of range", clip(text, 64))
			} else {
				p.add(field, "%q: must be a whole number", clip(text, 64))
			}
			return nil, false
		}
		return json.Number(strconv.FormatInt(n, 10)), true
	default:
		// Enums, floats, bytes: not used by the plan or inventory schemas;
		// protojson checks them.
		return v, true
	}
}

// unmarshalNormalized runs protojson over an object normalize accepted.
func unmarshalNormalized(doc string, obj map[string]any, m proto.Message) error {
	j, err := json.Marshal(obj)
	if err != nil {
		return &FieldError{Field: doc, Err: err}
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(j, m); err != nil {
		// normalize should have caught every shape problem; this is a backstop.
		return &FieldError{Field: doc, Err: fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "proto: "))}
	}
	return nil
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func kindOf(v any) string {
	switch v.(type) {
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool, yaml11Word:
		return "true/false"
	case nil:
		return "nothing"
	}
	return fmt.Sprintf("%T", v)
}

func scalarText(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	case bool:
		return strconv.FormatBool(v)
	case yaml11Word:
		return v.word
	}
	return "..."
}

func quoteValue(v any) string {
	switch v.(type) {
	case map[string]any, []any:
		return kindOf(v)
	}
	return strconv.Quote(clip(scalarText(v), 64))
}

// suggest returns the field of md closest to a misspelt key, or "".
func suggest(key string, md protoreflect.MessageDescriptor) string {
	best, bestDist := "", 3
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		name := string(fields.Get(i).Name())
		if d := editDistance(strings.ToLower(key), name); d < bestDist {
			best, bestDist = name, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// addLines sets FieldError.Line for each error whose field can be found in
// the YAML source by following its path key by key (and list item by list
// item). It is a cheap indentation-based guess, not a YAML parser: when a
// step is ambiguous or missing (a required field that is absent) the error
// gets no line rather than a misleading one.
func addLines(err error, src []byte) {
	fes := FieldErrors(err)
	if len(fes) == 0 {
		return
	}
	lines := strings.Split(string(src), "\n")
	keys := scanKeys(lines)
	for _, fe := range fes {
		field := fe.Field
		if field == "plan" || field == "inventory" {
			field = ""
		}
		if fe.key != "" {
			field = join(field, fe.key)
		}
		if field != "" {
			fe.Line = lineOf(lines, keys, field)
		}
	}
}

var (
	blockKeyRE = regexp.MustCompile(`^(\s*(?:-\s+)*)["']?([^"'\s:{},\[\]]+)["']?\s*:(?:\s|$)`)
	flowKeyRE  = regexp.MustCompile(`[{,]\s*["']?([^"'\s:{},\[\]]+)["']?\s*:(?:\s|$)`)
	indexRE    = regexp.MustCompile(`^(.*?)((?:\[[0-9]+\])*)$`)
)

// lineKeys is what the key patterns find on one line of the source.
type lineKeys struct {
	block string   // the key of a block mapping entry ("- name: x" has "name"), or ""
	col   int      // the column of block, counting "- " list markers
	flow  []string // the keys inside flow mappings ("{name: a, bake: 2m}")
}

// scanKeys matches the key patterns against every line once, so that
// finding the lines of many errors costs no more regular expression runs
// than the source has lines.
func scanKeys(lines []string) []lineKeys {
	keys := make([]lineKeys, len(lines))
	for i, l := range lines {
		if bm := blockKeyRE.FindStringSubmatch(l); bm != nil {
			keys[i].block, keys[i].col = bm[2], len(bm[1])
		}
		for _, fm := range flowKeyRE.FindAllStringSubmatch(l, -1) {
			keys[i].flow = append(keys[i].flow, fm[1])
		}
	}
	return keys
}

// lineOf returns the 1-based line of field ("strategy.stages[1].batch") in
// lines, whose keys scanKeys found, or 0.
func lineOf(lines []string, keys []lineKeys, field string) int {
	lo, hi, line := 0, len(lines), 0
	// The line of the key just found: its own block key is not a child.
	parentLine := -1
	for _, seg := range strings.Split(field, ".") {
		m := indexRE.FindStringSubmatch(seg)
		key, idxs := m[1], m[2]
		found, col, flow := -1, 0, false
		for i := lo; i < hi; i++ {
			if k := keys[i]; k.block != "" && k.block == key && i != parentLine {
				if found >= 0 {
					return 0
				}
				found, col, flow = i, k.col, false
			}
			for _, fk := range keys[i].flow {
				if fk == key {
					if found >= 0 {
						return 0
					}
					found, flow = i, true
				}
			}
		}
		if found < 0 {
			return 0
		}
		lo, hi, line, parentLine = found, found+1, found+1, found
		if !flow {
			hi = blockEnd(lines, found, col, hi)
		}
		for _, is := range strings.Split(strings.Trim(idxs, "[]"), "][") {
			if is == "" {
				continue
			}
			n, _ := strconv.Atoi(is)
			items := listItems(lines, lo, hi)
			if items == nil {
				continue // a flow list: the item is on this line
			}
			if n >= len(items) {
				return 0
			}
			lo, line, parentLine = items[n], items[n]+1, -1
			if n+1 < len(items) {
				hi = items[n+1]
			}
		}
	}
	return line
}

// blockEnd returns the end of the block that starts with a key at column
// col on line start: the first later line indented no deeper (a list item
// "- " at the same column still belongs to it, as YAML allows).
func blockEnd(lines []string, start, col, hi int) int {
	for i := start + 1; i < len(lines); i++ {
		t := strings.TrimLeft(lines[i], " ")
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		indent := len(lines[i]) - len(t)
		if indent < col || (indent == col && !strings.HasPrefix(t, "- ") && t != "-") {
			return i
		}
		hi = i + 1
	}
	return max(hi, len(lines))
}

// listItems returns the lines in [lo, hi) that start block-list items of
// the key on line lo, or nil when there are none (a flow list).
func listItems(lines []string, lo, hi int) []int {
	var items []int
	dash := -1
	for i := lo + 1; i < hi; i++ {
		t := strings.TrimLeft(lines[i], " ")
		if !strings.HasPrefix(t, "- ") && t != "-" {
			continue
		}
		indent := len(lines[i]) - len(t)
		if dash < 0 {
			dash = indent
		}
		if indent == dash {
			items = append(items, i)
		}
	}
	return items
}

// expandedSize estimates the size as JSON of v, a document the YAML
// library decoded, counting what aliases share once per use. It stops
// counting soon after the count passes limit, so a document of a billion
// repeated strings costs no more than one of limit bytes.
func expandedSize(v any, limit int) int {
	n := 0
	var walk func(v any)
	walk = func(v any) {
		if n > limit {
			return
		}
		switch v := v.(type) {
		case map[any]any:
			n += 2
			for k, e := range v {
				if n > limit {
					return
				}
				walk(k)
				walk(e)
				n += 2
			}
		case []any:
			n += 2
			for _, e := range v {
				if n > limit {
					return
				}
				walk(e)
				n++
			}
		case string:
			n += len(v) + 2
		default:
			n += 4 // numbers, true/false, null
		}
	}
	walk(v)
	return n
}

// clip shortens a value quoted in an error message to its first keep
// bytes, saying how long it was: an error need not repeat a megabyte.
func clip(s string, keep int) string {
	if len(s) <= keep {
		return s
	}
	cut := keep
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d bytes)", s[:cut], len(s))
}
