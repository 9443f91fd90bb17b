/*
 * vtdtrace xen-c: the stand-in implementations and the entry points the
 * Python runtime (xenc/runtime.py) drives through ctypes.  Included last in
 * the generated translation unit, after the extracted functions, so that it
 * can call them although they are static.
 *
 * Machine memory is a table of heap pages handed out from one base upwards;
 * every page has a kind.  The root table of each unit is XP_ROOT; a page
 * becomes XP_CONTEXT when a root entry is pointed at it; page tables are
 * XP_PGTABLE.  Stores into XP_ROOT / XP_CONTEXT pages are the ones the IOMMU
 * can see, and only they are logged.
 *
 * Registers: each unit has a 4 KiB register file.  A write of the context
 * command (ICC set) or of the IOTLB invalidate register (IVT set) completes
 * at once -- the bit reads back clear, IAIG reports the granularity asked
 * for -- and the value written is kept for the flush wrappers to report.
 */

#define XENC_MAX_PAGES 4096
#define XENC_MAX_IOMMUS 8

static struct page_info xenc_pages[XENC_MAX_PAGES];
/* What the logged stores left in each context table: a store the macros do
 * not see (a plain `context->hi |= ...`, as 4.15's context_set_domain_id
 * makes, or a patch's) shows up as a difference at the next record. */
static uint8_t *xenc_ctx_shadow[XENC_MAX_PAGES];
static void xenc_ctx_shadow_check(const char *func, int line);
static int xenc_in_shadow_check;
static unsigned int xenc_nr_pages;
/* Addresses follow the model's rule (so that the same table has the same
 * address in both traces): a unit's root and context tables from
 * xenc_page_base in allocation order; while xenc_walk allocates a domain's
 * page tables (xenc_alloc_owner >= 0), from that domain's own region,
 * xenc_domain_base + (domain ID << xenc_domain_shift), in allocation order. */
static uint64_t xenc_page_base, xenc_domain_base;
static unsigned int xenc_domain_shift;
static unsigned int xenc_nr_tables;
static int xenc_alloc_owner = -1;
/* every domain, and as many pseudo domain IDs */
#define XENC_MAX_OWNERS 512
static struct { int owner; unsigned int nr; } xenc_owner_pages[XENC_MAX_OWNERS];
static unsigned int xenc_nr_owners;

static uint64_t xenc_next_maddr(void)
{
    unsigned int i;
    if ( xenc_alloc_owner < 0 )
        return xenc_page_base + (uint64_t)xenc_nr_tables++ * PAGE_SIZE;
    for ( i = 0; i < xenc_nr_owners && xenc_owner_pages[i].owner != xenc_alloc_owner; i++ )
        ;
    if ( i == xenc_nr_owners )
    {
        if ( xenc_nr_owners >= XENC_MAX_OWNERS )
            return 0;
        xenc_owner_pages[xenc_nr_owners].owner = xenc_alloc_owner;
        xenc_owner_pages[xenc_nr_owners++].nr = 0;
    }
    if ( xenc_owner_pages[i].nr >= (1u << (xenc_domain_shift - 12)) )
        return 0;                          /* the region is full: -ENOMEM */
    return xenc_domain_base + ((uint64_t)xenc_alloc_owner << xenc_domain_shift) +
           (uint64_t)xenc_owner_pages[i].nr++ * PAGE_SIZE;
}
typedef void (*xenc_log_fn)(int rec, const char *func, int line, int n, const uint64_t *args);
static xenc_log_fn xenc_sink;
/* A scenario's [[fault]]: the runtime answers, per occurrence of a point,
 * 0 or the -errno to inject (and records the fault-inject event). */
enum xenc_fault_point { XF_FLUSH_CONTEXT = 0, XF_FLUSH_IOTLB = 1, XF_CMPXCHG = 2 };
typedef int (*xenc_fault_fn)(int point, const char *func, int line);
static xenc_fault_fn xenc_fault;

static int xenc_fault_at(int point, const char *func, int line)
{
    return xenc_fault ? xenc_fault(point, func, line) : 0;
}

void xenc_set_fault(xenc_fault_fn fn)
{
    xenc_fault = fn;
}
static int xenc_lock_depth[8][64];

bool iommu_debug;
bool untrusted_msi;
bool iommu_intremap = true;
bool iommu_hwdom_passthrough;
bool ats_enabled;
bool cpu_has_cx16 = true;
__typeof__(rwbf_quirk) rwbf_quirk;   /* bool_t up to 4.17, bool from 4.18 */
unsigned int iommu_quarantine;
struct domain *dom_io, *dom_xen, *hardware_domain;
struct iommu_ops iommu_ops;
void cache_writeback(const void *addr, unsigned int size) { (void)addr; (void)size; }
void flush_all_cache(void) { }
LIST_HEAD(acpi_drhd_units);
LIST_HEAD(acpi_rmrr_units);

/* registers last written by an invalidation, per unit */
static uint64_t xenc_ccmd_done[XENC_MAX_IOMMUS], xenc_iotlb_done[XENC_MAX_IOMMUS];
static int xenc_ccmd_seen[XENC_MAX_IOMMUS], xenc_iotlb_seen[XENC_MAX_IOMMUS], xenc_wbf_seen[XENC_MAX_IOMMUS];
static uint8_t xenc_regs[XENC_MAX_IOMMUS][4096];

void xenc_log(int rec, const char *func, int line, int n, ...)
{
    uint64_t args[12];
    va_list ap;
    int i;

    if ( !xenc_in_shadow_check )
        xenc_ctx_shadow_check(func, line);
    va_start(ap, n);
    for ( i = 0; i < n && i < 12; i++ )
        args[i] = va_arg(ap, uint64_t);
    va_end(ap);
    if ( rec == XR_LOCK && args[0] < 8 )
        xenc_lock_depth[args[0]][args[1] & 63]++;
    else if ( rec == XR_UNLOCK && args[0] < 8 )
        xenc_lock_depth[args[0]][args[1] & 63]--;
    if ( xenc_sink )
        xenc_sink(rec, func, line, n, args);
}

/* A record whose payload is text: the text travels in the func slot. */
static void xenc_sink_text(int rec, const char *func, int line, const char *text)
{
    uint64_t args[1] = { (uint64_t)(uintptr_t)func };
    if ( xenc_sink )
        xenc_sink(rec, text, line, 1, args);
}

