"""The warehouse: Hive-partitioned Parquet datasets, all-or-nothing commits, per-plant locks, object stores."""
