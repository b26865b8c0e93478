package qmpproxy

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"kfv/resources"
)

// frames cuts input fed in chunks of size n (0: all at once) and returns
// the frames as "obj:…", "space", "garbage:ERR" or "skip".
func frames(input []byte, n int, trailing bool) ([]string, []byte) {
	f := newFramer(4<<10, trailing)
	var out []string
	var raw []byte
	if n <= 0 {
		n = len(input) + 1
	}
	for len(input) > 0 {
		k := min(n, len(input))
		f.push(input[:k])
		input = input[k:]
		for {
			fr, ok := f.next()
			if !ok {
				break
			}
			raw = append(raw, fr.raw...)
			switch fr.kind {
			case frameObject:
				out = append(out, "obj:"+string(fr.obj))
			case frameSpace:
				out = append(out, "space")
			case frameGarbage:
				if fr.err != nil {
					out = append(out, "garbage:"+fr.err.Error())
				} else {
					out = append(out, "skip")
				}
			}
		}
	}
	return out, raw
}

// objects keeps the object and garbage-error frames: what a reader acts on,
// whatever the chunking.
func objects(fs []string) []string {
	var out []string
	for _, f := range fs {
		if strings.HasPrefix(f, "obj:") || strings.HasPrefix(f, "garbage:") {
			out = append(out, f)
		}
	}
	return out
}

