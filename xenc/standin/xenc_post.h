/*
 * vtdtrace xen-c stand-ins, part 2: after the VT-d private headers
 * (vtd/iommu.h, dmar.h, vtd.h, extern.h of the user's tree, copied with their
 * #include lines removed).
 *
 * Stores the hardware can see.  The tree's own entry macros run unchanged --
 * xenc/build.py renames each store macro NAME of vtd/iommu.h to
 * xenc_orig_NAME -- and NAME becomes: apply xenc_orig_NAME to a copy of the
 * entry, then commit the copy's halves that macro writes.  The commit stores
 * them and, when the entry lies in a page the stand-in memory marks as a
 * root or context table, logs the store with its old and new value; stores to
 * a local copy (lctxt in domain_context_mapping_one) are not hardware-visible
 * and are not logged.  write_atomic() and cmpxchg16b() do the same for the
 * 64-bit and 128-bit stores the code makes itself.
 */
#ifndef XENC_STANDIN_POST_H
#define XENC_STANDIN_POST_H

/* which halves a macro stores: 1 = lo, 2 = hi, 3 = lo then hi */
void xenc_ctx_commit(struct context_entry *dst, const struct context_entry *val, int halves,
                     const char *func, int line);
void xenc_root_commit(struct root_entry *dst, const struct root_entry *val, const char *func, int line);

#define XENC_CTX_APPLY(c, halves, op) do { \
        struct context_entry *xenc_dst_ = &(c), xenc_val_ = *xenc_dst_; \
        op; \
        xenc_ctx_commit(xenc_dst_, &xenc_val_, (halves), __func__, __LINE__); \
    } while ( 0 )
#define context_set_present(c) XENC_CTX_APPLY(c, 1, xenc_orig_context_set_present(xenc_val_))
#define context_clear_present(c) XENC_CTX_APPLY(c, 1, xenc_orig_context_clear_present(xenc_val_))
#define context_set_fault_enable(c) XENC_CTX_APPLY(c, 1, xenc_orig_context_set_fault_enable(xenc_val_))
#define context_set_translation_type(c, v) \
    XENC_CTX_APPLY(c, 1, xenc_orig_context_set_translation_type(xenc_val_, v))
#define context_set_address_root(c, v) XENC_CTX_APPLY(c, 1, xenc_orig_context_set_address_root(xenc_val_, v))
#define context_set_address_width(c, v) XENC_CTX_APPLY(c, 2, xenc_orig_context_set_address_width(xenc_val_, v))
#define context_clear_entry(c) XENC_CTX_APPLY(c, 3, xenc_orig_context_clear_entry(xenc_val_))

#define XENC_ROOT_APPLY(r, op) do { \
        struct root_entry *xenc_dst_ = &(r), xenc_val_ = *xenc_dst_; \
        op; \
        xenc_root_commit(xenc_dst_, &xenc_val_, __func__, __LINE__); \
    } while ( 0 )
#define set_root_present(r) XENC_ROOT_APPLY(r, xenc_orig_set_root_present(xenc_val_))
#define set_root_value(r, v) XENC_ROOT_APPLY(r, xenc_orig_set_root_value(xenc_val_, v))

/* Only the 64-bit halves of a context entry are ever written this way; the
 * _Generic refuses anything else at compile time. */
void xenc_write_atomic64(uint64_t *p, uint64_t v, const char *func, int line);
#define write_atomic(p, v) _Generic((p), uint64_t *: xenc_write_atomic64)((p), (v), __func__, __LINE__)
__uint128_t xenc_cmpxchg16b(volatile void *ptr, const __uint128_t *oldp, const __uint128_t *newp,
                            const char *func, int line);
#define cmpxchg16b(p, o, n) xenc_cmpxchg16b((p), (o), (n), __func__, __LINE__)

/* The flush entry points the runtime installs in iommu->flush: they call the
 * tree's register-based functions and log what was asked and returned. */
int xenc_flush_context(struct vtd_iommu *iommu, u16 did, u16 source_id, u8 function_mask, u64 type,
                       bool non_present_entry_flush);
int xenc_flush_iotlb(struct vtd_iommu *iommu, u16 did, u64 addr, unsigned int size_order, u64 type,
                     bool flush_non_present_entry, bool flush_dev_iotlb);
