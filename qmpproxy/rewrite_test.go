package qmpproxy

import (
	"slices"
	"strings"
	"testing"
)

func TestRewrite(t *testing.T) {
	const dir = "/run/kfv-x"
	base := []string{"-machine", "q35", "-nodefaults"}
	tests := []struct {
		name string
		args []string
		// want is the rewritten arguments after base.
		want     []string
		monitors []Monitor
	}{
		{
			name: "qmp unix path",
			args: []string{"-qmp", "unix:/run/vm.sock,server=on,wait=off"},
			want: []string{"-qmp", "unix:/run/kfv-x/mon0.sock,server=on,wait=off"},
			monitors: []Monitor{{Option: "-qmp unix:/run/vm.sock,server=on,wait=off", Mode: "control", Path: "/run/vm.sock", FD: -1,
				Private: "/run/kfv-x/mon0.sock"}},
		},
		{
			name: "qmp-pretty, deprecated server,nowait, path= form",
			args: []string{"--qmp-pretty", "unix:path=/run/vm.sock,server,nowait"},
			want: []string{"--qmp-pretty", "unix:/run/kfv-x/mon0.sock,server,nowait"},
			monitors: []Monitor{{Option: "--qmp-pretty unix:path=/run/vm.sock,server,nowait", Mode: "control", Path: "/run/vm.sock", FD: -1,
				Private: "/run/kfv-x/mon0.sock"}},
		},
		{
			name: "qmp abstract socket",
			args: []string{"-qmp", "unix:vm-mon,abstract=on,server=on,wait=off"},
			want: []string{"-qmp", "unix:/run/kfv-x/mon0.sock,server=on,wait=off"},
			monitors: []Monitor{{Option: "-qmp unix:vm-mon,abstract=on,server=on,wait=off", Mode: "control", Path: "@vm-mon", FD: -1,
				Private: "/run/kfv-x/mon0.sock"}},
		},
		{
			name: "qmp path with a comma",
			args: []string{"-qmp", "unix:/run/a,,b.sock,server=on"},
			want: []string{"-qmp", "unix:/run/kfv-x/mon0.sock,server=on"},
			monitors: []Monitor{{Option: "-qmp unix:/run/a,,b.sock,server=on", Mode: "control", Path: "/run/a,b.sock", FD: -1,
				Private: "/run/kfv-x/mon0.sock"}},
		},
		{
			name: "chardev and mon",
			args: []string{"-chardev", "socket,id=m,path=/run/vm.sock,server=on,wait=off", "-mon", "chardev=m,mode=control"},
			want: []string{"-chardev", "socket,id=m,server=on,wait=off,path=/run/kfv-x/mon0.sock", "-mon", "chardev=m,mode=control"},
			monitors: []Monitor{{Option: "-chardev socket,id=m,path=/run/vm.sock,server=on,wait=off (-mon chardev=m,mode=control)",
				ID: "m", Mode: "control", Path: "/run/vm.sock", FD: -1, Private: "/run/kfv-x/mon0.sock"}},
		},
		{
			name: "libvirt: inherited listening fd",
			args: []string{"-chardev", "socket,id=charmonitor,fd=23,server=on,wait=off", "-mon", "chardev=charmonitor,id=monitor,mode=control"},
			want: []string{"-chardev", "socket,id=charmonitor,server=on,wait=off,path=/run/kfv-x/mon0.sock", "-mon", "chardev=charmonitor,id=monitor,mode=control"},
			monitors: []Monitor{{Option: "-chardev socket,id=charmonitor,fd=23,server=on,wait=off (-mon chardev=charmonitor,id=monitor,mode=control)",
				ID: "charmonitor", Mode: "control", FD: 23, Private: "/run/kfv-x/mon0.sock"}},
		},
		{
			name: "qmp chardev:ID, chardev defined after",
			args: []string{"-qmp", "chardev:m", "-chardev", "socket,path=/run/vm.sock,id=m,server=on"},
			want: []string{"-qmp", "chardev:m", "-chardev", "socket,id=m,server=on,path=/run/kfv-x/mon0.sock"},
			monitors: []Monitor{{Option: "-chardev socket,path=/run/vm.sock,id=m,server=on (-qmp chardev:m)",
				ID: "m", Mode: "control", Path: "/run/vm.sock", FD: -1, Private: "/run/kfv-x/mon0.sock"}},
		},
		{
			name: "HMP monitors are left alone",
			args: []string{"-monitor", "unix:/run/hmp.sock,server=on,wait=off",
				"-chardev", "socket,id=h,path=/run/hmp2.sock,server=on", "-mon", "chardev=h"},
			want: []string{"-monitor", "unix:/run/hmp.sock,server=on,wait=off",
				"-chardev", "socket,id=h,path=/run/hmp2.sock,server=on", "-mon", "chardev=h"},
			monitors: []Monitor{
				{Option: "-monitor unix:/run/hmp.sock,server=on,wait=off", Mode: "readline", Path: "/run/hmp.sock", FD: -1, Skip: "HMP monitor"},
				{Option: "-chardev socket,id=h,path=/run/hmp2.sock,server=on (-mon chardev=h)", ID: "h", Mode: "readline", Path: "/run/hmp2.sock", FD: -1, Skip: "HMP monitor"},
			},
		},
		{
			name: "client mode, tcp, tls, mux are left alone",
			args: []string{"-qmp", "unix:/run/mgr.sock", "-qmp", "tcp:127.0.0.1:4444,server=on,wait=off",
				"-object", "tls-creds-x509,id=tls0,dir=/etc/pki/qemu,endpoint=server",
				"-chardev", "socket,id=t,path=/run/tls.sock,server=on,tls-creds=tls0", "-mon", "chardev=t,mode=control",
				"-monitor", "mon:stdio"},
			want: []string{"-qmp", "unix:/run/mgr.sock", "-qmp", "tcp:127.0.0.1:4444,server=on,wait=off",
				"-object", "tls-creds-x509,id=tls0,dir=/etc/pki/qemu,endpoint=server",
				"-chardev", "socket,id=t,path=/run/tls.sock,server=on,tls-creds=tls0", "-mon", "chardev=t,mode=control",
				"-monitor", "mon:stdio"},
			monitors: []Monitor{
				{Option: "-qmp unix:/run/mgr.sock", Mode: "control", Path: "/run/mgr.sock", FD: -1, Skip: "QEMU connects out"},
				{Option: "-qmp tcp:127.0.0.1:4444,server=on,wait=off", Mode: "control", FD: -1, Skip: "not a unix socket"},
				{Option: "-monitor mon:stdio", Mode: "readline", FD: -1, Skip: "multiplexed"},
				{Option: "-chardev socket,id=t,path=/run/tls.sock,server=on,tls-creds=tls0 (-mon chardev=t,mode=control)", ID: "t", Mode: "control", Path: "/run/tls.sock", FD: -1, Skip: "tls-creds"},
			},
		},
		{
			name: "not sockets: nothing listed",
			args: []string{"-qmp", "stdio", "-monitor", "none", "-chardev", "pty,id=p", "-mon", "chardev=p,mode=control"},
			want: []string{"-qmp", "stdio", "-monitor", "none", "-chardev", "pty,id=p", "-mon", "chardev=p,mode=control"},
		},
		{
			name: "values that look like options are values",
			args: []string{"-append", "-qmp unix:/x,server=on", "-name", "-qmp", "-snapshot", "-qmp", "unix:/run/a.sock,server=on,wait=off"},
			want: []string{"-append", "-qmp unix:/x,server=on", "-name", "-qmp", "-snapshot", "-qmp", "unix:/run/kfv-x/mon0.sock,server=on,wait=off"},
			monitors: []Monitor{{Option: "-qmp unix:/run/a.sock,server=on,wait=off", Mode: "control", Path: "/run/a.sock", FD: -1,
				Private: "/run/kfv-x/mon0.sock"}},
		},
		{
			name: "two monitors, two private sockets",
			args: []string{"-qmp", "unix:/run/a.sock,server=on,wait=off", "-chardev", "socket,id=m,fd=5,server=on", "-mon", "m,mode=control"},
			want: []string{"-qmp", "unix:/run/kfv-x/mon0.sock,server=on,wait=off", "-chardev", "socket,id=m,server=on,path=/run/kfv-x/mon1.sock", "-mon", "m,mode=control"},
			monitors: []Monitor{
				{Option: "-qmp unix:/run/a.sock,server=on,wait=off", Mode: "control", Path: "/run/a.sock", FD: -1, Private: "/run/kfv-x/mon0.sock"},
				{Option: "-chardev socket,id=m,fd=5,server=on (-mon m,mode=control)", ID: "m", Mode: "control", FD: 5, Private: "/run/kfv-x/mon1.sock"},
			},
		},
		{
			name:     "mon names an undefined chardev",
			args:     []string{"-mon", "chardev=nope,mode=control"},
			want:     []string{"-mon", "chardev=nope,mode=control"},
			monitors: []Monitor{{Option: "-mon chardev=nope,mode=control", ID: "nope", Mode: "control", FD: -1, Skip: "not defined"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append(slices.Clone(base), tc.args...)
			orig := slices.Clone(args)
			got, mons, err := Rewrite(args, dir)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(args, orig) {
				t.Errorf("Rewrite modified its input: %q", args)
			}
			if want := append(slices.Clone(base), tc.want...); !slices.Equal(got, want) {
				t.Errorf("args\n got %q\nwant %q", got, want)
			}
			if len(mons) != len(tc.monitors) {
				t.Fatalf("monitors %+v, want %+v", mons, tc.monitors)
			}
			for i, w := range tc.monitors {
				g := mons[i]
				if !strings.Contains(g.Skip, w.Skip) || (w.Skip == "") != (g.Skip == "") {
					t.Errorf("monitor %d: skip %q, want %q", i, g.Skip, w.Skip)
				}
				if g.Proxied() != (g.Private != "") {
					t.Errorf("monitor %d: Proxied %v with private %q", i, g.Proxied(), g.Private)
				}
				g.Skip, w.Skip = "", ""
				if g != w {
					t.Errorf("monitor %d\n got %+v\nwant %+v", i, g, w)
				}
			}
		})
	}
}

func TestRewriteLongPrivateDir(t *testing.T) {
	dir := "/" + strings.Repeat("d", 110)
	if _, _, err := Rewrite([]string{"-qmp", "unix:/run/a.sock,server=on"}, dir); err == nil {
		t.Error("a private socket path longer than sun_path was accepted")
	}
}
