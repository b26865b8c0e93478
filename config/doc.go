// Package config reads kfv's system configuration, /etc/kfv/kfv.toml: the
// settings kfv uses when it runs as a libvirt domain's emulator
// (kfv-qemu-system-x86_64), where it takes no flags. See docs/libvirt.md.
package config