void xenc_assert_failed(const char *what, const char *file, int line)
{
    char buf[512];
    snprintf(buf, sizeof(buf), "%s at %s:%d", what, file, line);
    xenc_sink_text(XR_ASSERT, "", line, buf);
}

int xenc_lock_held(const spinlock_t *l)
{
    return xenc_lock_depth[l->name & 7][l->target & 63] > 0;
}

/* ---- bits ---- */
static int xenc_bitmap_owner(const unsigned long *addr, uint64_t *what, uint64_t *who);

void xenc_set_bit(int nr, unsigned long *addr, const char *func, int line)
{
    uint64_t what, who;
    addr[nr / BITS_PER_LONG] |= 1UL << (nr % BITS_PER_LONG);
    if ( xenc_bitmap_owner(addr, &what, &who) )
        xenc_log(what == 0 ? XR_DID_BIT : XR_IOMMU_BIT, func, line, 3, who, (uint64_t)nr, (uint64_t)1);
}

void xenc_clear_bit(int nr, unsigned long *addr, const char *func, int line)
{
    uint64_t what, who;
    addr[nr / BITS_PER_LONG] &= ~(1UL << (nr % BITS_PER_LONG));
    if ( xenc_bitmap_owner(addr, &what, &who) )
        xenc_log(what == 0 ? XR_DID_BIT : XR_IOMMU_BIT, func, line, 3, who, (uint64_t)nr, (uint64_t)0);
}

int test_bit(int nr, const unsigned long *addr)
{
    return (addr[nr / BITS_PER_LONG] >> (nr % BITS_PER_LONG)) & 1;
}

unsigned int find_next_bit(const unsigned long *addr, unsigned int size, unsigned int off)
{
    for ( ; off < size; off++ )
        if ( test_bit(off, addr) )
            return off;
    return size;
}

unsigned int find_first_bit(const unsigned long *addr, unsigned int size)
{
    return find_next_bit(addr, size, 0);
}

unsigned int find_first_zero_bit(const unsigned long *addr, unsigned int size)
{
    unsigned int i;
    for ( i = 0; i < size; i++ )
        if ( !test_bit(i, addr) )
            return i;
    return size;
}

/* ---- memory ---- */
struct page_info *alloc_domheap_pages(struct domain *d, unsigned int order, unsigned int memflags)
{
    struct page_info *pg;
    (void)d; (void)order; (void)memflags;
    if ( xenc_nr_pages >= XENC_MAX_PAGES )
        return NULL;
    pg = &xenc_pages[xenc_nr_pages];
    pg->maddr = xenc_next_maddr();
    if ( !pg->maddr )
        return NULL;
    pg->va = aligned_alloc(PAGE_SIZE, PAGE_SIZE);
    if ( !pg->va )
        return NULL;
    memset(pg->va, 0x5a, PAGE_SIZE);      /* the caller clears it, as in Xen */
    pg->kind = XP_PLAIN;
    xenc_nr_pages++;
    return pg;
}

void free_domheap_page(struct page_info *pg)
{
    pg->kind = XP_FREE;
}

uint64_t page_to_maddr(const struct page_info *pg)
{
    return pg->maddr;
}

struct page_info *maddr_to_page(uint64_t maddr)
{
    unsigned int i;
    for ( i = 0; i < xenc_nr_pages; i++ )
        if ( xenc_pages[i].maddr == maddr )
            return &xenc_pages[i];
    xenc_assert_failed("machine address outside stand-in memory", __FILE__, __LINE__);
    return NULL;
}

void *xenc_map(uint64_t maddr)
{
    struct page_info *pg = maddr_to_page(maddr & PAGE_MASK_4K);
    return pg ? (char *)pg->va + (maddr & 0xfff) : NULL;
}

void *map_vtd_domain_page(u64 maddr)
{
    return xenc_map(maddr);
}

void unmap_vtd_domain_page(const void *va)
{
    (void)va;
}

struct page_info *xenc_page_of(const void *va)
{
    unsigned int i;
    for ( i = 0; i < xenc_nr_pages; i++ )
        if ( (const char *)va >= (const char *)xenc_pages[i].va &&
             (const char *)va < (const char *)xenc_pages[i].va + PAGE_SIZE )
            return &xenc_pages[i];
    return NULL;
}

static int xenc_ctx_where(const void *p, uint64_t *iommu, uint64_t *bus, uint64_t *devfn)
{
    const struct page_info *pg = xenc_page_of(p);
    if ( !pg || pg->kind != XP_CONTEXT )
        return 0;
    *iommu = (uint64_t)pg->iommu;
    *bus = (uint64_t)pg->bus;
    *devfn = (uint64_t)(((const char *)p - (const char *)pg->va) / 16);
    return 1;
}

void iommu_sync_cache_logged(const void *addr, unsigned int size, const char *func, int line)
{
    uint64_t iommu, bus, devfn;
    if ( size == sizeof(struct context_entry) && xenc_ctx_where(addr, &iommu, &bus, &devfn) )
        xenc_log(XR_CACHE_SYNC, func, line, 3, iommu, bus, devfn);
}

/* ---- stores the IOMMU sees ---- */
static void xenc_shadow_sync(const void *p)
{
    const struct page_info *pg = xenc_page_of(p);
    unsigned int i;
    if ( !pg || pg->kind != XP_CONTEXT )
        return;
    i = (unsigned int)(pg - xenc_pages);
    if ( xenc_ctx_shadow[i] )
        memcpy(xenc_ctx_shadow[i] + (((uintptr_t)p - (uintptr_t)pg->va) & ~(uintptr_t)15),
               (const uint8_t *)pg->va + (((uintptr_t)p - (uintptr_t)pg->va) & ~(uintptr_t)15), 16);
}

