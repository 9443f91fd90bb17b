"""The record side: platform model, scenario loader, the simulated Xen VT-d
engine, the event schema and the trace writer.  Never imports textual."""

__version__ = "0.1.0"
