package controlplane

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"

	yamlv3 "go.yaml.in/yaml/v3"
)

// checkConfigShape reads a configuration file as YAML and checks its keys
// and value kinds against t (a struct with json tags, as decoded later),
// so that every mistake is reported as YAML, with its line and the dotted
// key: an unknown key, a list where a value belongs, a second document.
// The decoder that runs afterwards then meets only values of the right
// kind. An empty document passes.
func checkConfigShape(data []byte, t reflect.Type) error {
	dec := yamlv3.NewDecoder(bytes.NewReader(data))
	var doc yamlv3.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return fmt.Errorf("not valid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(doc.Content) > 0 {
		if err := checkNode(doc.Content[0], t, ""); err != nil {
			return err
		}
	}
	var next yamlv3.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		return fmt.Errorf("line %d: a second YAML document (after ---): the configuration is one document", next.Line)
	case !errors.Is(err, io.EOF):
		return fmt.Errorf("not valid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return nil
}

// checkUnique refuses a mapping that sets a key twice.
func checkUnique(n *yamlv3.Node, name string) error {
	first := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if line, ok := first[k.Value]; ok {
			return fmt.Errorf("line %d: %s: key %q set twice (first on line %d)", k.Line, name, k.Value, line)
		}
		first[k.Value] = k.Line
	}
	return nil
}

var jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()

// yaml11Bools are the words YAML 1.1 (which the decoder speaks) reads as
// booleans besides true and false.
var yaml11Bools = []string{"yes", "no", "on", "off", "y", "n"}

func checkNode(n *yamlv3.Node, t reflect.Type, path string) error {
	for n.Kind == yamlv3.AliasNode {
		n = n.Alias
	}
	if n.Kind == yamlv3.ScalarNode && n.Tag == "!!null" {
		return nil // a key with no value: the default
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	name := path
	if name == "" {
		name = "the configuration"
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("line %d: %s: %s", n.Line, name, fmt.Sprintf(format, args...))
	}
	if reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		if n.Kind != yamlv3.ScalarNode {
			return fail("must be a single value, not %s", kindName(n))
		}
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yamlv3.MappingNode {
			return fail("must be a mapping of keys to values, not %s", kindName(n))
		}
		fields := map[string]reflect.Type{}
		var known []string
		for f := range t.Fields() {
			tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if tag == "" || tag == "-" {
				continue
			}
			fields[tag] = f.Type
			known = append(known, tag)
		}
		slices.Sort(known)
		if err := checkUnique(n, name); err != nil {
			return err
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			ft, ok := fields[k.Value]
			if !ok {
				msg := fmt.Sprintf("line %d: %s: unknown key %q (known: %s)", k.Line, name, k.Value, strings.Join(known, ", "))
				if path == "" && (k.Value == "apiVersion" || k.Value == "kind") {
					msg += "; this looks like a Kubernetes manifest, not the control plane's configuration (deploy/examples/controlplane-config.yaml has every key)"
				}
				return errors.New(msg)
			}
			if err := checkNode(v, ft, joinKey(path, k.Value)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Map:
		if n.Kind != yamlv3.MappingNode {
			return fail("must be a mapping of keys to values, not %s", kindName(n))
		}
		if err := checkUnique(n, name); err != nil {
			return err
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := checkNode(n.Content[i+1], t.Elem(), joinKey(path, n.Content[i].Value)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Slice:
		if n.Kind != yamlv3.SequenceNode {
			return fail("must be a list, not %s (write [%s])", kindName(n), n.Value)
		}
		for i, e := range n.Content {
			if err := checkNode(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return nil
	}
	if n.Kind != yamlv3.ScalarNode {
		return fail("must be a single value, not %s", kindName(n))
	}
	switch t.Kind() {
	case reflect.Bool:
		if n.Tag != "!!bool" && !slices.Contains(yaml11Bools, strings.ToLower(n.Value)) {
			return fail("%q must be true or false", n.Value)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if _, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, t.Bits()); n.Tag != "!!int" || err != nil {
			return fail("%q must be a whole number", n.Value)
		}
	case reflect.String:
		if n.Tag != "!!str" {
			return fail("%s must be text: write it in quotes (%q)", n.Value, n.Value)
		}
		// The decoder that follows speaks YAML 1.1: it would read an
		// unquoted yes or no as a boolean and store "true" or "false".
		quoted := yamlv3.DoubleQuotedStyle | yamlv3.SingleQuotedStyle | yamlv3.LiteralStyle | yamlv3.FoldedStyle
		if n.Style&quoted == 0 && slices.Contains(yaml11Bools, strings.ToLower(n.Value)) {
			return fail("%s would be read as true or false: write it in quotes (%q)", n.Value, n.Value)
		}
	}
	return nil
}

func joinKey(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func kindName(n *yamlv3.Node) string {
	switch n.Kind {
	case yamlv3.MappingNode:
		return "a mapping"
	case yamlv3.SequenceNode:
		return "a list"
	}
	return fmt.Sprintf("the value %q", n.Value)
}
