"""Kind codes and event-array field indices, generated from tracer/schema.py.

Do not edit: run ``python -m tracer.schema_doc --fields``.  ``K_<KIND>`` is a
kind's code (``ev[I_KIND]``); ``F_<KIND>_<FIELD>`` the index of one of its
fields in the event array ``[kind, seq, cpu, op, func, label, *fields]``.
"""

from typing import Final

K_OP_BEGIN: Final = 0
K_OP_END: Final = 1
K_CALL: Final = 2
K_RETURN: Final = 3
K_LOCK: Final = 4
K_UNLOCK: Final = 5
K_ROOT_WRITE: Final = 6
K_CTX_WRITE: Final = 7
K_CACHE_SYNC: Final = 8
K_FLUSH_CONTEXT: Final = 9
K_FLUSH_IOTLB: Final = 10
K_FLUSH_DEV_IOTLB: Final = 11
K_FLUSH_WRITE_BUFFER: Final = 12
K_TRANSLATION_ENABLE: Final = 13
K_DID_BITMAP: Final = 14
K_DID_MAP: Final = 15
K_IOMMU_BITMAP: Final = 16
K_PT_ALLOC: Final = 17
K_PT_FREE: Final = 18
K_IDMAP_ADD: Final = 19
K_IDMAP_REMOVE: Final = 20
K_OWNER_MOVE: Final = 21
K_DEVICE_ADD: Final = 22
K_DEVICE_REMOVE: Final = 23
K_ATS_ENABLE: Final = 24
K_DOMAIN_CREATE: Final = 25
K_DOMAIN_DYING: Final = 26
K_DOMAIN_DESTROY: Final = 27
K_ROLLBACK_BEGIN: Final = 28
K_ROLLBACK_END: Final = 29
K_FAULT_INJECT: Final = 30
K_ENGINE_LIMIT: Final = 31
K_LOG: Final = 32
K_PSEUDO_DOMID: Final = 33
K_LOCK_WAIT: Final = 34
K_DMA: Final = 35

# op-begin
F_OP_BEGIN_VERB: Final = 6
F_OP_BEGIN_BDF: Final = 7
F_OP_BEGIN_DOMAIN: Final = 8
F_OP_BEGIN_SEG: Final = 9

# op-end
F_OP_END_RC: Final = 6

# call
F_CALL_ARGS: Final = 6

# return
F_RETURN_RC: Final = 6

# lock
F_LOCK_LOCK: Final = 6
F_LOCK_TARGET: Final = 7

# unlock
F_UNLOCK_LOCK: Final = 6
F_UNLOCK_TARGET: Final = 7

# root-write
F_ROOT_WRITE_IOMMU: Final = 6
F_ROOT_WRITE_BUS: Final = 7
F_ROOT_WRITE_OLD: Final = 8
F_ROOT_WRITE_NEW: Final = 9

# ctx-write
F_CTX_WRITE_IOMMU: Final = 6
F_CTX_WRITE_BUS: Final = 7
F_CTX_WRITE_DEVFN: Final = 8
F_CTX_WRITE_HALF: Final = 9
F_CTX_WRITE_METHOD: Final = 10
F_CTX_WRITE_OLD_LO: Final = 11
F_CTX_WRITE_OLD_HI: Final = 12
F_CTX_WRITE_NEW_LO: Final = 13
F_CTX_WRITE_NEW_HI: Final = 14

# cache-sync
F_CACHE_SYNC_IOMMU: Final = 6
F_CACHE_SYNC_BUS: Final = 7
F_CACHE_SYNC_DEVFN: Final = 8

# flush-context
F_FLUSH_CONTEXT_IOMMU: Final = 6
F_FLUSH_CONTEXT_GRAN: Final = 7
F_FLUSH_CONTEXT_DID: Final = 8
F_FLUSH_CONTEXT_SID: Final = 9
F_FLUSH_CONTEXT_FM: Final = 10
F_FLUSH_CONTEXT_NON_PRESENT: Final = 11
F_FLUSH_CONTEXT_RC: Final = 12

# flush-iotlb
F_FLUSH_IOTLB_IOMMU: Final = 6
F_FLUSH_IOTLB_GRAN: Final = 7
F_FLUSH_IOTLB_DID: Final = 8
F_FLUSH_IOTLB_ADDR: Final = 9
F_FLUSH_IOTLB_ORDER: Final = 10
F_FLUSH_IOTLB_NON_PRESENT: Final = 11
F_FLUSH_IOTLB_DEV_IOTLB: Final = 12
F_FLUSH_IOTLB_RC: Final = 13