static void xenc_ctx_shadow_check(const char *func, int line)
{
    unsigned int i, e;
    xenc_in_shadow_check = 1;
    for ( i = 0; i < xenc_nr_pages; i++ )
    {
        const struct context_entry *now, *was;
        if ( xenc_pages[i].kind != XP_CONTEXT || !xenc_ctx_shadow[i] )
            continue;
        if ( !memcmp(xenc_ctx_shadow[i], xenc_pages[i].va, PAGE_SIZE) )
            continue;
        now = xenc_pages[i].va;
        was = (const struct context_entry *)xenc_ctx_shadow[i];
        for ( e = 0; e < PAGE_SIZE / 16; e++ )
        {
            if ( now[e].lo != was[e].lo )
                xenc_log(XR_CTX_STORE, func, line, 9, (uint64_t)xenc_pages[i].iommu, (uint64_t)xenc_pages[i].bus,
                         (uint64_t)e, (uint64_t)0, (uint64_t)0, was[e].lo, was[e].hi, now[e].lo, was[e].hi);
            if ( now[e].hi != was[e].hi )
                xenc_log(XR_CTX_STORE, func, line, 9, (uint64_t)xenc_pages[i].iommu, (uint64_t)xenc_pages[i].bus,
                         (uint64_t)e, (uint64_t)1, (uint64_t)0, now[e].lo, was[e].hi, now[e].lo, now[e].hi);
        }
        memcpy(xenc_ctx_shadow[i], xenc_pages[i].va, PAGE_SIZE);
    }
    xenc_in_shadow_check = 0;
}

static void xenc_ctx_half(struct context_entry *dst, int hi, uint64_t v, int method,
                          const char *func, int line)
{
    uint64_t iommu, bus, devfn;
    struct context_entry old = *dst;
    xenc_ctx_shadow_check(func, line);      /* earlier unseen stores first */
    if ( hi )
        dst->hi = v;
    else
        dst->lo = v;
    xenc_shadow_sync(dst);
    if ( xenc_ctx_where(dst, &iommu, &bus, &devfn) )
        xenc_log(XR_CTX_STORE, func, line, 9, iommu, bus, devfn, (uint64_t)(hi ? 1 : 0), (uint64_t)method,
                 old.lo, old.hi, dst->lo, dst->hi);
}

void xenc_ctx_commit(struct context_entry *dst, const struct context_entry *val, int halves,
                     const char *func, int line)
{
    if ( halves & 1 )
        xenc_ctx_half(dst, 0, val->lo, 0, func, line);
    if ( halves & 2 )
        xenc_ctx_half(dst, 1, val->hi, 0, func, line);
}

void xenc_write_atomic64(uint64_t *p, uint64_t v, const char *func, int line)
{
    const struct page_info *pg = xenc_page_of(p);
    if ( pg && pg->kind == XP_CONTEXT )
    {
        struct context_entry *e = (struct context_entry *)((uintptr_t)p & ~(uintptr_t)15);
        xenc_ctx_half(e, (uint64_t *)p != &e->lo, v, 1, func, line);
    }
    else
        *p = v;
}

__uint128_t xenc_cmpxchg16b(volatile void *ptr, const __uint128_t *oldp, const __uint128_t *newp,
                            const char *func, int line)
{
    /* as 128 bits, not through .full: entries before the XSA-400 series have no such member */
    struct context_entry *e = (struct context_entry *)ptr;
    struct context_entry old = *e;
    __uint128_t cur;
    uint64_t iommu, bus, devfn;
    xenc_ctx_shadow_check(func, line);
    memcpy(&cur, &old, sizeof(cur));
    if ( cur != *oldp )
        return cur;
    if ( xenc_ctx_where(e, &iommu, &bus, &devfn) && xenc_fault_at(XF_CMPXCHG, func, line) )
        return ~cur;           /* injected: the entry "changed behind our back", nothing stored */
    memcpy(e, newp, sizeof(*e));
    xenc_shadow_sync(e);
    if ( xenc_ctx_where(e, &iommu, &bus, &devfn) )
        xenc_log(XR_CTX_STORE, func, line, 9, iommu, bus, devfn, (uint64_t)2, (uint64_t)2,
                 old.lo, old.hi, e->lo, e->hi);
    return cur;
}

void xenc_root_commit(struct root_entry *dst, const struct root_entry *val, const char *func, int line)
{
    struct page_info *pg = xenc_page_of(dst);
    uint64_t old = dst->val;
    dst->val = val->val;
    if ( !pg || pg->kind != XP_ROOT )
        return;
    if ( (dst->val & PAGE_MASK_4K) && (dst->val & PAGE_MASK_4K) != (old & PAGE_MASK_4K) )
    {
        struct page_info *ctx = maddr_to_page(dst->val & PAGE_MASK_4K);
        if ( ctx )
        {
            unsigned int i = (unsigned int)(ctx - xenc_pages);
            if ( !xenc_ctx_shadow[i] )
                xenc_ctx_shadow[i] = malloc(PAGE_SIZE);
            if ( xenc_ctx_shadow[i] )
                memcpy(xenc_ctx_shadow[i], ctx->va, PAGE_SIZE);
            ctx->kind = XP_CONTEXT;
            ctx->iommu = pg->iommu;
            ctx->bus = (int)(((char *)dst - (char *)pg->va) / 16);
        }
    }
    xenc_log(XR_ROOT_STORE, func, line, 4, (uint64_t)pg->iommu,
             (uint64_t)(((char *)dst - (char *)pg->va) / 16), old, dst->val);
}

/* ---- registers ---- */
static int xenc_reg_unit(const volatile void *addr, unsigned int *off)
{
    int i;
    for ( i = 0; i < XENC_MAX_IOMMUS; i++ )
        if ( (const volatile uint8_t *)addr >= xenc_regs[i] &&
             (const volatile uint8_t *)addr < xenc_regs[i] + 4096 )
        {
            *off = (unsigned int)((const volatile uint8_t *)addr - xenc_regs[i]);
            return i;
        }
    xenc_assert_failed("MMIO outside the register model", __FILE__, __LINE__);
    return 0;
}

uint32_t readl(const volatile void *addr) { return *(const volatile uint32_t *)addr; }
uint64_t readq(const volatile void *addr) { return *(const volatile uint64_t *)addr; }

void writel(uint32_t v, volatile void *addr)
{
    unsigned int off;
    int u = xenc_reg_unit(addr, &off);
    if ( off == DMAR_GCMD_REG && (v & DMA_GCMD_WBF) )
    {
        xenc_wbf_seen[u] = 1;
        v &= ~DMA_GCMD_WBF;          /* completes at once: GSTS.WBFS stays clear */
    }
    *(volatile uint32_t *)addr = v;
}

