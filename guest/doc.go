// Package guest builds the guests kfv's integration tests and demos boot
// under QEMU: tiny raw-code guests assembled here, and a Linux guest made
// from Debian's kernel and busybox packages. The command mkguests builds
// them into a cache directory (`make guests`).
//
// # Raw-code guests
//
// BuildRaw writes a 64 KiB image that QEMU maps as its -bios ROM (QEMU
// wants a multiple of 64 KiB; the top 128 KiB of the ROM also appear at
// 0xE0000-0xFFFFF). The CPU starts in real mode at F000:FFF0; a far jump
// there enters the code at F000:0000. The code is hand-assembled 16-bit
// x86 (asm.go, each instruction's bytes beside its mnemonic), so building
// it needs no toolchain and the image is byte-for-byte reproducible;
// TestRawDisassembly checks it against objdump when binutils is present.
//
//   - hello (RawOptions{ExitCode: N}): prints "KFV-RAW hello\n" on COM1
//     and writes N to isa-debug-exit at port 0xf4; QEMU exits with status
//     (N<<1)|1 (RawExitStatus).
//   - loop (RawOptions{Loop: true}): programs the 8259 PIC and the 8254
//     PIT (18.2 Hz), prints "KFV-RAW loop\n", then halts with interrupts
//     on, printing "KFV-RAW tick NNNN\n" (hex) about once a second; with
//     ExitAfter it leaves through isa-debug-exit after that many lines.
//     Use it to talk to QEMU over QMP while the guest runs.
//
// RawArgs gives the command line: -machine q35, -m 16, -nodefaults,
// -bios, isa-debug-exit, -serial stdio. What works here, measured on a
// 2-core AMD EPYC host whose /dev/kvm is kvm_pvm (paravirtual KVM):
//
//   - Real mode from the reset vector works under both accelerators, and
//     both -machine q35 and pc work; RawArgs uses q35 like the Linux guest.
//   - KVM: the default CPU (qemu64) works but warns that the host lacks
//     CPUID.01H:ECX.pni; -cpu host and -cpu max abort QEMU ("failed to set
//     MSR 0x10a", IA32_ARCH_CAPABILITIES). -cpu host,-arch-capabilities
//     works and is what RawArgs uses.
//   - TCG: any CPU runs the hello guest. The loop guest needs -cpu
//     max,-apic: with a local APIC, LINT0 is masked from reset (firmware
//     would set it to ExtINT) and TCG drops the PIC's interrupts. Under
//     KVM's in-kernel APIC, clearing the APIC's global enable bit (the
//     guest does so with wrmsr) lets the PIC through instead.
//   - QEMU start to exit of the hello guest: about 30 ms under TCG and
//     55 ms under KVM (mean of 10 runs; KVM pays for creating the VM).
//     The loop guest with ExitAfter 3 and 2 ticks per line: 0.36 s TCG,
//     0.41 s KVM, i.e. the PIT runs at real speed under both.
//
// # Linux guest
//
// BuildLinux asks apt which kernel linux-image-amd64 depends on now
// (Debian 12: linux-image-6.1.0-NN-amd64) and which busybox-static it
// would install, fetches both with "apt-get download" and unpacks them
// with "dpkg-deb -x". Debian 12's kernel has every virtio driver as a
// module (see LinuxModules). The package ships no modules.dep (depmod
// writes it at install time), so the builder reads each module's
// .modinfo "depends=" (what depmod records), writes a modules.dep for
// the modules it packs, and /init insmods them in dependency order:
// virtio_ring, virtio, virtio_pci_legacy_dev, virtio_pci_modern_dev,
// virtio_pci, virtio_blk, failover, net_failover, virtio_net,
// virtio_console, virtio-rng. The initramfs (newc cpio, gzip) is written
// in Go (cpio.go): reproducible, and /dev/console needs no root.
//
// The kernel is booted as the uncompressed vmlinux through its PVH entry
// (CONFIG_PVH=y) when xz(1) can unpack it from the bzImage: under TCG the
// bzImage's own xz decompression took 4 s before the first kernel
// message. QEMU start to poweroff with the boot workload: 3.0-3.4 s
// (kernel reaches /init at 2.3-2.7 s) versus 6.6 s with the bzImage.
// q35 and pc, -cpu max and qemu64, qboot and SeaBIOS, -smp 1 and 2 were
// all within noise (6.5-7.4 s with the bzImage); LinuxArgs uses q35,
// -cpu max, -smp 1, -m 256.
//
// Under kvm_pvm a stock kernel does not boot: the bzImage stops after
// "Probing EDD" (the real-mode setup and decompressor), and the PVH
// vmlinux crawls (20 s to reach memory setup, against well under a second
// under TCG) until QEMU reports "KVM internal error. Suberror: 1,
// emulation failure" on a lock cmpxchg16b in the slab allocator. So
// LinuxAccel defaults to TCG; KFV_LINUX_ACCEL=kvm selects KVM on hosts
// with a real one.
//
// /init (init.sh) reads kfv.workload and its parameters from the kernel
// command line and prints KFV-BOOTED, KFV-RESULT and KFV-DONE lines
// (ParseMarkers); see init.sh for the workloads. For the net workload the
// guest's busybox nc reports success even when the host side closed
// early, so the host must check the byte count and sha256 it received.
//
// The cache directory holds linux-KEY/ (vmlinux, vmlinuz, initrd.gz,
// manifest.json) and debs/. KEY hashes the init script, LinuxModules, the
// chosen package versions and whether xz was available; a new key
// rebuilds and removes older linux-* entries.
//
// Building needs apt-get, apt-cache and dpkg-deb, plus xz for the fast
// kernel; running needs qemu-system-x86 (and qemu-utils for qcow2).
// EnsureTools installs missing packages as root ("apt-get update" once,
// then "apt-get install -y"); otherwise errors name the package and wrap
// ErrNeedRoot.
package guest
