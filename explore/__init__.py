"""`vtdtrace explore`: the bounded search over interleavings (docs/EXPLORE.md).

    from explore.search import Problem, explore, run_unit

search.py   the search: work units (schedule prefixes), the breadth-first
            frontier, the preemption bound, pruning, stopping
key.py      the state key pruning compares (replayed state, CPU positions
            and live locals, what the engine keeps outside both)
judge.py    each run through the analysers of `check`; violation identities
traces.py   counterexamples re-recorded as ordinary traces

explore imports tracer (to run the engine) and replay (to judge and key
runs), never the UI; only the CLI command imports explore.
"""