void writeq(uint64_t v, volatile void *addr)
{
    unsigned int off;
    int u = xenc_reg_unit(addr, &off);
    struct vtd_iommu *iommu = NULL;
    struct acpi_drhd_unit *drhd;

    list_for_each_entry(drhd, &acpi_drhd_units, list)
        if ( (uint8_t *)drhd->iommu->reg == xenc_regs[u] )
            iommu = drhd->iommu;
    if ( off == DMAR_CCMD_REG && (v & DMA_CCMD_ICC) )
    {
        xenc_ccmd_done[u] = v;
        xenc_ccmd_seen[u] = 1;
        v &= ~DMA_CCMD_ICC;
    }
    else if ( iommu && off == ecap_iotlb_offset(iommu->ecap) + 8 && (v & DMA_TLB_IVT) )
    {
        xenc_iotlb_done[u] = v;
        xenc_iotlb_seen[u] = 1;
        /* report the granularity asked for as the one performed (IAIG = IIRG) */
        v = (v & ~DMA_TLB_IVT) | (((v >> 60) & 3) << 57);
    }
    *(volatile uint64_t *)addr = v;
}

static int xenc_unit_of(const struct vtd_iommu *iommu)
{
    return (int)(((uint8_t *)iommu->reg - &xenc_regs[0][0]) / 4096);
}

int xenc_flush_context(struct vtd_iommu *iommu, u16 did, u16 source_id, u8 function_mask, u64 type,
                       bool non_present_entry_flush)
{
    int u = xenc_unit_of(iommu), rc, gran;
    uint64_t seen_did = did;
    xenc_ccmd_seen[u] = 0;
    gran = type == DMA_CCMD_GLOBAL_INVL ? 0 : type == DMA_CCMD_DOMAIN_INVL ? 1 : 2;
    /* An injected error stands for what queued invalidation could return (the
     * register code cannot fail: it panics); a flush the code skips for a
     * non-present entry is no occurrence. */
    if ( !(non_present_entry_flush && !cap_caching_mode(iommu->cap)) &&
         (rc = xenc_fault_at(XF_FLUSH_CONTEXT, "iommu_flush_context_device", 0)) )
    {
        if ( non_present_entry_flush )
            did = 0;
        xenc_log(XR_FLUSH_CONTEXT, "iommu->flush.context", 0, 7, (uint64_t)iommu->index, (uint64_t)gran,
                 (uint64_t)did, (uint64_t)source_id, (uint64_t)function_mask,
                 (uint64_t)non_present_entry_flush, (uint64_t)(int64_t)rc);
        return rc;
    }
    rc = XENC_FLUSH_CONTEXT_REG(iommu, did, source_id, function_mask, type, non_present_entry_flush);
    if ( xenc_ccmd_seen[u] && gran )
        seen_did = xenc_ccmd_done[u] & 0xffff;
    xenc_log(XR_FLUSH_CONTEXT, "iommu->flush.context", 0, 7, (uint64_t)iommu->index, (uint64_t)gran,
             seen_did, (uint64_t)source_id, (uint64_t)function_mask, (uint64_t)non_present_entry_flush,
             (uint64_t)(int64_t)rc);
    return rc;
}

int xenc_flush_iotlb(struct vtd_iommu *iommu, u16 did, u64 addr, unsigned int size_order, u64 type,
                     bool flush_non_present_entry, bool flush_dev_iotlb)
{
    int u = xenc_unit_of(iommu), rc, gran;
    uint64_t seen_did = did;
    xenc_iotlb_seen[u] = 0;
    gran = type == DMA_TLB_GLOBAL_FLUSH ? 0 : type == DMA_TLB_DSI_FLUSH ? 1 : 2;
    if ( !(flush_non_present_entry && !cap_caching_mode(iommu->cap)) &&
         (rc = xenc_fault_at(XF_FLUSH_IOTLB, "iommu_flush_iotlb_dsi", 0)) )
    {
        if ( flush_non_present_entry )
            did = 0;
        xenc_log(XR_FLUSH_IOTLB, "iommu->flush.iotlb", 0, 8, (uint64_t)iommu->index, (uint64_t)gran,
                 (uint64_t)did, addr, (uint64_t)size_order, (uint64_t)flush_non_present_entry,
                 (uint64_t)flush_dev_iotlb, (uint64_t)(int64_t)rc);
        return rc;
    }
    rc = XENC_FLUSH_IOTLB_REG(iommu, did, addr, size_order, type, flush_non_present_entry, flush_dev_iotlb);
    if ( xenc_iotlb_seen[u] && gran )
        seen_did = (xenc_iotlb_done[u] >> 32) & 0xffff;
    xenc_log(XR_FLUSH_IOTLB, "iommu->flush.iotlb", 0, 8, (uint64_t)iommu->index, (uint64_t)gran, seen_did,
             addr, (uint64_t)size_order, (uint64_t)flush_non_present_entry, (uint64_t)flush_dev_iotlb,
             (uint64_t)(int64_t)rc);
    return rc;
}

static void iommu_flush_write_buffer(struct vtd_iommu *iommu)
{
    int u = xenc_unit_of(iommu);
    xenc_wbf_seen[u] = 0;
    xenc_real_iommu_flush_write_buffer(iommu);
    xenc_log(XR_FLUSH_WB, "iommu_flush_write_buffer", 0, 2, (uint64_t)iommu->index,
             (uint64_t)xenc_wbf_seen[u]);
}

/* ---- the page-table walker: a stand-in ----
 * Only what domain_pgd_maddr() asks of it: allocate the tables from the top
 * level down to `target` for address 0 and install the top one as the
 * domain's pgd.  Each page allocated is logged with its level. */
static uint64_t xenc_walk(struct domain *domain, uint64_t addr, unsigned int target, bool alloc)
{
    struct domain_iommu *hd = dom_iommu(domain);
    uint64_t maddr = hd->arch.vtd.pgd_maddr, prev = 0;
    unsigned int level;
    if ( addr || !alloc || maddr )
    {
        xenc_log(XR_UNSUPPORTED, "addr_to_dma_page_maddr: only the first allocation of a domain's tables",
                 0, 0);
        return 0;
    }
    for ( level = 4; level >= target && level >= 1; level-- )
    {
        uint64_t pg;
        xenc_alloc_owner = (int)domain->domain_id;
        pg = alloc_pgtable_maddr(1, hd->node);
        xenc_alloc_owner = -1;
        if ( !pg )
            return level;
        maddr_to_page(pg)->kind = XP_PGTABLE;
        if ( prev )
        {
            struct dma_pte *pte = map_vtd_domain_page(prev);
            pte->val = pg | DMA_PTE_READ | DMA_PTE_WRITE;
        }
        else
            hd->arch.vtd.pgd_maddr = pg;
        xenc_log(XR_PT_ALLOC, __func__, __LINE__, 3, (uint64_t)domain->domain_id, pg, (uint64_t)level);
        prev = pg;
        if ( level == 1 )
            break;
    }
    return prev;
}

