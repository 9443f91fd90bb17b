/*
 * vtdtrace xen-c stand-ins for per-device quarantine (the XSA-400 design:
 * b3ee746000 on 4.15, every tree from 4.17).  Included after runtime.c.
 *
 * What the VT-d code of the tree does itself (extracted, unchanged):
 * domain_context_mapping() takes the device's pseudo domain ID on its first
 * mapping, intel_iommu_quarantine_init() builds the device's own tables
 * (root, the RMRR identity maps, fill_qpt()'s one page per level down to a
 * scratch leaf), domain_context_mapping_one() points the context entry at
 * them with the pseudo domain ID's DID, quarantine_teardown() drops them.
 *
 * What lives outside vtd/ and is a stand-in here (x86/iommu.c,
 * drivers/passthrough/iommu.c):
 *
 *   - iommu_alloc_domid() / iommu_free_domid(): the per-unit pseudo domain ID
 *     bitmap, the next clear index at or after a start shared by all units
 *     (wrapping once), the ID being the index with bit 15 set.  Each
 *     allocation and free is recorded (pseudo-domid), for the device of the
 *     operation that runs (the runtime knows it: bridges are refused);
 *   - iommu_alloc_pgtable(): a zeroed page on the domain's pgtables list.
 *     While a device's quarantine tables are built (xenc_qpdev set by
 *     xenc_op_quarantine_init), dom_io's pages come from the region of the
 *     device's pseudo domain ID -- the model's rule, so that the same table
 *     has the same address in both traces -- and are recorded as the pseudo
 *     domain ID's, in the order the C allocates them: the root, then one
 *     page per level from fill_qpt() (top level first), the last being the
 *     scratch leaf;
 *   - iommu_identity_mapping(dom_io, ...) during that build is recorded for
 *     the pseudo domain ID too; iommu_identity_map_teardown(dom_io), which in
 *     Xen only drops the bookkeeping (the mappings stay in the tables), records
 *     nothing, and the ranges are recorded as removed when the tables go
 *     (iommu_free_pgtables(), with the pt-free of the root), as the model does;
 *   - the page lists: struct page_list_head wraps a list_head.
 *
 * The stand-in identity map writes no page-table entries, so fill_qpt() finds
 * every slot empty and allocates exactly one page per level (the model's
 * DERIVED simplification for RMRRs, likewise).
 */

#define XENC_PSEUDO_IDS (65535U - DOMID_MASK)          /* UINT16_MAX - DOMID_MASK */
static unsigned long xenc_pseudo_maps[XENC_MAX_IOMMUS][BITS_TO_LONGS(65536)];
static struct pci_dev *xenc_qpdev;          /* whose quarantine tables are being built */
static unsigned int xenc_qpages;            /* pages allocated for them so far */

static int xenc_pseudo_unit(const unsigned long *map)
{
    unsigned int i;
    for ( i = 0; i < XENC_MAX_IOMMUS; i++ )
        if ( map == xenc_pseudo_maps[i] )
            return (int)i;
    return -1;
}

unsigned long *xenc_pseudo_map(unsigned int iommu)
{
    return xenc_pseudo_maps[iommu];
}

domid_t iommu_alloc_domid(unsigned long *map)
{
    static unsigned int start;      /* one for all units, as in Xen */
    unsigned int idx;
    int u = xenc_pseudo_unit(map);

    for ( idx = start; idx < XENC_PSEUDO_IDS && test_bit((int)idx, map); idx++ )
        ;
    if ( idx >= XENC_PSEUDO_IDS )
        for ( idx = 0; idx < XENC_PSEUDO_IDS && test_bit((int)idx, map); idx++ )
            ;
    if ( idx >= XENC_PSEUDO_IDS )
        return DOMID_INVALID;
    map[idx / BITS_PER_LONG] |= 1UL << (idx % BITS_PER_LONG);
    start = idx + 1;
    xenc_log(XR_PSEUDO_DOMID, "iommu_alloc_domid", 0, 3, (uint64_t)(u < 0 ? 0 : xenc_iommus[u].index),
             (uint64_t)(idx | (DOMID_MASK + 1)), (uint64_t)1);
    return (domid_t)(idx | (DOMID_MASK + 1));
}

