"""Tools around the pipeline: synthetic landing data (`backflush generate`)."""
