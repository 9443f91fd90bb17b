"""The read side: trace reader and index, state fold, checkpoints and seek,
hazard analysers, diff and exporters.  Rebuilds state from events alone: it
may import tracer.schema / tracer.canonical, never the engine.  Never imports
textual."""
