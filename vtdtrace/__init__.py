"""The thin command-line front door (argparse)."""
