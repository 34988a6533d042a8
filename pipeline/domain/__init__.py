"""The business rules as pure functions over DataFrames and arrays: explosion, consumption, the ledger,
rounding, costs, periods, count windows, variance, accuracy, late data, the error queue. No I/O."""
