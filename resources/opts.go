package resources

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// opts is one parsed option value: QEMU's "key=value,..." or a JSON
// object flattened to dotted keys ("file.filename"), as QEMU's qdict
// flattening does. Keys may repeat (hostfwd=, guestfwd=).
type opts struct {
	keys []string // in order, each once
	vals map[string][]string
	used map[string]bool
}

func newOpts() *opts {
	return &opts{vals: map[string][]string{}, used: map[string]bool{}}
}

func (o *opts) set(k, v string) {
	if _, ok := o.vals[k]; !ok {
		o.keys = append(o.keys, k)
	}
	o.vals[k] = append(o.vals[k], v)
}

// get returns the last value of k (QEMU keeps the last one) and whether
// k was given, and marks k as understood.
func (o *opts) get(k string) (string, bool) {
	o.used[k] = true
	v, ok := o.vals[k]
	if !ok {
		return "", false
	}
	return v[len(v)-1], true
}

// str returns the last value of k, or "".
func (o *opts) str(k string) string {
	v, _ := o.get(k) // an absent key reads as ""
	return v
}

// strOr returns the last value of k, or def when k is absent or empty
// (QEMU's default for it).
func (o *opts) strOr(k, def string) string {
	if v := o.str(k); v != "" {
		return v
	}
	return def
}

// all returns every value of k, and marks k as understood.
func (o *opts) all(k string) []string {
	o.used[k] = true
	return o.vals[k]
}

// has reports whether k was given, without marking it.
func (o *opts) has(k string) bool {
	_, ok := o.vals[k]
	return ok
}

// boolean reads k as QEMU's on/off, yes/no, true/false; def when absent.
// It returns an error for other values.
func (o *opts) boolean(k string, def bool) (bool, error) {
	v, ok := o.get(k)
	if !ok {
		return def, nil
	}
	switch v {
	case "on", "yes", "true", "y":
		return true, nil
	case "off", "no", "false", "n":
		return false, nil
	}
	return false, fmt.Errorf("%s=%s: want on or off", k, v)
}

// withPrefix returns the keys under prefix ("file.") with the prefix cut,
// as a new opts sharing nothing with o; the keys are marked in o.
func (o *opts) withPrefix(prefix string) *opts {
	sub := newOpts()
	for _, k := range o.keys {
		if rest, ok := strings.CutPrefix(k, prefix); ok && rest != "" {
			o.used[k] = true
			for _, v := range o.vals[k] {
				sub.set(rest, v)
			}
		}
	}
	return sub
}

// hasPrefix reports whether any key starts with prefix.
func (o *opts) hasPrefix(prefix string) bool {
	for _, k := range o.keys {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

// unused returns the key=value pairs nothing asked for, sorted.
func (o *opts) unused() [][2]string {
	var out [][2]string
	for _, k := range o.keys {
		if o.used[k] {
			continue
		}
		for _, v := range o.vals[k] {
			out = append(out, [2]string{k, v})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out
}

// bareOff maps the deprecated "noKEY" short forms QEMU still accepts for
// the keys that matter here to KEY=off.
var bareOff = map[string]string{"nowait": "wait", "noserver": "server"}

// errSyntax marks option values QEMU itself would reject.
var errSyntax = errors.New("syntax")

// parseOpts parses QEMU's "key=value,key=value" syntax: ",," is a literal
// comma; a first element without "=" is the value of implied (when the
// option has one); another element without "=" is a boolean KEY=on (or,
// for the deprecated "noKEY" forms, KEY=off). A value starting with "{"
// is JSON when json is set.
func parseOpts(s, implied string, json bool) (*opts, error) {
	if json && strings.HasPrefix(strings.TrimLeft(s, " \t\n"), "{") {
		return parseJSONOpts(s)
	}
	o := newOpts()
	for i, part := range SplitOpts(s) {
		k, v, ok := strings.Cut(part, "=")
		switch {
		case ok:
			if k == "" {
				return nil, fmt.Errorf("%w: empty key in %q", errSyntax, part)
			}
			o.set(k, v)
		case i == 0 && implied != "":
			o.set(implied, part)
		case part == "":
			if i == 0 {
				continue // an empty value, e.g. -drive ""
			}
			return nil, fmt.Errorf("%w: empty element in %q", errSyntax, s)
		case strings.ContainsAny(part, "/:"):
			// QEMU would take it for a boolean parameter and reject it.
			return nil, fmt.Errorf("%w: %q is not KEY=VALUE (a file is file=PATH or path=PATH)", errSyntax, part)
		case bareOff[part] != "":
			o.set(bareOff[part], "off")
		default:
			o.set(part, "on")
		}
	}
	return o, nil
}

// EscapeOpt writes v as a value in QEMU's key=value syntax: its commas
// doubled, so that SplitOpts gives it back whole.
func EscapeOpt(v string) string { return strings.ReplaceAll(v, ",", ",,") }

// SplitOpts splits an option value in QEMU's key=value syntax at its
// commas; ",," is a literal comma.
func SplitOpts(s string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			if i+1 < len(s) && s[i+1] == ',' {
				cur.WriteByte(',')
				i++
				continue
			}
			out = append(out, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(s[i])
	}
	return append(out, cur.String())
}

// maxJSONDepth bounds nesting in JSON option values.
const maxJSONDepth = 32

// parseJSONOpts parses a JSON object and flattens it to dotted keys:
// {"file":{"filename":"x"}} is file.filename=x, lists are key.0, key.1,
// booleans on/off, null the empty string.
func parseJSONOpts(s string) (*opts, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: JSON: %w", errSyntax, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: JSON: data after the object", errSyntax)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: JSON: want an object", errSyntax)
	}
	o := newOpts()
	if err := flatten(o, "", m, 0); err != nil {
		return nil, err
	}
	return o, nil
}

func flatten(o *opts, prefix string, v any, depth int) error {
	if depth > maxJSONDepth {
		return fmt.Errorf("%w: JSON nested deeper than %d", errSyntax, maxJSONDepth)
	}
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if err := flatten(o, prefix+k+".", x[k], depth+1); err != nil {
				return err
			}
		}
		return nil
	case []any:
		for i, e := range x {
			if err := flatten(o, prefix+strconv.Itoa(i)+".", e, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	key := strings.TrimSuffix(prefix, ".")
	if key == "" {
		return fmt.Errorf("%w: JSON: empty key", errSyntax)
	}
	switch x := v.(type) {
	case nil:
		o.set(key, "")
	case bool:
		if x {
			o.set(key, "on")
		} else {
			o.set(key, "off")
		}
	case json.Number:
		o.set(key, x.String())
	case string:
		o.set(key, x)
	default:
		var b bytes.Buffer
		fmt.Fprint(&b, x)
		o.set(key, b.String())
	}
	return nil
}
