"""What every stage of one run shares: its id, config, warehouse and transaction, the plants and
(plant, business date) pairs it recomputes, and where it reports progress."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd

from pipeline.config import Config
from pipeline.progress import Progress
from pipeline.store.warehouse import Transaction, Warehouse


@dataclass
class RunContext:
    """One run in progress. `scope` holds the (plant_id, business_date) pairs it recomputes."""

    config: Config
    warehouse: Warehouse
    txn: Transaction
    run_id: str
    started: pd.Timestamp
    command: str
    progress: Progress
    plants: list[str]
    requested: list[dt.date]
    scope: pd.DataFrame

    @property
    def run_date(self) -> dt.date:
        """The date undated quarantine rows are filed under: the run's last requested date."""
        return max(self.requested) if self.requested else dt.date.today()
