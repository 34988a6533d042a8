"""Backflush reconciliation: landing tables in, backflush adjustments, postings and variance out."""

import warnings

__version__ = "0.1.0"

# pandera imports pyspark.pandas whenever PySpark is installed (it is, for the reader tests), and
# PySpark warns at import that it does not support pandas 3. The pipeline never uses pandera's
# PySpark side; without this filter every command would print that warning on stderr.
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