#if XENC_WALKER_ARGS == 3
static u64 addr_to_dma_page_maddr(struct domain *domain, u64 addr, int alloc)
{
    return xenc_walk(domain, addr, 1, alloc);      /* down to the leaf table */
}
#else
static uint64_t addr_to_dma_page_maddr(struct domain *domain, daddr_t addr, unsigned int target,
                                       unsigned int *flush_flags, bool alloc)
{
    (void)flush_flags;
    return xenc_walk(domain, addr, target, alloc);
}
#endif

static void sync_cache(const void *addr, unsigned int size)
{
    (void)addr; (void)size;
}

/* ---- other files of the tree ---- */
struct domain *xenc_rcu_lock_domain_by_id(domid_t id, const char *func, int line);
extern struct domain *xenc_domain_by_id(domid_t id);

struct domain *xenc_rcu_lock_domain_by_id(domid_t id, const char *func, int line)
{
    struct domain *d = xenc_domain_by_id(id);
    if ( d )
        xenc_log(XR_RCU_LOCK, func, line, 1, (uint64_t)d->domain_id);
    return d;
}

struct domain *xenc_rcu_lock_domain(struct domain *d, const char *func, int line)
{
    xenc_log(XR_RCU_LOCK, func, line, 1, (uint64_t)d->domain_id);
    return d;
}

void xenc_rcu_unlock_domain(struct domain *d, const char *func, int line)
{
    xenc_log(XR_RCU_UNLOCK, func, line, 1, (uint64_t)d->domain_id);
}

void domain_crash(struct domain *d)
{
    xenc_log(XR_UNSUPPORTED, "domain_crash", 0, 1, (uint64_t)d->domain_id);
}

/* find_upstream_bridge() and pdev_type(): pci.c, answered from the scenario's
 * topology in the section on bridges at the end of this file. */

void pci_vtd_quirk(const struct pci_dev *pdev) { (void)pdev; }

/* The ME WiFi quirk acts only for certain Intel WLAN devices next to certain
 * host bridges; the runtime refuses scenarios that have them, so it does
 * nothing here.  Its signature changed across versions: xenc/build.py
 * defines it after this file with the parameters of the tree's extern.h. */

struct acpi_drhd_unit *find_ats_dev_drhd(struct vtd_iommu *iommu) { (void)iommu; return NULL; }
int ats_device(const struct pci_dev *pdev, const struct acpi_drhd_unit *drhd)
{
    (void)pdev; (void)drhd;
    return 0;
}
void enable_ats_device(struct pci_dev *pdev, struct list_head *l) { (void)pdev; (void)l; }
void disable_ats_device(struct pci_dev *pdev) { (void)pdev; }

/* iommu_alloc_domid() / iommu_free_domid(): standin/quarantine.c */

/* ---- the platform, built by the runtime ---- */
#define XENC_MAX_DOMAINS 256
#define XENC_MAX_PDEVS 256
#define XENC_MAX_RMRRS 16
static struct domain xenc_domains[XENC_MAX_DOMAINS];
static unsigned int xenc_nr_domains;
static unsigned long xenc_iommu_bitmaps[XENC_MAX_DOMAINS];
static struct pci_dev xenc_pdevs[XENC_MAX_PDEVS];
static unsigned int xenc_nr_pdevs;
static struct vtd_iommu xenc_iommus[XENC_MAX_IOMMUS];
static struct acpi_drhd_unit xenc_drhds[XENC_MAX_IOMMUS];
static unsigned long xenc_did_bitmaps[XENC_MAX_IOMMUS][BITS_TO_LONGS(65536)];
static domid_t xenc_did_maps[XENC_MAX_IOMMUS][65536];
static unsigned int xenc_nr_iommus;
static struct acpi_rmrr_unit xenc_rmrrs[XENC_MAX_RMRRS];
static u16 xenc_rmrr_devs[XENC_MAX_RMRRS][9];
static unsigned int xenc_nr_rmrrs;
static u16 xenc_drhd_devs[XENC_MAX_IOMMUS][XENC_MAX_PDEVS + 1];

static int xenc_bitmap_owner(const unsigned long *addr, uint64_t *what, uint64_t *who)
{
    unsigned int i;
    for ( i = 0; i < xenc_nr_iommus; i++ )
        if ( addr == xenc_did_bitmaps[i] )
        {
            *what = 0;
            *who = xenc_iommus[i].index;
            return 1;
        }
    for ( i = 0; i < xenc_nr_domains; i++ )
#if XENC_XEN_VERSION >= 416
        if ( addr == &xenc_iommu_bitmaps[i] )
#else
        if ( addr == &xenc_domains[i].iommu.arch.vtd.iommu_bitmap )   /* inline in 4.15 */
#endif
        {
            *what = 1;
            *who = xenc_domains[i].domain_id;
            return 1;
        }
    return 0;
}

struct domain *xenc_domain_by_id(domid_t id)
{
    unsigned int i;
    for ( i = 0; i < xenc_nr_domains; i++ )
        if ( xenc_domains[i].domain_id == id && id < DOMID_FIRST_RESERVED )
            return &xenc_domains[i];
    return NULL;
}

static struct domain *xenc_domain_any(domid_t id)
{
    unsigned int i;
    for ( i = 0; i < xenc_nr_domains; i++ )
        if ( xenc_domains[i].domain_id == id )
            return &xenc_domains[i];
    return NULL;
}

void xenc_set_sink(xenc_log_fn fn, uint64_t page_base, uint64_t domain_base, unsigned int domain_shift,
                   int cx16)
{
    xenc_sink = fn;
    xenc_page_base = page_base;
    xenc_domain_base = domain_base;
    xenc_domain_shift = domain_shift;
    cpu_has_cx16 = cx16;
}

