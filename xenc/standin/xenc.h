/*
 * vtdtrace xen-c: the stand-in environment the extracted VT-d functions are
 * compiled against (part 1: before the VT-d private headers).
 *
 * This is vtdtrace's own code, not Xen's.  It declares just enough of the
 * hypervisor -- types, lists, locks, bit operations, domains, PCI devices,
 * the ACPI unit lists, memory -- for iommu.c's reassignment functions to
 * compile in user space, and it turns what the hardware could observe into
 * log records for the Python runtime (xenc/runtime.py):
 *
 *   - a spin lock carries a name and a target; taking and releasing it logs;
 *   - a "machine page" is a heap page with a kind (root table, context table,
 *     page table); stores into root and context tables log (part 2, after
 *     the VT-d headers, where struct root_entry / context_entry exist);
 *   - set_bit/clear_bit on a DID bitmap or a domain's IOMMU bitmap log;
 *   - MMIO reads and writes hit a small register model that completes every
 *     invalidation at once (the real flush code then sees it done).
 *
 * Version switches: XENC_XEN_VERSION is MAJOR*100+MINOR of the tree (4.17 ->
 * 417), set by xenc/build.py from xen/Makefile.  Every field the extracted
 * code touches is strictly typed per version and checked by the
 * _Static_assert()s at the end of part 2: a wrong type fails the build, it
 * never silently writes into the wrong field at run time.
 */
#ifndef XENC_STANDIN_H
#define XENC_STANDIN_H

#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef XENC_XEN_VERSION
#error "XENC_XEN_VERSION must be set by the build (e.g. 417)"
#endif

/* ---- compiler words --------------------------------------------------- */
#define __init
#define __initconst
#define __initconstrel
#define __initconst_cf_clobber
#define __hwdom_init
#define __read_mostly
#define __ro_after_init
#define __iomem
#define __must_check __attribute__((__warn_unused_result__))
#define cf_check
#define fallthrough __attribute__((__fallthrough__))
#define unlikely(x) __builtin_expect(!!(x), 0)
#define likely(x) __builtin_expect(!!(x), 1)
#define ASSERT(p) do { if ( !(p) ) xenc_assert_failed(#p, __FILE__, __LINE__); } while ( 0 )
#define BUG() xenc_assert_failed("BUG", __FILE__, __LINE__)
#define BUG_ON(p) ASSERT(!(p))
#define ASSERT_UNREACHABLE() xenc_assert_failed("unreachable", __FILE__, __LINE__)
#define BUILD_BUG_ON(p) _Static_assert(!(p), #p)
#define IS_ENABLED(opt) 0
#define CONFIG_HVM 1
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define min(a, b) ((a) < (b) ? (a) : (b))
#define max(a, b) ((a) > (b) ? (a) : (b))
#define cpu_relax() do { } while ( 0 )
#define barrier() __asm__ __volatile__("" ::: "memory")
#define smp_wmb() barrier()

/* ---- integer types ---------------------------------------------------- */
typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int64_t s64;
typedef char bool_t;
typedef uint16_t domid_t;
typedef uint64_t paddr_t;
#define daddr_t xenc_daddr_t   /* <sys/types.h> has its own */
typedef uint64_t xenc_daddr_t;
typedef uint8_t nodeid_t;
typedef int64_t s_time_t;
typedef struct { unsigned long m; } mfn_t;
typedef struct { unsigned long d; } dfn_t;
typedef int p2m_access_t;

#define NUMA_NO_NODE 0xff
#define PAGE_SHIFT 12
#define PAGE_SHIFT_4K 12
#define PAGE_SIZE 4096UL
#define PAGE_SIZE_4K 4096UL
#define PAGE_MASK_4K (~(uint64_t)0xfff)
#define PADDR_BITS 52
#define PADDR_MASK ((1ULL << PADDR_BITS) - 1)
#define UINT_MAX 0xffffffffU
#define BITS_PER_LONG 64
#define BITS_TO_LONGS(n) (((n) + BITS_PER_LONG - 1) / BITS_PER_LONG)
#define DECLARE_BITMAP(name, bits) unsigned long name[BITS_TO_LONGS(bits)]