void iommu_free_domid(domid_t domid, unsigned long *map)
{
    int u = xenc_pseudo_unit(map);
    unsigned int idx = domid & DOMID_MASK;

    if ( domid == DOMID_INVALID )
        return;
    ASSERT(domid > DOMID_MASK);
    if ( !test_bit((int)idx, map) )
        BUG();
    map[idx / BITS_PER_LONG] &= ~(1UL << (idx % BITS_PER_LONG));
    xenc_log(XR_PSEUDO_DOMID, "iommu_free_domid", 0, 3, (uint64_t)(u < 0 ? 0 : xenc_iommus[u].index),
             (uint64_t)domid, (uint64_t)0);
}

/* ---- page lists ---- */
int page_list_empty(const struct page_list_head *h)
{
    return list_empty(&h->list);
}

void page_list_move(struct page_list_head *dst, struct page_list_head *src)
{
    /* Xen's: dst takes src's pages (dst is empty), src is left empty */
    INIT_LIST_HEAD(&dst->list);
    if ( list_empty(&src->list) )
        return;
    dst->list.next = src->list.next;
    dst->list.prev = src->list.prev;
    dst->list.next->prev = &dst->list;
    dst->list.prev->next = &dst->list;
    INIT_LIST_HEAD(&src->list);
}

struct page_info *xenc_iommu_alloc_pgtable(struct domain_iommu *hd, const char *func, int line)
{
    struct page_info *pg;
    int quarantine = xenc_qpdev && hd == dom_iommu(dom_io);
    uint64_t what;

    if ( quarantine )
        xenc_alloc_owner = (int)xenc_qpdev->arch.pseudo_domid;
    pg = alloc_domheap_pages(NULL, 0, 0);
    xenc_alloc_owner = -1;
    if ( !pg )
        return NULL;
    clear_page(pg->va);
    pg->kind = XP_PGTABLE;
    list_add(&pg->list, &hd->arch.pgtables.list.list);
    if ( quarantine )
    {
        /* the root (0x20), then fill_qpt()'s levels 3, 2, 1 and the leaf (0x10 | level) */
        what = xenc_qpages == 0 ? 0x20 : 0x10 | (uint64_t)(4 - (xenc_qpages < 4 ? xenc_qpages : 4));
        xenc_qpages++;
        xenc_log(XR_PT_ALLOC, func, line, 3, (uint64_t)xenc_qpdev->arch.pseudo_domid, pg->maddr, what);
    }
    return pg;
}

void clear_domain_page(mfn_t mfn)
{
    /* the scratch leaf's contents: memory the trace does not model */
    struct page_info *pg = maddr_to_page((uint64_t)mfn.m << PAGE_SHIFT);
    if ( pg )
        clear_page(pg->va);
}

mfn_t page_to_mfn(const struct page_info *pg)
{
    return (mfn_t){ pg ? (unsigned long)(pg->maddr >> PAGE_SHIFT) : 0 };
}

void iommu_identity_map_teardown(struct domain *d)
{
    (void)d;        /* bookkeeping only; see the top of this file */
}

/* x86's iommu_free_pgtables(dom_io) from quarantine_teardown(): every page on
 * dom_io's list goes.  The tree's owner is the pseudo domain ID its pages were
 * allocated for (the root is the first page of that owner's region on the list). */
