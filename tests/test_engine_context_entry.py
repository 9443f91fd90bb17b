"""Bit-level context-entry encoding against the VT-d legacy layout."""

from tracer.engine import hw


def test_did_lives_in_hi_23_8():
    hi = hw.context_set_did(0, 0xBEEF, clear_first=True)
    assert hi == 0xBEEF << 8
    assert hw.context_domain_id(hi) == 0xBEEF
    assert hw.context_domain_id(0xFFFF_FFFF_FF00_00FF) == 0


def test_seed_clears_old_did_parent_ors_it():
    hi = hw.context_set_did(0, 0x3, clear_first=True)
    assert hw.context_domain_id(hw.context_set_did(hi, 0x4, clear_first=True)) == 0x4
    # The parent's context_set_domain_id only ORs: 3 | 4 = 7.
    assert hw.context_domain_id(hw.context_set_did(hi, 0x4, clear_first=False)) == 0x7


def test_slptptr_is_lo_63_12_and_keeps_low_bits():
    lo = hw.context_set_present(0)
    lo = hw.context_set_address_root(lo, 0x1234_5678_9ABC_DFFF)
    assert hw.context_address_root(lo) == 0x1234_5678_9ABC_D000
    assert lo & 0xFFF == 1


def test_present_fpd_tt_bits():
    lo = 0
    assert not hw.context_present(lo)
    lo = hw.context_set_present(lo)
    assert lo == 1
    lo |= 2   # FPD
    assert hw.context_fault_disable(lo) == 1
    lo = hw.context_set_fault_enable(lo)
    assert hw.context_fault_disable(lo) == 0 and hw.context_present(lo)
    for tt in (0, 1, 2):
        assert hw.context_translation_type(hw.context_set_translation_type(lo, tt)) == tt
    assert hw.context_set_translation_type(0, 2) == 0b1000
    assert hw.context_clear_present(0xFFFF_FFFF_FFFF_FFFF) == 0xFFFF_FFFF_FFFF_FFFE


def test_aw_is_levels_minus_2_and_masks_hi_high_half():
    for levels, agaw in ((2, 0), (3, 1), (4, 2)):
        assert hw.level_to_agaw(levels) == agaw
    hi = hw.context_set_address_width(0xFFFF_FFFF_0000_0100, 2)
    assert hw.context_address_width(hi) == 2
    assert hi == 0x102   # AND with 0xfffffff8 zeroes hi[63:32]


def test_root_entry_and_sid():
    assert hw.root_entry(0x1_0000_3000) == 0x1_0000_3001
    assert hw.sid(0x05, 0xF0) == 0x05F0