#define DOMID_FIRST_RESERVED 0x7FF0U
#define DOMID_IO 0x7FF1U
#define DOMID_XEN 0x7FF2U
#define DOMID_INVALID 0x7FF4U
#define DOMID_MASK 0x7FFFU

#define EPERM 1
#define ENOENT 2
#define ESRCH 3
#define ENXIO 6
#define ENOMEM 12
#define EFAULT 14
#define EBUSY 16
#define ENODEV 19
#define EINVAL 22
#define ENOSPC 28
#define EILSEQ 84
#define EOPNOTSUPP 95

#define ERR_PTR(e) ((void *)(intptr_t)(e))
#define PTR_ERR(p) ((long)(intptr_t)(p))
#define IS_ERR(p) ((uintptr_t)(p) >= (uintptr_t)-4095)

#define p2m_access_rw 6
#define p2m_access_x 1

#define XEN_DOMCTL_DEV_RDM_RELAXED 1

/* ---- the log channel (xenc/runtime.py reads the records) --------------- */
enum xenc_rec {
    XR_LOCK = 1, XR_UNLOCK, XR_ROOT_STORE, XR_CTX_STORE, XR_CACHE_SYNC,
    XR_FLUSH_CONTEXT, XR_FLUSH_IOTLB, XR_FLUSH_WB, XR_DID_BIT, XR_IOMMU_BIT,
    XR_PT_ALLOC, XR_IDMAP, XR_PRINTK, XR_RCU_LOCK, XR_RCU_UNLOCK, XR_HOOK,
    XR_ASSERT, XR_UNSUPPORTED,
};
void xenc_log(int rec, const char *func, int line, int n, ...);
void xenc_assert_failed(const char *what, const char *file, int line);

/* ---- lists ------------------------------------------------------------ */
struct list_head { struct list_head *next, *prev; };
#define LIST_HEAD(n) struct list_head n = { &(n), &(n) }
#define INIT_LIST_HEAD(h) do { (h)->next = (h); (h)->prev = (h); } while ( 0 )
#define list_empty(h) ((h)->next == (h))
#define container_of(p, type, m) ((type *)((char *)(p) - offsetof(type, m)))
#define list_entry(p, type, m) container_of(p, type, m)
#define list_for_each_entry(pos, head, m) \
    for ( pos = list_entry((head)->next, __typeof__(*pos), m); \
          &pos->m != (head); \
          pos = list_entry(pos->m.next, __typeof__(*pos), m) )
static inline void list_add_tail(struct list_head *n, struct list_head *h)
{
    n->prev = h->prev; n->next = h; h->prev->next = n; h->prev = n;
}
static inline void list_add(struct list_head *n, struct list_head *h)
{
    n->next = h->next; n->prev = h; h->next->prev = n; h->next = n;
}
static inline void list_del(struct list_head *e)
{
    e->prev->next = e->next; e->next->prev = e->prev;
}
static inline void list_move(struct list_head *e, struct list_head *h)
{
    list_del(e); list_add_tail(e, h);
}

/* ---- locks: named, so the trace can say which ------------------------ */
enum xenc_lock_name { XL_PCIDEVS = 0, XL_IOMMU = 1, XL_MAPPING = 2, XL_RCU = 3, XL_REGISTER = 4, XL_PCI = 5 };
/* pci.c's pseg->bus2bridge_lock, taken by find_upstream_bridge() */
enum { XL_BUS2BRIDGE = 6 };
typedef struct { int name; long target; } spinlock_t;
#define spin_lock(l) xenc_log(XR_LOCK, __func__, __LINE__, 2, (uint64_t)(l)->name, (uint64_t)(l)->target)
#define spin_unlock(l) xenc_log(XR_UNLOCK, __func__, __LINE__, 2, (uint64_t)(l)->name, (uint64_t)(l)->target)
#define spin_lock_irqsave(l, f) do { (f) = 0; spin_lock(l); } while ( 0 )
#define spin_unlock_irqrestore(l, f) do { (void)(f); spin_unlock(l); } while ( 0 )
#define spin_is_locked(l) xenc_lock_held(l)
int xenc_lock_held(const spinlock_t *l);
#define pcidevs_locked() 1
/* d->pci_lock (4.19+): an rwlock.  Taking it for writing is recorded like a
 * spin lock (lock name pci_lock, the domain as target).  Read-side use is
 * shared and orders nothing the trace analyses, so it is not recorded. */
