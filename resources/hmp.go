package resources

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// hmp handles the command line of human-monitor-command, as QEMU 7.2's
// HMP parses it (monitor/hmp.c): a command name, then arguments, each a
// word or a double-quoted string, flags ("-f") where the command has
// them. Commands that name nothing on the host, or that kfv does not
// know, are only scanned for words that look like paths.
func (x *extractor) hmp(line string) error {
	words, err := hmpWords(line)
	if err != nil {
		return err
	}
	if len(words) == 0 {
		return nil
	}
	cmd, args := words[0], words[1:]
	x.origin = "HMP " + cmd
	// pos returns the n-th argument that is not a flag; flags with a
	// value (the set given) take the next word.
	pos := func(n int, valued ...string) string {
		for i := 0; i < len(args); i++ {
			a := args[i]
			if strings.HasPrefix(a, "-") && len(a) > 1 {
				for _, v := range valued {
					if a == v {
						i++
					}
				}
				continue
			}
			if n == 0 {
				return a
			}
			n--
		}
		return ""
	}
	switch cmd {
	case "drive_add":
		// drive_add [-n] [[DOMAIN:]BUS:]SLOT OPTS
		if opts := pos(1); opts != "" {
			return x.option("-drive", opts)
		}
	case "change":
		// change DEVICE [-f] TARGET [FORMAT [READ-ONLY-MODE]]
		dev := pos(0)
		if dev == "vnc" {
			return nil // change vnc password|…
		}
		return x.medium(pos(1), pos(2), pos(3))
	case "netdev_add":
		return x.option("-netdev", pos(0))
	case "device_add":
		return x.option("-device", pos(0))
	case "object_add":
		return x.option("-object", pos(0))
	case "chardev-add":
		return x.option("-chardev", pos(0))
	case "chardev-change":
		// chardev-change ID ARGS: ARGS is the backend without an id.
		if v := pos(1); v != "" {
			return x.option("-chardev", v+",id="+EscapeOpt(pos(0)))
		}
	case "migrate":
		if uri := pos(0); uri != "" {
			return x.migrateURI(uri, false)
		}
	case "migrate_incoming":
		if uri := pos(0); uri != "" {
			return x.migrateURI(uri, true)
		}
	case "screendump":
		// screendump FILENAME [-f FORMAT] [DEVICE [HEAD]]
		x.file(pos(0, "-f"), Create, "filename")
	case "dump-guest-memory":
		// dump-guest-memory [-p] [-d] [-z|-l|-s|-w] [-R] FILENAME [BEGIN LENGTH]
		x.file(pos(0), Create, "filename")
	case "memsave", "pmemsave":
		// memsave ADDR SIZE FILENAME
		x.file(pos(2), Create, "filename")
	case "logfile":
		x.file(pos(0), Create, "filename")
	case "drive_mirror", "drive_backup", "snapshot_blkdev":
		// drive_mirror [-n] [-f] DEVICE TARGET [FORMAT] (drive_backup
		// alike), snapshot_blkdev [-n] DEVICE [SNAPSHOT-FILE [FORMAT]]:
		// -n reuses the image as it is.
		mode, key := "", "target"
		if slices.Contains(args, "-n") {
			mode = "existing"
		}
		if cmd == "snapshot_blkdev" {
			key = "snapshot-file"
		}
		x.newImage(pos(1), mode, key)
	case "qemu-io":
		x.n.Set.warnf("HMP qemu-io: qemu-io commands (open) can name files kfv does not list")
	default:
		for _, w := range args {
			if pathLike(w, monitorPathPrefixes) || strings.Contains(w, "=/") || strings.Contains(w, "=./") {
				x.n.Set.warnf("HMP %s: %q looks like a path, but kfv does not know what QEMU does with it; not in the set", cmd, w)
			}
		}
	}
	return nil
}

// hmpWords splits an HMP command line into words as QEMU's get_str does:
// words end at whitespace; a word starting with a double quote runs to
// the closing quote, with \n, \r, \\, \' and \" escapes.
func hmpWords(line string) ([]string, error) {
	var out []string
	i := 0
	for {
		for i < len(line) && (line[i] == ' ' || line[i] == '\t' || line[i] == '\n' || line[i] == '\r') {
			i++
		}
		if i == len(line) {
			return out, nil
		}
		var w strings.Builder
		if line[i] == '"' {
			i++
			for {
				if i == len(line) {
					return nil, errors.New("HMP: unterminated string")
				}
				c := line[i]
				if c == '"' {
					i++
					break
				}
				if c == '\\' {
					i++
					if i == len(line) {
						return nil, errors.New("HMP: unterminated string")
					}
					switch line[i] {
					case 'n':
						c = '\n'
					case 'r':
						c = '\r'
					case '\\', '\'', '"':
						c = line[i]
					default:
						return nil, fmt.Errorf("HMP: unsupported escape \\%c", line[i])
					}
				}
				w.WriteByte(c)
				i++
			}
		} else {
			for i < len(line) && line[i] != ' ' && line[i] != '\t' && line[i] != '\n' && line[i] != '\r' {
				w.WriteByte(line[i])
				i++
			}
		}
		out = append(out, w.String())
	}
}
