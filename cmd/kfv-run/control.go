package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"kfv/supervisor"
)

// The commands that talk to running supervisors through their control
// sockets (supervisor/control_linux.go).

var statusCommand = &cli.Command{
	Name:      "status",
	Usage:     "list the VMs supervised on this host: name, supervisor and QEMU pids, kfv version, profile",
	ArgsUsage: " ",
	Action: func(c *cli.Context) error {
		if c.NArg() > 0 {
			return cli.Exit("kfv-run status takes no arguments", 2)
		}
		vms := supervised()
		w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "VM\tSUPERVISOR\tQEMU\tVERSION\tPROFILE")
		for _, v := range vms {
			fmt.Fprintf(w, "%s\t%d\t%d\t%s\t%s\n", v.VM, v.PID, v.QEMUPID, v.Version, v.Profile)
		}
		return w.Flush()
	},
}

var reloadCommand = &cli.Command{
	Name:      "reload",
	Usage:     "apply a running VM's profile (and overlay) as they are on disk now: its verdict rules, detectors and ladder; a change the kernel filter or the Landlock wall would need is refused",
	ArgsUsage: "VM|PID",
	Description: "VM is the VM's name (-name, the domain's under libvirt); PID is QEMU's or its supervisor's. " +
		"A profile that does not load, or that changes what QEMU's seccomp filter allows or sends to kfv, leaves the running policy in force and exits 1. " +
		"The event stream says what was applied (a lifecycle event) or refused (an error event).",
	Action: func(c *cli.Context) error {
		if c.NArg() != 1 {
			return cli.Exit("usage: kfv-run reload VM|PID", 2)
		}
		v, err := findSupervised(c.Args().First())
		if err != nil {
			return cli.Exit(err.Error(), 1)
		}
		r, err := ask(v.socket, "reload")
		if err != nil {
			return cli.Exit(fmt.Sprintf("VM %s (supervisor %d): %v", v.VM, v.PID, err), 1)
		}
		if !r.OK {
			return cli.Exit(fmt.Sprintf("VM %s: %s", v.VM, r.Detail), 1)
		}
		fmt.Fprintf(c.App.Writer, "VM %s: %s\n", v.VM, r.Detail)
		return nil
	},
}

// supervisedVM is one supervisor's answer to status, and its socket.
type supervisedVM struct {
	supervisor.ControlReply
	socket string
}

// supervised asks every control socket kfv-run can reach who it is;
// sockets nobody answers on are a dead supervisor's and are skipped.
func supervised() []supervisedVM {
	var out []supervisedVM
	for _, dir := range supervisor.ControlDirs() {
		socks, _ := filepath.Glob(filepath.Join(dir, "*.sock"))
		for _, s := range socks {
			r, err := ask(s, "status")
			if err != nil || !r.OK {
				continue
			}
			out = append(out, supervisedVM{ControlReply: *r, socket: s})
		}
	}
	return out
}

// findSupervised finds the one supervisor of target: a VM name, or a pid
// of QEMU or of its supervisor.
func findSupervised(target string) (supervisedVM, error) {
	vms := supervised()
	pid, err := strconv.Atoi(target)
	isPID := err == nil && pid > 0
	var match []supervisedVM
	for _, v := range vms {
		if v.VM == target || isPID && (v.PID == pid || v.QEMUPID == pid) {
			match = append(match, v)
		}
	}
	switch len(match) {
	case 1:
		return match[0], nil
	case 0:
		var names []string
		for _, v := range vms {
			names = append(names, fmt.Sprintf("%s (QEMU %d)", v.VM, v.QEMUPID))
		}
		if len(names) == 0 {
			return supervisedVM{}, fmt.Errorf("no VM %q: no supervisor answers in %s (run as the supervisors' user, or root)", target, strings.Join(supervisor.ControlDirs(), ", "))
		}
		return supervisedVM{}, fmt.Errorf("no VM %q among the supervised: %s", target, strings.Join(names, ", "))
	}
	var pids []string
	for _, v := range match {
		pids = append(pids, fmt.Sprintf("QEMU %d (supervisor %d)", v.QEMUPID, v.PID))
	}
	return supervisedVM{}, fmt.Errorf("%d VMs are named %q: %s; name one by its pid", len(match), target, strings.Join(pids, ", "))
}

// ask sends op to the supervisor on socket and returns its answer.
func ask(socket, op string) (*supervisor.ControlReply, error) {
	conn, err := net.DialTimeout("unix", socket, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(40 * time.Second))
	b, _ := json.Marshal(supervisor.ControlRequest{Op: op})
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, errors.New("no answer")
		}
		return nil, fmt.Errorf("read the answer: %w", err)
	}
	var r supervisor.ControlReply
	if err := json.Unmarshal(line, &r); err != nil {
		return nil, fmt.Errorf("answer %q: %w", line, err)
	}
	return &r, nil
}
