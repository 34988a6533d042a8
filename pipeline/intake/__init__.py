"""Reading the landing (files or SQL): scan, coerce, validate, accept, the manifest of landing files, and
the spill of completions into buckets."""