# flush-dev-iotlb
F_FLUSH_DEV_IOTLB_IOMMU: Final = 6
F_FLUSH_DEV_IOTLB_SID: Final = 7
F_FLUSH_DEV_IOTLB_DID: Final = 8
F_FLUSH_DEV_IOTLB_RC: Final = 9

# flush-write-buffer
F_FLUSH_WRITE_BUFFER_IOMMU: Final = 6
F_FLUSH_WRITE_BUFFER_PERFORMED: Final = 7

# translation-enable
F_TRANSLATION_ENABLE_IOMMU: Final = 6

# did-bitmap
F_DID_BITMAP_IOMMU: Final = 6
F_DID_BITMAP_DID: Final = 7
F_DID_BITMAP_VALUE: Final = 8

# did-map
F_DID_MAP_IOMMU: Final = 6
F_DID_MAP_DID: Final = 7
F_DID_MAP_OLD: Final = 8
F_DID_MAP_NEW: Final = 9

# iommu-bitmap
F_IOMMU_BITMAP_DOMAIN: Final = 6
F_IOMMU_BITMAP_IOMMU: Final = 7
F_IOMMU_BITMAP_VALUE: Final = 8

# pt-alloc
F_PT_ALLOC_DOMAIN: Final = 6
F_PT_ALLOC_MADDR: Final = 7
F_PT_ALLOC_WHAT: Final = 8

# pt-free
F_PT_FREE_DOMAIN: Final = 6
F_PT_FREE_MADDR: Final = 7

# idmap-add
F_IDMAP_ADD_DOMAIN: Final = 6
F_IDMAP_ADD_BASE: Final = 7
F_IDMAP_ADD_END: Final = 8
F_IDMAP_ADD_ACCESS: Final = 9
F_IDMAP_ADD_REFCOUNT: Final = 10

# idmap-remove
F_IDMAP_REMOVE_DOMAIN: Final = 6
F_IDMAP_REMOVE_BASE: Final = 7
F_IDMAP_REMOVE_END: Final = 8
F_IDMAP_REMOVE_REFCOUNT: Final = 9

# owner-move
F_OWNER_MOVE_SEG: Final = 6
F_OWNER_MOVE_BDF: Final = 7
F_OWNER_MOVE_OLD: Final = 8
F_OWNER_MOVE_NEW: Final = 9

# device-add
F_DEVICE_ADD_SEG: Final = 6
F_DEVICE_ADD_BDF: Final = 7

# device-remove
F_DEVICE_REMOVE_SEG: Final = 6
F_DEVICE_REMOVE_BDF: Final = 7

# ats-enable
F_ATS_ENABLE_SEG: Final = 6
F_ATS_ENABLE_BDF: Final = 7
F_ATS_ENABLE_VALUE: Final = 8

# domain-create
F_DOMAIN_CREATE_DOMAIN: Final = 6

# domain-dying
F_DOMAIN_DYING_DOMAIN: Final = 6

# domain-destroy
F_DOMAIN_DESTROY_DOMAIN: Final = 6

# rollback-begin
F_ROLLBACK_BEGIN_RC: Final = 6
F_ROLLBACK_BEGIN_WHAT: Final = 7

# rollback-end
F_ROLLBACK_END_RC: Final = 6

# fault-inject
F_FAULT_INJECT_POINT: Final = 6
F_FAULT_INJECT_ERRNO: Final = 7
F_FAULT_INJECT_NTH: Final = 8

# engine-limit
F_ENGINE_LIMIT_WHAT: Final = 6
F_ENGINE_LIMIT_DEPTH: Final = 7

# log
F_LOG_LEVEL: Final = 6
F_LOG_TEXT: Final = 7

# pseudo-domid
F_PSEUDO_DOMID_SEG: Final = 6
F_PSEUDO_DOMID_BDF: Final = 7
F_PSEUDO_DOMID_IOMMU: Final = 8
F_PSEUDO_DOMID_DOMAIN: Final = 9
F_PSEUDO_DOMID_VALUE: Final = 10

# lock-wait
F_LOCK_WAIT_LOCK: Final = 6
F_LOCK_WAIT_TARGET: Final = 7
F_LOCK_WAIT_HOLDER: Final = 8

# dma
F_DMA_SOURCE: Final = 6
F_DMA_SEG: Final = 7
F_DMA_BDF: Final = 8
F_DMA_RID: Final = 9
F_DMA_IOMMU: Final = 10
F_DMA_IOVA: Final = 11
F_DMA_WRITE: Final = 12
F_DMA_VIA: Final = 13
F_DMA_CTX_LO: Final = 14
F_DMA_CTX_HI: Final = 15
F_DMA_DID: Final = 16
F_DMA_PT_ROOT: Final = 17
F_DMA_HOST: Final = 18
F_DMA_OWNER: Final = 19
F_DMA_FAULT: Final = 20
