"""The self-contained HTML report over a warehouse."""