typedef struct { int name; long target; int writer; } rwlock_t;
#define write_lock(l) do { (l)->writer = 1; \
    xenc_log(XR_LOCK, __func__, __LINE__, 2, (uint64_t)(l)->name, (uint64_t)(l)->target); } while ( 0 )
#define write_unlock(l) do { (l)->writer = 0; \
    xenc_log(XR_UNLOCK, __func__, __LINE__, 2, (uint64_t)(l)->name, (uint64_t)(l)->target); } while ( 0 )
#define read_lock(l) ((void)(l))
#define read_unlock(l) ((void)(l))
#define rw_is_locked(l) 1
#define rw_is_write_locked(l) ((l)->writer)

/* ---- bit operations: typed, and logging on the bitmaps the trace shows - */
void xenc_set_bit(int nr, unsigned long *addr, const char *func, int line);
void xenc_clear_bit(int nr, unsigned long *addr, const char *func, int line);
#define set_bit(nr, addr) xenc_set_bit((nr), (addr), __func__, __LINE__)
#define clear_bit(nr, addr) xenc_clear_bit((nr), (addr), __func__, __LINE__)
int test_bit(int nr, const unsigned long *addr);
unsigned int find_first_bit(const unsigned long *addr, unsigned int size);
unsigned int find_next_bit(const unsigned long *addr, unsigned int size, unsigned int off);
unsigned int find_first_zero_bit(const unsigned long *addr, unsigned int size);

/* ---- printk: its own formatter for Xen's %pp / %pd -------------------- */
#define XENLOG_ERR "<3>"
#define XENLOG_WARNING "<4>"
#define XENLOG_INFO "<6>"
#define XENLOG_DEBUG "<7>"
#define XENLOG_GUEST ""
#define XENLOG_G_ERR "<3>"
#define XENLOG_G_WARNING "<4>"
#define XENLOG_G_INFO "<6>"
#define PRIx64 "lx"
void xenc_printk(const char *func, int line, const char *fmt, ...);
#define printk(fmt, ...) xenc_printk(__func__, __LINE__, fmt, ##__VA_ARGS__)
#define dprintk(lvl, fmt, ...) xenc_printk(__func__, __LINE__, lvl fmt, ##__VA_ARGS__)
#define gdprintk dprintk
extern bool iommu_debug;

/* ---- memory: machine pages backed by the heap ------------------------- */
enum xenc_page_kind { XP_FREE = 0, XP_PLAIN, XP_ROOT, XP_CONTEXT, XP_PGTABLE };
struct page_info {
    uint64_t maddr;
    void *va;
    int kind;           /* enum xenc_page_kind */
    int iommu;          /* XP_ROOT / XP_CONTEXT: the unit */
    int bus;            /* XP_CONTEXT: the bus */
    struct list_head list;
};
struct page_list_head { struct list_head list; };
struct page_info *alloc_domheap_pages(struct domain *d, unsigned int order, unsigned int memflags);
void free_domheap_page(struct page_info *pg);
uint64_t page_to_maddr(const struct page_info *pg);
struct page_info *maddr_to_page(uint64_t maddr);
void *xenc_map(uint64_t maddr);
struct page_info *xenc_page_of(const void *va);
#define __map_domain_page(pg) ((pg)->va)
#define unmap_domain_page(va) ((void)(va))
#define clear_page(va) memset((va), 0, PAGE_SIZE)
#define get_order_from_pages(n) 0
#define MEMF_node(n) 0
void iommu_sync_cache_logged(const void *addr, unsigned int size, const char *func, int line);
#define iommu_sync_cache(a, s) iommu_sync_cache_logged((a), (s), __func__, __LINE__)