int xenc_add_domain(unsigned int id, int hardware)
{
    struct domain *d = &xenc_domains[xenc_nr_domains];
    if ( xenc_nr_domains >= XENC_MAX_DOMAINS )
        return -ENOSPC;
    d->domain_id = (domid_t)id;
    d->is_hardware = hardware;
    INIT_LIST_HEAD(&d->pdev_list);
    d->iommu.arch.mapping_lock = (spinlock_t){ XL_MAPPING, (long)id };
#if XENC_XEN_VERSION >= 419
    d->pci_lock = (rwlock_t){ XL_PCI, (long)id, 0 };
#endif
#if XENC_XEN_VERSION >= 416
    d->iommu.arch.vtd.iommu_bitmap = &xenc_iommu_bitmaps[xenc_nr_domains];
#endif
    d->iommu.node = NUMA_NO_NODE;
    if ( hardware )
        hardware_domain = d;
    if ( id == DOMID_IO )
        dom_io = d;
    if ( id == DOMID_XEN )
        dom_xen = d;
    return (int)xenc_nr_domains++;
}

/* cap: nd (DIDs 2^(4+2nd)), caching mode, rwbf; sagaw for the unit's levels */
int xenc_add_iommu(unsigned int index, unsigned int segment, int include_all, unsigned int nd,
                   unsigned int levels, int caching_mode, int rwbf, int coherent)
{
    struct vtd_iommu *iommu = &xenc_iommus[xenc_nr_iommus];
    struct acpi_drhd_unit *drhd = &xenc_drhds[xenc_nr_iommus];
    struct page_info *root;
    if ( xenc_nr_iommus >= XENC_MAX_IOMMUS )
        return -ENOSPC;
    iommu->index = index;
    iommu->nr_pt_levels = levels;
    iommu->cap = (uint64_t)(nd & 7) | ((uint64_t)!!caching_mode << 7) | ((uint64_t)!!rwbf << 4) |
                 ((uint64_t)1 << (8 + levels - 2));
    iommu->ecap = ((uint64_t)0x10 << 8) | (uint64_t)!!coherent;
    iommu->reg = xenc_regs[xenc_nr_iommus];
    iommu->lock = (spinlock_t){ XL_IOMMU, (long)index };
    iommu->register_lock = (spinlock_t){ XL_REGISTER, (long)index };
    iommu->node = NUMA_NO_NODE;
    iommu->drhd = drhd;
    iommu->flush.context = xenc_flush_context;
    iommu->flush.iotlb = xenc_flush_iotlb;
    iommu->domid_bitmap = xenc_did_bitmaps[xenc_nr_iommus];
    iommu->domid_map = xenc_did_maps[xenc_nr_iommus];
    INIT_LIST_HEAD(&iommu->ats_devices);
    root = alloc_domheap_pages(NULL, 0, 0);
    if ( !root )
        return -ENOMEM;
    memset(root->va, 0, PAGE_SIZE);
    root->kind = XP_ROOT;
    root->iommu = (int)index;
    iommu->root_maddr = root->maddr;
#ifdef XENC_HAS_MIN_PT_LEVELS
    if ( levels < min_pt_levels )
        min_pt_levels = levels;
#endif
    drhd->iommu = iommu;
    drhd->segment = (u16)segment;
    drhd->include_all = include_all;
    drhd->scope.devices = xenc_drhd_devs[xenc_nr_iommus];
    list_add_tail(&drhd->list, &acpi_drhd_units);
    xenc_nr_iommus++;
    return 0;
}

int xenc_add_drhd_device(unsigned int index, unsigned int bdf)
{
    struct acpi_drhd_unit *drhd = &xenc_drhds[index];
    if ( drhd->scope.devices_cnt >= XENC_MAX_PDEVS )
        return -ENOSPC;
    drhd->scope.devices[drhd->scope.devices_cnt++] = (u16)bdf;
    return 0;
}

static int xenc_drhd_scope_has_bridge_of(const struct acpi_drhd_unit *drhd, const struct pci_dev *pdev);

struct acpi_drhd_unit *acpi_find_matched_drhd_unit(const struct pci_dev *pdev)
{
    struct acpi_drhd_unit *drhd, *all = NULL;
    int i;
    list_for_each_entry(drhd, &acpi_drhd_units, list)
    {
        if ( drhd->segment != pdev->seg )
            continue;
        for ( i = 0; i < drhd->scope.devices_cnt; i++ )
            if ( drhd->scope.devices[i] == pdev->sbdf.bdf )
                return drhd;
        if ( xenc_drhd_scope_has_bridge_of(drhd, pdev) )
            return drhd;
        if ( drhd->include_all )
            all = drhd;
    }
    return all;
}

int xenc_add_rmrr(unsigned int segment, uint64_t base, uint64_t end, unsigned int nbdf, const uint16_t *bdfs)
{
    struct acpi_rmrr_unit *r = &xenc_rmrrs[xenc_nr_rmrrs];
    unsigned int i;
    if ( xenc_nr_rmrrs >= XENC_MAX_RMRRS || nbdf > 8 )
        return -ENOSPC;
    r->segment = (u16)segment;
    r->base_address = base;
    r->end_address = end;
    r->scope.devices = xenc_rmrr_devs[xenc_nr_rmrrs];
    for ( i = 0; i < nbdf; i++ )
        r->scope.devices[i] = bdfs[i];
    r->scope.devices[nbdf] = 0;
    r->scope.devices_cnt = (int)nbdf;
    list_add_tail(&r->list, &acpi_rmrr_units);
    xenc_nr_rmrrs++;
    return 0;
}

int xenc_add_pdev(unsigned int seg, unsigned int bus, unsigned int devfn, int type)
{
    struct pci_dev *p = &xenc_pdevs[xenc_nr_pdevs];
    if ( xenc_nr_pdevs >= XENC_MAX_PDEVS )
        return -ENOSPC;
    p->seg = (uint16_t)seg;
    p->bus = (uint8_t)bus;
    p->devfn = (uint8_t)devfn;
    p->type = (enum pdev_type)type;
    p->arch.pseudo_domid = DOMID_INVALID;
    INIT_LIST_HEAD(&p->domain_list);
    return (int)xenc_nr_pdevs++;
}

/* x86/iommu.c's identity maps: reference counted per (base, end); p2m_access_x
 * drops one reference.  Logged with the count after the call. */
#define XENC_MAX_IDMAPS 64
static struct { domid_t d; paddr_t base, end; int access; unsigned int count; } xenc_idmaps[XENC_MAX_IDMAPS];

static domid_t xenc_idmap_domid(const struct domain *d);    /* standin/quarantine.c */