/* wrapped (xenc/extract.py): the tree's definition is xenc_real_iommu_flush_write_buffer */
static void iommu_flush_write_buffer(struct vtd_iommu *iommu);

/* provided instead of extracted: the page-table walker (see runtime.c), with
 * the tree's signature (3 arguments up to 4.16, 5 from 4.17) */
#if XENC_WALKER_ARGS == 3
static u64 addr_to_dma_page_maddr(struct domain *domain, u64 addr, int alloc);
#else
static uint64_t addr_to_dma_page_maddr(struct domain *domain, daddr_t addr, unsigned int target,
                                       unsigned int *flush_flags, bool alloc);
#endif

/* the 4.15-era cache write-back of iommu.c (clflush through alternatives):
 * the stand-in memory is coherent, nothing to write back */
static void sync_cache(const void *addr, unsigned int size);

/* Other files of the tree, as stand-ins. */
extern struct list_head acpi_drhd_units, acpi_rmrr_units;
/* me_wifi_quirk() and rwbf_quirk are declared by the tree's extern.h, whose
 * signatures changed; runtime.c defines them to match (XENC_ME_QUIRK_ARGS). */
void enable_ats_device(struct pci_dev *pdev, struct list_head *ats_list);
void disable_ats_device(struct pci_dev *pdev);
#define vtd_ops_preamble_quirk(iommu) ((void)(iommu))
#define vtd_ops_postamble_quirk(iommu) ((void)(iommu))

/* ---- layout guards ----------------------------------------------------
 * The types the extracted code of each version expects of the fields it
 * touches.  A stand-in struct that disagrees fails here, at build time.
 * (4.15 kept iommu_bitmap inline in the struct; from 4.16 it is a pointer:
 * a mismatch once let set_bit() write into the pointer and the iommu-bitmap
 * events silently vanished.) */
#define XENC_FIELD_IS(type, member, want) \
    _Static_assert(_Generic(((type *)0)->member, want: 1, default: 0), \
                   "stand-in layout: " #type "." #member " must be " #want " for this Xen version")
#if XENC_XEN_VERSION >= 416
XENC_FIELD_IS(struct arch_iommu, vtd.iommu_bitmap, unsigned long *);
#else
XENC_FIELD_IS(struct arch_iommu, vtd.iommu_bitmap, unsigned long);
#endif
XENC_FIELD_IS(struct arch_iommu, vtd.pgd_maddr, uint64_t);
XENC_FIELD_IS(struct arch_iommu, vtd.agaw, unsigned int);
XENC_FIELD_IS(struct vtd_iommu, domid_bitmap, unsigned long *);
XENC_FIELD_IS(struct vtd_iommu, domid_map, domid_t *);
XENC_FIELD_IS(struct vtd_iommu, root_maddr, u64);
XENC_FIELD_IS(struct pci_dev, domain, struct domain *);
XENC_FIELD_IS(struct pci_dev, devfn, uint8_t);
XENC_FIELD_IS(struct pci_dev, bus, uint8_t);
XENC_FIELD_IS(struct pci_dev, seg, uint16_t);
XENC_FIELD_IS(struct pci_dev, sbdf.bdf, uint16_t);
XENC_FIELD_IS(struct pci_dev, arch.pseudo_domid, domid_t);
XENC_FIELD_IS(struct pci_dev, arch.vtd.pgd_maddr, uint64_t);
XENC_FIELD_IS(struct domain, domain_id, domid_t);
#if XENC_XEN_VERSION >= 419
XENC_FIELD_IS(struct domain, pci_lock, rwlock_t);
#endif
XENC_FIELD_IS(struct acpi_drhd_unit, iommu, struct vtd_iommu *);
XENC_FIELD_IS(struct acpi_rmrr_unit, scope.devices, u16 *);
_Static_assert(sizeof(struct context_entry) == 16, "stand-in layout: a context entry is 128 bits");
_Static_assert(sizeof(struct root_entry) == 16, "stand-in layout: a root entry is 128 bits");
_Static_assert(offsetof(struct pci_dev, sbdf) == offsetof(struct pci_dev, devfn),
               "stand-in layout: pci_dev.sbdf overlays devfn/bus/seg");

#endif /* XENC_STANDIN_POST_H */