/* ---- MMIO: the register model ----------------------------------------- */
uint32_t readl(const volatile void *addr);
uint64_t readq(const volatile void *addr);
void writel(uint32_t v, volatile void *addr);
void writeq(uint64_t v, volatile void *addr);
#define NOW() ((s_time_t)0)
#define MILLISECS(ms) ((s_time_t)(ms) * 1000000)
#define kexecing 0
#define dump_execution_state() do { } while ( 0 )
#define panic(...) xenc_assert_failed("panic", __FILE__, __LINE__)
#define flush_local(f) do { } while ( 0 )
#define FLUSH_CACHE 0

/* ---- domains ---------------------------------------------------------- */
struct arch_iommu {
    spinlock_t mapping_lock;
    struct page_list_head pgtables_list;
    struct {
        uint64_t pgd_maddr;
        unsigned int agaw;      /* dom_io's sizes its quarantine tables from 4.19 (quarantine.c) */
#if XENC_XEN_VERSION >= 416
        unsigned long *iommu_bitmap;
#else
        unsigned long iommu_bitmap;
#endif
    } vtd;
    struct { struct page_list_head list; } pgtables;
};
struct domain_iommu {
    struct arch_iommu arch;
    nodeid_t node;
};
struct domain {
    domid_t domain_id;
    bool is_dying;
    bool is_hardware;
    struct list_head pdev_list;
    struct domain_iommu iommu;
#if XENC_XEN_VERSION >= 419
    rwlock_t pci_lock;
#endif
};
extern struct domain *dom_io, *dom_xen, *hardware_domain;
#define dom_iommu(d) (&(d)->iommu)
#define is_hardware_domain(d) ((d) != NULL && (d)->is_hardware)
#define is_system_domain(d) ((d)->domain_id >= DOMID_FIRST_RESERVED)
#define has_arch_pdevs(d) (!list_empty(&(d)->pdev_list))
#define for_each_pdev(d, p) list_for_each_entry(p, &(d)->pdev_list, domain_list)
struct domain *xenc_rcu_lock_domain_by_id(domid_t id, const char *func, int line);
void xenc_rcu_unlock_domain(struct domain *d, const char *func, int line);
#define rcu_lock_domain_by_id(id) xenc_rcu_lock_domain_by_id((id), __func__, __LINE__)
/* rcu_lock_domain(d) cannot fail, not even for a system domain (dom_io for a
 * quarantined device, or a phantom entry whose DID was freed) */
struct domain *xenc_rcu_lock_domain(struct domain *d, const char *func, int line);
#define rcu_lock_domain(d) xenc_rcu_lock_domain((d), __func__, __LINE__)
#define rcu_unlock_domain(d) xenc_rcu_unlock_domain((d), __func__, __LINE__)
void domain_crash(struct domain *d);
#define vmx_pi_hooks_assign(d) ((void)(d))
#define vmx_pi_hooks_deassign(d) ((void)(d))
extern bool untrusted_msi;
extern bool iommu_intremap;
extern bool iommu_hwdom_passthrough;
extern bool ats_enabled;
extern bool cpu_has_cx16;
extern unsigned int iommu_quarantine;
#define iommu_use_hap_pt(d) 0

