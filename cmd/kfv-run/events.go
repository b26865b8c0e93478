package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"kfv/event"
)

var eventsCommand = &cli.Command{
	Name:      "events",
	Usage:     "render an event stream for people: counts per layer and resource, then the timeline of denials, findings, reactions (with the chain of findings behind each) and lifecycle steps",
	ArgsUsage: "FILE|-",
	Flags: []cli.Flag{
		&cli.BoolFlag{Name: "all", Usage: "list every decision in the timeline, not only denials"},
	},
	Action: func(c *cli.Context) error {
		if c.NArg() != 1 {
			return cli.Exit("usage: kfv-run events FILE|-", 2)
		}
		var in io.Reader = os.Stdin
		if name := c.Args().First(); name != "-" {
			f, err := os.Open(name)
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			defer f.Close()
			in = f
		}
		return renderEvents(c.App.Writer, in, c.Bool("all"))
	},
}

func renderEvents(w io.Writer, in io.Reader, all bool) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	type key struct{ layer, hrsc, verdict string }
	counts := map[key]int{}
	var timeline []event.Event
	line := 0
	for sc.Scan() {
		line++
		var e event.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return cli.Exit(fmt.Sprintf("line %d: not an event: %v", line, err), 1)
		}
		switch e.Kind {
		case event.KindDecision:
			counts[key{e.Layer, e.HRSC, e.Verdict}]++
			if !all && e.Verdict != "deny" {
				continue
			}
		case event.KindFolded:
			counts[key{e.Layer, e.HRSC, e.Verdict}] += e.Count
			if !all && e.Verdict != "deny" {
				continue
			}
		}
		timeline = append(timeline, e)
	}
	if err := sc.Err(); err != nil {
		return cli.Exit(fmt.Sprintf("read events: %v", err), 1)
	}
	keys := make([]key, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.layer != b.layer {
			return a.layer < b.layer
		}
		if a.hrsc != b.hrsc {
			return a.hrsc < b.hrsc
		}
		return a.verdict < b.verdict
	})
	fmt.Fprintln(w, "Decisions per layer and resource:")
	if len(keys) == 0 {
		fmt.Fprintln(w, "  (none)")
	}
	for _, k := range keys {
		fmt.Fprintf(w, "  %-3s %-16s %-6s %d\n", orDash(k.layer), orDash(k.hrsc), k.verdict, counts[k])
	}
	fmt.Fprintln(w, "\nTimeline:")
	for _, e := range timeline {
		renderEvent(w, "  ", &e)
	}
	return nil
}

// renderEvent writes one event for people, each line after indent.
func renderEvent(w io.Writer, indent string, e *event.Event) {
	ts := e.Time.Format("15:04:05.000")
	switch e.Kind {
	case event.KindDecision:
		verdict := strings.ToUpper(e.Verdict)
		if e.Errno != "" {
			verdict += " " + e.Errno
		}
		if e.Applied != e.Verdict {
			verdict += " (audit: " + e.Applied + ")"
		}
		fmt.Fprintf(w, "%s%s %-10s %s %s by thread %q (%s): %s [rule %s]\n", indent, ts, verdict, orDash(e.Layer), e.Syscall, e.Thread, orDash(e.HRSC), e.Args, e.Rule)
		if e.Detail != "" {
			fmt.Fprintf(w, "%s%12s   why: %s\n", indent, "", e.Detail)
		}
	case event.KindFolded:
		verdict := strings.ToUpper(e.Verdict)
		if e.Errno != "" {
			verdict += " " + e.Errno
		}
		fmt.Fprintf(w, "%s%s %-10s %d more: %s %s (%s) [rule %s], %s to %s, not written one by one\n", indent, ts, verdict, e.Count, orDash(e.Layer), e.Syscall, orDash(e.HRSC), e.Rule, clock(e.First), clock(e.Last))
	case event.KindFinding:
		fmt.Fprintf(w, "%s%s %-10s %s %s/%s on %s %s [%s, rule %s]: %s\n", indent, ts, "FINDING", strings.ToUpper(e.Severity), orDash(e.Layer), orDash(e.HRSC), e.Detector, orDash(e.Syscall), e.Source, orDash(e.Rule), e.Detail)
	case event.KindReaction:
		fmt.Fprintf(w, "%s%s %-10s %s by rule %s: %s", indent, ts, "REACTION", e.Reaction, e.Rule, e.ReactionOutcome())
		if e.Detail != "" {
			fmt.Fprintf(w, " (%s)", e.Detail)
		}
		fmt.Fprintln(w)
		for i, l := range e.Chain {
			fmt.Fprintf(w, "%s%12s   %d. %s %s %s/%s %s %s by rule %s at %s\n", indent, "", i+1, strings.ToUpper(l.Severity), l.Detector, orDash(l.Layer), orDash(l.HRSC), orDash(l.Syscall), orDash(strconv.Itoa(l.TID)), orDash(l.Rule), l.Time.Format("15:04:05.000"))
		}
	default:
		fmt.Fprintf(w, "%s%s %-10s %s\n", indent, ts, strings.ToUpper(e.Kind), e.Detail)
	}
}

// clock shows an RFC 3339 time of a folded line as the timeline does.
func clock(s string) string {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return orDash(s)
	}
	return t.Format("15:04:05.000")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
