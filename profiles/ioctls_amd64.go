package profiles

// Ioctl request numbers profiles may name in conditions on ioctl's second
// argument. Those the kernel headers build with _IO/_IOR/_IOW/_IOWR are
// written the same way here, with the size of the struct the header names
// (linux/kvm.h, vhost.h, vfio.h, if_tun.h, fs.h of Linux 6.1, which QEMU 7.2
// on Debian 12 is built against); the older terminal, socket and CD-ROM
// requests are plain numbers. TestIoctlsMatchKernelHeaders checks every
// value against the C headers when gcc is installed.
//
// The x86_64 encoding (asm-generic/ioctl.h): bits 0-7 number, 8-15 type,
// 16-29 argument size, 30-31 direction.

const (
	iocNone  = 0
	iocWrite = 1
	iocRead  = 2

	kvmIO    = 0xae // KVMIO
	vhostIO  = 0xaf // VHOST_VIRTIO
	vfioType = 0x3b // VFIO_TYPE, ';'
)

func ioc(dir, typ, nr, size int64) int64 { return dir<<30 | size<<16 | typ<<8 | nr }
func ioN(typ, nr int64) int64            { return ioc(iocNone, typ, nr, 0) }
func ioR(typ, nr, size int64) int64      { return ioc(iocRead, typ, nr, size) }
func ioW(typ, nr, size int64) int64      { return ioc(iocWrite, typ, nr, size) }
func ioWR(typ, nr, size int64) int64     { return ioc(iocRead|iocWrite, typ, nr, size) }

// ioN is _IO, ioR _IOR, ioW _IOW and ioWR _IOWR.

