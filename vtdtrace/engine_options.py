"""The engine options every command that runs the engine takes (record,
explore): the variant, cmpxchg16b, and the variant options.  One place, so
`record` re-records exactly what `explore` ran."""

from __future__ import annotations


def add_engine_options(p) -> None:
    p.add_argument("--engine", required=True, metavar="NAME",
                   help="legacy (V1, the seed's parent), direct (V2, the XSA-400 seed), "
                        "original (V0, aafd4f1df0, before XSA-400) or final (V3, b3ee746000, "
                        "the end of the 4.15 XSA-400 series); record also takes xen-c with --xen-tree: "
                        "the real C of a Xen tree (docs/REALCODE.md)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--cx16", dest="cx16", action="store_true", default=None,
                   help="the CPU has cmpxchg16b (overrides platform.cx16)")
    g.add_argument("--no-cx16", dest="cx16", action="store_false",
                   help="no cmpxchg16b: the two-step write paths")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--xsa399-fix", dest="xsa399_fix", action="store_true", default=True,
                   help="cleanup_domid_map as fixed for XSA-399 (aafd4f1df0; every variant has it): "
                        "the DID's slot set to DOMID_INVALID, then its bit cleared (default)")
    g.add_argument("--no-xsa399-fix", dest="xsa399_fix", action="store_false",
                   help="cleanup_domid_map as before that fix: the bit cleared, then the slot zeroed "
                        "(CVE-2022-26357: races context_set_domain_id on another CPU)")


def apply_engine_options(platform, args) -> None:
    """The command line's overrides, into the platform's knobs."""
    from tracer.record import apply_cx16

    apply_cx16(platform, args.cx16)
    platform.knobs.xsa399_fix = args.xsa399_fix
