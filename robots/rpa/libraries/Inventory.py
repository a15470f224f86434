"""Keywords for the inventory task: read the stock list, pick what needs
reordering, write purchase orders grouped by supplier."""

import csv
import os

from robot.api import logger
from robot.api.deco import keyword, library


@library(scope="GLOBAL")
class Inventory:
    @keyword
    def read_inventory(self, path):
        """Rows of the CSV at `path`, numbers as integers."""
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            for field in ("on_hand", "reorder_level", "reorder_qty"):
                row[field] = int(row[field])
        logger.info(f"{len(rows)} items in {path}")
        return rows

    @keyword
    def items_to_reorder(self, rows):
        """Items whose stock is below their reorder level."""
        return [r for r in rows if r["on_hand"] < r["reorder_level"]]

    @keyword
    def write_purchase_orders(self, items, directory):
        """One CSV per supplier in `directory`; returns the files written."""
        os.makedirs(directory, exist_ok=True)
        by_supplier = {}
        for item in items:
            by_supplier.setdefault(item["supplier"], []).append(item)
        written = []
        for supplier, lines in sorted(by_supplier.items()):
            name = "po-" + "".join(c if c.isalnum() else "-" for c in supplier.lower()) + ".csv"
            path = os.path.join(directory, name)
            with open(path, "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(["sku", "item", "quantity"])
                for line in lines:
                    w.writerow([line["sku"], line["item"], line["reorder_qty"]])
            logger.info(f"{path}: {len(lines)} lines for {supplier}")
            written.append(path)
        return written
