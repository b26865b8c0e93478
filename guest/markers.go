package guest

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// Markers is what the Linux guest's /init reported on the console.
type Markers struct {
	Booted   bool
	BootedMS int               // kernel uptime when /init started
	Workload string            // from KFV-RESULT
	Status   string            // "ok" or "fail"
	Result   map[string]string // every key=value of KFV-RESULT
	Done     bool
	Warnings []string // KFV-WARN lines
}

// ParseMarkers extracts the KFV-* lines from serial console output.
// Kernel messages may share the console, so a marker is recognised
// anywhere in a line.
func ParseMarkers(out []byte) (Markers, error) {
	var m Markers
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		switch {
		case strings.Contains(line, "KFV-BOOTED "):
			f := fields(line[strings.Index(line, "KFV-BOOTED ")+len("KFV-BOOTED "):])
			ms, err := strconv.Atoi(f["ms"])
			if err != nil {
				return m, fmt.Errorf("parse KFV-BOOTED line %q: %w", line, err)
			}
			m.Booted, m.BootedMS = true, ms
		case strings.Contains(line, "KFV-RESULT "):
			m.Result = fields(line[strings.Index(line, "KFV-RESULT ")+len("KFV-RESULT "):])
			m.Workload, m.Status = m.Result["workload"], m.Result["status"]
		case strings.Contains(line, "KFV-DONE"):
			m.Done = true
		case strings.Contains(line, "KFV-WARN "):
			m.Warnings = append(m.Warnings, line[strings.Index(line, "KFV-WARN ")+len("KFV-WARN "):])
		}
	}
	if err := sc.Err(); err != nil {
		return m, fmt.Errorf("read console output: %w", err)
	}
	return m, nil
}

func fields(s string) map[string]string {
	f := make(map[string]string)
	for _, w := range strings.Fields(s) {
		if k, v, ok := strings.Cut(w, "="); ok {
			f[k] = v
		}
	}
	return f
}