/* ---- PCI devices ------------------------------------------------------ */
enum pdev_type {
    DEV_TYPE_PCI_HOST_BRIDGE, DEV_TYPE_PCIe_ENDPOINT, DEV_TYPE_PCIe_BRIDGE,
    DEV_TYPE_PCIe2PCI_BRIDGE, DEV_TYPE_LEGACY_PCI_BRIDGE, DEV_TYPE_PCI,
    DEV_TYPE_PCI_UNKNOWN,
};
typedef union { uint32_t sbdf; struct { uint16_t bdf; uint16_t seg; }; } pci_sbdf_t;
struct pci_dev {
    struct list_head alldevs_list;
    struct list_head domain_list;
    struct domain *domain;
    union {
        struct { uint8_t devfn; uint8_t bus; uint16_t seg; };
        pci_sbdf_t sbdf;
    };
    uint8_t phantom_stride;
    enum pdev_type type;
    struct {
        domid_t pseudo_domid;
        mfn_t leaf_mfn;
        struct page_list_head pgtables_list;
        struct { uint64_t pgd_maddr; } vtd;
    } arch;
    bool quarantine;
};
#define PCI_BUS(bdf) (((bdf) >> 8) & 0xff)
#define PCI_SLOT(devfn) (((devfn) >> 3) & 0x1f)
#define PCI_FUNC(devfn) ((devfn) & 0x07)
#define PCI_DEVFN(d, f) ((((d) & 0x1f) << 3) | ((f) & 0x07))
#define PCI_BDF(b, df) ((((b) & 0xff) << 8) | ((df) & 0xff))
#if XENC_XEN_VERSION < 417
#define PCI_BDF2(b, df) PCI_BDF(b, df)
#define PCI_DEVFN2(bdf) ((bdf) & 0xff)
#define PCI_SBDF3(s, b, df) PCI_SBDF(s, b, df)
#endif
#define PCI_SBDF(s, b, df) ((pci_sbdf_t){ .sbdf = ((uint32_t)(s) << 16) | PCI_BDF(b, df) })
#define pci_to_dev(p) (p)
int find_upstream_bridge(uint16_t seg, uint8_t *bus, uint8_t *devfn, uint8_t *secbus);
enum pdev_type pdev_type(uint16_t seg, uint8_t bus, uint8_t devfn);
void pci_vtd_quirk(const struct pci_dev *pdev);
int iommu_identity_mapping(struct domain *d, p2m_access_t p2ma, paddr_t base, paddr_t end,
                           unsigned int flag);
domid_t iommu_alloc_domid(unsigned long *map);
void iommu_free_domid(domid_t domid, unsigned long *map);
#define DEVICE_DOMID(d, pdev) ((d) != dom_io ? (d)->domain_id : (pdev)->arch.pseudo_domid)
#define DEVICE_PGTABLE(d, pdev) ((d) != dom_io ? 0 : (pdev)->arch.vtd.pgd_maddr)
#define QUARANTINE_SKIP(d, pgd) ((d) == dom_io && !(pgd))

/* ---- per-device quarantine (standin/quarantine.c) ---------------------- */
enum xenc_rec_quarantine { XR_PT_FREE = 32, XR_PSEUDO_DOMID = 33 };
#define DEFAULT_DOMAIN_ADDRESS_WIDTH 48
#define ERESTART 85
struct domain_iommu;
/* 4.17 passes a contiguity mask, b3ee746000 does not: both are zeroed pages */
struct page_info *xenc_iommu_alloc_pgtable(struct domain_iommu *hd, const char *func, int line);
#define iommu_alloc_pgtable(hd, ...) xenc_iommu_alloc_pgtable((hd), __func__, __LINE__)
int xenc_iommu_free_pgtables(struct domain *d, const char *func, int line);
#define iommu_free_pgtables(d) xenc_iommu_free_pgtables((d), __func__, __LINE__)
void iommu_identity_map_teardown(struct domain *d);
int page_list_empty(const struct page_list_head *h);
void page_list_move(struct page_list_head *dst, struct page_list_head *src);
void clear_domain_page(mfn_t mfn);
mfn_t page_to_mfn(const struct page_info *pg);

/* ---- what the VT-d headers name but this path never runs --------------- */
struct msi_desc { int unused; };
struct irq_desc;
struct cpu_user_regs;
typedef void keyhandler_fn_t(unsigned char key);
struct iommu_init_ops;
/* up to 4.16 alloc_pgtable_maddr() asks the ops whether to write caches back */
struct iommu_ops {
    int (*init)(struct domain *d);
    void (*sync_cache)(const void *addr, unsigned int size);
};
extern struct iommu_ops iommu_ops;
void cache_writeback(const void *addr, unsigned int size);
struct pci_ats_dev;
typedef int iommu_grdm_t(unsigned long start, unsigned long nr, uint32_t id, void *ctxt);
typedef struct { uint64_t pa; } pagetable_t;
#define p2m_get_hostp2m(d) (d)
#define p2m_get_pagetable(p2m) ((void)(p2m), (pagetable_t){ 0 })
#define pagetable_get_paddr(pt) ((pt).pa)

#endif /* XENC_STANDIN_H */