int iommu_identity_mapping(struct domain *d, p2m_access_t p2ma, paddr_t base, paddr_t end,
                           unsigned int flag)
{
    unsigned int i, free_slot = XENC_MAX_IDMAPS;
    domid_t id = xenc_idmap_domid(d);
    (void)flag;
    for ( i = 0; i < XENC_MAX_IDMAPS; i++ )
    {
        if ( !xenc_idmaps[i].count )
        {
            if ( free_slot == XENC_MAX_IDMAPS )
                free_slot = i;
            continue;
        }
        if ( xenc_idmaps[i].d != id )
            continue;
        if ( xenc_idmaps[i].base == base && xenc_idmaps[i].end == end )
        {
            if ( p2ma == p2m_access_x )
                xenc_idmaps[i].count--;
            else if ( xenc_idmaps[i].access != p2ma )
                return -98;    /* -EADDRINUSE */
            else
                xenc_idmaps[i].count++;
            xenc_log(XR_IDMAP, "iommu_identity_mapping", 0, 5, (uint64_t)id, base, end,
                     (uint64_t)(p2ma != p2m_access_x), (uint64_t)xenc_idmaps[i].count);
            return 0;
        }
        if ( end >= xenc_idmaps[i].base && xenc_idmaps[i].end >= base )
            return -98;
    }
    if ( p2ma == p2m_access_x )
        return -ENOENT;
    if ( free_slot == XENC_MAX_IDMAPS )
        return -ENOMEM;
    xenc_idmaps[free_slot].d = id;
    xenc_idmaps[free_slot].base = base;
    xenc_idmaps[free_slot].end = end;
    xenc_idmaps[free_slot].access = p2ma;
    xenc_idmaps[free_slot].count = 1;
    xenc_log(XR_IDMAP, "iommu_identity_mapping", 0, 5, (uint64_t)id, base, end, (uint64_t)1,
             (uint64_t)1);
    return 0;
}

int xenc_op_identity(unsigned int domid, uint64_t base, uint64_t end)
{
    struct domain *d = xenc_domain_any((domid_t)domid);
    return d ? iommu_identity_mapping(d, p2m_access_rw, base, end, 0) : -ESRCH;
}

uint64_t xenc_did_map_addr(unsigned int iommu)
{
    return (uint64_t)(uintptr_t)xenc_did_maps[iommu];
}

static struct pci_dev *xenc_pdev(int i) { return &xenc_pdevs[i]; }

/* Owner and DID-map shadows, read by the runtime at each hook. */
int xenc_pdev_owner(int i)
{
    return xenc_pdevs[i].domain ? (int)xenc_pdevs[i].domain->domain_id : -1;
}

unsigned int xenc_did_map_get(unsigned int iommu, unsigned int did)
{
    return xenc_did_maps[iommu][did];
}

unsigned int xenc_ndoms(unsigned int iommu)
{
    return cap_ndoms(xenc_iommus[iommu].cap);
}

/* ---- the operations (what pci.c / the x86 glue does around the VT-d code) ---- */
int xenc_op_flush_all(void)
{
    return iommu_flush_all();
}

/* setup_one_hwdom_device(), assign_device() and deassign_device() with their
 * phantom-function loops: xenc_op_hwdom_setup, xenc_op_assign_all and
 * xenc_op_reassign_all, in the section on bridges at the end of this file. */

/* ---- printk: Xen's formats plus its %pp (a pci_sbdf_t *) and %pd (a domain) ---- */
void xenc_printk(const char *func, int line, const char *fmt, ...)
{
    char out[512], spec[32];
    size_t o = 0;
    va_list ap;

    va_start(ap, fmt);
    while ( *fmt && o < sizeof(out) - 1 )
    {
        size_t n = 0;
        int longs = 0;
        char conv;

        if ( *fmt != '%' )
        {
            out[o++] = *fmt++;
            continue;
        }
        spec[n++] = *fmt++;
        while ( *fmt && strchr("-+ #0123456789.", *fmt) && n < sizeof(spec) - 4 )
            spec[n++] = *fmt++;
        while ( *fmt == 'l' || *fmt == 'h' || *fmt == 'z' )
        {
            longs += *fmt == 'l' || *fmt == 'z';
            spec[n++] = *fmt++;
        }
        conv = *fmt ? *fmt++ : '%';
        spec[n++] = conv;
        spec[n] = 0;
        if ( conv == 'p' && (*fmt == 'p' || *fmt == 'd') )
        {
            char what = *fmt++;
            if ( what == 'p' )
            {
                const pci_sbdf_t *s = va_arg(ap, const pci_sbdf_t *);
                o += (size_t)snprintf(out + o, sizeof(out) - o, "%04x:%02x:%02x.%u", s->seg, PCI_BUS(s->bdf),
                                      PCI_SLOT(s->bdf), PCI_FUNC(s->bdf));
            }
            else
            {
                const struct domain *d = va_arg(ap, const struct domain *);
                if ( d == dom_io )
                    o += (size_t)snprintf(out + o, sizeof(out) - o, "d[IO]");
                else
                    o += (size_t)snprintf(out + o, sizeof(out) - o, "d%u", d->domain_id);
            }
        }
        else if ( conv == '%' )
            out[o++] = '%';
        else if ( conv == 's' )
            o += (size_t)snprintf(out + o, sizeof(out) - o, spec, va_arg(ap, const char *));
        else if ( conv == 'p' )
            o += (size_t)snprintf(out + o, sizeof(out) - o, spec, va_arg(ap, void *));
        else if ( strchr("diouxXc", conv) )
        {
            if ( longs )
                o += (size_t)snprintf(out + o, sizeof(out) - o, spec, va_arg(ap, long));
            else
                o += (size_t)snprintf(out + o, sizeof(out) - o, spec, va_arg(ap, int));
        }
        if ( o >= sizeof(out) )
            o = sizeof(out) - 1;
    }
    va_end(ap);
    out[o] = 0;
    xenc_sink_text(XR_PRINTK, func, line, out);
}