// ioctlTable maps ioctl request names to numbers, sorted by name.
var ioctlTable = []nameValue{
	{"BLKDISCARD", ioN(0x12, 0x77)},
	{"BLKDISCARDZEROES", ioN(0x12, 0x7c)},
	{"BLKFLSBUF", ioN(0x12, 0x61)},
	{"BLKGETSIZE", ioN(0x12, 0x60)},
	{"BLKGETSIZE64", ioR(0x12, 0x72, 8)}, // size_t
	{"BLKIOMIN", ioN(0x12, 0x78)},
	{"BLKIOOPT", ioN(0x12, 0x79)},
	{"BLKPBSZGET", ioN(0x12, 0x7b)},
	{"BLKROGET", ioN(0x12, 0x5e)},
	{"BLKRRPART", ioN(0x12, 0x5f)},
	{"BLKSECDISCARD", ioN(0x12, 0x7d)},
	{"BLKSSZGET", ioN(0x12, 0x68)},
	{"BLKZEROOUT", ioN(0x12, 0x7f)},
	{"CDROMCLOSETRAY", 0x5319},
	{"CDROMEJECT", 0x5309},
	{"CDROMREADTOCENTRY", 0x5306},
	{"CDROMREADTOCHDR", 0x5305},
	{"CDROM_DISC_STATUS", 0x5327},
	{"CDROM_DRIVE_STATUS", 0x5326},
	{"CDROM_GET_CAPABILITY", 0x5331},
	{"CDROM_LOCKDOOR", 0x5329},
	{"CDROM_MEDIA_CHANGED", 0x5325},
	{"CDROM_SELECT_SPEED", 0x5322},
	{"FIBMAP", ioN(0x0, 0x1)},
	{"FIGETBSZ", ioN(0x0, 0x2)},
	{"FIOASYNC", 0x5452},
	{"FIOCLEX", 0x5451},
	{"FIONBIO", 0x5421},
	{"FIONCLEX", 0x5450},
	{"FIONREAD", 0x541b},
	{"FS_IOC_FIEMAP", ioWR(0x66, 0xb, 32)}, // struct fiemap
	{"KVM_CHECK_EXTENSION", ioN(kvmIO, 0x3)},
	{"KVM_CLEAR_DIRTY_LOG", ioWR(kvmIO, 0xc0, 24)}, // struct kvm_clear_dirty_log
	{"KVM_CREATE_DEVICE", ioWR(kvmIO, 0xe0, 12)},   // struct kvm_create_device
	{"KVM_CREATE_IRQCHIP", ioN(kvmIO, 0x60)},
	{"KVM_CREATE_PIT2", ioW(kvmIO, 0x77, 64)}, // struct kvm_pit_config
	{"KVM_CREATE_VCPU", ioN(kvmIO, 0x41)},
	{"KVM_CREATE_VM", ioN(kvmIO, 0x1)},
	{"KVM_ENABLE_CAP", ioW(kvmIO, 0xa3, 104)}, // struct kvm_enable_cap
	{"KVM_GET_API_VERSION", ioN(kvmIO, 0x0)},
	{"KVM_GET_CLOCK", ioR(kvmIO, 0x7c, 48)},                 // struct kvm_clock_data
	{"KVM_GET_CPUID2", ioWR(kvmIO, 0x91, 8)},                // struct kvm_cpuid2
	{"KVM_GET_DEBUGREGS", ioR(kvmIO, 0xa1, 128)},            // struct kvm_debugregs
	{"KVM_GET_DEVICE_ATTR", ioW(kvmIO, 0xe2, 24)},           // struct kvm_device_attr
	{"KVM_GET_DIRTY_LOG", ioW(kvmIO, 0x42, 16)},             // struct kvm_dirty_log
	{"KVM_GET_EMULATED_CPUID", ioWR(kvmIO, 0x9, 8)},         // struct kvm_cpuid2
	{"KVM_GET_FPU", ioR(kvmIO, 0x8c, 416)},                  // struct kvm_fpu
	{"KVM_GET_IRQCHIP", ioWR(kvmIO, 0x62, 520)},             // struct kvm_irqchip
	{"KVM_GET_LAPIC", ioR(kvmIO, 0x8e, 1024)},               // struct kvm_lapic_state
	{"KVM_GET_MP_STATE", ioR(kvmIO, 0x98, 4)},               // struct kvm_mp_state
	{"KVM_GET_MSRS", ioWR(kvmIO, 0x88, 8)},                  // struct kvm_msrs
	{"KVM_GET_MSR_FEATURE_INDEX_LIST", ioWR(kvmIO, 0xa, 4)}, // struct kvm_msr_list
	{"KVM_GET_MSR_INDEX_LIST", ioWR(kvmIO, 0x2, 4)},         // struct kvm_msr_list
	{"KVM_GET_NESTED_STATE", ioWR(kvmIO, 0xbe, 128)},        // struct kvm_nested_state
	{"KVM_GET_ONE_REG", ioW(kvmIO, 0xab, 16)},               // struct kvm_one_reg
	{"KVM_GET_PIT", ioWR(kvmIO, 0x65, 72)},                  // struct kvm_pit_state
	{"KVM_GET_PIT2", ioR(kvmIO, 0x9f, 112)},                 // struct kvm_pit_state2
	{"KVM_GET_REGS", ioR(kvmIO, 0x81, 144)},                 // struct kvm_regs
	{"KVM_GET_REG_LIST", ioWR(kvmIO, 0xb0, 8)},              // struct kvm_reg_list
	{"KVM_GET_SREGS", ioR(kvmIO, 0x83, 312)},                // struct kvm_sregs
	{"KVM_GET_SREGS2", ioR(kvmIO, 0xcc, 320)},               // struct kvm_sregs2
	{"KVM_GET_STATS_FD", ioN(kvmIO, 0xce)},
	{"KVM_GET_SUPPORTED_CPUID", ioWR(kvmIO, 0x5, 8)},     // struct kvm_cpuid2
	{"KVM_GET_SUPPORTED_HV_CPUID", ioWR(kvmIO, 0xc1, 8)}, // struct kvm_cpuid2
	{"KVM_GET_TSC_KHZ", ioN(kvmIO, 0xa3)},
	{"KVM_GET_VCPU_EVENTS", ioR(kvmIO, 0x9f, 64)}, // struct kvm_vcpu_events
	{"KVM_GET_VCPU_MMAP_SIZE", ioN(kvmIO, 0x4)},
	{"KVM_GET_XCRS", ioR(kvmIO, 0xa6, 392)},       // struct kvm_xcrs
	{"KVM_GET_XSAVE", ioR(kvmIO, 0xa4, 4096)},     // struct kvm_xsave
	{"KVM_GET_XSAVE2", ioR(kvmIO, 0xcf, 4096)},    // struct kvm_xsave
	{"KVM_HAS_DEVICE_ATTR", ioW(kvmIO, 0xe3, 24)}, // struct kvm_device_attr
	{"KVM_HYPERV_EVENTFD", ioW(kvmIO, 0xbd, 24)},  // struct kvm_hyperv_eventfd
	{"KVM_INTERRUPT", ioW(kvmIO, 0x86, 4)},        // struct kvm_interrupt
	{"KVM_IOEVENTFD", ioW(kvmIO, 0x79, 64)},       // struct kvm_ioeventfd
	{"KVM_IRQFD", ioW(kvmIO, 0x76, 32)},           // struct kvm_irqfd
	{"KVM_IRQ_LINE", ioW(kvmIO, 0x61, 8)},         // struct kvm_irq_level
	{"KVM_IRQ_LINE_STATUS", ioWR(kvmIO, 0x67, 8)}, // struct kvm_irq_level
	{"KVM_KVMCLOCK_CTRL", ioN(kvmIO, 0xad)},
	{"KVM_MEMORY_ENCRYPT_OP", ioWR(kvmIO, 0xba, 8)}, // unsigned long
	{"KVM_NMI", ioN(kvmIO, 0x9a)},
	{"KVM_REGISTER_COALESCED_MMIO", ioW(kvmIO, 0x67, 16)}, // struct kvm_coalesced_mmio_zone
	{"KVM_REINJECT_CONTROL", ioN(kvmIO, 0x71)},
	{"KVM_RESET_DIRTY_RINGS", ioN(kvmIO, 0xc7)},
	{"KVM_RUN", ioN(kvmIO, 0x80)},
	{"KVM_SET_BOOT_CPU_ID", ioN(kvmIO, 0x78)},
	{"KVM_SET_CLOCK", ioW(kvmIO, 0x7b, 48)},            // struct kvm_clock_data
	{"KVM_SET_CPUID2", ioW(kvmIO, 0x90, 8)},            // struct kvm_cpuid2
	{"KVM_SET_DEBUGREGS", ioW(kvmIO, 0xa2, 128)},       // struct kvm_debugregs
	{"KVM_SET_DEVICE_ATTR", ioW(kvmIO, 0xe1, 24)},      // struct kvm_device_attr
	{"KVM_SET_FPU", ioW(kvmIO, 0x8d, 416)},             // struct kvm_fpu
	{"KVM_SET_GSI_ROUTING", ioW(kvmIO, 0x6a, 8)},       // struct kvm_irq_routing
	{"KVM_SET_GUEST_DEBUG", ioW(kvmIO, 0x9b, 72)},      // struct kvm_guest_debug
	{"KVM_SET_IDENTITY_MAP_ADDR", ioW(kvmIO, 0x48, 8)}, // __u64
	{"KVM_SET_IRQCHIP", ioR(kvmIO, 0x63, 520)},         // struct kvm_irqchip
	{"KVM_SET_LAPIC", ioW(kvmIO, 0x8f, 1024)},          // struct kvm_lapic_state
	{"KVM_SET_MP_STATE", ioW(kvmIO, 0x99, 4)},          // struct kvm_mp_state
	{"KVM_SET_MSRS", ioW(kvmIO, 0x89, 8)},              // struct kvm_msrs
	{"KVM_SET_NESTED_STATE", ioW(kvmIO, 0xbf, 128)},    // struct kvm_nested_state
	{"KVM_SET_ONE_REG", ioW(kvmIO, 0xac, 16)},          // struct kvm_one_reg
	{"KVM_SET_PIT", ioR(kvmIO, 0x66, 72)},              // struct kvm_pit_state
	{"KVM_SET_PIT2", ioW(kvmIO, 0xa0, 112)},            // struct kvm_pit_state2
	{"KVM_SET_PMU_EVENT_FILTER", ioW(kvmIO, 0xb2, 32)}, // struct kvm_pmu_event_filter
	{"KVM_SET_REGS", ioW(kvmIO, 0x82, 144)},            // struct kvm_regs
	{"KVM_SET_SIGNAL_MASK", ioW(kvmIO, 0x8b, 4)},       // struct kvm_signal_mask
	{"KVM_SET_SREGS", ioW(kvmIO, 0x84, 312)},           // struct kvm_sregs
	{"KVM_SET_SREGS2", ioW(kvmIO, 0xcd, 320)},          // struct kvm_sregs2
	{"KVM_SET_TSC_KHZ", ioN(kvmIO, 0xa2)},
	{"KVM_SET_TSS_ADDR", ioN(kvmIO, 0x47)},
	{"KVM_SET_USER_MEMORY_REGION", ioW(kvmIO, 0x46, 32)}, // struct kvm_userspace_memory_region
	{"KVM_SET_VAPIC_ADDR", ioW(kvmIO, 0x93, 8)},          // struct kvm_vapic_addr
	{"KVM_SET_VCPU_EVENTS", ioW(kvmIO, 0xa0, 64)},        // struct kvm_vcpu_events
	{"KVM_SET_XCRS", ioW(kvmIO, 0xa7, 392)},              // struct kvm_xcrs
	{"KVM_SET_XSAVE", ioW(kvmIO, 0xa5, 4096)},            // struct kvm_xsave
	{"KVM_SIGNAL_MSI", ioW(kvmIO, 0xa5, 32)},             // struct kvm_msi
	{"KVM_SMI", ioN(kvmIO, 0xb7)},
	{"KVM_TPR_ACCESS_REPORTING", ioWR(kvmIO, 0x92, 40)},     // struct kvm_tpr_access_ctl
	{"KVM_TRANSLATE", ioWR(kvmIO, 0x85, 24)},                // struct kvm_translation
	{"KVM_UNREGISTER_COALESCED_MMIO", ioW(kvmIO, 0x68, 16)}, // struct kvm_coalesced_mmio_zone
	{"KVM_X86_GET_MCE_CAP_SUPPORTED", ioR(kvmIO, 0x9d, 8)},  // __u64
	{"KVM_X86_SETUP_MCE", ioW(kvmIO, 0x9c, 8)},              // __u64
	{"KVM_X86_SET_MCE", ioW(kvmIO, 0x9e, 64)},               // struct kvm_x86_mce
	{"KVM_X86_SET_MSR_FILTER", ioW(kvmIO, 0xc6, 392)},       // struct kvm_msr_filter
	{"SIOCBRADDIF", 0x89a2},
	{"SIOCBRDELIF", 0x89a3},
	{"SIOCETHTOOL", 0x8946},
	{"SIOCGIFFLAGS", 0x8913},
	{"SIOCGIFHWADDR", 0x8927},
	{"SIOCGIFINDEX", 0x8933},
	{"SIOCGIFMTU", 0x8921},
	{"SIOCGIFNAME", 0x8910},
	{"SIOCGSTAMP", 0x8906}, // SIOCGSTAMP_OLD
	{"SIOCINQ", 0x541b},    // FIONREAD
	{"SIOCOUTQ", 0x5411},   // TIOCOUTQ
	{"SIOCSIFFLAGS", 0x8914},
	{"SIOCSIFHWADDR", 0x8924},
	{"SIOCSIFMTU", 0x8922},
	{"TCFLSH", 0x540b},
	{"TCGETS", 0x5401},
	{"TCSETS", 0x5402},
	{"TCSETSF", 0x5404},
	{"TCSETSW", 0x5403},
	{"TIOCGPGRP", 0x540f},
	{"TIOCGPTN", ioR('T', 0x30, 4)}, // unsigned int
	{"TIOCGWINSZ", 0x5413},
	{"TIOCOUTQ", 0x5411},
	{"TIOCSCTTY", 0x540e},
	{"TIOCSPGRP", 0x5410},
	{"TIOCSPTLCK", ioW('T', 0x31, 4)}, // int
	{"TIOCSWINSZ", 0x5414},
	{"TUNATTACHFILTER", ioW('T', 0xd5, 16)}, // struct sock_fprog
	{"TUNDETACHFILTER", ioW('T', 0xd6, 16)}, // struct sock_fprog
	{"TUNGETFEATURES", ioR('T', 0xcf, 4)},   // unsigned int
	{"TUNGETIFF", ioR('T', 0xd2, 4)},        // unsigned int
	{"TUNGETSNDBUF", ioR('T', 0xd3, 4)},     // int
	{"TUNGETVNETBE", ioR('T', 0xdf, 4)},     // int
	{"TUNGETVNETHDRSZ", ioR('T', 0xd7, 4)},  // int
	{"TUNGETVNETLE", ioR('T', 0xdd, 4)},     // int
	{"TUNSETGROUP", ioW('T', 0xce, 4)},      // int
	{"TUNSETIFF", ioW('T', 0xca, 4)},        // int
	{"TUNSETLINK", ioW('T', 0xcd, 4)},       // int
	{"TUNSETOFFLOAD", ioW('T', 0xd0, 4)},    // unsigned int
	{"TUNSETOWNER", ioW('T', 0xcc, 4)},      // int
	{"TUNSETPERSIST", ioW('T', 0xcb, 4)},    // int
	{"TUNSETQUEUE", ioW('T', 0xd9, 4)},      // int
	{"TUNSETSNDBUF", ioW('T', 0xd4, 4)},     // int
	{"TUNSETTXFILTER", ioW('T', 0xd1, 4)},   // unsigned int
	{"TUNSETVNETBE", ioW('T', 0xde, 4)},     // int
	{"TUNSETVNETHDRSZ", ioW('T', 0xd8, 4)},  // int
	{"TUNSETVNETLE", ioW('T', 0xdc, 4)},     // int
	{"VFIO_CHECK_EXTENSION", ioN(vfioType, 0x65)},
	{"VFIO_DEVICE_FEATURE", ioN(vfioType, 0x75)},
	{"VFIO_DEVICE_GET_INFO", ioN(vfioType, 0x6b)},
	{"VFIO_DEVICE_GET_IRQ_INFO", ioN(vfioType, 0x6d)},
	{"VFIO_DEVICE_GET_PCI_HOT_RESET_INFO", ioN(vfioType, 0x70)},
	{"VFIO_DEVICE_GET_REGION_INFO", ioN(vfioType, 0x6c)},
	{"VFIO_DEVICE_PCI_HOT_RESET", ioN(vfioType, 0x71)},
	{"VFIO_DEVICE_RESET", ioN(vfioType, 0x6f)},
	{"VFIO_DEVICE_SET_IRQS", ioN(vfioType, 0x6e)},
	{"VFIO_GET_API_VERSION", ioN(vfioType, 0x64)},
	{"VFIO_GROUP_GET_DEVICE_FD", ioN(vfioType, 0x6a)},
	{"VFIO_GROUP_GET_STATUS", ioN(vfioType, 0x67)},
	{"VFIO_GROUP_SET_CONTAINER", ioN(vfioType, 0x68)},
	{"VFIO_GROUP_UNSET_CONTAINER", ioN(vfioType, 0x69)},
	{"VFIO_IOMMU_DISABLE", ioN(vfioType, 0x74)},
	{"VFIO_IOMMU_ENABLE", ioN(vfioType, 0x73)},
	{"VFIO_IOMMU_GET_INFO", ioN(vfioType, 0x70)},
	{"VFIO_IOMMU_MAP_DMA", ioN(vfioType, 0x71)},
	{"VFIO_IOMMU_UNMAP_DMA", ioN(vfioType, 0x72)},
	{"VFIO_SET_IOMMU", ioN(vfioType, 0x66)},
	{"VHOST_GET_BACKEND_FEATURES", ioR(vhostIO, 0x26, 8)}, // __u64
	{"VHOST_GET_FEATURES", ioR(vhostIO, 0x0, 8)},          // __u64
	{"VHOST_GET_VRING_BASE", ioWR(vhostIO, 0x12, 8)},      // struct vhost_vring_state
	{"VHOST_GET_VRING_ENDIAN", ioW(vhostIO, 0x14, 8)},     // struct vhost_vring_state
	{"VHOST_NET_SET_BACKEND", ioW(vhostIO, 0x30, 8)},      // struct vhost_vring_file
	{"VHOST_RESET_OWNER", ioN(vhostIO, 0x2)},
	{"VHOST_SET_BACKEND_FEATURES", ioW(vhostIO, 0x25, 8)}, // __u64
	{"VHOST_SET_FEATURES", ioW(vhostIO, 0x0, 8)},          // __u64
	{"VHOST_SET_LOG_BASE", ioW(vhostIO, 0x4, 8)},          // __u64
	{"VHOST_SET_LOG_FD", ioW(vhostIO, 0x7, 4)},            // int
	{"VHOST_SET_MEM_TABLE", ioW(vhostIO, 0x3, 8)},         // struct vhost_memory
	{"VHOST_SET_OWNER", ioN(vhostIO, 0x1)},
	{"VHOST_SET_VRING_ADDR", ioW(vhostIO, 0x11, 40)},            // struct vhost_vring_addr
	{"VHOST_SET_VRING_BASE", ioW(vhostIO, 0x12, 8)},             // struct vhost_vring_state
	{"VHOST_SET_VRING_BUSYLOOP_TIMEOUT", ioW(vhostIO, 0x23, 8)}, // struct vhost_vring_state
	{"VHOST_SET_VRING_CALL", ioW(vhostIO, 0x21, 8)},             // struct vhost_vring_file
	{"VHOST_SET_VRING_ENDIAN", ioW(vhostIO, 0x13, 8)},           // struct vhost_vring_state
	{"VHOST_SET_VRING_ERR", ioW(vhostIO, 0x22, 8)},              // struct vhost_vring_file
	{"VHOST_SET_VRING_KICK", ioW(vhostIO, 0x20, 8)},             // struct vhost_vring_file
	{"VHOST_SET_VRING_NUM", ioW(vhostIO, 0x10, 8)},              // struct vhost_vring_state
	{"VHOST_VSOCK_SET_GUEST_CID", ioW(vhostIO, 0x60, 8)},        // __u64
	{"VHOST_VSOCK_SET_RUNNING", ioW(vhostIO, 0x61, 4)},          // int
}
