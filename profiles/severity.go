package profiles

import (
	"fmt"
	"strings"
)

// Severity grades a finding: how sure kfv is that a call or an
// observation is an attack, and how bad it would be.
type Severity int

const (
	SevLow Severity = iota + 1
	SevMedium
	SevHigh
	SevCritical
)

var severities = enum[Severity]{what: "severity", names: []string{SevLow: "low", SevMedium: "medium", SevHigh: "high", SevCritical: "critical"}}

func (s Severity) String() string { return severities.name(s) }

// ParseSeverity reads a severity name: low, medium, high or critical.
func ParseSeverity(s string) (Severity, error) { return severities.parse(s) }

// CmpOp compares a severity with a bound.
type CmpOp int

const (
	CmpEq CmpOp = iota + 1
	CmpGe
	CmpGt
	CmpLe
	CmpLt
)

var cmpNames = [...]string{CmpEq: "", CmpGe: ">=", CmpGt: ">", CmpLe: "<=", CmpLt: "<"}

// SeverityMatch is a condition on a severity: "high" (exactly),
// ">=high", ">medium", "<=medium", "<high". The zero value matches every
// severity.
type SeverityMatch struct {
	Op  CmpOp
	Sev Severity
}

// ParseSeverityMatch reads a severity condition. An exact match may also
// be written "==high".
func ParseSeverityMatch(s string) (SeverityMatch, error) {
	t := strings.TrimSpace(s)
	op := CmpEq
	// Longest operators first.
	for _, c := range []struct {
		text string
		op   CmpOp
	}{{">=", CmpGe}, {"<=", CmpLe}, {"==", CmpEq}, {">", CmpGt}, {"<", CmpLt}} {
		if rest, ok := strings.CutPrefix(t, c.text); ok {
			op, t = c.op, strings.TrimSpace(rest)
			break
		}
	}
	sev, err := ParseSeverity(t)
	if err != nil {
		return SeverityMatch{}, fmt.Errorf("severity condition %q: want a severity (%s), optionally after >=, >, <=, < or ==", s, strings.Join(severities.list(), ", "))
	}
	m := SeverityMatch{Op: op, Sev: sev}
	if m.never() {
		return SeverityMatch{}, fmt.Errorf("severity condition %q can never hold", s)
	}
	return m, nil
}

// never reports conditions no severity meets ("<low", ">critical").
func (m SeverityMatch) never() bool {
	return (m.Op == CmpLt && m.Sev == SevLow) || (m.Op == CmpGt && m.Sev == SevCritical)
}

// Match reports whether s meets the condition.
func (m SeverityMatch) Match(s Severity) bool {
	switch m.Op {
	case 0:
		return true
	case CmpEq:
		return s == m.Sev
	case CmpGe:
		return s >= m.Sev
	case CmpGt:
		return s > m.Sev
	case CmpLe:
		return s <= m.Sev
	case CmpLt:
		return s < m.Sev
	}
	return false
}

func (m SeverityMatch) String() string {
	if m.Op == 0 {
		return "any"
	}
	if m.Op < CmpEq || m.Op > CmpLt {
		return fmt.Sprintf("SeverityMatch(%d %s)", int(m.Op), m.Sev)
	}
	return cmpNames[m.Op] + m.Sev.String()
}
