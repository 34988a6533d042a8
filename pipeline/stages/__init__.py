"""The stages of a run, called in order by `pipeline.job`: read, digest, daily outputs, counts, quarantine
files, the run result."""