func TestFramer(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
	}{
		{"one per line", "{\"execute\":\"a\"}\n{\"execute\":\"b\"}\n", []string{`obj:{"execute":"a"}`, `obj:{"execute":"b"}`}},
		{"concatenated", `{"execute":"a"}{"execute":"b"}`, []string{`obj:{"execute":"a"}`, `obj:{"execute":"b"}`}},
		{"whitespace between", " \t{\"a\":1}\r\n \n{\"b\":[1,{\"c\":2}]}", []string{`obj:{"a":1}`, `obj:{"b":[1,{"c":2}]}`}},
		{"braces and quotes in strings", `{"a":"}{\"}\\"}{"b":"]"}`, []string{`obj:{"a":"}{\"}\\"}`, `obj:{"b":"]"}`}},
		{"object split over lines", "{\n\"execute\":\n\"a\"\n}", []string{"obj:{\n\"execute\":\n\"a\"\n}"}},
		{"not an object, resync at newline", "[1,2]{\"x\":1}\n{\"execute\":\"a\"}", []string{"garbage:QMP input must be a JSON object", `obj:{"execute":"a"}`}},
		{"incomplete object waits", `{"execute":"a"`, nil},
		{"too deep", strings.Repeat("[", 10) + "{" + strings.Repeat("[", maxDepth) + "\n{\"a\":1}", []string{"garbage:QMP input must be a JSON object", `obj:{"a":1}`}},
		{"deep object", "{\"a\":" + strings.Repeat("[", maxDepth) + "\n{\"a\":1}", []string{"garbage:JSON nested deeper than 1024", `obj:{"a":1}`}},
		{"too large", "{\"a\":\"" + strings.Repeat("x", 5<<10) + "\"}\n{\"b\":1}", []string{"garbage:QMP input larger than 4096 bytes", `obj:{"b":1}`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			whole, _ := frames([]byte(tc.in), 0, false)
			if got := objects(whole); !slices.Equal(got, tc.want) {
				t.Errorf("all at once:\n got %q\nwant %q", got, tc.want)
			}
			// Byte by byte, the objects are the same (the too-large case
			// is reported once the limit is crossed, same as at once).
			bytewise, _ := frames([]byte(tc.in), 1, false)
			if got := objects(bytewise); !slices.Equal(got, tc.want) {
				t.Errorf("byte by byte:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// With trailing whitespace, what QEMU wrote as a line comes out as one
// frame, and nothing is lost.
func TestFramerTrailing(t *testing.T) {
	in := "{\"QMP\": {}}\r\n{\"return\": {}}\r\n  {\"event\": \"STOP\"}\r\n\r\n"
	got, raw := frames([]byte(in), 0, true)
	want := []string{`obj:{"QMP": {}}`, `obj:{"return": {}}`, `obj:{"event": "STOP"}`, "space"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if string(raw) != in {
		t.Errorf("frames hold %q, want %q", raw, in)
	}
	f := newFramer(1<<10, true)
	f.push([]byte("{\"return\": {}}\r\n{\"ret"))
	fr, ok := f.next()
	if !ok || string(fr.raw) != "{\"return\": {}}\r\n" {
		t.Errorf("first frame %q, want the line with its CRLF", fr.raw)
	}
}

func TestParseRequest(t *testing.T) {
	tests := []struct {
		name, in string
		want     string // name, or "!" for an error
		oob      bool
		id, args string
	}{
		{"execute", `{"execute":"query-status"}`, "query-status", false, "", ""},
		{"with id and arguments", `{"execute":"getfd","arguments":{"fdname":"x"},"id":{"n":[1]}}`, "getfd", false, `{"n":[1]}`, `{"fdname":"x"}`},
		{"exec-oob", `{"exec-oob":"migrate-pause","id":"p"}`, "migrate-pause", true, `"p"`, ""},
		{"keys are exact", `{"EXECUTE":"blockdev-add","arguments":{"driver":"file","filename":"/x"}}`, "", false, "", ""},
		{"both command members", `{"execute":"a","exec-oob":"b"}`, "", false, "", ""},
		{"name not a string", `{"execute":1}`, "", false, "", ""},
		{"arguments not an object", `{"execute":"a","arguments":[1]}`, "", false, "", ""},
		{"duplicate key", `{"execute":"a","execute":"blockdev-add"}`, "!", false, "", ""},
		{"nested duplicate key", `{"execute":"blockdev-add","arguments":{"driver":"file","filename":"/a","filename":"/b"}}`, "!", false, "", ""},
		{"same key in sibling objects", `{"execute":"x","arguments":{"a":{"k":1},"b":{"k":1},"c":[{"k":1},{"k":2}]}}`, "x", false, "", `{"a":{"k":1},"b":{"k":1},"c":[{"k":1},{"k":2}]}`},
		{"single quotes (QEMU's extension) are refused", `{'execute':'a'}`, "!", false, "", ""},
		{"invalid", `{"execute":"a",}`, "!", false, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := parseRequest([]byte(tc.in))
			if tc.want == "!" {
				if err == nil {
					t.Fatalf("parseRequest(%s) = %+v, want an error", tc.in, r)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.name != tc.want || r.oob != tc.oob || string(r.id) != tc.id || string(r.args) != tc.args {
				t.Errorf("parseRequest(%s) = name %q oob %v id %s args %s", tc.in, r.name, r.oob, r.id, r.args)
			}
		})
	}
}

// FuzzFramer: any bytes, cut anywhere, give the same objects and errors
// as when read at once; every object is balanced; with trailing
// whitespace kept, the frames hold exactly the input consumed; and
// parseRequest never panics and never accepts what encoding/json rejects.
func FuzzFramer(f *testing.F) {
	for _, s := range []string{
		`{"execute":"qmp_capabilities"}`,
		"{\"execute\":\"blockdev-add\",\"arguments\":{\"driver\":\"file\",\"filename\":\"/x\"},\"id\":1}\r\n",
		`{"a":"}{\"\\"}{"b":[1,{"c":"]"}]}`,
		"[1]\n{\"a\":1}",
		`{"execute":"a","execute":"b"}`,
		"\xff{\"\xff\":1}",
	} {
		f.Add([]byte(s), uint8(1))
		f.Add([]byte(s), uint8(7))
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		whole, raw := frames(in, 0, true)
		parts, rawParts := frames(in, int(chunk%32)+1, true)
		if !slices.Equal(objects(whole), objects(parts)) {
			t.Fatalf("chunking changed the frames:\n at once %q\n chunked %q", objects(whole), objects(parts))
		}
		if !bytes.HasPrefix(in, raw) || !bytes.Equal(raw, rawParts) {
			t.Fatalf("frames hold %q / %q of input %q", raw, rawParts, in)
		}
		for _, o := range objects(whole) {
			obj, ok := strings.CutPrefix(o, "obj:")
			if !ok {
				continue
			}
			if obj[0] != '{' || (obj[len(obj)-1] != '}' && obj[len(obj)-1] != ']') {
				t.Fatalf("object frame %q", obj)
			}
			r, err := parseRequest([]byte(obj))
			if err == nil && !json.Valid([]byte(obj)) {
				t.Fatalf("parseRequest accepted invalid JSON %q", obj)
			}
			if err == nil && r.name != "" {
				// Malformed arguments are an answer, not a failure.
				if n, err := resources.FromQMP(r.name, r.args, "/", nil); err == nil && n.Set == nil {
					t.Fatalf("resources.FromQMP(%s) returned no set", r.name)
				}
			}
		}
	})
}