int xenc_iommu_free_pgtables(struct domain *d, const char *func, int line)
{
    struct domain_iommu *hd = dom_iommu(d);
    struct list_head *e;
    uint64_t root = 0;
    int owner = -1;
    unsigned int i;

    for ( e = hd->arch.pgtables.list.list.next; e != &hd->arch.pgtables.list.list; e = e->next )
    {
        struct page_info *pg = list_entry(e, struct page_info, list);
        uint64_t off = pg->maddr - xenc_domain_base;
        if ( pg->maddr >= xenc_domain_base && (root == 0 || pg->maddr < root) )
        {
            root = pg->maddr;
            owner = (int)(off >> xenc_domain_shift);
        }
    }
    while ( !list_empty(&hd->arch.pgtables.list.list) )
    {
        struct page_info *pg = list_entry(hd->arch.pgtables.list.list.next, struct page_info, list);
        list_del(&pg->list);
        free_domheap_page(pg);
    }
    if ( owner < 0 )
        return 0;
    for ( i = 0; i < XENC_MAX_IDMAPS; i++ )
        if ( xenc_idmaps[i].count && xenc_idmaps[i].d == (domid_t)owner )
        {
            xenc_idmaps[i].count = 0;
            xenc_log(XR_IDMAP, func, line, 5, (uint64_t)owner, xenc_idmaps[i].base, xenc_idmaps[i].end,
                     (uint64_t)0, (uint64_t)0);
        }
    xenc_log(XR_PT_FREE, func, line, 2, (uint64_t)owner, root);
    return 0;
}

/* pci.c's iommu_quarantine_dev_init(): the unit's quarantine_init hook, with
 * scratch_page as the mode says (from 4.17; b3ee746000 always fills). */
int xenc_op_quarantine_init(int pdev)
{
#ifdef XENC_QUARANTINE_ARGS
    struct pci_dev *p = xenc_pdev(pdev);
    int rc;
    if ( !iommu_quarantine )
        return 0;       /* iommu_quarantine_dev_init() does nothing */
    xenc_qpdev = p;
    xenc_qpages = 0;
#if XENC_QUARANTINE_ARGS == 2
    rc = intel_iommu_quarantine_init(p, iommu_quarantine == 2);
#else
    rc = intel_iommu_quarantine_init(p);
#endif
    xenc_qpdev = NULL;
    return rc;
#else
    (void)pdev;
    xenc_log(XR_UNSUPPORTED, "iommu_quarantine_dev_init (no per-device quarantine in this tree)", 0, 0);
    return -EOPNOTSUPP;
#endif
}

/* pci.c's pci_remove_device(): iommu_remove_device() (the unit's remove_device
 * hook for an owned device), then the device leaves its owner's list and is
 * freed (here: no owner, which the runtime records as the owner move). */
int xenc_op_remove(int pdev)
{
    struct pci_dev *p = xenc_pdev(pdev);
    int rc = -EINVAL;
#ifdef XENC_QUARANTINE_ARGS
    if ( p->domain )
        rc = intel_iommu_remove_device(p->devfn, p);
#else
    xenc_log(XR_UNSUPPORTED, "intel_iommu_remove_device (hot-unplug before the XSA-400 series)", 0, 0);
#endif
    if ( p->domain )
    {
        list_del(&p->domain_list);
        p->domain = NULL;
    }
    return rc;
}

void xenc_set_quarantine(unsigned int mode)
{
    iommu_quarantine = mode;
}

static domid_t xenc_idmap_domid(const struct domain *d)
{
    return xenc_qpdev && d == dom_io ? xenc_qpdev->arch.pseudo_domid : d->domain_id;
}

/* After the platform is built: empty page lists, and each unit's pseudo
 * domain ID bitmap (iommu_init_domid(); nothing reserved -- caching mode,
 * which reserves DID 0's, is refused by the runtime). */
void xenc_quarantine_setup(void)
{
    unsigned int i;
    INIT_LIST_HEAD(&dom_iommu(dom_io)->arch.pgtables.list.list);
    /* intel_iommu_domain_init()'s width for every domain (from 4.19 the
     * quarantine tables' depth is dom_io's agaw) */
    for ( i = 0; i < xenc_nr_domains; i++ )
        xenc_domains[i].iommu.arch.vtd.agaw = width_to_agaw(DEFAULT_DOMAIN_ADDRESS_WIDTH);
    for ( i = 0; i < xenc_nr_pdevs; i++ )
        INIT_LIST_HEAD(&xenc_pdevs[i].arch.pgtables_list.list);
#ifdef XENC_HAS_PSEUDO_DOMID_MAP
    for ( i = 0; i < xenc_nr_iommus; i++ )
        xenc_iommus[i].pseudo_domid_map = xenc_pseudo_maps[i];
#endif
}
