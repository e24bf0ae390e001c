#!/usr/bin/env python3
"""Write the example feeds (deterministic: same arguments, same bytes).

* ``data/permits.json``: a full-snapshot open-data feed of building permits
  (a JSON array, key PERMIT_NUM + REVISION_NUM), issued over the last 120 days;
* ``data/daily/YYYY-MM-DD.ndjson``: a per-date analytics export (page views per
  page for that date, as a web-analytics API returns), one file per day for the
  last 120 days — a source whose location depends on the date.

Dates are relative to ``--today`` (default: today), so the example's snapshots
and backfills always have recent data. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import random
from datetime import date, timedelta
from pathlib import Path

WARDS = [f"W{n:02d}" for n in range(1, 26)]
TYPES = ["Small Residential Projects", "Building Additions/Alterations", "New Houses",
         "Plumbing(PS)", "Demolition Folder (DM)", "Mechanical(MS)", "Fire/Security Upgrade"]
STATUSES = ["Issued", "Inspection", "Under Review", "Closed", "Permit Issued"]
STREETS = ["KING", "QUEEN", "DUNDAS", "BLOOR", "YONGE", "BATHURST", "SPADINA", "JANE"]
PAGES = ["/", "/permits", "/permits/search", "/wards", "/about", "/contact", "/open-data",
         "/news", "/events", "/faq"]


def permits(rng: random.Random, today: date, count: int) -> list[dict[str, object]]:
    records = []
    for n in range(count):
        issued = today - timedelta(days=rng.randrange(1, 121))
        applied = issued - timedelta(days=rng.randrange(5, 200))
        records.append({
            "PERMIT_NUM": f"{issued.year % 100:02d} {100000 + n * 7:06d} BLD",
            "REVISION_NUM": f"{rng.choice([0, 0, 0, 1, 2]):02d}",
            "PERMIT_TYPE": rng.choice(TYPES),
            "WARD": rng.choice(WARDS),
            "STATUS": rng.choice(STATUSES),
            "STREET_NUM": str(rng.randrange(1, 4000)),
            "STREET_NAME": rng.choice(STREETS),
            "APPLICATION_DATE": applied.isoformat(),
            "ISSUED_DATE": issued.isoformat(),
            "EST_CONST_COST": rng.choice([None, rng.randrange(5, 2000) * 1000]),
            "DWELLING_UNITS_CREATED": rng.choice([None, 0, 1, 2, 4]),
            "DESCRIPTION": f"Proposal to alter the existing {rng.choice(['house', 'store', 'office'])}.",
        })
    return records


def daily_views(rng: random.Random, day: date) -> list[dict[str, object]]:
    return [
        {"date": day.isoformat(), "page": page, "visits": rng.randrange(10, 500),
         "pageviews": rng.randrange(500, 5000)}
        for page in PAGES
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "data")
    parser.add_argument("--today", type=date.fromisoformat, default=date.today())
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--days", type=int, default=120)
    args = parser.parse_args()
    rng = random.Random(20261123)
    args.out.mkdir(parents=True, exist_ok=True)
    feed = permits(rng, args.today, args.records)
    (args.out / "permits.json").write_text(json.dumps(feed, indent=0) + "\n")
    daily = args.out / "daily"
    daily.mkdir(exist_ok=True)
    for offset in range(args.days, 0, -1):
        day = args.today - timedelta(days=offset)
        day_rng = random.Random(day.toordinal())
        lines = (json.dumps(r) for r in daily_views(day_rng, day))
        (daily / f"{day.isoformat()}.ndjson").write_text("\n".join(lines) + "\n")
    print(f"wrote {len(feed)} permits and {args.days} daily exports to {args.out}")


if __name__ == "__main__":
    main()