/* ---- bridges, conventional PCI and phantom functions ----
 *
 * Topology (pci.c's pseg->bus2bridge[]): every bus from a bridge's secondary
 * to its subordinate bus maps to that bridge's (bus, devfn); the runtime
 * fills it from the scenario's pcie2pci-bridge / legacy-pci-bridge devices.
 * find_upstream_bridge() walks it as pci.c does (bus 0 and unbridged buses
 * answer 0 without the lock; a walk longer than the number of buses, a loop
 * in the table, answers -1); pdev_type() answers the declared type where
 * pci.c would read the device's config space.  The DRHD lookup (dmar.c)
 * matches a device through the bridges above it, as the scope's bus ranges
 * do in Xen.
 *
 * Phantom functions: the loops around the VT-d hooks are pci.c's
 * (setup_one_hwdom_device, assign_device, deassign_device); they follow the
 * 4.15 pci.c the models follow -- assign_device goes on over the phantom
 * functions whatever each returns -- which no VT-d tree changes. */
#define XENC_MAX_BUSES 256
static struct { int map; uint8_t bus, devfn; } xenc_bus2bridge[XENC_MAX_BUSES];
static spinlock_t xenc_bus2bridge_lock = { XL_BUS2BRIDGE, 0 };

int xenc_add_bridge(unsigned int bus, unsigned int devfn, unsigned int secondary, unsigned int subordinate)
{
    unsigned int b;
    if ( secondary >= XENC_MAX_BUSES || subordinate >= XENC_MAX_BUSES || subordinate < secondary )
        return -EINVAL;
    for ( b = secondary; b <= subordinate; b++ )
    {
        xenc_bus2bridge[b].map = 1;
        xenc_bus2bridge[b].bus = (uint8_t)bus;
        xenc_bus2bridge[b].devfn = (uint8_t)devfn;
    }
    return 0;
}

int find_upstream_bridge(uint16_t seg, uint8_t *bus, uint8_t *devfn, uint8_t *secbus)
{
    int ret = 1, cnt = 0;
    /* the table is segment 0's; the runtime refuses bridges elsewhere, so
     * another segment has none */
    if ( seg != 0 || *bus == 0 || !xenc_bus2bridge[*bus].map )
        return 0;
    spin_lock(&xenc_bus2bridge_lock);
    while ( xenc_bus2bridge[*bus].map )
    {
        *secbus = *bus;
        *devfn = xenc_bus2bridge[*bus].devfn;
        *bus = xenc_bus2bridge[*bus].bus;
        if ( cnt++ >= XENC_MAX_BUSES )
        {
            ret = -1;
            break;
        }
    }
    spin_unlock(&xenc_bus2bridge_lock);
    return ret;
}

enum pdev_type pdev_type(uint16_t seg, uint8_t bus, uint8_t devfn)
{
    unsigned int i;
    for ( i = 0; i < xenc_nr_pdevs; i++ )
        if ( xenc_pdevs[i].seg == seg && xenc_pdevs[i].bus == bus && xenc_pdevs[i].devfn == devfn )
            return xenc_pdevs[i].type;
    return DEV_TYPE_PCI_UNKNOWN;     /* nothing answers the config read */
}

static int xenc_drhd_scope_has_bridge_of(const struct acpi_drhd_unit *drhd, const struct pci_dev *pdev)
{
    unsigned int bus = pdev->bus, cnt = 0;
    int i;
    while ( pdev->seg == 0 && bus && xenc_bus2bridge[bus].map && cnt++ < XENC_MAX_BUSES )
    {
        uint16_t bdf = (uint16_t)PCI_BDF(xenc_bus2bridge[bus].bus, xenc_bus2bridge[bus].devfn);
        for ( i = 0; i < drhd->scope.devices_cnt; i++ )
            if ( drhd->scope.devices[i] == bdf )
                return 1;
        bus = xenc_bus2bridge[bus].bus;
    }
    return 0;
}

int xenc_set_phantom_stride(int pdev, unsigned int stride)
{
    xenc_pdev(pdev)->phantom_stride = (uint8_t)stride;
    return 0;
}

/* setup_one_hwdom_device(): the device joins the hardware domain, then each
 * of its functions is mapped; an error on a phantom function is logged and
 * the next one tried, an error on the device itself ends its setup. */
int xenc_op_hwdom_setup(int pdev)
{
    struct pci_dev *p = xenc_pdev(pdev);
    uint8_t devfn = p->devfn;
    int err, first = 0;

    p->domain = hardware_domain;
    list_add_tail(&p->domain_list, &hardware_domain->pdev_list);
    do {
        err = domain_context_mapping(hardware_domain, devfn, p);
        if ( err )
        {
            printk(XENLOG_ERR "setup %pp for d%d failed (%d)\n", &p->sbdf, hardware_domain->domain_id, err);
            if ( devfn == p->devfn )
                return err;
        }
        if ( devfn == p->devfn )
            first = err;
        devfn += p->phantom_stride;
    } while ( devfn != p->devfn && PCI_SLOT(devfn) == PCI_SLOT(p->devfn) );
    return first;
}

/* assign_device(): the device, then its phantom functions, each error of
 * which is dropped (4.15's `for ( ; stride; rc = 0 )`). */
int xenc_op_assign_all(int pdev, unsigned int domid, unsigned int flag)
{
    struct pci_dev *p = xenc_pdev(pdev);
    struct domain *d = xenc_domain_any((domid_t)domid);
    uint8_t devfn = p->devfn;
    int rc;

    if ( !d )
        return -ESRCH;
    rc = intel_iommu_assign_device(d, devfn, p, flag);
    if ( rc )
        return rc;
    while ( p->phantom_stride )
    {
        devfn += p->phantom_stride;
        if ( PCI_SLOT(devfn) != PCI_SLOT(p->devfn) )
            break;
        (void)intel_iommu_assign_device(d, devfn, p, flag);
    }
    return 0;
}

/* deassign_device(): the phantom functions first, stopping at the first
 * error, then the device itself. */
int xenc_op_reassign_all(int pdev, unsigned int from, unsigned int to)
{
    struct pci_dev *p = xenc_pdev(pdev);
    struct domain *s = xenc_domain_any((domid_t)from), *t = xenc_domain_any((domid_t)to);
    uint8_t devfn = p->devfn;
    int ret;

    if ( !s || !t )
        return -ESRCH;
    while ( p->phantom_stride )
    {
        devfn += p->phantom_stride;
        if ( PCI_SLOT(devfn) != PCI_SLOT(p->devfn) )
            break;
        ret = reassign_device_ownership(s, t, devfn, p);
        if ( ret )
            return ret;
    }
    return reassign_device_ownership(s, t, p->devfn, p);
}
