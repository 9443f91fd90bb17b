"""The Textual app: views only; everything shown is computed by replay."""
